// The sign-in form. Resolves with the signed-in agent and the CSRF token of the new session.

import { api } from './api';
import { h } from './dom';
import type { Agent } from './types';

export function showLogin(root: HTMLElement, notice?: string): Promise<{ agent: Agent; csrf: string }> {
  return new Promise((resolve) => {
    const email = h('input', { type: 'email', name: 'email', testid: 'login-email', autocomplete: 'username', required: true, autofocus: true });
    const password = h('input', { type: 'password', name: 'password', testid: 'login-password', autocomplete: 'current-password', required: true });
    const submit = h('button', { type: 'submit', class: 'btn primary', testid: 'login-submit' }, 'Sign in');
    const error = h('div', { class: 'error', testid: 'login-error', role: 'alert', hidden: !notice }, notice ?? '');
    const form = h(
      'form',
      { class: 'login', testid: 'login-form' },
      h('h1', {}, 'Frontdesk', h('span', { class: 'brand-sub' }, 'agent console')),
      h('label', {}, 'E-mail', email),
      h('label', {}, 'Password', password),
      error,
      submit,
    );
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      submit.disabled = true;
      error.hidden = true;
      try {
        const r = await api.login(email.value.trim(), password.value);
        resolve({ agent: r.agent, csrf: r.csrf_token });
      } catch (err) {
        error.textContent = err instanceof Error ? err.message : String(err);
        error.hidden = false;
        password.select();
      } finally {
        submit.disabled = false;
      }
    });
    root.replaceChildren(h('main', { class: 'login-page' }, form));
    email.focus();
  });
}
