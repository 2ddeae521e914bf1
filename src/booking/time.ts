import { DateTime, IANAZone } from 'luxon';
import { ToolError } from './errors.js';

/**
 * Clinic-local dates and times. Everything the agent sends or hears is in the
 * clinic's IANA zone; instants are only ever converted at the edges. Every
 * formatter asserts validity, so "Invalid DateTime" can never reach a caller.
 */

const LOCALE = 'en-US';

export interface LocalDate {
  year: number;
  month: number;
  day: number;
}

export interface LocalTime {
  hour: number;
  minute: number;
}

export function isValidZone(zone: string): boolean {
  return IANAZone.isValidZone(zone);
}

const DATE_RE = /^(\d{4})-(\d{2})-(\d{2})$/;

export function parseLocalDate(input: string): LocalDate {
  const m = DATE_RE.exec(input.trim());
  if (m) {
    const [year, month, day] = [Number(m[1]), Number(m[2]), Number(m[3])];
    if (DateTime.fromObject({ year, month, day }, { zone: 'UTC' }).isValid) return { year, month, day };
  }
  throw new ToolError(
    'invalid_date',
    "I couldn't understand that date. Could you give me the day, month and year again?",
    { expected: 'YYYY-MM-DD' },
  );
}

// "15:00", "9:30", "3pm", "3:30 PM", "3:30 p.m.". Anything else is refused
// rather than guessed: new Date("3") is silently 2001-03-01.
const TIME_RE = /^(\d{1,2})(?:[:.](\d{2}))?\s*([ap])?\.?\s*(?:m\.?)?$/i;

export function parseLocalTime(input: string): LocalTime {
  const m = TIME_RE.exec(input.trim());
  if (m) {
    let hour = Number(m[1]);
    const minute = m[2] === undefined ? 0 : Number(m[2]);
    const meridiem = m[3]?.toLowerCase();
    const hasClock = m[2] !== undefined || meridiem !== undefined;
    if (meridiem && hour >= 1 && hour <= 12) {
      if (meridiem === 'a' && hour === 12) hour = 0;
      if (meridiem === 'p' && hour !== 12) hour += 12;
      if (minute <= 59) return { hour, minute };
    } else if (!meridiem && hasClock && hour <= 23 && minute <= 59) {
      return { hour, minute };
    }
  }
  throw new ToolError(
    'invalid_time',
    "I couldn't understand that time. Could you say it again, like 3:30 PM?",
    { expected: 'HH:mm' },
  );
}

/**
 * Combines a clinic-local date and time into an instant, refusing the two
 * wall-clock times a DST change makes unsafe: one that never happens (spring
 * forward) and one that happens twice (fall back).
 */
export function resolveLocal(date: LocalDate, time: LocalTime, zone: string): DateTime {
  const dt = DateTime.fromObject({ ...date, ...time }, { zone, locale: LOCALE });
  if (!dt.isValid) {
    throw new ToolError('invalid_date', "I couldn't understand that date and time. Could you say it again?");
  }
  // Both checks are cheap on the happy path; the wording is only built on refusal.
  const words = () => ({
    wall: spokenClock(DateTime.fromObject({ ...date, ...time }, { zone: 'UTC', locale: LOCALE })),
    day: DateTime.fromObject(date, { zone, locale: LOCALE }).toFormat('MMMM d'),
  });
  if (dt.hour !== time.hour || dt.minute !== time.minute || dt.day !== date.day) {
    const { wall, day } = words();
    throw new ToolError(
      'nonexistent_time',
      `${wall} doesn't exist on ${day} because the clocks spring forward. Could we pick another time?`,
    );
  }
  // An hour either side has the same offset on all but the two days a year
  // with a change, so the full ambiguity check only runs near one.
  if (dt.minus({ hours: 3 }).offset !== dt.plus({ hours: 3 }).offset && dt.getPossibleOffsets().length > 1) {
    const { wall, day } = words();
    throw new ToolError(
      'ambiguous_time',
      `${wall} happens twice on ${day} because the clocks fall back. Could we pick another time?`,
    );
  }
  return dt;
}

function assertValid(dt: DateTime): DateTime {
  if (!dt.isValid) throw new Error(`invalid DateTime: ${dt.invalidReason ?? 'unknown'}`);
  return dt;
}

/** "3:00 PM" */
export function spokenClock(dt: DateTime): string {
  return assertValid(dt).setLocale(LOCALE).toFormat('h:mm a');
}

/** "Thursday, August 20" */
export function spokenDate(dt: DateTime): string {
  return assertValid(dt).setLocale(LOCALE).toFormat('cccc, MMMM d');
}

/** "Thursday, August 20 at 3:00 PM" */
export function spokenDateTime(dt: DateTime): string {
  return `${spokenDate(dt)} at ${spokenClock(dt)}`;
}

/** ISO 8601 with the clinic's offset, never "Z" unless the clinic is on UTC. */
export function isoLocal(dt: DateTime): string {
  const iso = assertValid(dt).toISO({ suppressMilliseconds: true });
  if (!iso) throw new Error('invalid DateTime');
  return iso;
}

export function isoDate(dt: DateTime): string {
  const d = assertValid(dt).toISODate();
  if (!d) throw new Error('invalid DateTime');
  return d;
}

/** Joins speakable items: "a", "a and b", "a, b and c". */
export function spokenList(items: string[]): string {
  if (items.length <= 1) return items.join('');
  return `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`;
}
