/**
 * A local stand-in for Telnyx Messaging API v2, reachable by the real telnyx SDK
 * through `baseURL: fake.url + '/v2'`.
 */
import { createHash, generateKeyPairSync, randomUUID, sign, type KeyObject } from 'node:crypto';
import type http from 'node:http';
import { FaultSwitch, sendJson, smsSegments, startTrackedServer, type Fault } from './faults.js';
import { ReceiptScheduler, postWebhook, type CallbackResult, type ReceiptPlan, type ReceiptStep } from './receipts.js';

export interface FakeTelnyxMessage {
  id: string;
  apiKey: string;
  to: string;
  from: string;
  body: string;
  status: string;
  dateCreated: Date;
  idempotencyKey: string | undefined;
  messagingProfileId: string | null;
  webhookUrl: string | null;
  errors: Array<{ code: string; title: string }>;
}

export interface TelnyxInbound {
  /** The messaging profile's webhook URL (ours). */
  url: string;
  from: string;
  to: string;
  text: string;
  /** Set as Telnyx does when the profile's autoresponse answered a keyword. */
  autoresponseType?: string;
  messageId?: string;
  /** A redelivery carries the event id of the first delivery. */
  eventId?: string;
  /** Sign with this key instead of the account's (a forgery). */
  privateKey?: KeyObject;
  unsigned?: boolean;
  /** telnyx-timestamp to sign with (unix seconds); default now. */
  timestamp?: number;
}

export interface FakeTelnyxRequest {
  method: string;
  path: string;
  authorization: string | undefined;
  idempotencyKey: string | undefined;
}

export interface FakeTelnyx {
  readonly url: string;
  readonly port: number;
  readonly messages: FakeTelnyxMessage[];
  /** POST /v2/messages requests received, including rejected, replayed and faulted ones. */
  readonly requests: number;
  readonly log: FakeTelnyxRequest[];
  setFault(f: Fault | null): Promise<void>;
  addApiKey(key: string): void;
  /** A messaging profile of one API key (the default key unless given); adding it again updates it. */
  addMessagingProfile(id: string, opts?: { apiKey?: string; enabled?: boolean }): void;
  /** The account's webhook public key, as the Telnyx portal shows it (base64 of 32 raw bytes). */
  readonly publicKey: string;
  /** How message.sent / message.finalized go from now on, for every message or those to one phone. */
  setReceipts(plan: ReceiptPlan, to?: string): void;
  readonly callbacks: CallbackResult[];
  callbacksSettled(): Promise<void>;
  /** A patient's text to one of the account's numbers, as a signed message.received event. */
  sendInbound(t: TelnyxInbound): Promise<{ status: number; body: string; eventId: string; messageId: string }>;
  /** Signs a body as Telnyx does: Ed25519 over `${timestamp}|${body}`. */
  signEvent(body: string, opts?: { timestamp?: number; privateKey?: KeyObject }): Record<string, string>;
  stop(): Promise<void>;
  restart(): Promise<void>;
  close(): Promise<void>;
}

export const DEFAULT_TELNYX_API_KEY = 'KEY_fake_telnyx_0123456789';

type TelnyxError = { status: number; code: string; title: string; detail: string };

const MAGIC_TO: Record<string, Omit<TelnyxError, 'detail'>> = {
  '+15005550001': { status: 400, code: '40310', title: "Invalid 'to' address" },
  '+15005550002': { status: 400, code: '40301', title: "Unsupported message type for 'to' address" },
  '+15005550003': { status: 400, code: '40309', title: 'Invalid destination region' },
  '+15005550004': { status: 400, code: '40300', title: 'Blocked due to STOP message' },
  '+15005550009': { status: 400, code: '40001', title: 'Not routable' },
};
const MAGIC_FROM: Record<string, Omit<TelnyxError, 'detail'>> = {
  '+15005550001': { status: 400, code: '40305', title: "Invalid 'from' address" },
  '+15005550007': { status: 400, code: '40013', title: 'Invalid source number' },
  '+15005550008': { status: 400, code: '40318', title: 'Message queue full' },
};

const E164 = /^\+[1-9]\d{6,14}$/;
const IDEMPOTENCY_KEY = /^[A-Za-z0-9_:-]{1,255}$/;

function errorBody(e: TelnyxError) {
  return { errors: [{ code: e.code, title: e.title, detail: e.detail }] };
}

function toWire(m: FakeTelnyxMessage) {
  const { segments, encoding } = smsSegments(m.body);
  return {
    record_type: 'message',
    direction: 'outbound',
    id: m.id,
    type: 'SMS',
    messaging_profile_id: m.messagingProfileId,
    organization_id: 'b0c1d2e3-0000-4000-8000-000000000000',
    from: { phone_number: m.from, carrier: 'Telnyx', line_type: 'Wireless' },
    to: [{ phone_number: m.to, status: m.status, carrier: 'T-MOBILE USA, INC.', line_type: 'Wireless' }],
    cc: [],
    text: m.body,
    media: [],
    webhook_url: m.webhookUrl,
    webhook_failover_url: null,
    encoding,
    parts: segments,
    tags: [],
    cost: null,
    received_at: m.dateCreated.toISOString(),
    sent_at: null,
    completed_at: null,
    valid_until: new Date(m.dateCreated.getTime() + 4 * 3_600_000).toISOString(),
    errors: m.errors,
  };
}

/** The webhook key pair of the fake account: Telnyx keeps the private half, the clinic pastes the public one. */
function newKeyPair(): { publicKey: string; privateKey: KeyObject } {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const x = (publicKey.export({ format: 'jwk' }) as { x: string }).x;
  return { publicKey: Buffer.from(x, 'base64url').toString('base64'), privateKey };
}

export function telnyxSignature(body: string, timestamp: number, privateKey: KeyObject): Record<string, string> {
  return {
    'telnyx-signature-ed25519': sign(null, Buffer.from(`${timestamp}|${body}`, 'utf8'), privateKey).toString('base64'),
    'telnyx-timestamp': String(timestamp),
  };
}

export async function startFakeTelnyx(opts: { port?: number; apiKeys?: string[] } = {}): Promise<FakeTelnyx> {
  const keys = new Set(opts.apiKeys ?? [DEFAULT_TELNYX_API_KEY]);
  const faults = new FaultSwitch();
  const profiles = new Map<string, { apiKey: string; enabled: boolean }>();
  const messages: FakeTelnyxMessage[] = [];
  const log: FakeTelnyxRequest[] = [];
  // Scope is org + method + path; one org per API key is close enough here.
  const idempotent = new Map<string, { bodyHash: string; response: unknown }>();
  let requests = 0;
  const keyPair = newKeyPair();
  const receipts = new ReceiptScheduler();
  const nowSeconds = () => Math.floor(Date.now() / 1000);
  const signEvent = (body: string, o: { timestamp?: number; privateKey?: KeyObject } = {}) => ({
    'content-type': 'application/json',
    'user-agent': 'telnyx-webhooks',
    ...telnyxSignature(body, o.timestamp ?? nowSeconds(), o.privateKey ?? keyPair.privateKey),
  });

  /** A status of ours in Telnyx's event words: message.sent, then message.finalized with the final status. */
  function eventOf(m: FakeTelnyxMessage, st: ReceiptStep) {
    const final = st.status !== 'sent' && st.status !== 'sending' && st.status !== 'queued';
    return {
      data: {
        record_type: 'event',
        id: randomUUID(),
        event_type: final ? 'message.finalized' : 'message.sent',
        occurred_at: new Date().toISOString(),
        payload: { ...toWire(m), to: [{ phone_number: m.to, status: st.status, carrier: 'T-MOBILE USA, INC.', line_type: 'Wireless' }] },
      },
      meta: { attempt: 1, delivered_to: m.webhookUrl },
    };
  }

  /** Takes a valid message: stored, then its status moves and is reported as the receipt plan says. */
  function track(m: FakeTelnyxMessage): void {
    // One event per step, made once: a retried delivery is the same event (same id), signed anew.
    const events = new Map<ReceiptStep, ReturnType<typeof eventOf>>();
    receipts.schedule(
      { id: m.id, to: m.to },
      m.webhookUrl,
      (st) => {
        m.status = st.status;
        if (st.code !== undefined) m.errors = [{ code: String(st.code), title: 'Delivery failed' }];
        events.set(st, eventOf(m, st));
      },
      async (st, attempt) => {
        const ev = events.get(st) ?? eventOf(m, st);
        events.set(st, ev);
        const body = JSON.stringify({ ...ev, meta: { ...ev.meta, attempt } });
        return (await postWebhook(m.webhookUrl!, signEvent(body), body)).status;
      },
    );
  }

  type Parsed = { apiKey: string; key: string | undefined; body: Record<string, unknown> | null; raw: string };

  function validateSend(p: Parsed): FakeTelnyxMessage | TelnyxError {
    const b = p.body;
    if (!b) return { status: 400, code: '10015', title: 'Bad Request', detail: 'The request body is not valid JSON.' };
    const to = typeof b.to === 'string' ? b.to : '';
    const from = typeof b.from === 'string' ? b.from : '';
    const text = typeof b.text === 'string' ? b.text : '';
    if (!to) return { status: 400, code: '10004', title: 'Missing required parameter', detail: "The 'to' parameter is required." };
    if (!from && typeof b.messaging_profile_id !== 'string') {
      return { status: 400, code: '10004', title: 'Missing required parameter', detail: "The 'from' parameter is required." };
    }
    if (!text) return { status: 400, code: '40316', title: 'No content', detail: 'The message has no text or media.' };
    const magic = MAGIC_TO[to] ?? MAGIC_FROM[from];
    if (magic) return { ...magic, detail: `Messages cannot be sent from '${from}' to '${to}'.` };
    if (!E164.test(to)) return { status: 400, code: '40310', title: "Invalid 'to' address", detail: `'${to}' is not a valid address.` };
    return {
      id: randomUUID(),
      apiKey: p.apiKey,
      to,
      from,
      body: text,
      status: 'queued',
      dateCreated: new Date(),
      idempotencyKey: p.key,
      messagingProfileId: typeof b.messaging_profile_id === 'string' ? b.messaging_profile_id : null,
      webhookUrl: typeof b.webhook_url === 'string' ? b.webhook_url : null,
      errors: [],
    };
  }

  /** Accepts a valid send, remembering the success for idempotent replay. */
  function accept(p: Parsed, m: FakeTelnyxMessage): unknown {
    messages.push(m);
    track(m);
    const response = { data: toWire(m) };
    if (p.key) idempotent.set(`${p.apiKey}\u0000${p.key}`, { bodyHash: sha(p.raw), response });
    return response;
  }

  function handle(req: http.IncomingMessage, res: http.ServerResponse, raw: string): void {
    const url = new URL(req.url ?? '/', 'http://fake');
    const headerKey = req.headers['idempotency-key'];
    const key = Array.isArray(headerKey) ? headerKey[0] : headerKey;
    log.push({ method: req.method ?? '', path: url.pathname, authorization: req.headers.authorization, idempotencyKey: key });
    const isSend = req.method === 'POST' && url.pathname === '/v2/messages';
    if (isSend) requests += 1;
    const isProbe = req.method === 'GET' && /^\/v2\/messaging_profiles(\/|$)/.test(url.pathname);

    const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1];
    const authed = bearer !== undefined && keys.has(bearer);
    let body: Record<string, unknown> | null;
    try {
      const v: unknown = raw ? JSON.parse(raw) : null;
      body = v && typeof v === 'object' ? (v as Record<string, unknown>) : null;
    } catch {
      body = null;
    }
    const p: Parsed = { apiKey: bearer ?? '', key, body, raw };

    const fault = faults.take(isSend, isProbe);
    if (fault) {
      switch (fault.kind) {
        case 'hang':
          // Taken, unless this idempotency key already was: Telnyx would not send it twice.
          if (isSend && authed && (fault.records ?? true) && !(p.key && idempotent.has(`${p.apiKey}\u0000${p.key}`))) {
            const m = validateSend(p);
            if ('id' in m) accept(p, m);
          }
          return;
        case 'reset':
          // Taken, unless this idempotency key already was: Telnyx would not send it twice.
          if (isSend && authed && (fault.records ?? true) && !(p.key && idempotent.has(`${p.apiKey}\u0000${p.key}`))) {
            const m = validateSend(p);
            if ('id' in m) accept(p, m);
          }
          req.socket.destroy();
          return;
        case 'slow':
          server.later(fault.ms, () => respond(req, res, url, p, authed));
          return;
        case 'status':
          sendJson(
            res,
            fault.status,
            errorBody({
              status: fault.status,
              code: fault.code === undefined ? '10015' : String(fault.code),
              title: fault.message ?? 'Injected error',
              detail: fault.message ?? 'Injected error',
            }),
          );
          return;
        case 'http429':
          sendJson(res, 429, errorBody({ status: 429, code: '10011', title: 'Too many requests', detail: 'Rate limit exceeded.' }));
          return;
        case 'http5xx':
          sendJson(
            res,
            fault.status ?? 500,
            errorBody({ status: fault.status ?? 500, code: '10007', title: 'Unexpected error', detail: 'An unexpected error occurred.' }),
          );
          return;
        case 'down':
          break;
      }
    }
    respond(req, res, url, p, authed);
  }

  function respond(req: http.IncomingMessage, res: http.ServerResponse, url: URL, p: Parsed, authed: boolean): void {
    if (!authed) {
      sendJson(
        res,
        401,
        errorBody({ status: 401, code: '10009', title: 'Authentication failed', detail: 'Could not understand the provided credentials.' }),
      );
      return;
    }
    if (req.method === 'POST' && url.pathname === '/v2/messages') {
      if (p.key !== undefined && !IDEMPOTENCY_KEY.test(p.key)) {
        sendJson(res, 400, errorBody({ status: 400, code: '10015', title: 'Bad Request', detail: 'Invalid Idempotency-Key.' }));
        return;
      }
      const prior = p.key ? idempotent.get(`${p.apiKey}\u0000${p.key}`) : undefined;
      if (prior) {
        if (prior.bodyHash === sha(p.raw)) sendJson(res, 200, prior.response);
        else {
          sendJson(
            res,
            422,
            errorBody({
              status: 422,
              code: '10015',
              title: 'Idempotency key reused',
              detail: 'The Idempotency-Key was already used with a different request body.',
            }),
          );
        }
        return;
      }
      const m = validateSend(p);
      if (!('id' in m)) {
        sendJson(res, m.status, errorBody(m));
        return;
      }
      sendJson(res, 200, accept(p, m));
      return;
    }
    if (req.method === 'GET' && url.pathname === '/v2/messaging_profiles') {
      const size = Math.min(Number(url.searchParams.get('page[size]') ?? 20) || 20, 250);
      const mine = [...profiles].filter(([, prof]) => prof.apiKey === p.apiKey);
      sendJson(res, 200, {
        data: mine.slice(0, size).map(([id, prof]) => profileWire(id, prof.enabled)),
        meta: { page_number: 1, page_size: size, total_pages: Math.max(1, Math.ceil(mine.length / size)), total_results: mine.length },
      });
      return;
    }
    const profileId = /^\/v2\/messaging_profiles\/([^/]+)$/.exec(url.pathname)?.[1];
    if (req.method === 'GET' && profileId) {
      const id = decodeURIComponent(profileId);
      const prof = profiles.get(id);
      if (prof && prof.apiKey === p.apiKey) sendJson(res, 200, { data: profileWire(id, prof.enabled) });
      else
        sendJson(
          res,
          404,
          errorBody({
            status: 404,
            code: '10005',
            title: 'Resource not found',
            detail: 'The requested resource or URL could not be found.',
          }),
        );
      return;
    }
    const one = /^\/v2\/messages\/([0-9a-f-]{36})$/.exec(url.pathname);
    if (req.method === 'GET' && one) {
      const m = messages.find((x) => x.id === one[1] && x.apiKey === p.apiKey);
      if (m) sendJson(res, 200, { data: toWire(m) });
      else
        sendJson(
          res,
          404,
          errorBody({
            status: 404,
            code: '10005',
            title: 'Resource not found',
            detail: 'The requested resource or URL could not be found.',
          }),
        );
      return;
    }
    sendJson(
      res,
      404,
      errorBody({ status: 404, code: '10005', title: 'Resource not found', detail: 'The requested resource or URL could not be found.' }),
    );
  }

  const server = await startTrackedServer(handle, opts.port);

  return {
    url: server.url,
    port: server.port,
    messages,
    log,
    get requests() {
      return requests;
    },
    async setFault(f) {
      faults.set(f);
      if (f?.kind === 'down') await server.stop();
      else if (!server.listening) await server.restart();
    },
    addApiKey(k) {
      keys.add(k);
    },
    addMessagingProfile(id, o = {}) {
      profiles.set(id, { apiKey: o.apiKey ?? DEFAULT_TELNYX_API_KEY, enabled: o.enabled ?? true });
    },
    publicKey: keyPair.publicKey,
    setReceipts: (plan, to) => receipts.setPlan(plan, to),
    callbacks: receipts.results,
    callbacksSettled: () => receipts.settle(),
    signEvent,
    async sendInbound(t) {
      const messageId = t.messageId ?? randomUUID();
      const eventId = t.eventId ?? randomUUID();
      const body = JSON.stringify({
        data: {
          record_type: 'event',
          id: eventId,
          event_type: 'message.received',
          occurred_at: new Date().toISOString(),
          payload: {
            record_type: 'message',
            direction: 'inbound',
            id: messageId,
            type: 'SMS',
            messaging_profile_id: '400176f1-0000-4000-8000-000000000000',
            from: { phone_number: t.from, carrier: 'T-Mobile USA', line_type: 'Wireless' },
            to: [{ phone_number: t.to, status: 'webhook_delivered', carrier: 'Telnyx', line_type: 'Wireless' }],
            text: t.text,
            media: [],
            encoding: 'GSM-7',
            parts: 1,
            received_at: new Date().toISOString(),
            errors: [],
            ...(t.autoresponseType ? { autoresponse_type: t.autoresponseType } : {}),
          },
        },
        meta: { attempt: 1, delivered_to: t.url },
      });
      const headers = t.unsigned
        ? { 'content-type': 'application/json' }
        : signEvent(body, {
            ...(t.timestamp !== undefined ? { timestamp: t.timestamp } : {}),
            ...(t.privateKey ? { privateKey: t.privateKey } : {}),
          });
      const res = await postWebhook(t.url, headers, body);
      return { status: res.status, body: res.body, eventId, messageId };
    },
    stop: () => server.stop(),
    async restart() {
      if (faults.active?.kind === 'down') faults.set(null);
      await server.restart();
    },
    async close() {
      await receipts.close();
      await server.close();
    },
  };
}

function profileWire(id: string, enabled: boolean) {
  const at = new Date(Date.UTC(2024, 0, 2, 3, 4, 5)).toISOString();
  return {
    record_type: 'messaging_profile',
    id,
    name: `Fake profile ${id.slice(0, 8)}`,
    enabled,
    webhook_url: null,
    created_at: at,
    updated_at: at,
  };
}

function sha(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}
