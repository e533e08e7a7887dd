// The three live lists (Waiting, Mine, All open) as tabs, each row a conversation summary.

import { badge, h } from './dom';
import { authorLabel, contactName, since } from './format';
import { LIST_VIEWS, type ConversationStore, type ListView } from './store';
import type { Summary } from './types';

const TITLES: Record<ListView, string> = { waiting: 'Waiting', mine: 'Mine', open: 'All open' };
const EMPTY: Record<ListView, string> = {
  waiting: 'Nobody is waiting.',
  mine: 'No conversations assigned to you.',
  open: 'No open conversations.',
};

export class ConversationLists {
  readonly el: HTMLElement;
  private view: ListView = 'mine';
  private selectedId: string | null = null;
  private readonly tabs = new Map<ListView, { button: HTMLButtonElement; count: HTMLSpanElement }>();
  private readonly body: HTMLElement;
  private loading = true;

  constructor(
    private readonly store: ConversationStore,
    private readonly onOpen: (id: string) => void,
  ) {
    const tabBar = h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Conversation lists' });
    for (const view of LIST_VIEWS) {
      const count = h('span', { class: 'tab-count', testid: `count-${view}` }, '0');
      const button = h('button', { type: 'button', class: 'tab', role: 'tab', testid: `tab-${view}`, 'data-view': view }, TITLES[view], count);
      button.addEventListener('click', () => this.show(view));
      this.tabs.set(view, { button, count });
      tabBar.append(button);
    }
    this.body = h('ul', { class: 'rows', testid: 'conversation-list', role: 'tabpanel' });
    this.el = h('section', { class: 'lists', testid: 'lists' }, tabBar, this.body);
    store.subscribe(() => {
      this.loading = false;
      this.render();
    });
    // Waiting times grow by themselves.
    window.setInterval(() => this.render(), 30_000);
    this.render();
  }

  show(view: ListView): void {
    this.view = view;
    this.render();
  }

  select(id: string | null): void {
    this.selectedId = id;
    for (const row of this.body.querySelectorAll<HTMLElement>('.row')) {
      row.setAttribute('aria-current', String(row.dataset.id === id));
    }
  }

  get current(): ListView {
    return this.view;
  }

  private render(): void {
    for (const [view, tab] of this.tabs) {
      tab.count.textContent = String(this.store.list(view).length);
      tab.button.setAttribute('aria-selected', String(view === this.view));
    }
    const rows = this.store.list(this.view);
    if (rows.length === 0) {
      this.body.replaceChildren(h('li', { class: 'rows-empty', testid: 'list-empty' }, this.loading ? 'Loading…' : EMPTY[this.view]));
      return;
    }
    const now = Date.now();
    // Rows are rebuilt (lists are short); keep the keyboard focus on the same conversation.
    const focused = (document.activeElement as HTMLElement | null)?.closest<HTMLElement>('.row')?.dataset.id;
    this.body.replaceChildren(...rows.map((s) => this.row(s, now)));
    if (focused) this.body.querySelector<HTMLElement>(`.row[data-id="${CSS.escape(focused)}"]`)?.focus();
  }

  private row(s: Summary, now: number): HTMLElement {
    const last = s.last_message;
    const preview = last ? `${last.author === 'customer' ? '' : `${authorLabel(last.author)}: `}${last.text}` : 'No messages yet';
    // Queued conversations show how long they have waited for a person; others their last activity.
    const waitedFrom = s.status === 'queued' ? s.queued_at_ms : s.last_message_at_ms;
    const row = h(
      'li',
      {
        class: `row status-${s.status}`,
        testid: 'conversation-row',
        'data-id': s.id,
        'data-status': s.status,
        tabindex: 0,
        role: 'button',
        'aria-current': String(s.id === this.selectedId),
      },
      h(
        'div',
        { class: 'row-top' },
        h('span', { class: 'row-name', testid: 'row-name' }, contactName(s.contact.name)),
        s.priority > 0 && h('span', { class: `priority p${Math.min(s.priority, 3)}`, testid: 'row-priority', title: `Priority ${s.priority}` }, `▲${s.priority}`),
        s.emotion && badge(s.emotion.label, `emotion-${s.emotion.label}`, 'row-emotion', `Emotion ${s.emotion.label}, ${s.emotion.score.toFixed(2)}`),
        h('span', { class: 'row-time', testid: 'row-waiting', title: s.status === 'queued' ? 'Waiting for a person' : 'Since the last message' }, waitedFrom ? since(waitedFrom, now) : ''),
      ),
      h('div', { class: 'row-preview', testid: 'row-preview' }, preview),
      h(
        'div',
        { class: 'row-meta' },
        badge(s.channel_kind, 'channel', 'row-channel'),
        badge(s.status, `status-${s.status}`, 'row-status'),
        s.team && badge(s.team, 'team', 'row-team'),
        s.language && badge(s.language, 'lang', 'row-language'),
        s.assignee && h('span', { class: 'row-assignee' }, s.assignee.name),
      ),
    );
    const open = () => this.onOpen(s.id);
    row.addEventListener('click', open);
    row.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        open();
      }
    });
    return row;
  }
}
