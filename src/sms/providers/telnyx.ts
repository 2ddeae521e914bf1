/**
 * Telnyx adapter over the official (Stainless-generated) SDK.
 */
import { createHash } from 'node:crypto';
import Telnyx, { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError } from 'telnyx';
import { PROBE_TIMEOUT_MS, abortedBeforeSend, classifyHttp, classifyNetwork, classifyUnknown, isObject, ruleFor, runProbe } from '../classify.js';
import { ProviderSendError, SDK_TIMEOUT_MARGIN_MS, type CodeTable, type SendAccepted, type SendRequest, type SmsProvider } from '../types.js';

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
};

interface TelnyxErrorItem {
  code?: unknown;
  title?: unknown;
  detail?: unknown;
}

export function classifyTelnyxError(err: unknown): ProviderSendError {
  if (err instanceof ProviderSendError) return err;
  // The SDK raises this when our AbortSignal fired mid-request (the per-attempt timeout).
  if (err instanceof APIUserAbortError || err instanceof APIConnectionTimeoutError) {
    return new ProviderSendError({ message: 'telnyx: request timed out or was aborted after sending', errorClass: 'ambiguous', provider: 'telnyx', code: 'TIMEOUT', cause: err });
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

  // No findRecent: Telnyx has no list-messages-by-recipient endpoint to reconcile with.
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
        throw new ProviderSendError({ message: 'telnyx: 2xx response without a message id', errorClass: 'ambiguous', provider: 'telnyx', code: 'NO_MESSAGE_ID' });
      }
      return { providerMessageId: id, status: res.data?.to?.[0]?.status ?? 'queued' };
    },

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
        return new ProviderSendError({ message: `telnyx: ${rule.meaning}`, errorClass: rule.errorClass, provider: 'telnyx', code: '40312' });
      }),
  };
}
