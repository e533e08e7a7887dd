// The open conversation: its header and actions, transcript with the decision trail, composer and
// the suggestion panel; kept current by live frames.

import { ActionBar, type Action } from './actions';
import { api, ApiError, describeError } from './api';
import { AssistPanel } from './assist';
import { Composer } from './composer';
import { badge, fill, h } from './dom';
import { contactName, score, since } from './format';
import type { LiveSocket } from './live';
import { Transcript } from './transcript';
import type { Agent, Canned, SeqFrame, Summary, TypingFrame } from './types';

export interface ConversationDeps {
  me(): Agent;
  live: LiveSocket;
  /** A fresher summary than the lists may have (the answer to an action). */
  summaryChanged(summary: Summary): void;
}

// The widget sends "typing" while the customer types; if the "stopped" frame is lost, forget it.
const TYPING_SHOWN_MS = 8_000;

export class ConversationView {
  readonly el: HTMLElement;
  private id: string | null = null;
  private summary: Summary | null = null;
  private generation = 0;
  // Frames for this conversation that arrive while its REST answer is on the way.
  private held: SeqFrame[] | null = null;
  private suggestionsGeneration = 0;
  private suggestionsTimer: number | undefined;
  private typingTimer: number | undefined;
  private readonly assistToggle: HTMLButtonElement;

  private readonly title = h('h2', { class: 'conv-title', testid: 'conversation-title' });
  private readonly meta = h('div', { class: 'conv-meta', testid: 'conversation-meta' });
  private readonly reason = h('div', { class: 'conv-reason', testid: 'handoff-reason', hidden: true });
  private readonly notice = h('div', { class: 'notice', testid: 'action-error', role: 'alert', hidden: true });
  private readonly typingEl = h('div', { class: 'typing', testid: 'typing-indicator', 'aria-live': 'polite', hidden: true });
  private readonly placeholder = h('div', { class: 'conv-placeholder', testid: 'no-conversation' }, 'Pick a conversation from the list.');
  private readonly main: HTMLElement;
  private readonly transcript = new Transcript();
  private readonly actions: ActionBar;
  private readonly composer: Composer;
  private readonly assist: AssistPanel;

  constructor(private readonly deps: ConversationDeps) {
    this.actions = new ActionBar((a) => this.run(a));
    this.composer = new Composer({
      send: (id, text, note) => this.send(id, text, note),
      typing: (id, typing) => {
        if (!deps.live.send({ type: 'typing', conversation_id: id, typing })) api.typing(id, typing).catch(() => {});
      },
    });
    this.assist = new AssistPanel(
      (text) => {
        this.composer.insert(text);
        this.toggleAssist(false);
      },
      () => this.toggleAssist(false),
    );
    // Where there is no room for the suggestions column they open as a drawer (console.css).
    const assistToggle = h('button', { type: 'button', class: 'btn assist-toggle', testid: 'assist-toggle', 'aria-expanded': 'false', title: 'Suggested answers and canned responses' }, 'Answers');
    assistToggle.addEventListener('click', () => this.toggleAssist());
    this.composer.addButton(assistToggle);
    this.assistToggle = assistToggle;
    this.main = h(
      'div',
      { class: 'conv-main', hidden: true },
      h('header', { class: 'conv-head' }, h('div', { class: 'conv-id' }, this.title, this.meta, this.reason), this.actions.el),
      this.notice,
      this.transcript.el,
      this.typingEl,
      this.composer.el,
    );
    this.el = h('section', { class: 'conversation', testid: 'conversation' }, this.placeholder, this.main, this.assist.el);
    this.el.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && this.el.classList.contains('assist-open')) this.toggleAssist(false);
    });
    this.composer.switchTo(null);
  }

  open(id: string): void {
    if (id === this.id) return;
    this.id = id;
    this.el.dataset.id = id;
    this.summary = null;
    this.placeholder.hidden = true;
    this.main.hidden = false;
    this.el.classList.add('has-conversation');
    this.title.textContent = 'Loading…';
    this.meta.replaceChildren();
    this.reason.hidden = true;
    this.setNotice(null);
    this.showTyping(false);
    this.transcript.el.replaceChildren();
    this.composer.switchTo(id);
    this.actions.update(null, this.deps.me());
    void this.load();
  }

  /** Loads the open conversation again (after a reset of the live connection). */
  reload(): void {
    if (this.id) void this.load();
  }

  setTargets(agents: Agent[], teams: string[]): void {
    this.actions.update(this.summary, this.deps.me());
    this.actions.setTargets(agents, teams);
  }

  setCanned(canned: Canned[]): void {
    this.assist.setCanned(canned);
  }

  frame(frame: SeqFrame): void {
    const id = frame.type === 'conversation' ? frame.conversation.id : frame.type === 'agent' ? null : frame.conversation_id;
    if (!id || id !== this.id) return;
    if (this.held) this.held.push(frame);
    else this.apply(frame);
  }

  typing(frame: TypingFrame): void {
    if (frame.conversation_id === this.id) this.showTyping(frame.typing);
  }

  private async load(): Promise<void> {
    const id = this.id;
    if (!id) return;
    const generation = ++this.generation;
    this.held = [];
    try {
      const detail = await api.conversation(id);
      if (generation !== this.generation) return;
      this.transcript.reset(detail.conversation, detail.messages, detail.events);
      this.showSummary(detail.conversation);
      const held = this.held ?? [];
      this.held = null;
      for (const f of held) this.apply(f);
      this.loadSuggestions();
    } catch (e) {
      if (generation !== this.generation) return;
      this.held = null;
      this.title.textContent = e instanceof ApiError && e.status === 404 ? 'Conversation not found' : 'Cannot open the conversation';
      this.setNotice(describeError(e));
    }
  }

  private apply(frame: SeqFrame): void {
    switch (frame.type) {
      case 'conversation':
        this.showSummary(frame.conversation);
        return;
      case 'message':
        if (this.transcript.addMessage(frame.message) && frame.message.author === 'customer') {
          this.showTyping(false);
          // A new question: new suggested answers (debounced: messages often come in bursts).
          clearTimeout(this.suggestionsTimer);
          this.suggestionsTimer = window.setTimeout(() => this.loadSuggestions(), 300);
        }
        return;
      case 'event':
        this.transcript.addEvent(frame.event);
        return;
      default:
        return;
    }
  }

  private showSummary(s: Summary): void {
    this.summary = s;
    const me = this.deps.me();
    this.title.textContent = contactName(s.contact.name);
    const waiting = s.status === 'queued' && s.queued_at_ms ? `waiting ${since(s.queued_at_ms)}` : null;
    fill(
      this.meta,
      badge(s.channel_kind, 'channel', 'conversation-channel'),
      badge(s.status, `status-${s.status}`, 'conversation-status'),
      s.team && badge(`team ${s.team}`, 'team', 'conversation-team'),
      s.language && badge(s.language, 'lang', 'conversation-language'),
      s.priority > 0 && badge(`priority ${s.priority}`, `priority p${Math.min(s.priority, 3)}`, 'conversation-priority'),
      s.emotion && badge(`${s.emotion.label} ${score(s.emotion.score)}`, `emotion-${s.emotion.label}`, 'conversation-emotion', 'Emotion of the latest customer message'),
      s.assignee && h('span', { class: 'conv-assignee', testid: 'conversation-assignee' }, s.assignee.id === me.id ? 'Assigned to you' : `Assigned to ${s.assignee.name}`),
      waiting && h('span', { class: 'conv-assignee' }, waiting),
      s.rating != null && h('span', { class: 'rating', testid: 'conversation-rating', title: `Rated ${s.rating}/5` }, '★'.repeat(s.rating) + '☆'.repeat(Math.max(0, 5 - s.rating))),
      s.contact.email && h('span', { class: 'conv-email' }, s.contact.email),
    );
    this.reason.hidden = !s.handoff_reason;
    this.reason.textContent = s.handoff_reason ? `Hand-off reason: ${s.handoff_reason}` : '';
    this.actions.update(s, me);
    this.assist.setLanguage(s.language);
    const mine = s.status === 'assigned' && s.assignee?.id === me.id;
    this.composer.setCanReply(
      mine,
      s.status === 'resolved'
        ? 'This conversation is resolved. Notes are still possible.'
        : s.status === 'assigned'
          ? `${s.assignee?.name ?? 'Another agent'} has this conversation: take it to reply. Notes are possible.`
          : 'Take the conversation to reply. Notes are possible.',
    );
  }

  private async run(action: Action): Promise<void> {
    const id = this.id;
    if (!id) return;
    this.setNotice(null);
    try {
      let summary: Summary;
      switch (action.kind) {
        case 'take':
          summary = await api.take(id);
          break;
        case 'resolve':
          summary = await api.resolve(id);
          break;
        case 'handback':
          summary = await api.handback(id);
          break;
        case 'transfer':
          summary = await api.transfer(id, action.to);
          break;
      }
      this.deps.summaryChanged(summary);
      if (id !== this.id) return;
      this.showSummary(summary);
      if (action.kind === 'transfer') this.setNotice(`Transferred to ${action.label}.`, 'info');
    } catch (e) {
      if (id !== this.id) return;
      this.setNotice(describeError(e));
      // Someone else acted first: show the conversation as it is now.
      if (e instanceof ApiError && (e.status === 409 || e.status === 403)) {
        api.conversation(id).then((d) => id === this.id && this.showSummary(d.conversation), () => {});
      }
    }
  }

  private async send(id: string, text: string, note: boolean): Promise<void> {
    try {
      if (note) {
        const event = await api.addNote(id, text);
        if (id === this.id) this.transcript.addEvent(event);
      } else {
        // Over the live socket when it is up, else over REST. The message itself arrives as a
        // live frame, like everyone else's.
        await (this.deps.live.reply(id, text) ?? api.sendMessage(id, text));
      }
    } catch (e) {
      throw new Error(describeError(e));
    }
  }

  private loadSuggestions(): void {
    const id = this.id;
    if (!id) return;
    const generation = ++this.suggestionsGeneration;
    this.assist.showSuggestions('loading');
    api.suggestions(id).then(
      (list) => generation === this.suggestionsGeneration && this.assist.showSuggestions(list),
      (e) => generation === this.suggestionsGeneration && this.assist.showSuggestions({ error: describeError(e) }),
    );
  }

  private showTyping(on: boolean): void {
    clearTimeout(this.typingTimer);
    this.typingEl.hidden = !on;
    this.typingEl.textContent = on ? 'Customer is typing…' : '';
    if (on) this.typingTimer = window.setTimeout(() => this.showTyping(false), TYPING_SHOWN_MS);
  }

  private toggleAssist(open = !this.el.classList.contains('assist-open')): void {
    this.el.classList.toggle('assist-open', open);
    this.assistToggle.setAttribute('aria-expanded', String(open));
  }

  private setNotice(text: string | null, kind: 'error' | 'info' = 'error'): void {
    this.notice.hidden = !text;
    this.notice.textContent = text ?? '';
    this.notice.dataset.kind = kind;
  }
}
