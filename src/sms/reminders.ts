/**
 * When a clinic's reminders go out: computed here, in TypeScript with luxon,
 * when an appointment is booked or moved, and written by that same booking
 * transaction as outbox rows of their own kind (`reminder:<offset>`), due at
 * `next_attempt_at`, with `expires_at` the appointment's start and `send_by`
 * the end of the sending window they were planned for. The gate
 * (sql/011_reminders.sql) is what makes them safe: still booked at that time,
 * inside the window, under the daily and weekly caps.
 *
 * Offsets and daylight saving time. An offset's whole days are calendar days
 * in the clinic's zone, the rest is elapsed time: "1440" (24 h) before a
 * Monday 9:00 AM appointment is Sunday 9:00 AM, also across a clock change
 * (23 or 25 real hours), because that is the wall-clock time the clinic
 * expects; "120" is two real hours before; "1500" is one calendar day and one
 * real hour. A wall time the day before does not have (the clocks skip it) is
 * the moment they jump past it, one it has twice is its first occurrence, as
 * everywhere else (src/booking/time.ts).
 *
 * Quiet hours. A reminder goes out only while the patient's wall clock reads
 * start <= t < end of the clinic's sending window (08:00-21:00 by default),
 * read in the patient's zone when their number tells it (a country with one
 * zone), else in the clinic's; a clinic may also say "always ours". One due in
 * quiet hours moves earlier, never later: to SHIFT_MARGIN before the window
 * closes on the same evening (quiet late) or the evening before (quiet early),
 * so a worker a little behind still sends it inside the window. One whose time
 * has passed by then is dropped: the confirmation has just told the patient.
 * Reminders of one appointment that fall on the same clinic-local day are one
 * reminder (the earliest), since the daily cap would skip the others.
 */
import { DateTime } from 'luxon';
import { parsePhoneNumberFromString } from 'libphonenumber-js/max';
import type { ReminderSettings } from '../booking/org.js';
import { addDays, localDateOf, wallInstant, type LocalDate } from '../booking/time.js';

export const REMINDER_KIND_PREFIX = 'reminder:';
export const reminderKind = (offsetMinutes: number) => `${REMINDER_KIND_PREFIX}${offsetMinutes}`;
export const isReminderKind = (kind: string) => kind.startsWith(REMINDER_KIND_PREFIX);

/** One reminder, 24 h before. */
export const DEFAULT_REMINDER_OFFSETS = [1440];
export const DEFAULT_SENDING_WINDOW = { start: '08:00', end: '21:00' };
/** How far before the window closes a reminder moved out of quiet hours goes out. */
export const SHIFT_MARGIN_MINUTES = 15;

export interface PlannedReminder {
  kind: string;
  offsetMinutes: number;
  /** When it goes out (next_attempt_at). */
  due: DateTime;
  /** The end of the sending window it was planned in: not sent after this (send_by). */
  sendBy: DateTime;
  /** Moved earlier out of quiet hours. */
  shifted: boolean;
  /** The zone its window was read in. */
  zone: string;
}

const minutesOf = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

/**
 * Countries whose numbers place a patient in exactly one time zone (overseas
 * territories have country codes of their own). Anything else, the clinic's
 * own country included when it has several zones, reads the window on the
 * clinic's clock.
 */
const SINGLE_ZONE_COUNTRIES: Readonly<Record<string, string>> = {
  AE: 'Asia/Dubai',
  AT: 'Europe/Vienna',
  BE: 'Europe/Brussels',
  BG: 'Europe/Sofia',
  CH: 'Europe/Zurich',
  CN: 'Asia/Shanghai',
  CO: 'America/Bogota',
  CZ: 'Europe/Prague',
  DE: 'Europe/Berlin',
  DK: 'Europe/Copenhagen',
  DO: 'America/Santo_Domingo',
  EG: 'Africa/Cairo',
  FI: 'Europe/Helsinki',
  FR: 'Europe/Paris',
  GB: 'Europe/London',
  GR: 'Europe/Athens',
  HK: 'Asia/Hong_Kong',
  HR: 'Europe/Zagreb',
  HU: 'Europe/Budapest',
  IE: 'Europe/Dublin',
  IL: 'Asia/Jerusalem',
  IN: 'Asia/Kolkata',
  IS: 'Atlantic/Reykjavik',
  IT: 'Europe/Rome',
  JM: 'America/Jamaica',
  JP: 'Asia/Tokyo',
  KE: 'Africa/Nairobi',
  KR: 'Asia/Seoul',
  LU: 'Europe/Luxembourg',
  NG: 'Africa/Lagos',
  NL: 'Europe/Amsterdam',
  NO: 'Europe/Oslo',
  PE: 'America/Lima',
  PH: 'Asia/Manila',
  PK: 'Asia/Karachi',
  PL: 'Europe/Warsaw',
  PR: 'America/Puerto_Rico',
  RO: 'Europe/Bucharest',
  SE: 'Europe/Stockholm',
  SG: 'Asia/Singapore',
  SI: 'Europe/Ljubljana',
  SK: 'Europe/Bratislava',
  TH: 'Asia/Bangkok',
  ZA: 'Africa/Johannesburg',
};

/** The zone whose wall clock the sending window is read on for this patient. */
export function windowZone(patientPhone: string, clinicZone: string, rule: ReminderSettings['zoneRule']): string {
  if (rule === 'clinic') return clinicZone;
  const country = parsePhoneNumberFromString(patientPhone)?.country;
  return (country && SINGLE_ZONE_COUNTRIES[country]) || clinicZone;
}

/** The instant `offsetMinutes` before `start`: whole days on the clinic's calendar, the rest elapsed. */
export function offsetInstant(start: DateTime, offsetMinutes: number, clinicZone: string): DateTime {
  const days = Math.floor(offsetMinutes / 1440);
  const rest = offsetMinutes % 1440;
  const local = start.setZone(clinicZone);
  const base = days === 0 ? local : wallInstant(addDays(localDateOf(local), -days), local.hour * 60 + local.minute, clinicZone);
  return base.minus({ minutes: rest });
}

/**
 * Where a candidate time lands with quiet hours applied: unchanged inside the
 * window, else SHIFT_MARGIN before the window closes that evening (late) or
 * the evening before (early). With `sendBy`, the window's close that day.
 */
export function applyWindow(
  candidate: DateTime,
  window: ReminderSettings['window'],
  zone: string,
): { due: DateTime; sendBy: DateTime; shifted: boolean } {
  const open = minutesOf(window.start);
  const close = minutesOf(window.end);
  const local = candidate.setZone(zone);
  const at = local.hour * 60 + local.minute + (local.second + local.millisecond / 1000) / 60;
  const day: LocalDate = localDateOf(local);
  if (at >= open && at < close) return { due: candidate, sendBy: wallInstant(day, close, zone), shifted: false };
  const evening = at >= close ? day : addDays(day, -1);
  const latest = Math.max(open, close - SHIFT_MARGIN_MINUTES);
  return { due: wallInstant(evening, latest, zone), sendBy: wallInstant(evening, close, zone), shifted: true };
}

/** The reminders of one appointment, in the order they go out; none that would already be past. */
export function planReminders(opts: {
  start: DateTime;
  settings: ReminderSettings;
  clinicZone: string;
  patientPhone: string;
  now: DateTime;
}): PlannedReminder[] {
  const { start, settings, clinicZone, now } = opts;
  const zone = windowZone(opts.patientPhone, clinicZone, settings.zoneRule);
  const planned: PlannedReminder[] = [];
  for (const offset of [...new Set(settings.offsetsMinutes)].sort((a, b) => b - a)) {
    if (!Number.isInteger(offset) || offset <= 0) continue;
    const { due, sendBy, shifted } = applyWindow(offsetInstant(start, offset, clinicZone), settings.window, zone);
    // Never after the appointment; never in the past (the booking's own confirmation covers now).
    if (due <= now || due >= start) continue;
    planned.push({ kind: reminderKind(offset), offsetMinutes: offset, due, sendBy: sendBy < start ? sendBy : start, shifted, zone });
  }
  planned.sort((a, b) => a.due.toMillis() - b.due.toMillis() || b.offsetMinutes - a.offsetMinutes);
  const days = new Set<string>();
  return planned.filter((p) => {
    const day = p.due.setZone(clinicZone).toISODate()!;
    if (days.has(day)) return false;
    days.add(day);
    return true;
  });
}
