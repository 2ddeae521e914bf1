import { z } from 'zod';
import { eligiblePractitioners, resolvePractitioner, resolveService } from '../booking/availability.js';
import { bookAppointment, requestHash } from '../booking/book.js';
import { isoLocal, parseLocalDate, parseLocalTime, resolveLocal, spokenDateTime } from '../booking/time.js';
import { phoneForLog } from '../log.js';
import { optionalText, orgArg, parseArgs, patientPhoneOf, requiredText } from './args.js';
import { assertBookable, explainRefusal, withDryRun } from './booking-shared.js';
import type { Tool, ToolContext } from './types.js';

const schema = z.object({
  ...orgArg,
  patientName: requiredText(200),
  patientPhone: optionalText(40),
  patientEmail: optionalText(254).pipe(z.email().optional()),
  appointmentDate: requiredText(40),
  appointmentTime: requiredText(40),
  serviceType: optionalText(100),
  practitioner: optionalText(200),
});

const NAMES = {
  patientName: "the patient's name",
  patientPhone: "the patient's phone number",
  patientEmail: "the patient's email address",
  appointmentDate: 'the appointment date',
  appointmentTime: 'the appointment time',
  serviceType: 'the type of visit',
  practitioner: 'the practitioner',
};

const NOT_CONFIGURED = { smsStatus: 'failed_but_booked', smsReason: 'not_configured' } as const;

const SMS_PHRASE: Record<string, string> = {
  sent: 'A confirmation text is on its way.',
  queued: 'A confirmation text will follow shortly.',
  failed_but_booked: "I wasn't able to send a confirmation text, but the appointment is booked.",
  error_but_booked: "I wasn't able to send a confirmation text, but the appointment is booked.",
};

export const bookClinicAppointment: Tool<typeof schema> = {
  name: 'bookClinicAppointment',
  schema,
  async run(ctx: ToolContext, raw) {
    const args = parseArgs(schema, raw, NAMES);
    const { org, call } = ctx;
    const phone = patientPhoneOf(ctx, args.patientPhone, "What's the best phone number to reach the patient?");
    const start = resolveLocal(parseLocalDate(args.appointmentDate), parseLocalTime(args.appointmentTime), org.timeZone, org.locale);
    const service = resolveService(org, args.serviceType);
    const requested = resolvePractitioner(org, args.practitioner);
    const candidates = eligiblePractitioners(org, service, requested);
    const end = start.plus({ minutes: service.durationMinutes });
    await assertBookable(ctx, start, end, { service, candidates });

    const smsRow = withDryRun(ctx.sms.prepare(org, { patientName: args.patientName, start, kind: 'booked' }), call.dryRun);
    const outcome = await bookAppointment(ctx.sql, {
      org,
      clientId: ctx.tenant.clientId,
      service,
      practitioners: candidates,
      start,
      end,
      patientName: args.patientName,
      patientPhone: phone,
      patientEmail: args.patientEmail,
      callId: call.callId,
      idempotencyKey: call.invocationId ? `${call.platform}:${call.invocationId}` : undefined,
      requestHash: requestHash({
        service: service.id,
        practitioner: requested?.id ?? null,
        start: start.toUTC().toISO(),
        phone,
        name: args.patientName,
        email: args.patientEmail ?? null,
      }),
      tool: 'bookClinicAppointment',
      sms: smsRow,
      reminders: smsRow ? ctx.sms.reminders(org, { start, patientPhone: phone }, ctx.now()) : [],
    });
    if (outcome.outcome !== 'booked') {
      ctx.log.info({ outcome: outcome.outcome, phone: phoneForLog(phone) }, 'booking refused');
      return explainRefusal(ctx, outcome, start, { service, candidates });
    }

    const sms = smsRow ? await ctx.sms.outcome(org.id, outcome.appointmentId, 'booked', call.receivedAt) : NOT_CONFIGURED;

    const practitioner = org.practitioners.find((p) => p.id === outcome.practitionerId);
    ctx.log.info(
      {
        appointmentId: outcome.appointmentId,
        replayed: outcome.replayed ?? false,
        existing: outcome.existing,
        smsStatus: sms.smsStatus,
        phone: phoneForLog(phone),
      },
      'appointment booked',
    );
    const spokenTime = spokenDateTime(start, org.locale);
    const withWhom = practitioner ? ` with ${practitioner.name}` : '';
    return {
      success: true,
      appointmentId: outcome.appointmentId,
      startsAt: isoLocal(start),
      endsAt: isoLocal(end),
      spokenTime,
      timeZone: org.timeZone,
      service: service.name,
      practitioner: practitioner?.name ?? null,
      ...sms,
      ...(call.dryRun ? { smsDryRun: true } : {}),
      alreadyBooked: outcome.existing || outcome.replayed === true,
      message: `You're booked for a ${service.name}${withWhom} on ${spokenTime}. ${SMS_PHRASE[sms.smsStatus] ?? ''}`.trim(),
    };
  },
};
