import type { Logger } from 'pino';
import type { Sql } from 'postgres';
import { isoLocal } from '../booking/time.js';
import type { ConfirmationNotifier, SmsOutcome } from '../tools/types.js';
import { renderConfirmation } from './text.js';
import type { OutboxWorker, RunOutcome } from './worker.js';

/**
 * The booking's view of SMS: render the text for the outbox row written in the
 * booking transaction, then give the first delivery run at most the response
 * budget before answering. The booking itself never waits on more than that and
 * never fails because of SMS.
 */
export function createNotifier(opts: {
  workerSql: Sql;
  worker: OutboxWorker;
  budgetMs: number;
  log: Logger;
}): ConfirmationNotifier {
  const { workerSql, worker, budgetMs, log } = opts;

  const fromRun = (r: RunOutcome): SmsOutcome | null => {
    switch (r.status) {
      case 'sent':
        return { smsStatus: 'sent', smsProvider: r.provider };
      case 'failed':
        return { smsStatus: 'failed_but_booked', smsReason: r.reason };
      case 'retry':
        return r.reason === 'internal_error' ? { smsStatus: 'error_but_booked', smsReason: 'internal_error' } : { smsStatus: 'queued', smsReason: r.reason };
      case 'skipped':
        return { smsStatus: 'failed_but_booked', smsReason: r.reason };
    }
  };

  const fromRow = (row: { status: string; provider: string | null; last_error_class: string | null } | undefined): SmsOutcome | null => {
    if (!row) return null;
    if (row.status === 'sent') return { smsStatus: 'sent', ...(row.provider ? { smsProvider: row.provider } : {}) };
    if (row.status === 'failed' || row.status === 'cancelled') return { smsStatus: 'failed_but_booked', smsReason: row.last_error_class ?? row.status };
    return null;
  };

  return {
    prepare(org, appt) {
      if (!org.smsConfigured) return null;
      return {
        kind: appt.kind,
        body: renderConfirmation({
          clinicName: org.name,
          patientName: appt.patientName,
          startsAt: isoLocal(appt.start),
          timeZone: org.timeZone,
          kind: appt.kind,
        }),
      };
    },

    async outcome(orgId, appointmentId, kind) {
      const deadline = Date.now() + budgetMs;
      try {
        const [row] = await workerSql<{ id: string; status: string; provider: string | null; last_error_class: string | null }[]>`
          SELECT id, status, provider, last_error_class FROM sms_outbox
           WHERE org_id = ${orgId} AND appointment_id = ${appointmentId} AND kind = ${kind}`;
        if (!row) return { smsStatus: 'failed_but_booked', smsReason: 'not_configured' };
        const settled = fromRow(row);
        if (settled) return settled;

        // Run the first attempt here rather than waiting for a poll; the run
        // carries on in the background if the budget runs out first.
        const run = worker.processNow(row.id).catch((err) => {
          log.error({ err }, 'sms fast path failed');
          return { status: 'retry', reason: 'internal_error' } as RunOutcome;
        });
        const timer = new Promise<'budget'>((resolve) => setTimeout(() => resolve('budget'), Math.max(0, deadline - Date.now())).unref());
        const first = await Promise.race([run, timer]);
        if (first !== 'budget' && first !== null) return fromRun(first) ?? { smsStatus: 'queued' };

        // Someone else holds the row (another process's worker): watch it until the budget ends.
        while (first !== 'budget' && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 25));
          const [again] = await workerSql<{ status: string; provider: string | null; last_error_class: string | null }[]>`
            SELECT status, provider, last_error_class FROM sms_outbox WHERE id = ${row.id}`;
          const s = fromRow(again);
          if (s) return s;
        }
        return { smsStatus: 'queued' };
      } catch (err) {
        log.error({ err }, 'could not determine sms status');
        return { smsStatus: 'error_but_booked', smsReason: 'internal_error' };
      }
    },
  };
}
