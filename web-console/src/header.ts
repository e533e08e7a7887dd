// The top bar: who is signed in, their availability (online/away), the live connection, logout.

import { h } from './dom';
import type { LinkState } from './live';
import type { Agent } from './types';

const LINK_TEXT: Record<LinkState, string> = { online: 'Live', connecting: 'Connecting…', offline: 'Offline, retrying…' };

export interface HeaderHooks {
  setStatus(status: 'online' | 'away'): Promise<void>;
  logout(): void;
}

export class Header {
  readonly el: HTMLElement;
  private readonly name = h('span', { class: 'me-name', testid: 'agent-name' });
  private readonly role = h('span', { class: 'me-role', testid: 'agent-role' });
  private readonly load = h('span', { class: 'me-load', testid: 'agent-load' });
  private readonly status = h('button', { type: 'button', class: 'status-toggle', testid: 'status-toggle' });
  private readonly link = h('span', { class: 'link', testid: 'connection', role: 'status' });
  private readonly error = h('span', { class: 'header-error', testid: 'status-error', role: 'alert', hidden: true });
  private agent: Agent | null = null;

  constructor(hooks: HeaderHooks) {
    const logout = h('button', { type: 'button', class: 'btn ghost', testid: 'logout' }, 'Log out');
    logout.addEventListener('click', () => hooks.logout());
    this.status.addEventListener('click', async () => {
      if (!this.agent) return;
      const next = this.agent.status === 'online' ? 'away' : 'online';
      this.status.disabled = true;
      this.error.hidden = true;
      try {
        await hooks.setStatus(next);
      } catch (e) {
        this.error.textContent = e instanceof Error ? e.message : String(e);
        this.error.hidden = false;
      } finally {
        this.status.disabled = false;
      }
    });
    this.el = h(
      'header',
      { class: 'topbar', testid: 'header' },
      h('div', { class: 'brand' }, 'Frontdesk', h('span', { class: 'brand-sub' }, 'console')),
      this.link,
      this.error,
      h('div', { class: 'me' }, h('div', { class: 'me-who' }, this.name, h('span', { class: 'me-sub' }, this.role, this.load)), this.status, logout),
    );
    this.setLink('connecting');
  }

  setAgent(agent: Agent): void {
    this.agent = agent;
    this.name.textContent = agent.name;
    this.role.textContent = agent.role;
    this.load.textContent = ` · ${agent.load}/${agent.capacity} chats`;
    this.status.dataset.status = agent.status;
    this.status.textContent = agent.status === 'online' ? 'Online' : agent.status === 'away' ? 'Away' : 'Offline';
    this.status.title = agent.status === 'online' ? 'You get new conversations. Click to go away.' : 'You get no new conversations. Click to go online.';
    this.status.setAttribute('aria-pressed', String(agent.status === 'online'));
  }

  setLink(state: LinkState): void {
    this.link.dataset.state = state;
    this.link.textContent = LINK_TEXT[state];
  }
}
