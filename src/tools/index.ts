import { bookClinicAppointment } from './bookClinicAppointment.js';
import { cancelAppointment } from './cancelAppointment.js';
import { checkAvailability } from './checkAvailability.js';
import { findAppointments } from './findAppointments.js';
import { rescheduleAppointment } from './rescheduleAppointment.js';
import { takeMessage } from './takeMessage.js';
import type { Tool } from './types.js';

/** The function names the voice agent sees. Other systems depend on them: do not rename. */
export const TOOLS: ReadonlyMap<string, Tool> = new Map<string, Tool>(
  [checkAvailability, bookClinicAppointment, cancelAppointment, rescheduleAppointment, takeMessage, findAppointments].map((t) => [
    t.name,
    t as Tool,
  ]),
);
