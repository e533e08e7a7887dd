// Human-readable times, scores and names.

import type { Author } from './types';

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

/** "14:05" today, "Nov 21, 14:05" on another day. */
export function clock(ms: number): string {
  const d = new Date(ms);
  return d.toDateString() === new Date().toDateString() ? timeFormat.format(d) : dateTimeFormat.format(d);
}

export function fullTime(ms: number): string {
  return fullFormat.format(new Date(ms));
}

/** A compact duration since `ms`: "now", "4m", "1h 20m", "3d". */
export function since(ms: number, now = Date.now()): string {
  const minutes = Math.floor(Math.max(0, now - ms) / 60_000);
  if (minutes < 1) return 'now';
  if (minutes < 60) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return minutes % 60 ? `${hours}h ${minutes % 60}m` : `${hours}h`;
  return `${Math.floor(hours / 24)}d`;
}

/** 0.934 -> "93%". */
export function percent(x: number): string {
  return `${Math.round(x * 100)}%`;
}

/** 0.934 -> "0.93". */
export function score(x: number): string {
  return x.toFixed(2);
}

export function contactName(name: string | null | undefined): string {
  return name && name.trim() ? name : 'Visitor';
}

export function authorLabel(author: Author, agentName?: string | null): string {
  switch (author) {
    case 'customer':
      return 'Customer';
    case 'bot':
      return 'Bot';
    case 'agent':
      return agentName || 'Agent';
    default:
      return 'System';
  }
}
