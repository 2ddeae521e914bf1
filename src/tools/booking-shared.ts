import type { DateTime } from 'luxon';
import { describeHours, isWithinOpeningHours, type Slot } from '../booking/availability.js';
import { ToolError } from '../booking/errors.js';
import type { BookOutcome } from '../booking/book.js';
import { alternativesAfter, type SlotSearch } from '../booking/slots.js';
import {
  isoLocal,
  localDateOf,
  localDayBounds,
  spokenClock,
  spokenDate,
  spokenDateTime,
  spokenList,
  type Locale,
} from '../booking/time.js';
import type { ToolContext, ToolResult } from './types.js';
import type { Practitioner, Service } from '../booking/org.js';

const ALTERNATIVES = 3;

const searchFor = (ctx: ToolContext, opts: { service: Service; candidates: Practitioner[] }): SlotSearch => ({
  sql: ctx.sql,
  tenant: ctx.tenant,
  org: ctx.org,
  service: opts.service,
  candidates: opts.candidates,
});

export function describeAlternatives(slots: Slot[], requested: DateTime, locale?: Locale): { list: unknown[]; spoken: string } {
  const sameDay = (s: Slot) => s.start.hasSame(requested, 'day');
  const spoken = slots.map((s) =>
    sameDay(s) ? spokenClock(s.start, locale) : `${spokenDate(s.start, locale)} at ${spokenClock(s.start, locale)}`,
  );
  return {
    list: slots.map((s, i) => ({ startsAt: isoLocal(s.start), spoken: spoken[i] })),
    spoken: spokenList(spoken),
  };
}

/** Refuses times the caller cannot have: already past, or outside opening hours (with nearby openings). */
export async function assertBookable(
  ctx: ToolContext,
  start: DateTime,
  end: DateTime,
  opts: { service: Service; candidates: Practitioner[] },
): Promise<void> {
  const now = ctx.now();
  if (start <= now) {
    throw new ToolError('time_in_past', `${spokenDateTime(start, ctx.org.locale)} has already passed. What later time works for you?`);
  }
  if (!isWithinOpeningHours(ctx.org, start, end)) {
    const dayStart = localDayBounds(localDateOf(start), ctx.org.timeZone).start;
    const alts = await alternativesAfter(searchFor(ctx, opts), dayStart, now, ALTERNATIVES);
    const hours = describeHours(ctx.org, localDateOf(start));
    const when = hours === 'closed' ? `We're closed on ${start.toFormat('cccc')}s` : `On ${start.toFormat('cccc')}s we're open ${hours}`;
    const described = describeAlternatives(alts, start, ctx.org.locale);
    const alt = alts.length ? ` The closest openings are ${described.spoken}.` : '';
    throw new ToolError(
      'outside_hours',
      `${when}, and a ${opts.service.durationMinutes}-minute ${opts.service.name} at ${spokenClock(start, ctx.org.locale)} doesn't fit.${alt}`,
      { alternatives: described.list },
    );
  }
}

/** The non-booked outcomes of book_appointment, as results or speakable errors. */
export async function explainRefusal(
  ctx: ToolContext,
  outcome: Exclude<BookOutcome, { outcome: 'booked' }>,
  start: DateTime,
  opts: { service: Service; candidates: Practitioner[] },
): Promise<ToolResult> {
  switch (outcome.outcome) {
    case 'slot_taken':
    case 'practitioner_unavailable': {
      const alts = await alternativesAfter(searchFor(ctx, opts), start, ctx.now(), ALTERNATIVES);
      const d = describeAlternatives(alts, start, ctx.org.locale);
      return {
        success: false,
        reason: 'slot_taken',
        alternatives: d.list,
        message:
          `Sorry, ${spokenDateTime(start, ctx.org.locale)} is no longer available.` +
          (alts.length ? ` The nearest openings are ${d.spoken}.` : ' I could not find another opening this week.'),
      };
    }
    case 'outside_hours':
      // The database's hours disagree with the settings this call used (they
      // changed within the settings cache's TTL): refuse in general terms.
      throw new ToolError('outside_hours', "That time is outside the clinic's opening hours.");
    case 'not_found':
      throw new ToolError('appointment_not_found', "I couldn't find that appointment. It may have been cancelled.");
    case 'idempotency_mismatch':
      throw new ToolError('idempotency_conflict', 'That request id was already used for a different booking, so I did not book this one.');
  }
}

export const withDryRun = (sms: { kind: string; body: string } | null, dryRun: boolean | undefined) =>
  sms ? { ...sms, dryRun: dryRun === true } : undefined;
