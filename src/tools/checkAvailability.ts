import { z } from 'zod';
import {
  computeSlots,
  describeHours,
  eligiblePractitioners,
  fetchBusy,
  resolvePractitioner,
  resolveService,
} from '../booking/availability.js';
import { ToolError } from '../booking/errors.js';
import { nextOpenDay } from '../booking/slots.js';
import { addDays, isoDate, isoLocal, localDayBounds, parseLocalDate, spokenClock, spokenDate, spokenList } from '../booking/time.js';
import { optionalText, orgArg, parseArgs, requiredText } from './args.js';
import type { Tool, ToolContext } from './types.js';

const schema = z.object({
  ...orgArg,
  date: requiredText(40),
  serviceType: optionalText(100),
  practitioner: optionalText(200),
});

const NAMES = { date: 'the date', serviceType: 'the type of visit', practitioner: 'the practitioner' };
const SPOKEN_MAX = 8;
const LISTED_MAX = 16;

/** Open slots on one clinic-local day, both speakable and as ISO instants with offset. */
export const checkAvailability: Tool<typeof schema> = {
  name: 'checkAvailability',
  schema,
  async run(ctx: ToolContext, raw) {
    const args = parseArgs(schema, raw, NAMES);
    const { org } = ctx;
    const date = parseLocalDate(args.date);
    const service = resolveService(org, args.serviceType);
    const requested = resolvePractitioner(org, args.practitioner);
    const candidates = eligiblePractitioners(org, service, requested);
    const now = ctx.now().setZone(org.timeZone);
    // The day as instants: 23, 24 or 25 hours, starting at the first midnight.
    const { start: day, end: dayEnd } = localDayBounds(date, org.timeZone);
    if (dayEnd <= now) {
      throw new ToolError('date_in_past', `${spokenDate(day, org.locale)} has already passed. Which upcoming day would you like?`);
    }

    const busy = await fetchBusy(ctx.sql, ctx.tenant, day, dayEnd);
    const slots = computeSlots({ org, date, service, practitioners: candidates, busy, notBefore: now });
    const nameOf = new Map(org.practitioners.map((p) => [p.id, p.name]));
    const who = requested ? ` with ${requested.name}` : '';
    const base = {
      date: isoDate(day),
      spokenDate: spokenDate(day, org.locale),
      timeZone: org.timeZone,
      service: service.name,
      durationMinutes: service.durationMinutes,
      practitioner: requested?.name ?? null,
      openingHours: describeHours(org, date),
    };

    if (slots.length === 0) {
      const search = { sql: ctx.sql, tenant: ctx.tenant, org, service, candidates };
      const next = await nextOpenDay(search, addDays(date, 1), now);
      const hint = next
        ? ` The next opening is ${spokenDate(next.start, org.locale)} at ${spokenClock(next.start, org.locale)}.`
        : ' I could not find an opening in the next two weeks.';
      return {
        success: true,
        ...base,
        slots: [],
        spoken: '',
        nextAvailable: next
          ? { startsAt: isoLocal(next.start), spoken: `${spokenDate(next.start, org.locale)} at ${spokenClock(next.start, org.locale)}` }
          : null,
        message: `There are no openings${who} on ${spokenDate(day, org.locale)} for a ${service.name}.${hint}`,
      };
    }

    const times = slots.map((s) => spokenClock(s.start, org.locale));
    const spokenTimes =
      times.length > SPOKEN_MAX
        ? `${times.slice(0, SPOKEN_MAX).join(', ')}, and ${times.length - SPOKEN_MAX} more until ${times[times.length - 1]}`
        : spokenList(times);
    return {
      success: true,
      ...base,
      slots: slots.slice(0, LISTED_MAX).map((s) => ({
        time: spokenClock(s.start, org.locale),
        startsAt: isoLocal(s.start),
        practitioners: s.practitionerIds.map((id) => nameOf.get(id) ?? id),
      })),
      moreSlots: Math.max(0, slots.length - LISTED_MAX),
      spoken: spokenTimes,
      message: `On ${spokenDate(day, org.locale)}${who}, a ${service.name} is open at ${spokenTimes}.`,
    };
  },
};
