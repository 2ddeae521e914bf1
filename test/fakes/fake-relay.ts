/**
 * A recording relay receiver for the engine suites: it checks our signature the
 * way docs/sms.md tells a receiver to, dedupes on the idempotency key, and
 * answers per the contract. Faults come from faults.ts; `answer` scripts a
 * specific response body (a 4xx with a code and class hint, a 2xx that is not
 * JSON, ...).
 */
import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import type http from 'node:http';
import { FaultSwitch, sendJson, sendText, startTrackedServer, type Fault } from './faults.js';

export interface FakeRelayRequest {
  headers: http.IncomingHttpHeaders;
  raw: string;
  body: Record<string, unknown> | null;
  /** The signature verified under the receiver's secret, within the tolerance. */
  verified: boolean;
}

export interface FakeRelayMessage {
  messageId: string;
  id: string;
  to: string;
  from: string | undefined;
  text: string;
  orgId: string;
  attempt: number;
  idempotencyKey: string;
}

export type RelayAnswer = { status: number; json?: unknown; raw?: string; times?: number };

export interface FakeRelay {
  readonly url: string;
  readonly messages: FakeRelayMessage[];
  readonly log: FakeRelayRequest[];
  readonly secret: string;
  setFault(f: Fault | null): Promise<void>;
  /** The next `times` (default: all) requests get this answer instead of the contract's. */
  answer(a: RelayAnswer | null): void;
  close(): Promise<void>;
}

export const FAKE_RELAY_SECRET = 'fake-relay-signing-secret-0123456789abcdef';

export async function startFakeRelay(opts: { secret?: string; toleranceSeconds?: number } = {}): Promise<FakeRelay> {
  const secret = opts.secret ?? FAKE_RELAY_SECRET;
  const tolerance = opts.toleranceSeconds ?? 300;
  const faults = new FaultSwitch();
  const messages: FakeRelayMessage[] = [];
  const log: FakeRelayRequest[] = [];
  const byKey = new Map<string, FakeRelayMessage>();
  let scripted: RelayAnswer | null = null;
  let scriptedLeft = Infinity;

  const verify = (headers: http.IncomingHttpHeaders, raw: string) => {
    const ts = String(headers['x-relay-timestamp'] ?? '');
    const sig = String(headers['x-relay-signature'] ?? '');
    if (!/^\d+$/.test(ts) || !/^[0-9a-f]{64}$/.test(sig)) return false;
    if (Math.abs(Date.now() / 1000 - Number(ts)) > tolerance) return false;
    const want = createHmac('sha256', secret).update(`${ts}.${raw}`).digest();
    return timingSafeEqual(want, Buffer.from(sig, 'hex'));
  };

  /** The contract's answer to a request; a new message is recorded here. */
  function accept(entry: FakeRelayRequest): { status: number; json: unknown } {
    if (!entry.verified) return { status: 401, json: { code: 'bad_signature', message: 'signature mismatch', class: 'provider' } };
    const b = entry.body;
    if (!b || typeof b.idempotencyKey !== 'string' || typeof b.to !== 'string' || typeof b.text !== 'string') {
      return { status: 400, json: { code: 'bad_request', message: 'missing fields' } };
    }
    const prior = byKey.get(b.idempotencyKey);
    if (prior) return { status: 200, json: { messageId: prior.messageId } };
    const m: FakeRelayMessage = {
      messageId: `rly_${randomUUID()}`,
      id: String(b.id),
      to: b.to,
      from: typeof b.from === 'string' ? b.from : undefined,
      text: b.text,
      orgId: String(b.orgId),
      attempt: Number(b.attempt),
      idempotencyKey: b.idempotencyKey,
    };
    messages.push(m);
    byKey.set(b.idempotencyKey, m);
    return { status: 200, json: { messageId: m.messageId } };
  }

  function respond(res: http.ServerResponse, entry: FakeRelayRequest): void {
    if (scripted) {
      const a = scripted;
      scriptedLeft -= 1;
      if (scriptedLeft <= 0) scripted = null;
      if (a.raw !== undefined) sendText(res, a.status, a.raw, 'text/plain');
      else sendJson(res, a.status, a.json ?? {});
      return;
    }
    const out = accept(entry);
    sendJson(res, out.status, out.json);
  }

  function handle(req: http.IncomingMessage, res: http.ServerResponse, raw: string): void {
    let body: Record<string, unknown> | null;
    try {
      const v: unknown = JSON.parse(raw);
      body = v && typeof v === 'object' ? (v as Record<string, unknown>) : null;
    } catch {
      body = null;
    }
    const entry: FakeRelayRequest = { headers: req.headers, raw, body, verified: verify(req.headers, raw) };
    log.push(entry);
    const fault = faults.take(true);
    if (fault) {
      switch (fault.kind) {
        case 'hang':
          // "Accepted, answer lost": the receiver has it, under its key.
          if (fault.records ?? true) accept(entry);
          return;
        case 'slow':
          server.later(fault.ms, () => respond(res, entry));
          return;
        case 'status':
          sendJson(res, fault.status, {
            code: fault.code === undefined ? 'refused' : String(fault.code),
            message: fault.message ?? 'Injected error',
          });
          return;
        case 'http429':
          sendJson(res, 429, { code: 'rate_limited', message: 'slow down' });
          return;
        case 'http5xx':
          sendJson(res, fault.status ?? 502, { code: 'upstream_failed', message: 'upstream failed' });
          return;
        case 'down':
          break;
      }
    }
    respond(res, entry);
  }

  const server = await startTrackedServer(handle);
  return {
    url: `${server.url}/sms`,
    messages,
    log,
    secret,
    async setFault(f) {
      faults.set(f);
      if (f?.kind === 'down') await server.stop();
      else if (!server.listening) await server.restart();
    },
    answer(a) {
      scripted = a;
      scriptedLeft = a?.times ?? Infinity;
    },
    close: () => server.close(),
  };
}
