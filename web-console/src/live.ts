// The live connection to /ws/console: says hello with the last seq it saw, hands each sequenced
// frame to the app exactly once and in order, reconnects with exponential back-off, and tells the
// app to reload over REST when the server cannot replay what was missed (reset).

import { ApiError } from './api';
import type { Agent, SeqFrame, TypingFrame } from './types';

export type LinkState = 'connecting' | 'online' | 'offline';

export interface LiveHandlers {
  /** A frame with a seq, each once, by increasing seq. */
  frame(frame: SeqFrame): void;
  typing(frame: TypingFrame): void;
  /** What the lists show may be stale: reload them (and the open conversation) over REST. */
  reset(): void;
  welcome(agent: Agent): void;
  state(state: LinkState): void;
  /** The socket closed before a welcome: perhaps the session is gone. */
  refused(): void;
}

const PING_EVERY_MS = 20_000;
// Two missed pongs/pings: the connection is dead even if the browser has not noticed yet.
const SILENCE_LIMIT_MS = 50_000;
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 30_000;

export class LiveSocket {
  private ws: WebSocket | null = null;
  private lastSeq = 0;
  private attempt = 0;
  private welcomed = false;
  private stopped = true;
  private lastHeard = 0;
  private retryTimer: number | undefined;
  private pingTimer: number | undefined;
  private nextRef = 0;
  /** Replies sent over the socket and not answered yet, by their ref. */
  private readonly replies = new Map<string, { resolve: (seq: number) => void; reject: (e: Error) => void }>();
  private readonly wakeUp = () => {
    if (!this.ws && !this.stopped) this.reconnectNow();
  };

  constructor(private readonly on: LiveHandlers) {}

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener('online', this.wakeUp);
    this.open();
  }

  stop(): void {
    this.stopped = true;
    window.removeEventListener('online', this.wakeUp);
    clearTimeout(this.retryTimer);
    this.drop();
    this.on.state('offline');
  }

  /** Sends a client frame if the socket is up; false when it is not (the caller may use REST). */
  send(frame: object): boolean {
    if (!this.ws || !this.welcomed || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /**
   * Sends an agent's reply over the socket (cheaper for the gateway than a request); resolves
   * with its seq once stored. Null when the socket is not up: the caller uses REST instead.
   */
  reply(conversationId: string, text: string): Promise<number> | null {
    const ref = `r${++this.nextRef}`;
    if (!this.send({ type: 'reply', conversation_id: conversationId, text, ref })) return null;
    return new Promise((resolve, reject) => this.replies.set(ref, { resolve, reject }));
  }

  get connected(): boolean {
    return this.welcomed && this.ws?.readyState === WebSocket.OPEN;
  }

  private open(): void {
    this.on.state('connecting');
    const url = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws/console`;
    const ws = new WebSocket(url);
    this.ws = ws;
    this.welcomed = false;
    this.lastHeard = Date.now();
    ws.onopen = () => ws.send(JSON.stringify({ type: 'hello', after: this.lastSeq }));
    ws.onmessage = (e) => {
      if (this.ws === ws && typeof e.data === 'string') this.receive(e.data);
    };
    ws.onclose = () => {
      if (this.ws === ws) this.lost();
    };
  }

  private receive(data: string): void {
    this.lastHeard = Date.now();
    let frame: { type?: string; seq?: unknown } & Record<string, unknown>;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    switch (frame.type) {
      case 'welcome': {
        this.welcomed = true;
        this.attempt = 0;
        this.startPing();
        this.on.state('online');
        this.on.welcome(frame.agent as Agent);
        // A fresh console (after = 0) gets no replay and continues from the welcome's seq, so it
        // (re)loads its state over REST now: anything older is only there. (After a gateway
        // restart our seq is ahead of the server's, which answers with a reset frame.)
        if (this.lastSeq === 0) {
          this.lastSeq = Number(frame.seq) || 0;
          this.on.reset();
        }
        return;
      }
      case 'reset':
        this.lastSeq = Number(frame.seq) || 0;
        this.on.reset();
        return;
      case 'typing':
        this.on.typing(frame as unknown as TypingFrame);
        return;
      case 'pong':
        return;
      case 'sent':
      case 'error': {
        const waiting = typeof frame.ref === 'string' ? this.replies.get(frame.ref) : undefined;
        if (!waiting) return;
        this.replies.delete(frame.ref as string);
        if (frame.type === 'sent') waiting.resolve(Number(frame.seq));
        else waiting.reject(new ApiError(Number(frame.status) || 500, String(frame.code), String(frame.message)));
        return;
      }
      default:
        if (typeof frame.seq !== 'number') return;
        // Replays after a reconnect may repeat what was already handled. Gaps are normal: the seq
        // counts every frame of the gateway, and this agent only gets those it may see.
        if (frame.seq <= this.lastSeq) return;
        this.lastSeq = frame.seq;
        this.on.frame(frame as unknown as SeqFrame);
    }
  }

  private startPing(): void {
    clearInterval(this.pingTimer);
    this.pingTimer = window.setInterval(() => {
      if (Date.now() - this.lastHeard > SILENCE_LIMIT_MS) {
        this.lost();
        return;
      }
      this.send({ type: 'ping' });
    }, PING_EVERY_MS);
  }

  /** Closes the current socket without its handlers firing. */
  private drop(): void {
    clearInterval(this.pingTimer);
    // The gateway may or may not have stored them: say so rather than send them again.
    for (const waiting of this.replies.values()) {
      waiting.reject(new ApiError(0, 'network', 'The connection dropped before the reply was confirmed: check the transcript before sending it again.'));
    }
    this.replies.clear();
    const ws = this.ws;
    this.ws = null;
    this.welcomed = false;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
  }

  private lost(): void {
    const wasWelcomed = this.welcomed;
    this.drop();
    if (this.stopped) return;
    this.on.state('offline');
    if (!wasWelcomed) this.on.refused();
    // 0.5 s doubling to 30 s, with jitter so that many consoles do not come back at once.
    const delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.attempt++;
    clearTimeout(this.retryTimer);
    this.retryTimer = window.setTimeout(() => this.open(), delay);
  }

  private reconnectNow(): void {
    clearTimeout(this.retryTimer);
    this.attempt = 0;
    this.open();
  }
}
