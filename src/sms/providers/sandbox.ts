/**
 * A provider that never leaves the process: for dry runs, demos and tests. It
 * mirrors Twilio's test-credential magic numbers so failure paths can be rehearsed.
 */
import { randomBytes } from 'node:crypto';
import { abortedBeforeSend, classifyUnknown } from '../classify.js';
import {
  ProviderSendError,
  type ErrorClass,
  type FoundMessage,
  type ReconcileQuery,
  type SendAccepted,
  type SendRequest,
  type SmsProvider,
} from '../types.js';

export interface SandboxMessage {
  id: string;
  to: string;
  from: string;
  body: string;
  at: Date;
}

const MAX_RECORDED = 1000;

const MAGIC_TO: Record<string, { code: string; errorClass: ErrorClass; optOut?: boolean; message: string }> = {
  '+15005550001': { code: '21211', errorClass: 'recipient', message: "The 'To' number is not a valid phone number." },
  '+15005550003': { code: '21408', errorClass: 'provider', message: 'Permission to send an SMS has not been enabled for this region.' },
  '+15005550004': { code: '21610', errorClass: 'recipient', optOut: true, message: 'Attempt to send to unsubscribed recipient' },
  '+15005550009': { code: '21614', errorClass: 'recipient', message: "'To' number is not a valid mobile number" },
};

export function createSandboxProvider(opts: { name?: string } = {}): SmsProvider & { sent: SandboxMessage[] } {
  const sent: SandboxMessage[] = [];

  return {
    kind: 'sandbox',
    accountKey: `sandbox:${opts.name ?? 'default'}`,
    capabilities: { receipts: 'none', idempotentSend: false },
    codes: {},
    classify: (err: unknown) => classifyUnknown('sandbox', err),
    sent,

    async send(req: SendRequest): Promise<SendAccepted> {
      if (req.signal?.aborted) throw abortedBeforeSend('sandbox', req.signal);
      const magic = MAGIC_TO[req.to];
      if (magic) {
        throw new ProviderSendError({
          message: `sandbox HTTP 400 code ${magic.code}: ${magic.message}`,
          errorClass: magic.errorClass,
          provider: 'sandbox',
          code: magic.code,
          httpStatus: 400,
          optOut: magic.optOut ?? false,
        });
      }
      const id = 'SB' + randomBytes(16).toString('hex');
      sent.push({ id, to: req.to, from: req.from, body: req.body, at: new Date() });
      // Bounded so a long-running dry-run server cannot grow without limit.
      if (sent.length > MAX_RECORDED) sent.splice(0, sent.length - MAX_RECORDED);
      return { providerMessageId: id, status: 'queued' };
    },

    async findRecent(q: ReconcileQuery): Promise<FoundMessage | null> {
      for (let i = sent.length - 1; i >= 0; i--) {
        const m = sent[i]!;
        if (m.to === q.to && m.from === q.from && m.body === q.body && m.at.getTime() >= q.since.getTime()) {
          return { providerMessageId: m.id, status: 'queued' };
        }
      }
      return null;
    },
  };
}
