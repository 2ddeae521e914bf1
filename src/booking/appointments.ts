import type { Sql } from 'postgres';
import { withTenant, type Tenant } from '../db/pool.js';
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
  return withTenant(sql, tenant, (tx) => tx<AppointmentRow[]>`
      SELECT id, practitioner_id, service_id, patient_name, patient_phone, patient_email, starts_at, ends_at, status
        FROM appointments
       WHERE patient_phone = ${phone} AND status = 'booked'
         AND starts_at >= ${from.toJSDate()} AND starts_at < ${to.toJSDate()}
       ORDER BY starts_at`);
}

export type CancelResult = { status: 'cancelled' | 'already_cancelled'; appointment: AppointmentRow } | { status: 'not_found' };

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
    return { status: 'cancelled', appointment: { ...row, status: 'cancelled' } } as const;
  });
}
