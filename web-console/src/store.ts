// The conversations the console knows about, and which of the three lists each belongs in. Live
// `conversation` frames carry the whole Summary, so the newest frame of a conversation is its state;
// a `message` frame alone (the server sends no summary when only messages were added) moves its
// last message, last activity and, for a customer's message, its emotion.

import type { Agent, Message, Summary } from './types';

/** A change held while a REST reload runs. */
type Held = { summary: Summary } | { conversationId: string; message: Message };

export type ListView = 'waiting' | 'mine' | 'open';
export const LIST_VIEWS: ListView[] = ['waiting', 'mine', 'open'];

export class ConversationStore {
  private readonly byId = new Map<string, Summary>();
  private readonly listeners = new Set<() => void>();
  // While a REST reload runs, frames are held here and applied on top of its answer: the answer may
  // predate them, and applying them in order afterwards leaves each conversation at its newest state.
  private held: Held[] | null = null;
  private generation = 0;

  constructor(private readonly me: () => Agent) {}

  subscribe(listener: () => void): void {
    this.listeners.add(listener);
  }

  get(id: string): Summary | undefined {
    return this.byId.get(id);
  }

  /** Replaces everything with what `load` answers (the REST views), keeping frames that arrive meanwhile. */
  async reload(load: () => Promise<Summary[]>): Promise<void> {
    const generation = ++this.generation;
    this.held ??= [];
    let loaded: Summary[] | null = null;
    try {
      loaded = await load();
    } finally {
      // A newer reload started meanwhile: it owns the held frames and will apply them.
      if (generation === this.generation) {
        if (loaded) {
          this.byId.clear();
          for (const s of loaded) this.byId.set(s.id, s);
        }
        const held = this.held ?? [];
        this.held = null;
        for (const change of held) {
          if ('summary' in change) this.put(change.summary);
          else this.putMessage(change.conversationId, change.message);
        }
        this.emit();
      }
    }
  }

  upsert(summary: Summary): void {
    if (this.held) {
      this.held.push({ summary });
      return;
    }
    this.put(summary);
    this.emit();
  }

  /** A new message of a conversation: its row shows it as the server's summary would. */
  message(conversationId: string, message: Message): void {
    if (this.held) {
      this.held.push({ conversationId, message });
      return;
    }
    if (this.putMessage(conversationId, message)) this.emit();
  }

  /** The conversations of one list, in the order the list shows them. */
  list(view: ListView): Summary[] {
    const me = this.me();
    const rows = [...this.byId.values()].filter((s) => belongsIn(s, view, me));
    if (view === 'waiting') {
      // As the server's waiting view: highest priority first, then the longest waiting.
      rows.sort((a, b) => b.priority - a.priority || (a.queued_at_ms ?? 0) - (b.queued_at_ms ?? 0));
    } else if (view === 'open') {
      rows.sort((a, b) => b.priority - a.priority || activity(b) - activity(a));
    } else {
      rows.sort((a, b) => activity(b) - activity(a));
    }
    return rows;
  }

  private put(summary: Summary): void {
    if (summary.status === 'resolved') this.byId.delete(summary.id);
    else this.byId.set(summary.id, summary);
  }

  /** False when nothing changed (an unknown conversation, or a message older than its last). */
  private putMessage(conversationId: string, m: Message): boolean {
    const s = this.byId.get(conversationId);
    if (!s || (s.last_message && s.last_message.seq >= m.seq)) return false;
    this.byId.set(conversationId, {
      ...s,
      last_message: { seq: m.seq, author: m.author, text: m.text, created_at_ms: m.created_at_ms },
      last_message_at_ms: m.created_at_ms,
      // As the server's summary: the emotion of the last customer message, if it has one.
      emotion: m.author === 'customer' ? (m.annotations?.emotion ?? null) : s.emotion,
    });
    return true;
  }

  private emit(): void {
    for (const listener of this.listeners) listener();
  }
}

/** Mirrors the server's views: waiting = queued; mine = assigned to me; open = not resolved; each
 * among what the agent may see. */
export function belongsIn(s: Summary, view: ListView, me: Agent): boolean {
  if (!maySee(s, me)) return false;
  switch (view) {
    case 'waiting':
      return s.status === 'queued';
    case 'mine':
      return s.status === 'assigned' && s.assignee?.id === me.id;
    case 'open':
      return s.status !== 'resolved';
  }
}

/** As the server decides (desk::may_see): an admin sees everything; an agent its own conversations
 * and those of its teams (or of no team; an agent without teams sees every team's). The feed also
 * sends the last frame of a conversation to the agent who just gave it away (say, transferred it
 * to another team): that frame must drop it from the lists here. */
export function maySee(s: Summary, me: Agent): boolean {
  return me.role === 'admin' || s.assignee?.id === me.id || s.team == null || me.teams.length === 0 || me.teams.includes(s.team);
}

function activity(s: Summary): number {
  return s.last_message_at_ms ?? s.queued_at_ms ?? 0;
}
