import type { Logger } from 'pino';
import type { Sql } from 'postgres';
import { isoLocal } from '../booking/time.js';
import type { ConfirmationNotifier, ReminderRow, SmsOutcome } from '../tools/types.js';
import type { RunResult } from './outbox.js';
import { planReminders } from './reminders.js';
import { renderConfirmation, renderReminder } from './texts.js';
import type { OutboxWorker } from './worker.js';

interface RowState {
  status: string;
  provider: string | null;
  failure_reason: string | null;
  last_error_class: string | null;
  /** Runs so far: 0 while a row is pending, not yet claimed by anyone. */
  attempts: number;
}

/**
 * The booking's view of SMS: render the text for the outbox row written in the
 * booking transaction, then give the first delivery run at most the response
 * budget before answering. The booking itself never waits on more than that and
 * never fails because of SMS.
 */
const REPLY_MARGIN_MS = 50;

/**
 * smsStatus, from the outbox's own words: a run's result, or a row read back
 * (a replayed booking reports what the first answer said).
 */
export function smsOutcomeOf(r: {
  status: RunResult['status'];
  reason?: string | undefined;
  provider?: string | null | undefined;
}): SmsOutcome {
  switch (r.status) {
    case 'sent':
      return { smsStatus: 'sent', ...(r.provider ? { smsProvider: r.provider } : {}) };
    case 'failed':
    case 'cancelled':
      return { smsStatus: 'failed_but_booked', smsReason: r.reason ?? r.status };
    case 'gone':
      return { smsStatus: 'failed_but_booked', smsReason: 'gone' };
    case 'pending':
    case 'sending':
      if (r.reason === 'internal_error') return { smsStatus: 'error_but_booked', smsReason: 'internal_error' };
      return { smsStatus: 'queued', ...(r.reason ? { smsReason: r.reason } : {}) };
  }
}

/**
 * A row that is settled, or (pending again) ended a run in "try again later";
 * null while a run holds it, or while it waits for its first run: a claim of
 * it may be under way in a transaction not yet committed.
 */
function fromRow(row: RowState | undefined): SmsOutcome | null {
  if (!row || row.status === 'sending' || (row.status === 'pending' && row.attempts === 0)) return null;
  const status = row.status as RunResult['status'];
  if (status === 'pending')
    return smsOutcomeOf({ status, reason: row.last_error_class === 'internal_error' ? 'internal_error' : undefined });
  return smsOutcomeOf({ status, reason: row.failure_reason ?? undefined, provider: row.provider });
}

export function createNotifier(opts: { workerSql: Sql; worker: OutboxWorker; budgetMs: number; log: Logger }): ConfirmationNotifier {
  const { workerSql, worker, budgetMs, log } = opts;

  return {
    prepare(org, appt) {
      if (!org.smsConfigured) return null;
      try {
        return {
          kind: appt.kind,
          body: renderConfirmation({
            clinicName: org.name,
            patientName: appt.patientName,
            startsAt: isoLocal(appt.start),
            timeZone: org.timeZone,
            kind: appt.kind,
            contactPhone: org.smsContactPhone ?? null,
            locale: org.locale,
            region: org.defaultRegion,
          }),
        };
      } catch (err) {
        // The booking must not fail because its text could not be rendered; a
        // confirmation with a wrong or missing time would be worse than none.
        log.error({ err, orgId: org.id }, 'confirmation text could not be rendered; no SMS for this booking');
        return null;
      }
    },

    reminders(org, appt, now): ReminderRow[] {
      // The exemption asks for a number to call in every text: without one, no reminders.
      if (!org.smsConfigured || !org.reminders || !org.smsContactPhone) return [];
      try {
        const planned = planReminders({
          start: appt.start,
          settings: org.reminders,
          clinicZone: org.timeZone,
          patientPhone: appt.patientPhone,
          now,
        });
        if (planned.length === 0) return [];
        // Every reminder of one appointment says the same thing; only its due time differs.
        const body = renderReminder({
          clinicName: org.name,
          contactPhone: org.smsContactPhone,
          timeZone: org.timeZone,
          locale: org.locale,
          region: org.defaultRegion,
          startsAt: isoLocal(appt.start),
          cancelByReply: org.reminders.cancelByReply,
        });
        return planned.map((r) => ({ kind: r.kind, due: r.due.toUTC().toISO()!, sendBy: r.sendBy.toUTC().toISO()!, body }));
      } catch (err) {
        log.error({ err, orgId: org.id }, 'reminders could not be planned; none for this booking');
        return [];
      }
    },

    async outcome(orgId, appointmentId, kind, startedAt) {
      // The budget covers the whole tool call, counted from when the request
      // arrived, less a little for writing the answer.
      const deadline = (startedAt ?? Date.now()) + budgetMs - REPLY_MARGIN_MS;
      try {
        // Run the first attempt here rather than waiting for a poll; the run
        // carries on in the background if the budget runs out first.
        const run = worker.processFor(orgId, appointmentId, kind).catch((err) => {
          log.error({ err }, 'sms fast path failed');
          return { status: 'pending', reason: 'internal_error', message: String(err) } as RunResult;
        });
        const timer = new Promise<'budget'>((resolve) => setTimeout(() => resolve('budget'), Math.max(0, deadline - Date.now())).unref());
        const first = await Promise.race([run, timer]);
        if (first === 'budget') return { smsStatus: 'queued' };
        if (first !== null) return smsOutcomeOf(first);

        // Not claimable here: absent (SMS off), already settled (a replay), or
        // held by another process's worker.
        const [row] = await workerSql<(RowState & { id: string })[]>`
          SELECT id, status, provider, failure_reason, last_error_class, attempts FROM sms_outbox
           WHERE org_id = ${orgId} AND appointment_id = ${appointmentId} AND kind = ${kind}`;
        if (!row) return { smsStatus: 'failed_but_booked', smsReason: 'not_configured' };
        const settled = fromRow(row);
        if (settled) return settled;

        // Someone else holds the row (a worker's claim, here or in another
        // process): watch it until the budget ends. Still unclaimed, it is
        // claimed here after all; back to pending after a run means that run
        // ended in "try again later", reported the way it would have been.
        while (Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 25));
          const [again] = await workerSql<RowState[]>`
            SELECT status, provider, failure_reason, last_error_class, attempts FROM sms_outbox WHERE id = ${row.id}`;
          const s = fromRow(again);
          if (s) return s;
          if (again?.status === 'pending' && again.attempts === 0) {
            const mine = await Promise.race([worker.processFor(orgId, appointmentId, kind), timer]);
            if (mine === 'budget') return { smsStatus: 'queued' };
            if (mine !== null) return smsOutcomeOf(mine);
          }
        }
        return { smsStatus: 'queued' };
      } catch (err) {
        log.error({ err }, 'could not determine sms status');
        return { smsStatus: 'error_but_booked', smsReason: 'internal_error' };
      }
    },
  };
}
