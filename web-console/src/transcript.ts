// The transcript of one conversation: messages (customer, bot, agent, system) and the decision
// trail (status changes, notes, ratings) merged in time order, each shown once.

import { badge, h } from './dom';
import { authorLabel, clock, contactName, fullTime, percent, score } from './format';
import type { ConversationEvent, Message, Summary } from './types';

interface Item {
  at: number;
  // Messages before events at the same millisecond, messages by seq.
  order: number;
  el: HTMLElement;
}

export class Transcript {
  readonly el: HTMLElement = h('div', { class: 'log', testid: 'transcript', role: 'log', 'aria-live': 'polite' });
  private items: Item[] = [];
  // Shown messages by seq.
  private readonly messages = new Map<number, Item>();
  private readonly eventKeys = new Set<string>();
  private customerName = 'Customer';
  // Whether the view follows the newest line: true until the agent scrolls up to read.
  private following = true;

  constructor() {
    this.el.addEventListener('scroll', () => {
      this.following = this.el.scrollHeight - this.el.scrollTop - this.el.clientHeight < 80;
    });
    // The log shrinks when the header or composer grows, or the window does: stay at the end.
    new ResizeObserver(() => this.following && this.scrollToEnd()).observe(this.el);
  }

  reset(summary: Summary, messages: Message[], events: ConversationEvent[]): void {
    this.items = [];
    this.messages.clear();
    this.eventKeys.clear();
    this.customerName = summary.contact.name ? contactName(summary.contact.name) : 'Customer';
    this.el.replaceChildren();
    for (const m of messages) this.addMessage(m, false);
    for (const e of events) this.addEvent(e, false);
    this.following = true;
    this.scrollToEnd();
  }

  /** Adds a message, or redraws it when it is already shown (the server sends a customer's
   * message again once the bot has found its intent and emotion); true when it was new. */
  addMessage(m: Message, live = true): boolean {
    const shown = this.messages.get(m.seq);
    if (shown) {
      const el = this.messageEl(m);
      shown.el.replaceWith(el);
      shown.el = el;
      return false;
    }
    const item = { at: m.created_at_ms, order: m.seq, el: this.messageEl(m) };
    this.messages.set(m.seq, item);
    this.insert(item, live);
    return true;
  }

  /** Adds an event unless the same one is shown (events have no id: a live frame may repeat one
   * that the REST answer already had, or the answer to our own note). */
  addEvent(e: ConversationEvent, live = true): boolean {
    const key = JSON.stringify([e.kind, e.created_at_ms, e.from_status, e.to_status, e.actor, e.reason]);
    if (this.eventKeys.has(key)) return false;
    this.eventKeys.add(key);
    this.insert({ at: e.created_at_ms, order: Number.MAX_SAFE_INTEGER, el: eventEl(e) }, live);
    return true;
  }

  private insert(item: Item, live: boolean): void {
    let i = this.items.length;
    while (i > 0 && before(item, this.items[i - 1])) i--;
    const next = this.items[i];
    this.items.splice(i, 0, item);
    this.el.insertBefore(item.el, next ? next.el : null);
    if (live && this.following) this.scrollToEnd();
  }

  private scrollToEnd(): void {
    this.el.scrollTop = this.el.scrollHeight;
  }

  private messageEl(m: Message): HTMLElement {
    const who = m.author === 'customer' ? this.customerName : authorLabel(m.author, m.metadata?.agent?.name);
    const el = h(
      'article',
      { class: `msg msg-${m.author}`, testid: 'message', 'data-author': m.author, 'data-seq': m.seq },
      h('header', { class: 'msg-head' }, h('span', { class: 'msg-who' }, who), h('time', { title: fullTime(m.created_at_ms) }, clock(m.created_at_ms))),
      h('div', { class: 'msg-text', testid: 'message-text' }, m.text),
    );
    if (m.quick_replies?.length) {
      el.append(h('div', { class: 'quick-replies' }, ...m.quick_replies.map((q) => h('span', { class: 'chip', title: q.payload }, q.title))));
    }
    const a = m.annotations;
    if (m.author === 'customer' && a) {
      const badges = h('div', { class: 'msg-badges' });
      if (a.intent) {
        const name = a.intent.out_of_scope ? `${a.intent.name} (out of scope)` : a.intent.name;
        badges.append(badge(`${name} ${percent(a.intent.confidence)}`, a.intent.out_of_scope ? 'intent-oos' : 'intent', 'badge-intent', a.intent.team ? `Intent, team ${a.intent.team}` : 'Intent'));
      }
      if (a.emotion) {
        badges.append(badge(`${a.emotion.label} ${score(a.emotion.score)}`, `emotion-${a.emotion.label}`, 'badge-emotion', 'Emotion'));
      }
      if (a.language) {
        badges.append(badge(`${a.language.code} ${percent(a.language.confidence)}`, 'lang', 'badge-language', 'Language'));
      }
      if (badges.childElementCount) el.append(badges);
    }
    return el;
  }
}

function before(a: Item, b: Item): boolean {
  return a.at < b.at || (a.at === b.at && a.order < b.order);
}

/** One line of the decision trail: why the conversation moved, who did it, notes and ratings. */
function eventEl(e: ConversationEvent): HTMLElement {
  const time = h('time', { title: fullTime(e.created_at_ms) }, clock(e.created_at_ms));
  if (e.kind === 'note') {
    return h(
      'div',
      { class: 'event event-note', testid: 'event-trail', 'data-kind': 'note' },
      h('div', { class: 'note-head' }, h('span', {}, `Internal note · ${e.actor ?? 'agent'}`), time),
      h('div', { class: 'note-text', testid: 'note-text' }, e.reason ?? ''),
    );
  }
  return h(
    'div',
    { class: `event event-${e.kind}`, testid: 'event-trail', 'data-kind': e.kind, 'data-to': e.to_status ?? undefined },
    h('span', { class: 'event-text' }, describeEvent(e)),
    time,
  );
}

/** The line shown for an event. The server writes each status change's reason as a sentence
 * ("Anna took the conversation"), except a bot's hand-off, whose reason is the rule that fired
 * ("angry, 0.93"). */
export function describeEvent(e: ConversationEvent): string {
  const details = e.details ?? {};
  if (e.kind === 'rating') {
    const rating = details.rating ?? e.reason;
    return rating != null && rating !== '' ? `The customer rated the conversation ${String(rating)}/5` : 'The customer rated the conversation';
  }
  if (e.kind !== 'status') return [e.actor, e.kind, e.reason].filter(Boolean).join(': ');
  const handOff = details.action === 'hand_off' || (e.to_status === 'queued' && e.from_status === 'bot');
  if (handOff && e.actor === 'bot') return e.reason ? `Handed off because: ${e.reason}` : 'Handed off by the bot';
  if (e.reason) return e.reason.charAt(0).toUpperCase() + e.reason.slice(1);
  return `${e.actor ?? 'Someone'} moved it from ${e.from_status ?? '?'} to ${e.to_status ?? '?'}`;
}
