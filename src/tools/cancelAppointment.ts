import { DateTime } from 'luxon';
import { z } from 'zod';
import { cancelAppointmentById } from '../booking/appointments.js';
import { ToolError } from '../booking/errors.js';
import { spokenDateTime } from '../booking/time.js';
import { optionalText, orgArg, parseArgs } from './args.js';
import { locateAppointment } from './locateAppointment.js';
import type { Tool, ToolContext } from './types.js';

const schema = z.object({
  ...orgArg,
  appointmentId: optionalText(100),
  patientPhone: optionalText(40),
  appointmentDate: optionalText(40),
});

const NAMES = {
  appointmentId: 'the appointment reference',
  patientPhone: "the patient's phone number",
  appointmentDate: 'the appointment date',
};

export const cancelAppointment: Tool<typeof schema> = {
  name: 'cancelAppointment',
  schema,
  async run(ctx: ToolContext, raw) {
    const args = parseArgs(schema, raw, NAMES);
    const appt = await locateAppointment(ctx, {
      appointmentId: args.appointmentId,
      patientPhone: args.patientPhone,
      date: args.appointmentDate,
    });
    const result = await cancelAppointmentById(ctx.sql, ctx.tenant, appt.id);
    if (result.status === 'not_found') {
      throw new ToolError('appointment_not_found', "I couldn't find that appointment.");
    }
    const when = spokenDateTime(DateTime.fromJSDate(appt.starts_at, { zone: ctx.org.timeZone }), ctx.org.locale);
    ctx.log.info({ appointmentId: appt.id, status: result.status }, 'appointment cancelled');
    return {
      success: true,
      appointmentId: appt.id,
      status: 'cancelled',
      alreadyCancelled: result.status === 'already_cancelled',
      message:
        result.status === 'already_cancelled'
          ? `The appointment on ${when} was already cancelled.`
          : `Your appointment on ${when} is cancelled.`,
    };
  },
};
