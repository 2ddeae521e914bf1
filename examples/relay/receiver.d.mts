// Types for receiver.mjs, so TypeScript callers (the test suite) can use it as it is.
import type http from 'node:http';

export interface RelayMessage {
  id: string;
  to: string;
  from?: string;
  text: string;
  orgId: string;
  attempt: number;
  idempotencyKey: string;
}

export type ForwardResult =
  { messageId: string } | { status: number; error: { code: string; message: string; class?: 'transient' | 'provider' | 'recipient' } };

export function sign(secret: string, timestamp: number | string, rawBody: string): string;
export function verify(
  secret: string,
  headers: http.IncomingHttpHeaders,
  rawBody: string,
  toleranceSeconds?: number,
  now?: number,
): 'ok' | 'stale' | 'bad';
export function logForwarder(write?: (line: string) => void): (msg: RelayMessage) => Promise<ForwardResult>;
export function twilioForwarder(opts: {
  accountSid: string;
  authToken: string;
  from: string;
  baseUrl?: string;
}): (msg: RelayMessage) => Promise<ForwardResult>;
export function createRelayReceiver(opts: {
  signingSecret: string;
  forward: (msg: RelayMessage) => Promise<ForwardResult>;
  toleranceSeconds?: number;
  dedupeMs?: number;
  maxKeys?: number;
  log?: (event: Record<string, unknown>) => void;
}): http.RequestListener;
export function sendReceipt(opts: {
  url: string;
  signingSecret: string;
  messageId: string;
  status: 'sent' | 'delivered' | 'undelivered' | 'failed';
  code?: string;
  at?: Date;
}): Promise<Response>;
