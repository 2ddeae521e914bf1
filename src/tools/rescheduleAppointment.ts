import { DateTime } from 'luxon';
import { z } from 'zod';
import { eligiblePractitioners, resolvePractitioner, resolveService } from '../booking/availability.js';
import { bookAppointment, requestHash } from '../booking/book.js';
import { ToolError } from '../booking/errors.js';
import { isoLocal, parseLocalDate, parseLocalTime, resolveLocal, spokenDateTime } from '../booking/time.js';
import { optionalText, orgArg, parseArgs, requiredText } from './args.js';
import { assertBookable, explainRefusal, withDryRun } from './booking-shared.js';
import { locateAppointment } from './locateAppointment.js';
import type { Tool, ToolContext } from './types.js';

const schema = z.object({
  ...orgArg,
  appointmentId: optionalText(100),
  patientPhone: optionalText(40),
  currentDate: optionalText(40),
  newDate: requiredText(40),
  newTime: requiredText(40),
  serviceType: optionalText(100),
  practitioner: optionalText(200),
});

const NAMES = {
  appointmentId: 'the appointment reference',
  patientPhone: "the patient's phone number",
  currentDate: 'the current appointment date',
  newDate: 'the new date',
  newTime: 'the new time',
  serviceType: 'the type of visit',
  practitioner: 'the practitioner',
};

/**
 * Moves an appointment in one transaction: the same locks and checks as a new
 * booking, and the old time is only released if the new one is secured.
 */
export const rescheduleAppointment: Tool<typeof schema> = {
  name: 'rescheduleAppointment',
  schema,
  async run(ctx: ToolContext, raw) {
    const args = parseArgs(schema, raw, NAMES);
    const { org, call } = ctx;
    const appt = await locateAppointment(ctx, {
      appointmentId: args.appointmentId,
      patientPhone: args.patientPhone,
      date: args.currentDate,
    });
    if (appt.status !== 'booked') {
      throw new ToolError('appointment_cancelled', 'That appointment was cancelled, so it cannot be moved. Shall I book a new one?');
    }
    const current = org.services.find((s) => s.id === appt.service_id);
    const service = args.serviceType || !current ? resolveService(org, args.serviceType) : current;
    // Keep the same practitioner unless the caller asks for someone else (or "anyone").
    const requested =
      args.practitioner !== undefined
        ? resolvePractitioner(org, args.practitioner)
        : org.practitioners.find((p) => p.id === appt.practitioner_id);
    const candidates = eligiblePractitioners(org, service, requested);
    const start = resolveLocal(parseLocalDate(args.newDate), parseLocalTime(args.newTime), org.timeZone, org.locale);
    const end = start.plus({ minutes: service.durationMinutes });
    await assertBookable(ctx, start, end, { service, candidates });

    const kind = `rescheduled:${start.toUTC().toISO()}`;
    const sms = ctx.sms.prepare(org, { patientName: appt.patient_name, start, kind: 'rescheduled' });
    const outcome = await bookAppointment(ctx.sql, {
      org,
      clientId: ctx.tenant.clientId,
      service,
      practitioners: candidates,
      start,
      end,
      patientName: appt.patient_name,
      patientPhone: appt.patient_phone,
      patientEmail: appt.patient_email ?? undefined,
      callId: call.callId,
      idempotencyKey: call.invocationId ? `${call.platform}:${call.invocationId}` : undefined,
      requestHash: requestHash({
        appointment: appt.id,
        service: service.id,
        practitioner: requested?.id ?? null,
        start: start.toUTC().toISO(),
      }),
      tool: 'rescheduleAppointment',
      replaceId: appt.id,
      sms: withDryRun(sms ? { kind, body: sms.body } : null, call.dryRun),
      // The waiting reminders move to the new time; those it leaves no due time are voided.
      reminders: sms ? ctx.sms.reminders(org, { start, patientPhone: appt.patient_phone }, ctx.now()) : [],
    });
    if (outcome.outcome !== 'booked') return explainRefusal(ctx, outcome, start, { service, candidates });

    const smsOutcome = sms
      ? await ctx.sms.outcome(org.id, appt.id, kind, call.receivedAt)
      : ({ smsStatus: 'failed_but_booked', smsReason: 'not_configured' } as const);
    const practitioner = org.practitioners.find((p) => p.id === outcome.practitionerId);
    const from = spokenDateTime(DateTime.fromJSDate(appt.starts_at, { zone: org.timeZone }), org.locale);
    return {
      success: true,
      appointmentId: appt.id,
      startsAt: isoLocal(start),
      endsAt: isoLocal(end),
      spokenTime: spokenDateTime(start, org.locale),
      previousSpokenTime: from,
      timeZone: org.timeZone,
      service: service.name,
      practitioner: practitioner?.name ?? null,
      ...smsOutcome,
      message: `Done. Your appointment has moved from ${from} to ${spokenDateTime(start, org.locale)}.`,
    };
  },
};
