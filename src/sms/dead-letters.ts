/**
 * Dead letters: outbox rows that ended `failed` (a permanent no-send, or out of
 * runs). Operators list them, retry them (the outbox's `requeue` move, then one
 * run at once) and delete them. Read through the worker role, which alone sees
 * the outbox across clinics.
 */
import type { Sql } from 'postgres';
import { isUuid } from '../booking/appointments.js';
import { requeue, type OutboxStatus, type RunOutcome } from './outbox.js';
import type { OutboxWorker } from './worker.js';

interface FailedRow {
  id: string;
  org_id: string;
  appointment_id: string;
  kind: string;
  to_phone: string;
  body: string;
  attempts: number;
  provider: string | null;
  last_error: string | null;
  last_error_class: string | null;
  last_error_code: string | null;
  failure_reason: string | null;
  created_at: Date;
  failed_at: Date;
  /** failed_at in microseconds since the epoch, as text: a Date would drop the microseconds the ORDER BY uses. */
  failed_us: string;
  provider_attempts: number;
  delivery: string | null;
  resend_of: string | null;
}

const view = (r: FailedRow) => ({
  id: r.id,
  orgId: r.org_id,
  appointmentId: r.appointment_id,
  kind: r.kind,
  to: r.to_phone,
  body: r.body,
  provider: r.provider,
  reason: r.failure_reason,
  error: r.last_error,
  errorClass: r.last_error_class,
  errorCode: r.last_error_code,
  runs: r.attempts,
  providerAttempts: Number(r.provider_attempts),
  // What reached the patient, across the confirmation (this row and the row it resends or that resends it):
  // delivered when any attempt was, else the latest state. A retry is refused once it is delivered,
  // or accepted without a failure receipt since.
  deliveryState: r.delivery,
  resendOf: r.resend_of,
  createdAt: r.created_at.toISOString(),
  failedAt: r.failed_at.toISOString(),
});

export type DeadLetter = ReturnType<typeof view>;

/**
 * One page, newest failure first. Keyset pagination on (failed_at, id): stable
 * while new failures arrive. The cursor keeps failed_at to the microsecond:
 * rounded to milliseconds, rows failing within the same millisecond as a
 * page's last row would be skipped or repeated. 'bad_cursor' for a cursor this
 * function did not hand out.
 */
export async function listDeadLetters(
  sql: Sql,
  q: { limit: number; before?: string | undefined; orgId?: string | undefined },
): Promise<{ items: DeadLetter[]; next: string | null } | 'bad_cursor'> {
  let cursor: { us: string; id: string } | null = null;
  if (q.before) {
    const [us, id] = Buffer.from(q.before, 'base64url').toString('utf8').split('|');
    if (!us || !/^\d{1,18}$/.test(us) || !id || !isUuid(id)) return 'bad_cursor';
    cursor = { us, id };
  }
  const rows = await sql<FailedRow[]>`
    SELECT o.id, o.org_id, o.appointment_id, o.kind, o.to_phone, o.body, o.attempts, o.provider, o.last_error,
           o.last_error_class, o.last_error_code, o.failure_reason, o.created_at, o.failed_at,
           (extract(epoch FROM o.failed_at) * 1000000)::bigint::text AS failed_us,
           (SELECT count(*) FROM sms_attempts a WHERE a.outbox_id = o.id AND a.outcome <> 'skipped') AS provider_attempts,
           o.resend_of,
           COALESCE((SELECT 'delivered' FROM sms_attempts a JOIN sms_outbox g ON g.id = a.outbox_id
                      WHERE g.org_id = o.org_id AND (g.id = COALESCE(o.resend_of, o.id) OR g.resend_of = COALESCE(o.resend_of, o.id))
                        AND a.delivery_state = 'delivered' LIMIT 1),
                    (SELECT a.delivery_state FROM sms_attempts a JOIN sms_outbox g ON g.id = a.outbox_id
                      WHERE g.org_id = o.org_id AND (g.id = COALESCE(o.resend_of, o.id) OR g.resend_of = COALESCE(o.resend_of, o.id))
                        AND a.delivery_state IS NOT NULL
                      ORDER BY a.id DESC LIMIT 1)) AS delivery
      FROM sms_outbox o
     WHERE o.status = 'failed'
       ${q.orgId ? sql`AND o.org_id = ${q.orgId}` : sql``}
       ${cursor ? sql`AND (o.failed_at, o.id) < (timestamptz 'epoch' + ${cursor.us}::bigint * interval '1 microsecond', ${cursor.id}::uuid)` : sql``}
     ORDER BY o.failed_at DESC, o.id DESC
     LIMIT ${q.limit + 1}`;
  const page = rows.slice(0, q.limit);
  const last = page[page.length - 1];
  return {
    items: page.map(view),
    next: rows.length > q.limit && last ? Buffer.from(`${last.failed_us}|${last.id}`).toString('base64url') : null,
  };
}

export type RetryAnswer =
  | { result: 'not_found' }
  | { result: 'already_delivered' | 'not_failed'; status: OutboxStatus }
  | { result: 'requeued'; id: string; status: string; provider: string | null; run: RunOutcome | null };

/**
 * Re-queues a dead letter with the rate limit bypassed (an operator decided),
 * unless the patient already has a confirmation for the appointment, then
 * gives it one run, waiting at most `waitMs` for it.
 */
export async function retryDeadLetter(sql: Sql, worker: OutboxWorker, id: string, waitMs: number): Promise<RetryAnswer> {
  const moved = await requeue(sql, id);
  if (moved.result === 'not_found') return { result: 'not_found' };
  if (moved.result !== 'requeued') return { result: moved.result, status: moved.status ?? 'failed' };
  const run = worker.processNow(id).catch(() => null);
  const outcome = await Promise.race([run, new Promise<null>((r) => setTimeout(() => r(null), waitMs).unref())]);
  const [now] = await sql<{ status: string; provider: string | null }[]>`SELECT status, provider FROM sms_outbox WHERE id = ${id}`;
  return { result: 'requeued', id, status: now?.status ?? 'pending', provider: now?.provider ?? null, run: outcome };
}

/** Deletes a dead letter; false when there is no failed row with that id. */
export async function deleteDeadLetter(sql: Sql, id: string): Promise<boolean> {
  const rows = await sql`DELETE FROM sms_outbox WHERE id = ${id} AND status = 'failed' RETURNING id`;
  return rows.length > 0;
}
