/**
 * The HTTPS relay: a sender the clinic or operator runs themselves (an edge
 * worker, an on-premises gateway). We POST each message as signed JSON; the
 * contract (request, signature, answers, receipts) is in docs/sms.md, and a
 * reference receiver is in examples/relay/.
 *
 * The receiver must dedupe on the idempotency key, so a resend after a timeout
 * is safe on the same relay (`idempotentSend`), which is how its ambiguous
 * attempts are settled: it has no lookup API.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { abortedBeforeSend, classifyHttp, classifyNetwork, isObject, probeHost, ruleFor } from '../classify.js';
import {
  ProviderSendError,
  SDK_TIMEOUT_MARGIN_MS,
  type CodeTable,
  type DeliveryReceipt,
  type ErrorClass,
  type ProviderWebhooks,
  type WebhookEvent,
  type WebhookVerdict,
  type SendAccepted,
  type SendRequest,
  type SmsProvider,
  type WebhookRequest,
} from '../types.js';

/** Codes a receiver may answer a 4xx with; anything else falls back to its `class` hint, then the generic rules. */
export const RELAY_CODES: CodeTable = {
  rate_limited: { errorClass: 'transient', meaning: 'the receiver or its upstream is throttling; try again shortly' },
  bad_signature: { errorClass: 'provider', meaning: 'the receiver refused our signature (signing secrets differ)' },
  stale_timestamp: { errorClass: 'provider', meaning: 'the receiver refused our timestamp (a clock is off)' },
  sender_unavailable: { errorClass: 'provider', meaning: 'the receiver has no sender or upstream that can take it' },
  invalid_recipient: { errorClass: 'recipient', meaning: 'the number cannot receive SMS' },
  opted_out: { errorClass: 'recipient', optOut: true, meaning: 'the recipient opted out at the receiver' },
};

/** Classes a receiver may name in `class`; `ambiguous` is ours to decide, never a 4xx's. */
const HINTS: ReadonlySet<ErrorClass> = new Set(['transient', 'provider', 'recipient']);

export const RELAY_TIMESTAMP_HEADER = 'x-relay-timestamp';
export const RELAY_SIGNATURE_HEADER = 'x-relay-signature';
/** How far a receipt's timestamp may be from our clock. */
export const RELAY_TOLERANCE_SECONDS = 300;

/** The signature both ways: lowercase hex HMAC-SHA256 over `${timestamp}.${rawBody}`. */
export function signRelay(secret: string, timestamp: number | string, rawBody: string): string {
  return createHmac('sha256', secret).update(`${timestamp}.${rawBody}`).digest('hex');
}

/** Why a relay URL is refused, or null. Production sends only over https; no URL may carry credentials. */
export function relayUrlProblem(raw: string, production: boolean): string | null {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return 'must be an absolute URL';
  }
  if (u.username || u.password) return 'must not contain credentials (use the signing secret)';
  if (u.protocol === 'https:') return null;
  if (u.protocol === 'http:') return production ? 'must be https in production' : null;
  return 'must be http(s)';
}

/** The JSON we POST; see docs/sms.md. */
export interface RelayRequestBody {
  id: string;
  to: string;
  from?: string;
  text: string;
  orgId: string;
  attempt: number;
  idempotencyKey: string;
}

function refusal(status: number, body: unknown): ProviderSendError {
  const b = isObject(body) ? body : {};
  const code = typeof b.code === 'string' && b.code ? b.code.slice(0, 64) : undefined;
  const detail = typeof b.message === 'string' && b.message ? b.message.slice(0, 300) : 'request refused';
  // The receiver is overloaded or broken: whatever it says, the same relay may take it later.
  if (status === 429 || status >= 500) return classifyHttp('relay', {}, status, code, detail, undefined);
  if (status >= 400 && status < 500 && !ruleFor(RELAY_CODES, code)) {
    const hint = typeof b.class === 'string' ? (b.class as ErrorClass) : undefined;
    if (hint && HINTS.has(hint)) {
      return new ProviderSendError({
        message: `relay HTTP ${status}${code ? ` code ${code}` : ''}: ${detail}`,
        errorClass: hint,
        provider: 'relay',
        code,
        httpStatus: status,
      });
    }
  }
  return classifyHttp('relay', RELAY_CODES, status, code, detail, undefined);
}

export function classifyRelayError(err: unknown): ProviderSendError {
  if (err instanceof ProviderSendError) return err;
  return classifyNetwork('relay', err);
}

function header(req: WebhookRequest, name: string): string | undefined {
  const direct = req.headers[name];
  if (direct !== undefined) return direct;
  const key = Object.keys(req.headers).find((k) => k.toLowerCase() === name);
  return key === undefined ? undefined : req.headers[key];
}

const RECEIPT_STATUSES = new Set<DeliveryReceipt['status']>(['sent', 'delivered', 'undelivered', 'failed']);

/**
 * Receipt verification and parsing for POST /webhooks/relay/:orgId: the same
 * signature as our sends (HMAC-SHA256 over `${timestamp}.${rawBody}` under
 * the link's secret), within a timestamp tolerance. Pure, so the route only
 * has to find the link.
 */
export function relayWebhooks(secret: string, opts: { toleranceSeconds?: number; now?: () => number } = {}): ProviderWebhooks {
  const tolerance = opts.toleranceSeconds ?? RELAY_TOLERANCE_SECONDS;
  const now = opts.now ?? Date.now;
  return {
    replies: 'send',
    async verify(req): Promise<WebhookVerdict> {
      const ts = header(req, RELAY_TIMESTAMP_HEADER);
      const sig = header(req, RELAY_SIGNATURE_HEADER);
      if (!ts || !sig) return { ok: false, reason: 'missing' };
      if (!/^\d{1,12}$/.test(ts) || !/^[0-9a-f]{64}$/.test(sig)) return { ok: false, reason: 'malformed' };
      if (Math.abs(now() / 1000 - Number(ts)) > tolerance) return { ok: false, reason: 'stale' };
      const expected = Buffer.from(signRelay(secret, ts, req.rawBody), 'hex');
      return timingSafeEqual(Buffer.from(sig, 'hex'), expected) ? { ok: true } : { ok: false, reason: 'mismatch' };
    },
    parse(req): WebhookEvent | null {
      const receipt = parseRelayReceipt(req.rawBody);
      // The relay's message id and the state it reports identify the receipt: a redelivery is the same event.
      return receipt ? { kind: 'receipt', key: `${receipt.providerMessageId}:${receipt.status}`, receipt } : null;
    },
  };
}

/** `{messageId, status, code?}` (an `at` the receiver may add is informational), or null for anything else. */
export function parseRelayReceipt(rawBody: string): DeliveryReceipt | null {
  let body: unknown;
  try {
    body = JSON.parse(rawBody);
  } catch {
    return null;
  }
  if (!isObject(body) || typeof body.messageId !== 'string' || !body.messageId || body.messageId.length > 200) return null;
  const status = body.status as DeliveryReceipt['status'];
  if (!RECEIPT_STATUSES.has(status)) return null;
  const receipt: DeliveryReceipt = { providerMessageId: body.messageId, status };
  if (typeof body.code === 'string' && body.code) receipt.code = body.code.slice(0, 64);
  return receipt;
}

export interface RelayProviderOptions {
  url: string;
  signingSecret: string;
  orgId: string;
  /** The receiver sends signed receipts back; without them an acceptance is final. */
  receipts?: boolean;
  timeoutMs: number;
  sdkTimeoutMarginMs?: number;
  now?: () => number;
}

export function createRelayProvider(opts: RelayProviderOptions): SmsProvider {
  const backstop = opts.timeoutMs + (opts.sdkTimeoutMarginMs ?? SDK_TIMEOUT_MARGIN_MS);
  const now = opts.now ?? Date.now;
  const fingerprint = createHash('sha256').update(opts.url).digest('hex').slice(0, 8);

  return {
    kind: 'relay',
    accountKey: `relay:${fingerprint}`,
    capabilities: { receipts: opts.receipts ? 'webhook' : 'none', idempotentSend: true, ownSender: true },
    codes: RELAY_CODES,
    classify: classifyRelayError,
    webhooks: relayWebhooks(opts.signingSecret, { now }),

    async send(req: SendRequest): Promise<SendAccepted> {
      if (req.signal?.aborted) throw abortedBeforeSend('relay', req.signal);
      const payload: RelayRequestBody = {
        id: req.messageId ?? req.idempotencyKey,
        to: req.to,
        ...(req.from ? { from: req.from } : {}),
        text: req.body,
        orgId: req.orgId ?? opts.orgId,
        attempt: req.attempt ?? 1,
        idempotencyKey: req.idempotencyKey,
      };
      const raw = JSON.stringify(payload);
      const timestamp = Math.floor(now() / 1000);
      const timeout = AbortSignal.timeout(backstop);
      let res: Response;
      let text: string;
      try {
        res = await fetch(opts.url, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            [RELAY_TIMESTAMP_HEADER]: String(timestamp),
            [RELAY_SIGNATURE_HEADER]: signRelay(opts.signingSecret, timestamp, raw),
            'idempotency-key': req.idempotencyKey,
          },
          body: raw,
          // A redirect would carry the signed message somewhere we were not told about.
          redirect: 'manual',
          signal: req.signal ? AbortSignal.any([req.signal, timeout]) : timeout,
        });
        text = await res.text();
      } catch (err) {
        throw classifyRelayError(err);
      }
      let body: unknown;
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        body = undefined;
      }
      if (res.status >= 200 && res.status < 300) {
        const id = isObject(body) && typeof body.messageId === 'string' && body.messageId ? body.messageId : undefined;
        if (!id || id.length > 200) {
          // It took the message (2xx) but gave us nothing to track it by.
          throw new ProviderSendError({
            message: `relay HTTP ${res.status}: 2xx without a messageId`,
            errorClass: 'ambiguous',
            provider: 'relay',
            code: 'NO_MESSAGE_ID',
            httpStatus: res.status,
          });
        }
        return { providerMessageId: id, status: 'accepted' };
      }
      throw refusal(res.status, body);
    },

    probe: () => probeHost(opts.url),
  };
}
