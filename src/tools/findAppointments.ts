import { DateTime } from 'luxon';
import { z } from 'zod';
import { findUpcoming, shownStatus, type UpcomingRow } from '../booking/appointments.js';
import { ToolError } from '../booking/errors.js';
import { spokenPhoneEnding } from '../booking/phone.js';
import { isoLocal, localDayBounds, parseLocalDate, spokenDate, spokenDateTime } from '../booking/time.js';
import { optionalText, orgArg, parseArgs, patientPhoneOf } from './args.js';
import type { Tool, ToolContext } from './types.js';

const schema = z.object({
  ...orgArg,
  patientPhone: optionalText(40),
  date: optionalText(40),
});

const NAMES = {
  patientPhone: "the patient's phone number",
  date: 'the date',
};

/** At most this many are read out; the rest are counted. */
const LISTED = 3;

/**
 * The caller's upcoming appointments at this clinic, soonest first: by the
 * phone given or the caller id, optionally on one clinic-local date. Each is
 * spoken with its status; the ids returned are what cancelAppointment and
 * rescheduleAppointment take.
 */
export const findAppointments: Tool<typeof schema> = {
  name: 'findAppointments',
  schema,
  async run(ctx: ToolContext, raw) {
    const args = parseArgs(schema, raw, NAMES);
    const { org } = ctx;
    const phone = patientPhoneOf(ctx, args.patientPhone, 'What phone number were the appointments booked with?');
    const now = ctx.now();
    const day = args.date ? localDayBounds(parseLocalDate(args.date), org.timeZone) : null;
    if (day && day.end <= now) {
      throw new ToolError(
        'date_in_past',
        `${spokenDate(day.start, org.locale)} has already passed. I can only look up upcoming appointments.`,
      );
    }
    const rows = await findUpcoming(
      ctx.sql,
      ctx.tenant,
      phone,
      { from: (day && day.start > now ? day.start : now).toJSDate(), to: day?.end.toJSDate() },
      LISTED,
    );
    const total = rows[0]?.total ?? 0;
    const more = Math.max(0, total - rows.length);
    const onDay = day ? ` on ${spokenDate(day.start, org.locale)}` : '';
    ctx.log.info({ found: total }, 'appointments found');
    if (rows.length === 0) {
      return {
        success: true,
        appointments: [],
        more: 0,
        message: `I couldn't find any upcoming appointments${onDay} for the number ${spokenPhoneEnding(phone)}.`,
      };
    }
    const items = rows.map((r) => describe(ctx, r));
    const rest = more > 0 ? ` There ${more === 1 ? 'is' : 'are'} ${more} more after ${items.length === 1 ? 'that one' : 'those'}.` : '';
    // One is said as a sentence; several as a list whose items have commas of their own.
    const message =
      items.length === 1
        ? `You're booked for ${items[0]!.what}${items[0]!.note ? `, and you've ${items[0]!.note} it` : ''}.${rest}`
        : `You have ${total} upcoming appointments${onDay}. ${total > items.length ? `The next ${items.length} are` : 'They are'}: ` +
          `${listOf(items.map((i) => `${i.what}${i.note ? `, which you've ${i.note}` : ''}`))}.${rest}`;
    return {
      success: true,
      appointments: items.map(({ what: _what, note: _note, ...item }) => item),
      more,
      message,
    };
  },
};

function describe(ctx: ToolContext, r: UpcomingRow) {
  const { org } = ctx;
  const start = DateTime.fromJSDate(r.starts_at, { zone: org.timeZone });
  const service = org.services.find((s) => s.id === r.service_id)?.name ?? 'appointment';
  const practitioner = org.practitioners.find((p) => p.id === r.practitioner_id)?.name ?? null;
  const status = shownStatus(r);
  const spokenTime = spokenDateTime(start, org.locale);
  const rescheduleRequested = r.reschedule_requested_at !== null;
  const note = rescheduleRequested ? 'asked to move' : status === 'confirmed' ? 'confirmed' : null;
  return {
    appointmentId: r.id,
    startsAt: isoLocal(start),
    spokenTime,
    service,
    practitioner,
    status,
    rescheduleRequested,
    what: `a ${service}${practitioner ? ` with ${practitioner}` : ''} on ${spokenTime}`,
    note,
  };
}

/** "a; b; and c" */
const listOf = (items: string[]) => (items.length <= 2 ? items.join('; and ') : `${items.slice(0, -1).join('; ')}; and ${items.at(-1)}`);
