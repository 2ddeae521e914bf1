/**
 * Twilio adapter over the official SDK. Twilio's create endpoint is not idempotent,
 * so the engine must never blindly resend after a timeout; findRecent is how it
 * finds out whether a timed-out attempt actually went through.
 */
import { randomBytes } from 'node:crypto';
import pTimeout from 'p-timeout';
import twilio from 'twilio';
import { abortedBeforeSend, abortedInFlight, classifyHttp, classifyNetwork, isObject, runProbe } from '../classify.js';
import {
  ProviderSendError,
  SDK_TIMEOUT_MARGIN_MS,
  type CodeTable,
  type DeliveryState,
  type FoundMessage,
  type ProviderWebhooks,
  type ReconcileQuery,
  type SendAccepted,
  type SendRequest,
  type SmsProvider,
  type WebhookEvent,
  type WebhookRequest,
} from '../types.js';
import { outboxRefOf } from './refs.js';

/**
 * Twilio's codes (https://www.twilio.com/docs/api/errors). 30xxx codes normally
 * arrive later, on the message or in a status callback; a few carriers' answers
 * come back on create, so they are classified the same way in both places.
 */
export const TWILIO_CODES: CodeTable = {
  // Rate limits: the provider refused before processing, so the same provider may take it later.
  '20429': { errorClass: 'transient', meaning: 'too many concurrent requests' },

  // Credentials: this account cannot send at all; another provider can.
  '20003': { errorClass: 'provider', meaning: 'authentication failed' },

  // Sender configuration (bad/unregistered/unhealthy numbers).
  '21212': { errorClass: 'provider', meaning: "invalid 'From' number" },
  '21606': { errorClass: 'provider', meaning: "'From' is not a message-capable number of this account" },
  '21611': { errorClass: 'provider', meaning: "'From' number's queue is full" },
  '30032': { errorClass: 'provider', meaning: 'toll-free number not verified' },
  '30034': { errorClass: 'provider', meaning: 'US A2P 10DLC: number not registered to a campaign' },

  // Geo permissions are per account; another provider may be allowed to reach the region.
  '21408': { errorClass: 'provider', meaning: 'sending to this region is not enabled' },
  // Not reachable with this To/From pairing: a routing/sender restriction, not a dead number.
  '21612': { errorClass: 'provider', meaning: "'To' not reachable from this 'From'" },

  // The number itself cannot receive SMS: no provider will do better.
  '21211': { errorClass: 'recipient', meaning: "invalid 'To' number" },
  '21614': { errorClass: 'recipient', meaning: "'To' is not a mobile number" },

  // STOP is a compliance block: failing over to another carrier would violate the opt-out.
  '21610': { errorClass: 'recipient', optOut: true, meaning: 'recipient replied STOP' },

  // Asynchronous delivery errors (status callbacks, a looked-up message). On a
  // receipt, provider means "resend once through the next provider", recipient
  // "stop", transient "record it; a later message may get through".
  '30001': { errorClass: 'provider', meaning: 'queue overflow at Twilio' },
  '30002': { errorClass: 'provider', meaning: 'account suspended' },
  '30003': { errorClass: 'transient', meaning: 'unreachable destination handset (off, no signal)' },
  '30004': { errorClass: 'recipient', meaning: 'message blocked (by the recipient or their carrier)' },
  '30005': { errorClass: 'recipient', meaning: 'unknown destination handset' },
  '30006': { errorClass: 'recipient', meaning: 'landline or unreachable carrier' },
  '30007': { errorClass: 'provider', meaning: 'message filtered by the carrier' },
  '30008': { errorClass: 'provider', meaning: 'unknown delivery error' },
  '30500': { errorClass: 'provider', meaning: 'Twilio internal delivery error' },
};

export function classifyTwilioError(err: unknown): ProviderSendError {
  if (err instanceof ProviderSendError) return err;
  // Axios (network) errors never carry a Twilio code: validateStatus accepts every HTTP status.
  if (isObject(err) && err.isAxiosError !== true && typeof err.status === 'number') {
    // RestException (legacy body) or TwilioServiceException (RFC 9457); both expose status + code.
    const code = typeof err.code === 'number' || typeof err.code === 'string' ? String(err.code) : undefined;
    const detail = typeof err.message === 'string' && err.message ? err.message : 'request failed';
    return classifyHttp('twilio', TWILIO_CODES, err.status, code, detail, err);
  }
  return classifyNetwork('twilio', err);
}

export interface TwilioProviderOptions {
  accountSid: string;
  authToken: string;
  /**
   * Who answers STOP / START / HELP texted to this account's numbers: Twilio
   * (its default keyword handling, or a Messaging Service's Advanced Opt-Out
   * replies) or us (Twilio's keyword handling switched off for the account, a
   * standalone short code).
   */
  keywordReplies?: 'twilio' | 'ours';
  /** e.g. `http://127.0.0.1:PORT`; the SDK has no option for this, only a mutable field. */
  baseUrl?: string;
  timeoutMs: number;
  /** How far the SDK's own timeout lies beyond `timeoutMs`. */
  sdkTimeoutMarginMs?: number;
}

/** Statuses that prove the earlier attempt did not result in a text. */
const DEAD_STATUSES = new Set(['failed', 'undelivered', 'canceled']);

/** Twilio's message statuses in our words; the others (queued, sending, accepted, scheduled...) say nothing new. */
const DELIVERY: Readonly<Record<string, DeliveryState>> = {
  sent: 'sent',
  delivered: 'delivered',
  read: 'delivered',
  undelivered: 'undelivered',
  failed: 'failed',
};

/** A form-encoded body as Twilio signs it: every key, repeated keys as arrays. */
export function formParams(rawBody: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of new URLSearchParams(rawBody)) {
    const prior = out[k];
    out[k] = prior === undefined ? v : Array.isArray(prior) ? [...prior, v] : [prior, v];
  }
  return out;
}

const one = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);

function twilioWebhooks(opts: TwilioProviderOptions): ProviderWebhooks {
  return {
    replies: 'response',
    probeRequest(url: string) {
      const sid = `SM${randomBytes(16).toString('hex')}`;
      const params = {
        AccountSid: opts.accountSid,
        MessageSid: sid,
        SmsSid: sid,
        MessageStatus: 'sent',
        SmsStatus: 'sent',
        From: '+15005550006',
        To: '+15005550006',
        ApiVersion: '2010-04-01',
      };
      return {
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          'x-twilio-signature': twilio.getExpectedTwilioSignature(opts.authToken, url, params),
        },
        body: new URLSearchParams(params).toString(),
      };
    },
    async verify(req: WebhookRequest) {
      const sig = req.headers['x-twilio-signature'];
      if (!sig) return { ok: false, reason: 'missing' };
      // The SDK's own check: HMAC-SHA1 over the URL Twilio called and the sorted
      // form fields, compared in constant time, with and without a default port.
      return twilio.validateRequest(opts.authToken, sig, req.url, formParams(req.rawBody))
        ? { ok: true }
        : { ok: false, reason: 'mismatch' };
    },
    parse(req: WebhookRequest, hint): WebhookEvent | null {
      const p = formParams(req.rawBody);
      const sid = one(p.MessageSid) ?? one(p.SmsSid) ?? one(p.SmsMessageSid);
      if (!sid || one(p.AccountSid) !== opts.accountSid) return null;
      if (hint === 'inbound') {
        const from = one(p.From);
        const to = one(p.To);
        if (!from || !to) return null;
        // With Advanced Opt-Out, OptOutType says Twilio recognised (and answered) a keyword.
        const twilioAnswers = (opts.keywordReplies ?? 'twilio') === 'twilio' || one(p.OptOutType) !== undefined;
        return {
          kind: 'inbound',
          key: sid,
          inbound: { providerMessageId: sid, from, to, text: one(p.Body) ?? '', keywordReplies: twilioAnswers ? 'provider' : 'us' },
        };
      }
      const status = one(p.MessageStatus) ?? one(p.SmsStatus);
      if (!status) return null;
      const state = DELIVERY[status];
      if (!state) return { kind: 'other', key: `${sid}:${status}`, messageId: sid };
      const code = one(p.ErrorCode);
      return {
        kind: 'receipt',
        key: `${sid}:${status}`,
        receipt: { providerMessageId: sid, status: state, code: code && code !== '0' ? code : undefined, outboxRef: outboxRefOf(req.url) },
      };
    },
  };
}

/**
 * The SDK has no per-call AbortSignal, so we stop waiting ourselves and let the
 * request run out (at most the SDK timeout margin later); the error carries how
 * it ends, so the engine can still learn that it was accepted.
 */
async function untilAborted(work: Promise<SendAccepted>, signal: AbortSignal | undefined): Promise<SendAccepted> {
  if (!signal) return work;
  try {
    return await pTimeout(work, { milliseconds: Number.POSITIVE_INFINITY, signal });
  } catch (err) {
    if (signal.aborted && err === signal.reason) {
      throw abortedInFlight(
        'twilio',
        err,
        work.catch((late: unknown) => classifyTwilioError(late)),
      );
    }
    throw err;
  }
}

export function createTwilioProvider(opts: TwilioProviderOptions): SmsProvider {
  // autoRetry would re-POST on 429 behind the engine's back; the engine owns retries.
  // The SDK timeout is a backstop a little beyond the engine's own per-attempt timeout.
  const client = twilio(opts.accountSid, opts.authToken, {
    autoRetry: false,
    timeout: opts.timeoutMs + (opts.sdkTimeoutMarginMs ?? SDK_TIMEOUT_MARGIN_MS),
  });
  const apiRoot = opts.baseUrl?.replace(/\/+$/, '');
  if (apiRoot) client.api.baseUrl = apiRoot;

  return {
    kind: 'twilio',
    accountKey: `twilio:${opts.accountSid}`,
    capabilities: { receipts: 'webhook', idempotentSend: false },
    codes: TWILIO_CODES,
    classify: classifyTwilioError,

    async send(req: SendRequest): Promise<SendAccepted> {
      if (req.signal?.aborted) throw abortedBeforeSend('twilio', req.signal);
      try {
        const params = {
          to: req.to,
          from: req.from,
          body: req.body,
          ...(req.statusCallbackUrl ? { statusCallback: req.statusCallbackUrl } : {}),
        };
        const work = client.messages.create(params).then((msg): SendAccepted => ({ providerMessageId: msg.sid, status: msg.status }));
        return await untilAborted(work, req.signal);
      } catch (err) {
        throw classifyTwilioError(err);
      }
    },

    async findRecent(q: ReconcileQuery): Promise<FoundMessage | null> {
      // Twilio honours DateSent filters per day, and dates come back with second
      // precision, so the exact window is applied here on dateCreated.
      const floor = Math.floor(q.since.getTime() / 1000) * 1000;
      let list;
      try {
        list = await client.messages.list({ to: q.to, from: q.from, dateSentAfter: q.since, limit: 20 });
      } catch (err) {
        throw classifyTwilioError(err);
      }
      const hit = list.find(
        (m) => m.body === q.body && !DEAD_STATUSES.has(m.status) && m.dateCreated instanceof Date && m.dateCreated.getTime() >= floor,
      );
      return hit ? { providerMessageId: hit.sid, status: hit.status } : null;
    },

    async lookup(sid: string): Promise<FoundMessage | null> {
      let msg;
      try {
        msg = await client.messages(sid).fetch();
      } catch (err) {
        if (isObject(err) && err.status === 404) return null;
        throw classifyTwilioError(err);
      }
      const code = msg.errorCode ? String(msg.errorCode) : undefined;
      return { providerMessageId: msg.sid, status: msg.status, delivery: DELIVERY[msg.status], code };
    },

    webhooks: twilioWebhooks(opts),

    // Fetching the account itself: authenticated, sends nothing, and says whether
    // Twilio has suspended or closed it (then every send would be refused).
    probe: (probeOpts) =>
      runProbe('twilio', classifyTwilioError, probeOpts, async () => {
        const account = await client.api.v2010.accounts(opts.accountSid).fetch();
        if (account.status === 'active') return null;
        return new ProviderSendError({
          message: `twilio: the account is ${account.status}`,
          errorClass: 'provider',
          provider: 'twilio',
          code: `ACCOUNT_${String(account.status).toUpperCase()}`,
        });
      }),
  };
}
