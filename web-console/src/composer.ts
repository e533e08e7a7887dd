// The reply box: Enter sends, Shift+Enter is a new line; Note mode writes an internal note instead.
// While the agent types a reply the customer is told so (typing frames), until 3 s of idleness.

import { h } from './dom';

const TYPING_IDLE_MS = 3_000;
// The widget forgets "typing" after a while; repeat it while the agent keeps typing.
const TYPING_REPEAT_MS = 5_000;

export interface ComposerHooks {
  send(conversationId: string, text: string, note: boolean): Promise<void>;
  typing(conversationId: string, typing: boolean): void;
}

export class Composer {
  readonly el: HTMLElement;
  private readonly input = h('textarea', { testid: 'composer', rows: 3, placeholder: 'Write a reply…', 'aria-label': 'Reply' });
  private readonly sendButton = h('button', { type: 'submit', class: 'btn primary', testid: 'send' }, 'Send');
  private readonly noteToggle = h('button', { type: 'button', class: 'btn toggle', testid: 'note-toggle', 'aria-pressed': 'false', title: 'Write an internal note, never sent to the customer' }, 'Note');
  private readonly hint = h('div', { class: 'composer-hint', testid: 'composer-hint' });
  private readonly error = h('div', { class: 'error', testid: 'composer-error', role: 'alert', hidden: true });
  private note = false;
  private canReply = false;
  private sending = false;
  private typingOn = false;
  private typingSentAt = 0;
  private idleTimer: number | undefined;
  private conversationId: string | null = null;
  private readonly drafts = new Map<string, string>();
  private readonly buttons: HTMLElement;

  constructor(private readonly hooks: ComposerHooks) {
    this.buttons = h('div', { class: 'composer-buttons' }, this.noteToggle, this.sendButton);
    const form = h('form', { class: 'composer-row' }, this.input, this.buttons);
    this.el = h('div', { class: 'composer', testid: 'composer-panel' }, this.error, form, this.hint);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      void this.submit();
    });
    this.input.addEventListener('keydown', (e) => {
      // isComposing: Enter that confirms an IME candidate (Chinese, Japanese…) must not send.
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        void this.submit();
      }
    });
    this.input.addEventListener('input', () => {
      this.error.hidden = true;
      this.typingTick();
      this.refresh();
    });
    this.input.addEventListener('blur', () => this.typingStop());
    this.noteToggle.addEventListener('click', () => this.setNote(!this.note));
    this.refresh();
  }

  /** Switches to another conversation, keeping each one's unsent draft. */
  switchTo(id: string | null): void {
    this.typingStop();
    if (this.conversationId) this.drafts.set(this.conversationId, this.input.value);
    this.conversationId = id;
    this.input.value = (id && this.drafts.get(id)) || '';
    this.error.hidden = true;
    this.setNote(false);
  }

  /** Another button beside Note and Send. */
  addButton(button: HTMLButtonElement): void {
    this.buttons.append(button);
  }

  /** Replies need the conversation to be assigned to the agent; notes are always possible. */
  setCanReply(canReply: boolean, why: string): void {
    this.canReply = canReply;
    this.hint.textContent = canReply ? 'Enter sends · Shift+Enter adds a line' : why;
    this.refresh();
  }

  /** Puts text at the cursor (a suggestion, a canned response) for the agent to edit and send. */
  insert(text: string): void {
    const { selectionStart: start, selectionEnd: end, value } = this.input;
    const before = value.slice(0, start);
    const glue = before && !/\s$/.test(before) ? ' ' : '';
    this.input.setRangeText(glue + text, start, end, 'end');
    this.input.focus();
    this.input.dispatchEvent(new Event('input'));
  }

  private setNote(note: boolean): void {
    if (note) this.typingStop();
    this.note = note;
    this.noteToggle.setAttribute('aria-pressed', String(note));
    this.el.classList.toggle('note-mode', note);
    this.input.placeholder = note ? 'Write an internal note (only agents see it)…' : 'Write a reply…';
    this.sendButton.textContent = note ? 'Add note' : 'Send';
    this.refresh();
  }

  private refresh(): void {
    const allowed = this.note || this.canReply;
    this.sendButton.disabled = !this.conversationId || this.sending || !allowed || !this.input.value.trim();
    this.noteToggle.disabled = !this.conversationId;
    this.input.disabled = !this.conversationId;
  }

  private async submit(): Promise<void> {
    const text = this.input.value.trim();
    const id = this.conversationId;
    if (!id || !text || this.sending || this.sendButton.disabled) return;
    this.typingStop();
    this.sending = true;
    this.refresh();
    try {
      await this.hooks.send(id, text, this.note);
      this.drafts.delete(id);
      if (this.conversationId === id) this.input.value = '';
    } catch (e) {
      if (this.conversationId !== id) return;
      this.error.textContent = e instanceof Error ? e.message : String(e);
      this.error.hidden = false;
    } finally {
      this.sending = false;
      this.refresh();
      this.input.focus();
    }
  }

  private typingTick(): void {
    clearTimeout(this.idleTimer);
    if (this.note || !this.canReply || !this.input.value.trim()) {
      this.typingStop();
      return;
    }
    if (this.conversationId && (!this.typingOn || Date.now() - this.typingSentAt > TYPING_REPEAT_MS)) {
      this.typingOn = true;
      this.typingSentAt = Date.now();
      this.hooks.typing(this.conversationId, true);
    }
    this.idleTimer = window.setTimeout(() => this.typingStop(), TYPING_IDLE_MS);
  }

  private typingStop(): void {
    clearTimeout(this.idleTimer);
    if (!this.typingOn) return;
    this.typingOn = false;
    if (this.conversationId) this.hooks.typing(this.conversationId, false);
  }
}
