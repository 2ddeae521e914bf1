/**
 * Telnyx adapter over the official (Stainless-generated) SDK.
 */
import { createHash } from 'node:crypto';
import Telnyx from 'telnyx';
import { abortedBeforeSend, classifyTelnyxError } from '../classify.js';
import { ProviderSendError, SDK_TIMEOUT_MARGIN_MS, type SendAccepted, type SendRequest, type SmsProvider } from '../types.js';

export interface TelnyxProviderOptions {
  apiKey: string;
  /** Host root or full API root; `/v2` is appended when missing because the SDK's paths omit it. */
  baseUrl?: string;
  timeoutMs: number;
  messagingProfileId?: string;
}

function apiRoot(baseUrl: string | undefined): string | undefined {
  if (!baseUrl) return undefined;
  const trimmed = baseUrl.replace(/\/+$/, '');
  return trimmed.endsWith('/v2') ? trimmed : `${trimmed}/v2`;
}

export function createTelnyxProvider(opts: TelnyxProviderOptions): SmsProvider {
  // maxRetries: 0 because the SDK would otherwise re-POST after a 5xx or timeout and
  // could double-send; the engine owns retries.
  const client = new Telnyx({
    apiKey: opts.apiKey,
    baseURL: apiRoot(opts.baseUrl),
    maxRetries: 0,
    timeout: opts.timeoutMs + SDK_TIMEOUT_MARGIN_MS,
  });
  // A hash prefix separates breakers per credential set without putting the key in logs.
  const fingerprint = createHash('sha256').update(opts.apiKey).digest('hex').slice(0, 8);

  // No findRecent: Telnyx has no list-messages-by-recipient endpoint to reconcile with.
  return {
    kind: 'telnyx',
    accountKey: `telnyx:${fingerprint}`,

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
  };
}
