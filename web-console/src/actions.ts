// The action bar of the open conversation: Take, Transfer (to an agent or a team), Resolve, Hand
// back to the bot. Buttons that do not apply to the conversation's state are disabled.

import { fill, h } from './dom';
import type { Agent, Summary } from './types';

export type Action =
  | { kind: 'take' }
  | { kind: 'resolve' }
  | { kind: 'handback' }
  | { kind: 'transfer'; to: { agent_id: string } | { team: string }; label: string };

export class ActionBar {
  readonly el: HTMLElement;
  private readonly take = button('Take', 'take', 'primary');
  private readonly resolve = button('Resolve', 'resolve');
  private readonly handback = button('Hand back to bot', 'handback');
  private readonly transfer = button('Transfer', 'transfer');
  private readonly target = h('select', { testid: 'transfer-target', 'aria-label': 'Transfer to' });
  private busy = false;
  private summary: Summary | null = null;
  private me: Agent | null = null;

  constructor(run: (action: Action) => Promise<void>) {
    const act = async (action: Action) => {
      this.busy = true;
      this.refresh();
      try {
        await run(action);
      } finally {
        this.busy = false;
        this.refresh();
      }
    };
    this.take.addEventListener('click', () => act({ kind: 'take' }));
    this.resolve.addEventListener('click', () => act({ kind: 'resolve' }));
    this.handback.addEventListener('click', () => act({ kind: 'handback' }));
    this.transfer.addEventListener('click', () => {
      const [kind, value] = splitTarget(this.target.value);
      if (!value) return;
      const label = this.target.selectedOptions[0]?.textContent ?? value;
      act({ kind: 'transfer', to: kind === 'agent' ? { agent_id: value } : { team: value }, label });
    });
    this.target.addEventListener('change', () => this.refresh());
    this.el = h('div', { class: 'actions', testid: 'actions' }, this.take, h('span', { class: 'transfer' }, this.target, this.transfer), this.handback, this.resolve);
    this.setTargets([], []);
  }

  update(summary: Summary | null, me: Agent): void {
    this.summary = summary;
    this.me = me;
    this.refresh();
  }

  /** The choices of Transfer: other agents (with their status and load) and the teams. */
  setTargets(agents: Agent[], teams: string[]): void {
    const keep = this.target.value;
    const others = agents.filter((a) => a.id !== this.me?.id);
    const agentGroup = h('optgroup', { label: 'Agents' }, ...others.map((a) => h('option', { value: `agent:${a.id}` }, `${a.name} (${a.status}, ${a.load}/${a.capacity})`)));
    const teamGroup = h('optgroup', { label: 'Teams' }, ...teams.map((t) => h('option', { value: `team:${t}` }, `Team ${t}`)));
    fill(this.target, h('option', { value: '' }, 'Transfer to…'), others.length ? agentGroup : null, teams.length ? teamGroup : null);
    this.target.value = [...this.target.options].some((o) => o.value === keep) ? keep : '';
    this.refresh();
  }

  private refresh(): void {
    const s = this.summary;
    const open = !!s && s.status !== 'resolved' && !this.busy;
    const mine = !!s && s.status === 'assigned' && s.assignee?.id === this.me?.id;
    this.take.disabled = !open || mine;
    this.take.title = mine ? 'Already yours' : s?.status === 'assigned' ? `Assigned to ${s.assignee?.name ?? 'another agent'}` : '';
    this.resolve.disabled = !open;
    this.handback.disabled = !open || s?.status === 'bot';
    this.target.disabled = !open;
    this.transfer.disabled = !open || !this.target.value;
  }
}

function button(label: string, testid: string, kind = ''): HTMLButtonElement {
  return h('button', { type: 'button', class: `btn ${kind}`.trim(), testid }, label);
}

function splitTarget(value: string): [string, string] {
  const i = value.indexOf(':');
  return i < 0 ? ['', ''] : [value.slice(0, i), value.slice(i + 1)];
}
