// Help for writing the reply: knowledge-base answers suggested for the customer's latest message,
// and the team's canned responses. Clicking one puts its text into the composer.

import { badge, h } from './dom';
import { percent } from './format';
import type { Canned, Suggestion } from './types';

export class AssistPanel {
  readonly el: HTMLElement;
  private readonly suggestions = h('ul', { class: 'picks', testid: 'suggestions' });
  private readonly cannedList = h('ul', { class: 'picks', testid: 'canned-list' });
  private readonly filter = h('input', { type: 'search', class: 'filter', testid: 'canned-filter', placeholder: 'Filter canned responses…', 'aria-label': 'Filter canned responses' });
  private canned: Canned[] = [];
  private language: string | null = null;

  /** `close` hides the panel where it is a drawer (narrow windows). */
  constructor(
    private readonly pick: (text: string) => void,
    close: () => void,
  ) {
    this.filter.addEventListener('input', () => this.renderCanned());
    const closeButton = h('button', { type: 'button', class: 'btn ghost assist-close', testid: 'assist-close', 'aria-label': 'Close' }, '×');
    closeButton.addEventListener('click', close);
    this.el = h(
      'aside',
      { class: 'assist', testid: 'assist' },
      closeButton,
      h('section', { class: 'assist-part' }, h('h3', {}, 'Suggested answers'), this.suggestions),
      h('section', { class: 'assist-part' }, h('h3', {}, 'Canned responses'), this.filter, this.cannedList),
    );
    this.showSuggestions([]);
  }

  /** A list, 'loading', or an error message. */
  showSuggestions(state: Suggestion[] | 'loading' | { error: string }): void {
    if (state === 'loading') {
      this.suggestions.replaceChildren(h('li', { class: 'picks-empty' }, 'Looking for answers…'));
    } else if (!Array.isArray(state)) {
      this.suggestions.replaceChildren(h('li', { class: 'picks-empty error' }, state.error));
    } else if (state.length === 0) {
      this.suggestions.replaceChildren(h('li', { class: 'picks-empty' }, 'No suggestions for the latest message.'));
    } else {
      this.suggestions.replaceChildren(
        ...state.map((s) =>
          this.item('suggestion', s.title, s.text, badge(percent(s.score), 'score', undefined, 'How well it matches')),
        ),
      );
    }
  }

  setCanned(canned: Canned[]): void {
    this.canned = canned;
    this.renderCanned();
  }

  /** Canned responses in the conversation's language come first. */
  setLanguage(language: string | null): void {
    this.language = language;
    this.renderCanned();
  }

  private renderCanned(): void {
    const q = this.filter.value.trim().toLowerCase();
    const shown = this.canned
      .filter((c) => !q || c.title.toLowerCase().includes(q) || c.text.toLowerCase().includes(q))
      .sort((a, b) => Number(b.language === this.language) - Number(a.language === this.language));
    this.cannedList.replaceChildren(
      ...(shown.length
        ? shown.map((c) => this.item('canned', c.title, c.text, c.language ? badge(c.language, 'lang') : null))
        : [h('li', { class: 'picks-empty' }, this.canned.length ? 'Nothing matches.' : 'No canned responses.')]),
    );
  }

  private item(testid: string, title: string, text: string, extra: HTMLElement | null): HTMLElement {
    const button = h(
      'button',
      { type: 'button', class: 'pick', testid, title: 'Insert into the reply' },
      h('span', { class: 'pick-title' }, title, extra),
      h('span', { class: 'pick-text' }, text),
    );
    button.addEventListener('click', () => this.pick(text));
    return h('li', {}, button);
  }
}
