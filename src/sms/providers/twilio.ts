/**
 * Twilio adapter over the official SDK. Twilio's create endpoint is not idempotent,
 * so the engine must never blindly resend after a timeout; findRecent is how it
 * finds out whether a timed-out attempt actually went through.
 */
import pTimeout from 'p-timeout';
import twilio from 'twilio';
import { abortedBeforeSend, abortedInFlight, classifyTwilioError } from '../classify.js';
import { SDK_TIMEOUT_MARGIN_MS, type FoundMessage, type ReconcileQuery, type SendAccepted, type SendRequest, type SmsProvider } from '../types.js';

export interface TwilioProviderOptions {
  accountSid: string;
  authToken: string;
  /** e.g. `http://127.0.0.1:PORT`; the SDK has no option for this, only a mutable field. */
  baseUrl?: string;
  timeoutMs: number;
}

/** Statuses that prove the earlier attempt did not result in a text. */
const DEAD_STATUSES = new Set(['failed', 'undelivered', 'canceled']);

/**
 * The SDK has no per-call AbortSignal, so we stop waiting ourselves and let the
 * request run out (at most SDK_TIMEOUT_MARGIN_MS later); the error carries how
 * it ends, so the engine can still learn that it was accepted.
 */
async function untilAborted(work: Promise<SendAccepted>, signal: AbortSignal | undefined): Promise<SendAccepted> {
  if (!signal) return work;
  try {
    return await pTimeout(work, { milliseconds: Number.POSITIVE_INFINITY, signal });
  } catch (err) {
    if (signal.aborted && err === signal.reason) {
      throw abortedInFlight('twilio', err, work.catch((late: unknown) => classifyTwilioError(late)));
    }
    throw err;
  }
}

export function createTwilioProvider(opts: TwilioProviderOptions): SmsProvider {
  // autoRetry would re-POST on 429 behind the engine's back; the engine owns retries.
  // The SDK timeout is a backstop a little beyond the engine's own per-attempt timeout.
  const client = twilio(opts.accountSid, opts.authToken, { autoRetry: false, timeout: opts.timeoutMs + SDK_TIMEOUT_MARGIN_MS });
  if (opts.baseUrl) client.api.baseUrl = opts.baseUrl.replace(/\/+$/, '');

  return {
    kind: 'twilio',
    accountKey: `twilio:${opts.accountSid}`,

    async send(req: SendRequest): Promise<SendAccepted> {
      if (req.signal?.aborted) throw abortedBeforeSend('twilio', req.signal);
      try {
        const work = client.messages.create({ to: req.to, from: req.from, body: req.body }).then(
          (msg): SendAccepted => ({ providerMessageId: msg.sid, status: msg.status }),
        );
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
  };
}
