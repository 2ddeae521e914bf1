/**
 * A local stand-in for the Twilio Messages API (2010-04-01), close enough to the
 * wire format that the real twilio-node SDK can talk to it via `client.api.baseUrl`.
 */
import { createHmac, randomBytes } from 'node:crypto';
import type http from 'node:http';
import { FaultSwitch, sendJson, sendText, smsSegments, startTrackedServer, type Fault } from './faults.js';
import { ReceiptScheduler, postWebhook, type CallbackResult, type ReceiptPlan, type ReceiptStep } from './receipts.js';

export interface TwilioAccount {
  sid: string;
  token: string;
}

export interface FakeTwilioMessage {
  sid: string;
  accountSid: string;
  to: string;
  from: string;
  body: string;
  status: string;
  dateCreated: Date;
  /** The StatusCallback the send named. */
  statusCallback: string | null;
  errorCode: number | null;
}

export interface InboundText {
  /** Our inbound webhook URL (the number's "A message comes in"). */
  url: string;
  from: string;
  to: string;
  body: string;
  accountSid?: string;
  /** Set as Twilio does when the number's Messaging Service has Advanced Opt-Out. */
  optOutType?: 'STOP' | 'START' | 'HELP';
  messageSid?: string;
  /** Sign with this token instead of the account's (a forgery). */
  token?: string;
  /** Send no signature at all. */
  unsigned?: boolean;
}

export interface FakeTwilioRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  authorization: string | undefined;
}

export interface FakeTwilio {
  readonly url: string;
  readonly port: number;
  readonly messages: FakeTwilioMessage[];
  /** Create (POST) requests received, including rejected and faulted ones. */
  readonly requests: number;
  /** Every request as seen on the wire, for header/query assertions. */
  readonly log: FakeTwilioRequest[];
  setFault(f: Fault | null): Promise<void>;
  addAccount(sid: string, token: string): void;
  /** What a fetch of the account (the health probe) reports; `active` unless set. */
  setAccountStatus(sid: string, status: 'active' | 'suspended' | 'closed'): void;
  /** How status callbacks go from now on, for every message or those to one phone. */
  setReceipts(plan: ReceiptPlan, to?: string): void;
  /** Every status callback delivered, with our server's answer. */
  readonly callbacks: CallbackResult[];
  /** Waits until every callback already on its way was answered. */
  callbacksSettled(): Promise<void>;
  /** A patient's text to one of the account's numbers, POSTed to our inbound URL as Twilio does. */
  sendInbound(t: InboundText): Promise<{ status: number; body: string; contentType: string; messageSid: string }>;
  stop(): Promise<void>;
  restart(): Promise<void>;
  close(): Promise<void>;
}

export const DEFAULT_TWILIO_ACCOUNT: TwilioAccount = {
  sid: 'AC' + 'a1'.repeat(16),
  token: 'fake-twilio-auth-token',
};

type TwilioError = { status: number; code: number; message: string };

// Twilio's documented test-credential magic numbers.
const MAGIC_TO: Record<string, TwilioError> = {
  '+15005550001': { status: 400, code: 21211, message: "The 'To' number +15005550001 is not a valid phone number." },
  '+15005550002': { status: 400, code: 21612, message: "The 'To' phone number is not currently reachable via SMS." },
  '+15005550003': {
    status: 400,
    code: 21408,
    message: "Permission to send an SMS has not been enabled for the region indicated by the 'To' number.",
  },
  '+15005550004': { status: 400, code: 21610, message: 'Attempt to send to unsubscribed recipient' },
  '+15005550009': { status: 400, code: 21614, message: "'To' number is not a valid mobile number" },
};
const MAGIC_FROM: Record<string, TwilioError> = {
  '+15005550001': {
    status: 400,
    code: 21212,
    message: "The 'From' number +15005550001 is not a valid phone number, shortcode, or alphanumeric sender ID.",
  },
  '+15005550007': {
    status: 400,
    code: 21606,
    message: "The 'From' phone number provided is not a valid message-capable Twilio phone number for this destination/account.",
  },
  '+15005550008': { status: 400, code: 21611, message: "This 'From' number has exceeded the maximum number of queued messages." },
};

const E164 = /^\+[1-9]\d{6,14}$/;
const API_PREFIX = '/2010-04-01/Accounts/';
const ACCOUNT_ROUTE = /^\/2010-04-01\/Accounts\/([^/]+)\.json$/;

function rfc2822(d: Date): string {
  return d.toUTCString().replace('GMT', '+0000');
}

/**
 * X-Twilio-Signature, computed here from Twilio's published algorithm (not by
 * the SDK the server verifies with): base64 HMAC-SHA1, keyed by the auth
 * token, over the full URL followed by every POST field, sorted by name, as
 * name + value.
 */
export function twilioSignature(token: string, url: string, params: Record<string, string>): string {
  const data = Object.keys(params)
    .sort()
    .reduce((acc, k) => acc + k + params[k], url);
  return createHmac('sha1', token).update(Buffer.from(data, 'utf8')).digest('base64');
}

/** A form POST as Twilio sends a webhook, signed with `token`. */
export function signedTwilioPost(url: string, params: Record<string, string>, token: string | null) {
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', 'user-agent': 'TwilioProxy/1.1' };
  if (token !== null) headers['x-twilio-signature'] = twilioSignature(token, url, params);
  return { headers, body: new URLSearchParams(params).toString() };
}

function errorBody(e: TwilioError) {
  return { code: e.code, message: e.message, more_info: `https://www.twilio.com/docs/errors/${e.code}`, status: e.status };
}

function toWire(m: FakeTwilioMessage) {
  const { segments } = smsSegments(m.body);
  const uri = `${API_PREFIX}${m.accountSid}/Messages/${m.sid}.json`;
  return {
    account_sid: m.accountSid,
    api_version: '2010-04-01',
    body: m.body,
    date_created: rfc2822(m.dateCreated),
    date_sent: null,
    date_updated: rfc2822(m.dateCreated),
    direction: 'outbound-api',
    error_code: m.errorCode,
    error_message: m.errorCode ? `Error ${m.errorCode}` : null,
    from: m.from,
    messaging_service_sid: null,
    num_media: '0',
    num_segments: String(segments),
    price: null,
    price_unit: 'USD',
    sid: m.sid,
    status: m.status,
    subresource_uris: { media: uri.replace('.json', '/Media.json') },
    to: m.to,
    uri,
  };
}

/** GET /Accounts/{Sid}.json as Twilio answers it, minus the auth token it also echoes. */
function accountWire(sid: string, status: string) {
  const created = rfc2822(new Date(Date.UTC(2024, 0, 2, 3, 4, 5)));
  return {
    date_created: created,
    date_updated: created,
    friendly_name: `Fake account ${sid.slice(-4)}`,
    owner_account_sid: sid,
    sid,
    status,
    subresource_uris: { messages: `${API_PREFIX}${sid}/Messages.json` },
    type: 'Full',
    uri: `${API_PREFIX}${sid}.json`,
  };
}

function parseBasic(header: string | undefined): TwilioAccount | null {
  const m = /^Basic\s+(\S+)$/i.exec(header ?? '');
  if (!m?.[1]) return null;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  return i < 0 ? null : { sid: decoded.slice(0, i), token: decoded.slice(i + 1) };
}

/**
 * Twilio documents DateSent filters at day granularity ("on or after midnight"),
 * so only the date part of `DateSent>` is honoured; callers must filter finer.
 */
function dayStart(value: string): number {
  const t = Date.parse(value.length === 10 ? `${value}T00:00:00Z` : value);
  if (Number.isNaN(t)) return NaN;
  const d = new Date(t);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
}

export async function startFakeTwilio(opts: { port?: number; accounts?: TwilioAccount[] } = {}): Promise<FakeTwilio> {
  const accounts = new Map<string, string>();
  for (const a of opts.accounts ?? [DEFAULT_TWILIO_ACCOUNT]) accounts.set(a.sid, a.token);
  const statuses = new Map<string, string>();
  const faults = new FaultSwitch();
  const messages: FakeTwilioMessage[] = [];
  const log: FakeTwilioRequest[] = [];
  const receipts = new ReceiptScheduler();
  let requests = 0;

  /** Takes a valid message: stored, then its status moves and is reported as the receipt plan says. */
  function accept(m: FakeTwilioMessage): void {
    messages.push(m);
    receipts.schedule(
      { id: m.sid, to: m.to },
      m.statusCallback,
      (st: ReceiptStep) => {
        m.status = st.status;
        m.errorCode = st.code === undefined ? m.errorCode : Number(st.code);
      },
      async (st: ReceiptStep) => {
        const params: Record<string, string> = {
          ApiVersion: '2010-04-01',
          AccountSid: m.accountSid,
          MessageSid: m.sid,
          SmsSid: m.sid,
          MessageStatus: st.status,
          SmsStatus: st.status,
          From: m.from,
          To: m.to,
          ...(st.code !== undefined ? { ErrorCode: String(st.code) } : {}),
        };
        const token = accounts.get(m.accountSid) ?? '';
        const { headers, body } = signedTwilioPost(m.statusCallback!, params, token);
        return (await postWebhook(m.statusCallback!, headers, body)).status;
      },
    );
  }

  /** Validates a create request; returns the message it would accept or the error Twilio would send. */
  function validateCreate(accountSid: string, form: URLSearchParams): FakeTwilioMessage | TwilioError {
    const to = form.get('To');
    const from = form.get('From');
    const body = form.get('Body');
    if (!to) return { status: 400, code: 21604, message: "A 'To' phone number is required." };
    if (!from) return { status: 400, code: 21603, message: "A 'From' phone number is required." };
    if (!body) return { status: 400, code: 21602, message: 'Message body is required.' };
    const magic = MAGIC_TO[to] ?? MAGIC_FROM[from];
    if (magic) return magic;
    if (!E164.test(to)) return { status: 400, code: 21211, message: `The 'To' number ${to} is not a valid phone number.` };
    return {
      sid: 'SM' + randomBytes(16).toString('hex'),
      accountSid,
      to,
      from,
      body,
      status: 'queued',
      dateCreated: new Date(),
      statusCallback: form.get('StatusCallback'),
      errorCode: null,
    };
  }

  function handle(req: http.IncomingMessage, res: http.ServerResponse, raw: string): void {
    const url = new URL(req.url ?? '/', 'http://fake');
    log.push({ method: req.method ?? '', path: url.pathname, query: url.searchParams, authorization: req.headers.authorization });
    const one = /^\/2010-04-01\/Accounts\/([^/]+)\/Messages\/(SM[0-9a-f]{32})\.json$/.exec(url.pathname);
    const list = /^\/2010-04-01\/Accounts\/([^/]+)\/Messages\.json$/.exec(url.pathname);
    const route = list ?? one;
    const isCreate = req.method === 'POST' && list !== null;
    if (isCreate) requests += 1;
    const isProbe = req.method === 'GET' && ACCOUNT_ROUTE.test(url.pathname);

    const fault = faults.take(isCreate, isProbe);
    const creds = parseBasic(req.headers.authorization);
    const authed = creds !== null && accounts.get(creds.sid) === creds.token;

    if (fault) {
      switch (fault.kind) {
        case 'hang':
          if (isCreate && authed && (fault.records ?? true) && route?.[1] === creds?.sid) {
            const m = validateCreate(route[1]!, new URLSearchParams(raw));
            // Accepted with the answer lost: Twilio still delivers it and reports on it.
            if ('sid' in m) accept(m);
          }
          return; // never answer; close() destroys the socket
        case 'reset':
          if (isCreate && authed && (fault.records ?? true) && route?.[1] === creds?.sid) {
            const m = validateCreate(route[1]!, new URLSearchParams(raw));
            if ('sid' in m) accept(m);
          }
          req.socket.destroy();
          return;
        case 'slow':
          server.later(fault.ms, () => respond(req, res, url, route, raw, authed, creds));
          return;
        case 'status': {
          const code = fault.code === undefined ? undefined : Number(fault.code);
          if (code === undefined || Number.isNaN(code)) {
            sendText(res, fault.status, fault.message ?? `<html><body>HTTP ${fault.status}</body></html>`);
          } else {
            sendJson(res, fault.status, errorBody({ status: fault.status, code, message: fault.message ?? 'Injected error' }));
          }
          return;
        }
        case 'http429':
          sendJson(res, 429, errorBody({ status: 429, code: 20429, message: 'Too Many Requests' }));
          return;
        case 'http5xx': {
          const status = fault.status ?? 500;
          // Twilio's edge answers gateway errors with HTML; the API itself with a JSON 20500.
          if (status === 500) sendJson(res, 500, errorBody({ status, code: 20500, message: 'Internal Server Error' }));
          else sendText(res, status, `<html><body><h1>${status}</h1></body></html>`);
          return;
        }
        case 'down':
          break;
      }
    }
    respond(req, res, url, route, raw, authed, creds);
  }

  function respond(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    url: URL,
    route: RegExpExecArray | null,
    raw: string,
    authed: boolean,
    creds: TwilioAccount | null,
  ): void {
    if (!authed) {
      sendJson(res, 401, errorBody({ status: 401, code: 20003, message: 'Authenticate' }));
      return;
    }
    const fetched = ACCOUNT_ROUTE.exec(url.pathname)?.[1];
    if (fetched && req.method === 'GET' && fetched === creds?.sid) {
      sendJson(res, 200, accountWire(fetched, statuses.get(fetched) ?? 'active'));
      return;
    }
    const accountSid = route?.[1];
    const single = /\/Messages\/(SM[0-9a-f]{32})\.json$/.exec(url.pathname);
    if (!route || !accountSid || accountSid !== creds?.sid) {
      sendJson(res, 404, errorBody({ status: 404, code: 20404, message: `The requested resource ${url.pathname} was not found` }));
      return;
    }
    if (req.method === 'POST' && !single) {
      const m = validateCreate(accountSid, new URLSearchParams(raw));
      if (!('sid' in m)) {
        sendJson(res, m.status, errorBody(m));
        return;
      }
      accept(m);
      sendJson(res, 201, toWire(m));
      return;
    }
    if (req.method === 'GET' && single) {
      const m = messages.find((x) => x.sid === single[1] && x.accountSid === accountSid);
      if (m) sendJson(res, 200, toWire(m));
      else sendJson(res, 404, errorBody({ status: 404, code: 20404, message: `The requested resource ${url.pathname} was not found` }));
      return;
    }
    if (req.method === 'GET') {
      sendJson(res, 200, listPage(accountSid, url));
      return;
    }
    sendJson(res, 405, errorBody({ status: 405, code: 20004, message: 'Method not allowed' }));
  }

  function listPage(accountSid: string, url: URL) {
    const q = url.searchParams;
    const to = q.get('To');
    const from = q.get('From');
    const after = q.get('DateSent>');
    const before = q.get('DateSent<');
    const pageSize = Math.min(Number(q.get('PageSize') ?? 50) || 50, 1000);
    const afterMs = after ? dayStart(after) : NaN;
    const beforeMs = before ? dayStart(before) + 86_400_000 : NaN;
    const rows = messages
      .filter((m) => m.accountSid === accountSid)
      .filter((m) => !to || m.to === to)
      .filter((m) => !from || m.from === from)
      .filter((m) => Number.isNaN(afterMs) || m.dateCreated.getTime() >= afterMs)
      .filter((m) => Number.isNaN(beforeMs) || m.dateCreated.getTime() < beforeMs)
      .reverse() // newest first, as Twilio lists
      .slice(0, pageSize);
    const uri = `${url.pathname}?${q.toString()}`;
    return {
      messages: rows.map(toWire),
      end: Math.max(rows.length - 1, 0),
      first_page_uri: uri,
      next_page_uri: null,
      page: 0,
      page_size: pageSize,
      previous_page_uri: null,
      start: 0,
      uri,
    };
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
    addAccount(sid, token) {
      accounts.set(sid, token);
    },
    setAccountStatus(sid, status) {
      statuses.set(sid, status);
    },
    setReceipts: (plan, to) => receipts.setPlan(plan, to),
    callbacks: receipts.results,
    callbacksSettled: () => receipts.settle(),
    async sendInbound(t) {
      const accountSid = t.accountSid ?? [...accounts.keys()][0]!;
      const messageSid = t.messageSid ?? 'SM' + randomBytes(16).toString('hex');
      const params: Record<string, string> = {
        ToCountry: 'US',
        ToState: 'CA',
        SmsMessageSid: messageSid,
        NumMedia: '0',
        ToCity: '',
        FromZip: '',
        SmsSid: messageSid,
        FromState: 'CA',
        SmsStatus: 'received',
        FromCity: '',
        Body: t.body,
        FromCountry: 'US',
        To: t.to,
        MessagingServiceSid: 'MG' + 'b2'.repeat(16),
        ToZip: '',
        NumSegments: '1',
        MessageSid: messageSid,
        AccountSid: accountSid,
        From: t.from,
        ApiVersion: '2010-04-01',
        ...(t.optOutType ? { OptOutType: t.optOutType } : {}),
      };
      const token = t.unsigned ? null : (t.token ?? accounts.get(accountSid) ?? '');
      const { headers, body } = signedTwilioPost(t.url, params, token);
      return { ...(await postWebhook(t.url, headers, body)), messageSid };
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
