// The shapes of the console API (docs/console-api.md). Only what the console reads is typed strictly;
// everything the server may add is tolerated.

export type Role = 'agent' | 'admin';
export type AgentStatus = 'online' | 'away' | 'offline';

export interface Agent {
  id: string;
  email: string;
  name: string;
  role: Role;
  languages: string[];
  teams: string[];
  capacity: number;
  status: AgentStatus;
  load: number;
}

export type ConversationStatus = 'bot' | 'queued' | 'assigned' | 'resolved';
export type Author = 'customer' | 'bot' | 'agent' | 'system';

export interface Scored {
  label: string;
  score: number;
}

export interface Summary {
  id: string;
  channel: string;
  channel_kind: string;
  status: ConversationStatus;
  assignee: { id: string; name: string } | null;
  team: string | null;
  language: string | null;
  priority: number;
  queued_at_ms: number | null;
  last_message_at_ms: number | null;
  contact: { id: string; name: string | null; email: string | null };
  last_message: { seq: number; author: Author; text: string; created_at_ms: number } | null;
  emotion: Scored | null;
  handoff_reason: string | null;
  rating: number | null;
}

export interface Annotations {
  language?: { code: string; confidence: number };
  intent?: { name: string; confidence: number; out_of_scope?: boolean; team?: string | null };
  sentiment?: Scored;
  emotion?: Scored;
}

export interface Message {
  seq: number;
  author: Author;
  text: string;
  created_at_ms: number;
  metadata?: { agent?: { id: string; name: string } } & Record<string, unknown>;
  quick_replies?: { title: string; payload: string }[];
  annotations?: Annotations | null;
}

export interface ConversationEvent {
  kind: 'status' | 'note' | 'rating' | string;
  from_status: ConversationStatus | null;
  to_status: ConversationStatus | null;
  actor: string | null;
  reason: string | null;
  details: Record<string, unknown> | null;
  created_at_ms: number;
}

export interface ConversationDetail {
  conversation: Summary;
  messages: Message[];
  events: ConversationEvent[];
}

export interface Suggestion {
  article_id: string;
  title: string;
  text: string;
  score: number;
}

export interface Canned {
  id: string;
  title: string;
  text: string;
  language: string | null;
}

// Frames of /ws/console.
export type SeqFrame =
  | { type: 'conversation'; seq: number; conversation: Summary }
  | { type: 'message'; seq: number; conversation_id: string; message: Message }
  | { type: 'event'; seq: number; conversation_id: string; event: ConversationEvent }
  | { type: 'agent'; seq: number; agent: Agent };

export interface TypingFrame {
  type: 'typing';
  conversation_id: string;
  typing: boolean;
}
