import type { Sql } from 'postgres';
import { withTenant, type Tenant, type Tx } from '../db/pool.js';
import type { OrgContext } from './org.js';
import { localDayBounds, type LocalDate } from './time.js';

export interface AppointmentRow {
  id: string;
  practitioner_id: string;
  service_id: string;
  patient_name: string;
  patient_phone: string;
  patient_email: string | null;
  starts_at: Date;
  ends_at: Date;
  status: 'booked' | 'cancelled';
}

/**
 * What the tools and views call an appointment's status. "confirmed" is a
 * booked appointment the patient confirmed (appointments.confirmed_at, see
 * sql/011_reminders.sql): the stored status stays 'booked', so everything that
 * treats booked as live keeps working.
 */
export type ShownStatus = 'booked' | 'confirmed' | 'cancelled';

export const shownStatus = (row: { status: string; confirmed_at?: Date | null }): ShownStatus =>
  row.status === 'cancelled' ? 'cancelled' : row.confirmed_at ? 'confirmed' : 'booked';

export interface UpcomingRow extends AppointmentRow {
  confirmed_at: Date | null;
  reschedule_requested_at: Date | null;
  /** Upcoming appointments of the phone in the range, the ones returned included. */
  total: number;
}

/**
 * One patient's upcoming live appointments at the clinic, soonest first: at
 * most `limit`, each carrying the total count so the caller can say how many
 * more there are.
 */
export async function findUpcoming(
  sql: Sql,
  tenant: Tenant,
  phone: string,
  range: { from: Date; to?: Date | undefined },
  limit: number,
): Promise<UpcomingRow[]> {
  return withTenant(
    sql,
    tenant,
    (tx) => tx<UpcomingRow[]>`
      SELECT id, practitioner_id, service_id, patient_name, patient_phone, patient_email, starts_at, ends_at, status,
             confirmed_at, reschedule_requested_at, (count(*) OVER ())::int AS total
        FROM appointments
       WHERE patient_phone = ${phone} AND status = 'booked' AND starts_at > ${range.from}
             ${range.to ? tx`AND starts_at < ${range.to}` : tx``}
       ORDER BY starts_at, id
       LIMIT ${limit}`,
  );
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (s: string) => UUID_RE.test(s);

export async function getAppointment(sql: Sql, tenant: Tenant, id: string): Promise<AppointmentRow | null> {
  if (!isUuid(id)) return null;
  return withTenant(sql, tenant, async (tx) => {
    const [row] = await tx<AppointmentRow[]>`
      SELECT id, practitioner_id, service_id, patient_name, patient_phone, patient_email, starts_at, ends_at, status
        FROM appointments WHERE id = ${id}::uuid`;
    return row ?? null;
  });
}

/** Live appointments of one patient on one clinic-local date. */
export async function findByPhoneOnDate(
  sql: Sql,
  tenant: Tenant,
  org: OrgContext,
  phone: string,
  date: LocalDate,
): Promise<AppointmentRow[]> {
  // The local day as instants (23 to 25 hours): a day whose midnight happens
  // twice starts at the first one, so no appointment falls between two days.
  const { start: from, end: to } = localDayBounds(date, org.timeZone);
  return withTenant(
    sql,
    tenant,
    (tx) => tx<AppointmentRow[]>`
      SELECT id, practitioner_id, service_id, patient_name, patient_phone, patient_email, starts_at, ends_at, status
        FROM appointments
       WHERE patient_phone = ${phone} AND status = 'booked'
         AND starts_at >= ${from.toJSDate()} AND starts_at < ${to.toJSDate()}
       ORDER BY starts_at`,
  );
}

export type CancelResult = { status: 'cancelled' | 'already_cancelled'; appointment: AppointmentRow } | { status: 'not_found' };

/**
 * void: the appointment's reminders still waiting are cancelled in the
 * transaction that cancels (or moves) it, so none is ever claimed for it. The
 * gate would refuse them anyway; this keeps the outbox saying what happened.
 */
export async function voidReminders(tx: Tx, appointmentId: string, reason: 'appointment_cancelled' | 'superseded'): Promise<number> {
  const done = await tx`
    UPDATE sms_outbox SET status = 'cancelled', failure_reason = ${reason}, last_error = ${reason}, updated_at = now()
     WHERE appointment_id = ${appointmentId}::uuid AND status = 'pending' AND kind LIKE 'reminder:%'`;
  return done.count;
}

/** Cancelling is naturally idempotent: a second cancel reports the first. */
export async function cancelAppointmentById(sql: Sql, tenant: Tenant, id: string): Promise<CancelResult> {
  if (!isUuid(id)) return { status: 'not_found' };
  return withTenant(sql, tenant, async (tx) => {
    const [row] = await tx<AppointmentRow[]>`
      SELECT id, practitioner_id, service_id, patient_name, patient_phone, patient_email, starts_at, ends_at, status
        FROM appointments WHERE id = ${id}::uuid FOR UPDATE`;
    if (!row) return { status: 'not_found' } as const;
    if (row.status === 'cancelled') return { status: 'already_cancelled', appointment: row } as const;
    await tx`UPDATE appointments SET status = 'cancelled', cancelled_at = now(), updated_at = now() WHERE id = ${id}::uuid`;
    await voidReminders(tx, id, 'appointment_cancelled');
    return { status: 'cancelled', appointment: { ...row, status: 'cancelled' } } as const;
  });
}
