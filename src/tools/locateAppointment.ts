import { DateTime } from 'luxon';
import { findByPhoneOnDate, getAppointment, isUuid, type AppointmentRow } from '../booking/appointments.js';
import { ToolError } from '../booking/errors.js';
import { toE164 } from '../booking/phone.js';
import { parseLocalDate, spokenClock, spokenDate, spokenList } from '../booking/time.js';
import type { ToolContext } from './types.js';

/**
 * Finds the one appointment a cancel or reschedule is about: by id, or by the
 * patient's phone (argument or caller id) and the appointment's local date.
 */
export async function locateAppointment(
  ctx: ToolContext,
  by: { appointmentId?: string | undefined; patientPhone?: string | undefined; date?: string | undefined },
): Promise<AppointmentRow> {
  const { org } = ctx;
  if (by.appointmentId) {
    const row = isUuid(by.appointmentId) ? await getAppointment(ctx.sql, ctx.tenant, by.appointmentId) : null;
    if (!row) throw new ToolError('appointment_not_found', "I couldn't find an appointment with that reference.");
    return row;
  }
  const phoneInput = by.patientPhone ?? ctx.call.callerNumber;
  if (!phoneInput || !by.date) {
    throw new ToolError(
      'missing_lookup',
      'To find the appointment I need either its reference, or the phone number it was booked with and its date.',
    );
  }
  const phone = toE164(phoneInput, org.defaultRegion);
  const date = parseLocalDate(by.date);
  const day = DateTime.fromObject(date, { zone: org.timeZone });
  const rows = await findByPhoneOnDate(ctx.sql, ctx.tenant, org, phone, date);
  if (rows.length === 0) {
    throw new ToolError('appointment_not_found', `I couldn't find an appointment for that number on ${spokenDate(day, org.locale)}.`);
  }
  if (rows.length > 1) {
    const times = rows.map((r) => spokenClock(DateTime.fromJSDate(r.starts_at, { zone: org.timeZone }), org.locale));
    throw new ToolError(
      'multiple_appointments',
      `There are ${rows.length} appointments for that number on ${spokenDate(day, org.locale)}, at ${spokenList(times)}. Which one?`,
      { appointments: rows.map((r, i) => ({ appointmentId: r.id, time: times[i] })) },
    );
  }
  return rows[0]!;
}
