import { DateTime, IANAZone } from 'luxon';
import { ToolError } from './errors.js';
import { clinicZone } from './zone.js';

/**
 * Clinic-local dates and times. Everything the agent sends or hears is in the
 * clinic's IANA zone; instants are only ever converted at the edges. Every
 * formatter asserts validity, so "Invalid DateTime" can never reach a caller.
 *
 * Daylight saving time, one policy everywhere a time is offered, spoken or
 * accepted: a wall-clock time that happens twice (the clocks fall back) means
 * its FIRST occurrence, the earlier instant still on the pre-change offset, as
 * RFC 5545 and most calendars read it. A time that never happens (the clocks
 * spring forward) is refused when asked for and never offered. Opening-hours
 * boundaries follow the same rule (wallInstant); a boundary that does not
 * exist is the moment the clocks jump past it.
 */

const LOCALE = 'en-US';

/**
 * How a clinic's times are said and written (the clinic's `locale` setting).
 * en-US: "Thursday, March 4 at 3:00 PM"; en-GB: "Thursday 4 March at 15:00".
 */
export type Locale = 'en-US' | 'en-GB';
export const LOCALES: readonly Locale[] = ['en-US', 'en-GB'];
export const DEFAULT_LOCALE: Locale = 'en-US';

interface SpokenStyle {
  clock: string;
  date: string;
  /** How a second pass of a repeated hour is told apart. */
  fallBack: string;
  /** Why a wall time does not exist. */
  springForward: string;
}

// Formats are pinned per locale rather than taken from Intl, so a change in the
// machine's ICU data can never change what a caller hears.
const STYLES: Record<Locale, SpokenStyle> = {
  'en-US': { clock: 'h:mm a', date: 'cccc, MMMM d', fallBack: 'after the clocks fall back', springForward: 'the clocks spring forward' },
  'en-GB': { clock: 'HH:mm', date: 'cccc d MMMM', fallBack: 'after the clocks go back', springForward: 'the clocks go forward' },
};

const styleOf = (locale: Locale | undefined): SpokenStyle => STYLES[locale ?? DEFAULT_LOCALE] ?? STYLES[DEFAULT_LOCALE];
const MINUTE_MS = 60_000;
const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;

export interface LocalDate {
  year: number;
  month: number;
  day: number;
}

export interface LocalTime {
  hour: number;
  minute: number;
}

// luxon's check builds an Intl.DateTimeFormat each time (about 0.1 ms). Only
// names found valid are remembered, so the set is bounded by the IANA list
// whatever names are asked about.
const validZones = new Set<string>();

export function isValidZone(zone: string): boolean {
  if (validZones.has(zone)) return true;
  if (!IANAZone.isValidZone(zone)) return false;
  validZones.add(zone);
  return true;
}

const DATE_RE = /^(\d{4})-(\d{2})-(\d{2})$/;

export function parseLocalDate(input: string): LocalDate {
  const m = DATE_RE.exec(input.trim());
  if (m) {
    const [year, month, day] = [Number(m[1]), Number(m[2]), Number(m[3])];
    // Date.UTC rolls 2027-02-30 over to March 2: a real date reads back unchanged.
    const d = new Date(Date.UTC(year, month - 1, day));
    if (year >= 1000 && d.getUTCFullYear() === year && d.getUTCMonth() === month - 1 && d.getUTCDate() === day) return { year, month, day };
  }
  throw new ToolError('invalid_date', "I couldn't understand that date. Could you give me the day, month and year again?", {
    expected: 'YYYY-MM-DD',
  });
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
  throw new ToolError('invalid_time', "I couldn't understand that time. Could you say it again, like 3:30 PM?", { expected: 'HH:mm' });
}

/**
 * The first instant on `date` at which the clinic's wall clock reads `minutes`
 * after midnight or later (1440 is the next midnight): a time that happens
 * twice gives its first occurrence; a time that does not exist gives the
 * moment the clocks jump past it. Mirrored in SQL by wall_instant()
 * (sql/006_dst.sql), so the booking transaction resolves hours the same way.
 */
export function wallInstant(date: LocalDate, minutes: number, zone: string): DateTime {
  const z = clinicZone(zone);
  // The wall reading as if it were UTC, then read on the offsets in force a
  // day either side: every interpretation of it lies between those two.
  const wall = Date.UTC(date.year, date.month - 1, date.day) + minutes * MINUTE_MS;
  const onEarlier = wall - z.offset(wall - DAY_MS) * MINUTE_MS;
  const onLater = wall - z.offset(wall + DAY_MS) * MINUTE_MS;
  const reads = (ts: number) => ts + z.offset(ts) * MINUTE_MS;
  let lo = Math.min(onEarlier, onLater);
  let hi = Math.max(onEarlier, onLater);
  let ts: number;
  if (reads(lo) === wall) ts = lo;
  else if (reads(hi) === wall) ts = hi;
  else {
    // In a spring-forward gap: before the jump the clock reads earlier than
    // `wall`, from the jump on later. Only ever reached on a change day.
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (reads(mid) >= wall) hi = mid;
      else lo = mid;
    }
    ts = hi;
  }
  return DateTime.fromMillis(ts, { zone: z, locale: LOCALE });
}

/**
 * The instant a clinic-local wall time means, or null when the clocks skip it.
 * A time that happens twice means its first occurrence (see the top of this file).
 */
export function firstOccurrence(date: LocalDate, time: LocalTime, zone: string): DateTime | null {
  const dt = wallInstant(date, time.hour * 60 + time.minute, zone);
  if (!dt.isValid) return null;
  return dt.hour === time.hour && dt.minute === time.minute && dt.day === date.day ? dt : null;
}

/**
 * A clinic-local date as instants: from the first instant that reads that date
 * to the first instant of the next one. 23, 24 or 25 hours (23.5 or 24.5 on
 * Lord Howe Island); never "midnight plus 24 hours", and on a day whose
 * midnight happens twice (Cuba) the day starts at the first one.
 */
export function localDayBounds(date: LocalDate, zone: string): { start: DateTime; end: DateTime } {
  return { start: wallInstant(date, 0, zone), end: wallInstant(date, 24 * 60, zone) };
}

/** Calendar arithmetic on a local date, independent of any zone. */
export function addDays(date: LocalDate, days: number): LocalDate {
  // Calendar arithmetic on a UTC date (setUTCFullYear, unlike Date.UTC, keeps years below 100 as they are).
  const d = new Date(0);
  d.setUTCFullYear(date.year, date.month - 1, date.day + days);
  return { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate() };
}

/** The clinic-local calendar date of a DateTime (in the zone it is set to). */
export function localDateOf(dt: DateTime): LocalDate {
  return { year: dt.year, month: dt.month, day: dt.day };
}

/**
 * Combines a clinic-local date and time into an instant. A time that happens
 * twice (fall back) means its first occurrence, on the pre-change offset; a
 * time that never happens (spring forward) is refused with a speakable error.
 */
export function resolveLocal(date: LocalDate, time: LocalTime, zone: string, locale?: Locale): DateTime {
  const z = clinicZone(zone);
  const dt = DateTime.fromObject({ ...date, ...time }, { zone: z, locale: LOCALE });
  if (!dt.isValid) {
    throw new ToolError('invalid_date', "I couldn't understand that date and time. Could you say it again?");
  }
  if (dt.hour !== time.hour || dt.minute !== time.minute || dt.day !== date.day) {
    const wall = spokenClock(DateTime.fromObject({ ...date, ...time }, { zone: 'UTC', locale: LOCALE }), locale);
    const day = DateTime.fromObject(date, { zone: z, locale: LOCALE }).toFormat(locale === 'en-GB' ? 'd MMMM' : 'MMMM d');
    throw new ToolError(
      'nonexistent_time',
      `${wall} doesn't exist on ${day} because ${styleOf(locale).springForward}. Could we pick another time?`,
    );
  }
  // Three hours either side have the same offset on all but the two days a
  // year with a change, so the first-occurrence lookup only runs near one
  // (luxon alone picks either occurrence of a repeated time, depending on the zone).
  const ts = dt.toMillis();
  if (z.offset(ts - 3 * HOUR_MS) !== z.offset(ts + 3 * HOUR_MS)) {
    return firstOccurrence(date, time, zone) ?? dt;
  }
  return dt;
}

/**
 * True for the second occurrence of a repeated wall time (the clocks fell back
 * within the last hours and the same reading came earlier). Only instants read
 * from storage can be one: nothing offered or booked here ever is.
 */
function isSecondOccurrence(dt: DateTime): boolean {
  if (!(dt.zone.offset(dt.toMillis() - 3 * HOUR_MS) > dt.offset)) return false;
  const first = wallInstant(localDateOf(dt), dt.hour * 60 + dt.minute, dt.zoneName ?? 'UTC');
  return first.toMillis() < dt.toMillis() - dt.second * 1000 - dt.millisecond;
}

function assertValid(dt: DateTime): DateTime {
  if (!dt.isValid) throw new Error(`invalid DateTime: ${dt.invalidReason ?? 'unknown'}`);
  return dt;
}

/**
 * "3:00 PM" (en-GB "15:00"). By the policy above a repeated time means its
 * first occurrence, so the second one says which it is: "1:30 AM after the
 * clocks fall back".
 */
export function spokenClock(dt: DateTime, locale?: Locale): string {
  const style = styleOf(locale);
  const clock = assertValid(dt).setLocale(LOCALE).toFormat(style.clock);
  return isSecondOccurrence(dt) ? `${clock} ${style.fallBack}` : clock;
}

/** "Thursday, August 20" (en-GB "Thursday 20 August") */
export function spokenDate(dt: DateTime, locale?: Locale): string {
  return assertValid(dt).setLocale(LOCALE).toFormat(styleOf(locale).date);
}

/** "Thursday, August 20 at 3:00 PM" (en-GB "Thursday 20 August at 15:00") */
export function spokenDateTime(dt: DateTime, locale?: Locale): string {
  return `${spokenDate(dt, locale)} at ${spokenClock(dt, locale)}`;
}

/** Wall-clock minutes after midnight as a clock reading, with no zone involved: 1440 is "12:00 AM" ("00:00"). */
export function spokenMinutes(minutes: number, locale?: Locale): string {
  const h = Math.floor(minutes / 60) % 24;
  const m = String(minutes % 60).padStart(2, '0');
  if (locale === 'en-GB') return `${String(h).padStart(2, '0')}:${m}`;
  return `${h % 12 === 0 ? 12 : h % 12}:${m} ${h < 12 ? 'AM' : 'PM'}`;
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
