// Starts the console: resumes the session (or shows the login form), lays out the workspace and
// wires the live connection to the lists and the open conversation.

import './console.css';
import { api, ApiError, describeError, setCsrfToken, whenUnauthenticated } from './api';
import { ConversationView } from './conversation';
import { h } from './dom';
import { Header } from './header';
import { ConversationLists } from './lists';
import { LiveSocket } from './live';
import { showLogin } from './login';
import { ConversationStore, LIST_VIEWS } from './store';
import type { Agent, Summary } from './types';

const NOTICE_KEY = 'frontdesk-console:notice';
const root = document.getElementById('app') ?? document.body;

async function boot(): Promise<void> {
  // A notice left by the page before a reload (the session ended).
  const notice = sessionStorage.getItem(NOTICE_KEY) ?? undefined;
  sessionStorage.removeItem(NOTICE_KEY);
  try {
    const r = await api.me();
    startConsole(r.agent, r.csrf_token);
  } catch (e) {
    const why = e instanceof ApiError && e.status === 401 ? notice : describeError(e);
    const session = await showLogin(root, why);
    startConsole(session.agent, session.csrf);
  }
}

/** Leaves the console for a fresh page: the simplest way to drop every timer and socket. */
function restart(notice?: string): void {
  if (notice) sessionStorage.setItem(NOTICE_KEY, notice);
  location.replace(location.pathname);
}

function startConsole(agent: Agent, csrf: string): void {
  setCsrfToken(csrf);
  let me = agent;
  let agents: Agent[] = [];
  let teams: string[] = [];
  let ended = false;
  const sessionEnded = () => {
    if (ended) return;
    ended = true;
    live.stop();
    restart('Your session has ended. Please sign in again.');
  };
  whenUnauthenticated(sessionEnded);

  const store = new ConversationStore(() => me);
  const reloadLists = (): Promise<void> =>
    store
      .reload(async () => {
        const views = await Promise.all(LIST_VIEWS.map((v) => api.conversations(v)));
        const byId = new Map<string, Summary>();
        for (const s of views.flat()) byId.set(s.id, s);
        return [...byId.values()];
      })
      .catch(() => {
        // The server is restarting or unreachable: the lists would stay stale, so try again.
        if (!ended) window.setTimeout(() => void reloadLists(), 5_000);
      });
  const loadTargets = () =>
    Promise.all([api.agents(), api.teams()]).then(([a, t]) => {
      agents = a;
      teams = t;
      view.setTargets(agents, teams);
    }, () => {});

  const live = new LiveSocket({
    frame(frame) {
      if (frame.type === 'conversation') store.upsert(frame.conversation);
      if (frame.type === 'message') store.message(frame.conversation_id, frame.message);
      if (frame.type === 'agent') {
        const i = agents.findIndex((a) => a.id === frame.agent.id);
        if (i >= 0) agents[i] = frame.agent;
        else agents.push(frame.agent);
        if (frame.agent.id === me.id) setMe(frame.agent);
        view.setTargets(agents, teams);
      }
      view.frame(frame);
    },
    typing: (frame) => view.typing(frame),
    reset() {
      void reloadLists();
      void loadTargets();
      view.reload();
    },
    welcome: (a) => a && setMe(a),
    state(state) {
      header.setLink(state);
      document.body.dataset.link = state;
    },
    refused() {
      // A WebSocket cannot see the HTTP status of a refused upgrade: ask whether the session lives.
      api.me().catch((e) => e instanceof ApiError && e.status === 401 && sessionEnded());
    },
  });

  const header = new Header({
    async setStatus(status) {
      try {
        setMe(await api.setStatus(status));
      } catch (e) {
        throw new Error(describeError(e));
      }
    },
    logout() {
      live.stop();
      api.logout().finally(() => restart());
    },
  });
  const setMe = (a: Agent) => {
    me = a;
    header.setAgent(a);
  };

  const view = new ConversationView({ me: () => me, live, summaryChanged: (s) => store.upsert(s) });
  const lists = new ConversationLists(store, (id) => openConversation(id));
  const openConversation = (id: string) => {
    view.open(id);
    lists.select(id);
    history.replaceState(null, '', `#${encodeURIComponent(id)}`);
    document.body.classList.add('reading');
  };
  // Narrow screens show either the list or the conversation: "back" returns to the list.
  const back = h('button', { type: 'button', class: 'btn ghost back', testid: 'back-to-list' }, '← Lists');
  back.addEventListener('click', () => document.body.classList.remove('reading'));
  view.el.prepend(back);

  store.subscribe(() => {
    const waiting = store.list('waiting').length;
    document.title = waiting ? `(${waiting}) Frontdesk console` : 'Frontdesk console';
  });

  setMe(me);
  root.replaceChildren(h('div', { class: 'app', testid: 'console' }, header.el, h('div', { class: 'workspace' }, lists.el, view.el)));

  // Shown at once; loaded again when the socket's welcome says from which frame on it is live.
  void reloadLists();
  void loadTargets();
  api.canned().then((c) => view.setCanned(c), () => {});
  live.start();
  const fromHash = decodeURIComponent(location.hash.slice(1));
  if (fromHash) openConversation(fromHash);
}

void boot();
