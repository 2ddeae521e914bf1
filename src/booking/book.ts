import { createHash } from 'node:crypto';
import type { DateTime } from 'luxon';
import type { Sql } from 'postgres';
import { rethrowTenant } from '../db/pool.js';
import type { OrgContext, Practitioner, Service } from './org.js';

export type BookOutcome =
  | { outcome: 'booked'; appointmentId: string; practitionerId: string; existing: boolean; replayed?: boolean }
  | {
      outcome: 'slot_taken' | 'outside_hours' | 'idempotency_mismatch' | 'not_found' | 'practitioner_unavailable';
      replayed?: boolean;
    };

export interface BookRequest {
  org: OrgContext;
  /** The OAuth client acting; the booking transaction re-checks it is not revoked. */
  clientId: string | null;
  service: Service;
  /** Candidates in the order the database should try them. */
  practitioners: Practitioner[];
  start: DateTime;
  end: DateTime;
  patientName: string;
  patientPhone: string;
  patientEmail?: string | undefined;
  callId?: string | undefined;
  /** Platform + tool-call id; omitted when the caller supplied none. */
  idempotencyKey?: string | undefined;
  requestHash: string;
  tool: string;
  /** Appointment being moved (reschedule); omitted for a new booking. */
  replaceId?: string | undefined;
  sms?: { kind: string; body: string; dryRun?: boolean } | undefined;
  /**
   * The appointment's reminders for its (new) time (src/sms/reminders.ts), due
   * times computed here so the booking stays one round trip. A reschedule
   * moves the waiting ones to these and voids the rest.
   */
  reminders?: Array<{ kind: string; due: string; sendBy: string; body: string }> | undefined;
}

/** SHA-256 of the canonical JSON of the normalised arguments: same request, same hash. */
export function requestHash(value: unknown): string {
  const canon = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(canon)
      : v && typeof v === 'object'
        ? Object.fromEntries(
            Object.entries(v as Record<string, unknown>)
              .filter(([, x]) => x !== undefined)
              .sort(([a], [b]) => (a < b ? -1 : 1))
              .map(([k, x]) => [k, canon(x)]),
          )
        : v;
  return createHash('sha256')
    .update(JSON.stringify(canon(value)))
    .digest('hex');
}

const EXCLUSION_VIOLATION = '23P01';

/**
 * Runs the booking transaction (sql/003_booking.sql) in one round trip.
 * Practitioner ids are passed sorted so every transaction takes advisory locks
 * in the same global order and two bookings can never deadlock.
 */
export async function bookAppointment(sql: Sql, r: BookRequest): Promise<BookOutcome> {
  const ids = r.practitioners.map((p) => p.id).sort();
  try {
    const [row] = await sql<{ result: BookOutcome }[]>`
      SELECT book_appointment(
        ${r.org.id}::uuid, ${r.clientId}, ${r.idempotencyKey ?? null}, ${r.tool}, ${r.requestHash},
        ${ids}::uuid[], ${r.service.id}::uuid, ${r.start.toJSDate()}, ${r.end.toJSDate()},
        ${r.patientName}, ${r.patientPhone}, ${r.patientEmail ?? null}, ${r.callId ?? null},
        ${r.replaceId ?? null}::uuid, ${r.sms?.kind ?? null}, ${r.sms?.body ?? null}, ${r.sms?.dryRun ?? false},
        ${sql.json(r.reminders ?? [])}::jsonb
      ) AS result`;
    if (!row) throw new Error('book_appointment returned no row');
    return row.result;
  } catch (err) {
    // A reschedule moves a row with UPDATE, which has no ON CONFLICT: the
    // exclusion constraint raises instead, and the whole attempt rolls back.
    if ((err as { code?: string }).code === EXCLUSION_VIOLATION) return { outcome: 'slot_taken' };
    return rethrowTenant(err);
  }
}
