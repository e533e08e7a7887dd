// The REST client of the console API. The session lives in the HttpOnly cookie; every request that
// changes something also carries the CSRF token from login or /auth/me.

import type { Agent, AgentStatus, Canned, ConversationDetail, ConversationEvent, Suggestion, Summary } from './types';

const BASE = '/api/v1';

/** An answer with a 4xx/5xx status, or no answer at all (status 0). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

let csrfToken = '';
let onUnauthenticated: (() => void) | null = null;

export function setCsrfToken(token: string): void {
  csrfToken = token;
}

/** Called when a request other than login/me finds the session gone, so the app can show the login form. */
export function whenUnauthenticated(handler: () => void): void {
  onUnauthenticated = handler;
}

async function call<T>(method: string, path: string, body?: unknown, quiet401 = false): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET') headers['X-CSRF-Token'] = csrfToken;
  let res: Response;
  try {
    res = await fetch(BASE + path, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'network', 'The server cannot be reached. Check the connection and try again.');
  }
  if (res.status === 204) return undefined as T;
  let json: unknown = null;
  try {
    json = await res.json();
  } catch {
    // a proxy's HTML error page, or an empty body: described below by the status alone
  }
  if (!res.ok) {
    const err = (json as { error?: { code?: string; message?: string } } | null)?.error;
    const message = err?.message ? sentence(err.message) : `The server answered ${res.status} ${res.statusText}`.trim();
    const error = new ApiError(res.status, err?.code ?? `http_${res.status}`, message);
    if (res.status === 401 && !quiet401) onUnauthenticated?.();
    throw error;
  }
  return json as T;
}

type One = { conversation: Summary };
const conv = (id: string) => `/conversations/${encodeURIComponent(id)}`;

export const api = {
  login: (email: string, password: string) =>
    call<{ agent: Agent; token: string; csrf_token: string }>('POST', '/auth/login', { email, password }, true),
  logout: () => call<void>('POST', '/auth/logout', undefined, true),
  me: () => call<{ agent: Agent; csrf_token: string }>('GET', '/auth/me', undefined, true),

  agents: () => call<{ agents: Agent[] }>('GET', '/agents').then((r) => r.agents),
  setStatus: (status: Exclude<AgentStatus, 'offline'>) => call<Agent>('PUT', '/agents/me/status', { status }),
  teams: () => call<{ teams: string[] }>('GET', '/teams').then((r) => r.teams),
  canned: () => call<{ canned: Canned[] }>('GET', '/canned').then((r) => r.canned),

  conversations: (view: 'waiting' | 'mine' | 'open' | 'all') =>
    call<{ conversations: Summary[] }>('GET', `/conversations?view=${view}`).then((r) => r.conversations),
  conversation: (id: string) => call<ConversationDetail>('GET', conv(id)),
  take: (id: string) => call<One>('POST', `${conv(id)}/take`, {}).then((r) => r.conversation),
  transfer: (id: string, to: { agent_id: string } | { team: string }) =>
    call<One>('POST', `${conv(id)}/transfer`, to).then((r) => r.conversation),
  resolve: (id: string) => call<One>('POST', `${conv(id)}/resolve`, {}).then((r) => r.conversation),
  handback: (id: string) => call<One>('POST', `${conv(id)}/handback`, {}).then((r) => r.conversation),
  sendMessage: (id: string, text: string) => call<{ seq: number }>('POST', `${conv(id)}/messages`, { text }),
  addNote: (id: string, text: string) =>
    call<{ event: ConversationEvent }>('POST', `${conv(id)}/notes`, { text }).then((r) => r.event),
  typing: (id: string, typing: boolean) => call<void>('POST', `${conv(id)}/typing`, { typing }),
  suggestions: (id: string) =>
    call<{ suggestions: Suggestion[] }>('GET', `${conv(id)}/suggestions`).then((r) => r.suggestions),
};

/** The server writes its messages in lower case ("wrong e-mail or password"); shown as a sentence. */
function sentence(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** The message to show for a failed action: the server's own words, with what kind of refusal it was. */
export function describeError(e: unknown): string {
  if (e instanceof ApiError) {
    if (e.status === 409) return `Conflict: ${e.message}`;
    if (e.status === 403) return `Not allowed: ${e.message}`;
    return e.message;
  }
  return e instanceof Error ? e.message : String(e);
}
