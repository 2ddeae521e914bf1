/**
 * Telnyx adapter over the official (Stainless-generated) SDK.
 */
import { createHash } from 'node:crypto';
import Telnyx, { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError } from 'telnyx';
import { TelnyxWebhook } from 'telnyx/lib/webhooks';
import {
  PROBE_TIMEOUT_MS,
  abortedBeforeSend,
  classifyHttp,
  classifyNetwork,
  classifyUnknown,
  isObject,
  ruleFor,
  runProbe,
} from '../classify.js';
import {
  ProviderSendError,
  SDK_TIMEOUT_MARGIN_MS,
  type CodeTable,
  type DeliveryState,
  type FoundMessage,
  type ProviderWebhooks,
  type SendAccepted,
  type SendRequest,
  type SmsProvider,
  type WebhookEvent,
  type WebhookRequest,
} from '../types.js';
import { outboxRefOf } from './refs.js';

/**
 * Telnyx's codes (https://developers.telnyx.com/docs/messaging/messages/error-codes).
 * They are strings on the wire, in an `errors[]` array; the HTTP status of a
 * given code is not documented, so the code decides.
 */
export const TELNYX_CODES: CodeTable = {
  '10011': { errorClass: 'transient', meaning: 'too many requests' },

  '10009': { errorClass: 'provider', meaning: 'authentication failed' },

  '40305': { errorClass: 'provider', meaning: "invalid 'from' address" },
  '40010': { errorClass: 'provider', meaning: 'unregistered 10DLC message' },
  '40013': { errorClass: 'provider', meaning: 'invalid source number' },
  '40306': { errorClass: 'provider', meaning: 'alphanumeric sender not configured' },
  '40312': { errorClass: 'provider', meaning: 'messaging profile disabled' },
  '40314': { errorClass: 'provider', meaning: 'messaging disabled on the account' },
  '40315': { errorClass: 'provider', meaning: "unhealthy 'from' address" },
  '40321': { errorClass: 'provider', meaning: 'no usable numbers on the profile' },
  '40329': { errorClass: 'provider', meaning: 'toll-free number not verified' },
  '40309': { errorClass: 'provider', meaning: 'destination region not enabled' },

  '40310': { errorClass: 'recipient', meaning: "invalid 'to' address" },
  '40012': { errorClass: 'recipient', meaning: 'invalid destination number' },
  '40001': { errorClass: 'recipient', meaning: 'not routable (landline or non-routable)' },

  '40300': { errorClass: 'recipient', optOut: true, meaning: 'blocked due to a STOP message' },

  // Delivery errors of message.finalized (and of a looked-up message). On a
  // receipt, provider means "resend once through the next provider", recipient
  // "stop", transient "record it; a later message may get through".
  '40002': { errorClass: 'provider', meaning: 'blocked as spam (temporary)' },
  '40003': { errorClass: 'provider', meaning: 'blocked as spam (permanent)' },
  '40015': { errorClass: 'provider', meaning: 'rejected by the spam filter' },
  '40016': { errorClass: 'provider', meaning: 'carrier 10DLC limit reached' },
  '40017': { errorClass: 'provider', meaning: 'carrier 10DLC limit reached' },
  '40018': { errorClass: 'provider', meaning: 'carrier 10DLC limit reached' },
  '40004': { errorClass: 'recipient', meaning: 'rejected by the destination' },
  '40008': { errorClass: 'recipient', meaning: 'undeliverable' },
  '40005': { errorClass: 'transient', meaning: 'message expired before delivery' },
  '40006': { errorClass: 'transient', meaning: 'recipient server unavailable' },
  '40011': { errorClass: 'transient', meaning: 'upstream rate limit' },
  '40014': { errorClass: 'transient', meaning: 'expired in the queue' },
};

/**
 * Telnyx's per-recipient statuses in our words. delivery_unconfirmed is final
 * but says nothing either way; queued and sending say nothing new.
 */
const DELIVERY: Readonly<Record<string, DeliveryState>> = {
  sent: 'sent',
  delivered: 'delivered',
  read: 'delivered',
  delivery_failed: 'undelivered',
  expired: 'undelivered',
  sending_failed: 'failed',
};

interface TelnyxMessageWire {
  id?: unknown;
  to?: Array<{ status?: unknown; phone_number?: unknown }>;
  from?: { phone_number?: unknown };
  errors?: TelnyxErrorItem[];
  webhook_url?: unknown;
  text?: unknown;
  autoresponse_type?: unknown;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/** The error code of a failed message: the one we have a rule for, else the first. */
function errorCodeOf(items: TelnyxErrorItem[] | undefined): string | undefined {
  const codes = (items ?? []).map((e) => (e.code === undefined || e.code === null ? undefined : String(e.code)));
  return codes.find((c) => ruleFor(TELNYX_CODES, c)) ?? codes.find((c) => c !== undefined);
}

function telnyxWebhooks(publicKey: string | undefined, toleranceSeconds: number, now: () => number): ProviderWebhooks {
  // Built once: the SDK's verifier checks the key's format (32 raw bytes, base64).
  let verifier: TelnyxWebhook | null = null;
  try {
    verifier = publicKey ? new TelnyxWebhook(publicKey) : null;
  } catch {
    // Refused at PUT already; a stored key that does not parse verifies nothing.
    verifier = null;
  }
  return {
    replies: 'send',
    async verify(req: WebhookRequest) {
      const sig = req.headers['telnyx-signature-ed25519'];
      const ts = req.headers['telnyx-timestamp'];
      if (!sig || !ts) return { ok: false, reason: 'missing' };
      if (!verifier) return { ok: false, reason: 'mismatch' };
      if (!/^\d{1,12}$/.test(ts)) return { ok: false, reason: 'malformed' };
      // Ours first: the SDK's own check allows 300 s, this one may be tighter.
      if (Math.abs(now() / 1000 - Number(ts)) > toleranceSeconds) return { ok: false, reason: 'stale' };
      try {
        // Ed25519 over `${timestamp}|${rawBody}` with the key from the Telnyx portal.
        await verifier.verify(req.rawBody, { 'telnyx-signature-ed25519': sig, 'telnyx-timestamp': ts });
        return { ok: true };
      } catch {
        return { ok: false, reason: 'mismatch' };
      }
    },
    parse(req: WebhookRequest): WebhookEvent | null {
      let body: unknown;
      try {
        body = JSON.parse(req.rawBody);
      } catch {
        return null;
      }
      const data = isObject(body) && isObject(body.data) ? body.data : null;
      const eventId = str(data?.id);
      const type = str(data?.event_type);
      const payload = (isObject(data?.payload) ? data.payload : {}) as TelnyxMessageWire;
      if (!data || !eventId || !type) return null;
      const messageId = str(payload.id);
      if (type === 'message.received') {
        const from = str(payload.from?.phone_number);
        const to = str(payload.to?.[0]?.phone_number);
        if (!messageId || !from || !to) return null;
        // Set when the messaging profile's autoresponse answered a keyword.
        const answered = str(payload.autoresponse_type) !== undefined;
        return {
          kind: 'inbound',
          // One text, however often (and under whichever event ids) it is delivered.
          key: messageId,
          inbound: { providerMessageId: messageId, from, to, text: str(payload.text) ?? '', keywordReplies: answered ? 'provider' : 'us' },
        };
      }
      if ((type === 'message.sent' || type === 'message.finalized') && messageId) {
        const state = DELIVERY[str(payload.to?.[0]?.status) ?? ''];
        if (!state) return { kind: 'other', key: eventId, messageId };
        return {
          kind: 'receipt',
          key: eventId,
          receipt: {
            providerMessageId: messageId,
            status: state,
            code: state === 'undelivered' || state === 'failed' ? errorCodeOf(payload.errors) : undefined,
            // The payload names the webhook URL the send gave, inside the signed body.
            outboxRef: outboxRefOf(str(payload.webhook_url)) ?? outboxRefOf(req.url),
          },
        };
      }
      return { kind: 'other', key: eventId, messageId };
    },
  };
}

interface TelnyxErrorItem {
  code?: unknown;
  title?: unknown;
  detail?: unknown;
}

export function classifyTelnyxError(err: unknown): ProviderSendError {
  if (err instanceof ProviderSendError) return err;
  // The SDK raises this when our AbortSignal fired mid-request (the per-attempt timeout).
  if (err instanceof APIUserAbortError || err instanceof APIConnectionTimeoutError) {
    return new ProviderSendError({
      message: 'telnyx: request timed out or was aborted after sending',
      errorClass: 'ambiguous',
      provider: 'telnyx',
      code: 'TIMEOUT',
      cause: err,
    });
  }
  if (err instanceof APIConnectionError) return classifyNetwork('telnyx', err);
  if (err instanceof APIError && typeof err.status === 'number') {
    const body: unknown = err.error;
    const items: TelnyxErrorItem[] = isObject(body) && Array.isArray(body.errors) ? (body.errors as TelnyxErrorItem[]) : [];
    const codes = items.map((e) => (e.code === undefined || e.code === null ? undefined : String(e.code)));
    // Several errors can come back; the one we have a rule for tells us the most.
    const code = codes.find((c) => ruleFor(TELNYX_CODES, c)) ?? codes.find((c) => c !== undefined);
    const first = items.find((e) => (e.code === undefined ? undefined : String(e.code)) === code) ?? items[0];
    const detail = [first?.title, first?.detail].filter((s): s is string => typeof s === 'string').join(' - ') || 'request failed';
    const optOut = codes.some((c) => ruleFor(TELNYX_CODES, c)?.optOut === true);
    return classifyHttp('telnyx', TELNYX_CODES, err.status, code, detail, err, optOut);
  }
  return classifyUnknown('telnyx', err, TELNYX_CODES);
}

export interface TelnyxProviderOptions {
  apiKey: string;
  /** Host root or full API root; `/v2` is appended when missing because the SDK's paths omit it. */
  baseUrl?: string;
  timeoutMs: number;
  /** How far the SDK's own timeout lies beyond `timeoutMs`. */
  sdkTimeoutMarginMs?: number;
  messagingProfileId?: string;
  /** The account's webhook signing key (base64, 32 raw bytes); without it no webhook verifies. */
  webhookPublicKey?: string;
  /** How far a webhook's telnyx-timestamp may be from now (TELNYX_WEBHOOK_TOLERANCE_SECONDS). */
  webhookToleranceSeconds?: number;
  now?: () => number;
}

function apiRoot(baseUrl: string | undefined): string | undefined {
  if (!baseUrl) return undefined;
  const trimmed = baseUrl.replace(/\/+$/, '');
  return trimmed.endsWith('/v2') ? trimmed : `${trimmed}/v2`;
}

export function createTelnyxProvider(opts: TelnyxProviderOptions): SmsProvider {
  const root = apiRoot(opts.baseUrl);
  // maxRetries: 0 because the SDK would otherwise re-POST after a 5xx or timeout and
  // could double-send; the engine owns retries.
  const client = new Telnyx({
    apiKey: opts.apiKey,
    baseURL: root,
    maxRetries: 0,
    timeout: opts.timeoutMs + (opts.sdkTimeoutMarginMs ?? SDK_TIMEOUT_MARGIN_MS),
  });
  // A hash prefix separates breakers per credential set without putting the key in logs.
  const fingerprint = createHash('sha256').update(opts.apiKey).digest('hex').slice(0, 8);

  // No findRecent: Telnyx has no list-messages-by-recipient endpoint to reconcile
  // with; lookup needs the message id, which an attempt whose answer was lost never got.
  return {
    kind: 'telnyx',
    accountKey: `telnyx:${fingerprint}`,
    // The engine relies on this: a resend under the same Idempotency-Key is
    // answered from Telnyx's record instead of sending again.
    capabilities: { receipts: 'webhook', idempotentSend: true },
    codes: TELNYX_CODES,
    classify: classifyTelnyxError,

    async send(req: SendRequest): Promise<SendAccepted> {
      if (req.signal?.aborted) throw abortedBeforeSend('telnyx', req.signal);
      let res;
      try {
        res = await client.messages.send(
          {
            to: req.to,
            from: req.from,
            text: req.body,
            ...(opts.messagingProfileId ? { messaging_profile_id: opts.messagingProfileId } : {}),
            ...(req.statusCallbackUrl ? { webhook_url: req.statusCallbackUrl } : {}),
          },
          // Telnyx only documents Idempotency-Key for some endpoints; sending it is harmless and may save a duplicate.
          { signal: req.signal, headers: { 'Idempotency-Key': req.idempotencyKey } },
        );
      } catch (err) {
        throw classifyTelnyxError(err);
      }
      const id = res.data?.id;
      if (!id) {
        // A 2xx without an id: something was accepted, but we cannot track it.
        throw new ProviderSendError({
          message: 'telnyx: 2xx response without a message id',
          errorClass: 'ambiguous',
          provider: 'telnyx',
          code: 'NO_MESSAGE_ID',
        });
      }
      return { providerMessageId: id, status: res.data?.to?.[0]?.status ?? 'queued' };
    },

    async lookup(id: string): Promise<FoundMessage | null> {
      let res;
      try {
        res = await client.messages.retrieve(id);
      } catch (err) {
        if (err instanceof APIError && err.status === 404) return null;
        throw classifyTelnyxError(err);
      }
      const m = res.data as TelnyxMessageWire | undefined;
      const status = str(m?.to?.[0]?.status) ?? 'unknown';
      const delivery = DELIVERY[status];
      return {
        providerMessageId: str(m?.id) ?? id,
        status,
        delivery,
        code: delivery === 'undelivered' || delivery === 'failed' ? errorCodeOf(m?.errors) : undefined,
      };
    },

    webhooks: telnyxWebhooks(opts.webhookPublicKey, opts.webhookToleranceSeconds ?? 300, opts.now ?? Date.now),

    // The messaging profile the sends name: authenticated, sends nothing, and
    // says whether the profile is disabled (40312 on every send). Without a
    // profile, the cheapest authenticated read: one page of one profile.
    probe: (probeOpts) =>
      runProbe('telnyx', classifyTelnyxError, probeOpts, async (signal) => {
        const request = { signal, timeout: probeOpts?.timeoutMs ?? PROBE_TIMEOUT_MS };
        if (!opts.messagingProfileId) {
          await client.messagingProfiles.list({ 'page[size]': 1 }, request);
          return null;
        }
        const profile = await client.messagingProfiles.retrieve(opts.messagingProfileId, request);
        if (profile.data?.enabled !== false) return null;
        const rule = TELNYX_CODES['40312']!;
        return new ProviderSendError({
          message: `telnyx: ${rule.meaning}`,
          errorClass: rule.errorClass,
          provider: 'telnyx',
          code: '40312',
        });
      }),
  };
}
