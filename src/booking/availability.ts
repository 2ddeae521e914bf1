import { DateTime } from 'luxon';
import type { Sql } from 'postgres';
import { rethrowTenant, type Tenant } from '../db/pool.js';
import { ToolError } from './errors.js';
import type { OrgContext, Practitioner, Service } from './org.js';
import { addDays, firstOccurrence, localDateOf, localDayBounds, type LocalDate, spokenList, spokenMinutes, wallInstant } from './time.js';

export interface BusyInterval {
  practitionerId: string;
  startsAt: Date;
  endsAt: Date;
}

export interface Slot {
  start: DateTime;
  end: DateTime;
  practitionerIds: string[];
}

/** Busy time of every practitioner in [from, to), one round trip under RLS. */
export async function fetchBusy(sql: Sql, tenant: Tenant, from: DateTime, to: DateTime): Promise<BusyInterval[]> {
  const rows = await sql<{ practitioner_id: string; starts_at: Date; ends_at: Date }[]>`
    SELECT practitioner_id, starts_at, ends_at
      FROM busy_intervals(${tenant.orgId}::uuid, ${tenant.clientId}, ${from.toJSDate()}, ${to.toJSDate()})`.catch(rethrowTenant);
  return rows.map((r) => ({ practitionerId: r.practitioner_id, startsAt: r.starts_at, endsAt: r.ends_at }));
}

const minutesOf = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

/**
 * The clinic's opening windows on a local date, as wall-clock minutes after
 * midnight ("24:00" is 1440, the next midnight). They stay wall-clock times on
 * every day: 09:00-17:00 is 09:00-17:00 on a 23- or 25-hour day too.
 */
export function openingWindows(org: OrgContext, date: LocalDate): Array<{ open: number; close: number }> {
  const weekday = DateTime.fromObject(date, { zone: 'UTC' }).weekday;
  const windows = org.openingHours[String(weekday)] ?? [];
  return windows.map(([o, c]) => ({ open: minutesOf(o), close: minutesOf(c) })).filter((w) => w.open < w.close);
}

/**
 * Whether [start, end) fits in the window [open, close) of `date` (start's
 * local date). Mirrored by within_opening_hours() in sql/006_dst.sql, which the
 * booking transaction uses: the two must agree on every appointment.
 *
 * Without a clock change inside the appointment, wall-clock fields are
 * compared ("24:00" closes at the next midnight). When the clocks change during
 * it (start and end offsets differ), instants are compared instead, each
 * boundary resolved by the DST policy (wallInstant: first occurrence, or the
 * moment the clocks jump): the appointment keeps its real duration and must lie
 * between the instant the clinic opens and the instant it closes. For a start
 * that is a first occurrence, which every offered and accepted time is, the two
 * comparisons agree whenever there is no change inside the appointment.
 */
function fitsWindow(zone: string, date: LocalDate, open: number, close: number, start: DateTime, end: DateTime): boolean {
  if (start.offset === end.offset) {
    // Calendar fields are cached on a DateTime; comparing them avoids the zone
    // offset lookups that building new DateTimes would cost on every booking.
    const dayNumber = (d: DateTime) => Date.UTC(d.year, d.month - 1, d.day) / 86_400_000;
    const startMin = start.hour * 60 + start.minute;
    const span = dayNumber(end) - dayNumber(start);
    const endsAtMidnight = span === 1 && end.hour === 0 && end.minute === 0;
    if (span !== 0 && !endsAtMidnight) return false;
    const endMin = endsAtMidnight ? 24 * 60 : end.hour * 60 + end.minute;
    return open <= startMin && endMin <= close;
  }
  return wallInstant(date, open, zone) <= start && end <= wallInstant(date, close, zone);
}

/**
 * Whether [start, end) lies inside one opening window of start's local day,
 * on the clinic's wall clock ("24:00" closes at the next midnight); see fitsWindow.
 */
export function isWithinOpeningHours(org: OrgContext, start: DateTime, end: DateTime): boolean {
  const date = localDateOf(start);
  const windows = org.openingHours[String(start.weekday)] ?? [];
  return windows.some(([o, c]) => fitsWindow(org.timeZone, date, minutesOf(o), minutesOf(c), start, end));
}

/**
 * "9:00 AM to 5:00 PM" (en-GB "09:00 to 17:00"), or "closed", for the agent to explain a refusal: the
 * hours as the clinic set them, whatever the clocks do that day.
 */
export function describeHours(org: OrgContext, date: LocalDate): string {
  const windows = openingWindows(org, date);
  if (windows.length === 0) return 'closed';
  return spokenList(windows.map((w) => `${spokenMinutes(w.open, org.locale)} to ${spokenMinutes(w.close, org.locale)}`));
}

/**
 * Maps wall-clock minutes of one local date to the instants they mean (null:
 * the clocks skip that time). On a day without a clock change that is day
 * start plus minutes; on a change day each time is resolved by the DST policy,
 * so a repeated time is offered once, at its first occurrence.
 */
function wallClockOf(date: LocalDate, zone: string): (minutes: number) => DateTime | null {
  const { start, end } = localDayBounds(date, zone);
  const regular = end.toMillis() - start.toMillis() === 86_400_000 && start.offset === end.offset && start.hour === 0 && start.minute === 0;
  if (regular) {
    const base = start.toMillis();
    return (minutes) => DateTime.fromMillis(base + minutes * 60_000, { zone });
  }
  return (minutes) => firstOccurrence(date, { hour: Math.floor(minutes / 60), minute: minutes % 60 }, zone);
}

const overlaps = (aS: number, aE: number, bS: number, bE: number) => aS < bE && bS < aE;

/**
 * Open slots on one local date for a service, on the clinic's slot grid, for any
 * of the given practitioners. Slots that start before `notBefore` are skipped.
 */
export function computeSlots(opts: {
  org: OrgContext;
  date: LocalDate;
  service: Service;
  practitioners: Practitioner[];
  busy: BusyInterval[];
  notBefore: DateTime;
}): Slot[] {
  const { org, date, service, practitioners, busy, notBefore } = opts;
  const byPractitioner = new Map<string, Array<[number, number]>>();
  for (const b of busy) {
    const list = byPractitioner.get(b.practitionerId) ?? [];
    list.push([b.startsAt.getTime(), b.endsAt.getTime()]);
    byPractitioner.set(b.practitionerId, list);
  }
  const slots: Slot[] = [];
  const windows = openingWindows(org, date);
  if (windows.length === 0) return slots;
  const at = wallClockOf(date, org.timeZone);
  for (const w of windows) {
    // The grid is on the wall clock, from the window's opening: each distinct
    // wall time once (a repeated one at its first occurrence, a skipped one
    // not at all), each appointment its real duration, kept only if it fits
    // by the same rule booking checks.
    for (let m = w.open; m < w.close; m += org.slotIntervalMinutes) {
      const start = at(m);
      if (!start) continue;
      const end = start.plus({ minutes: service.durationMinutes });
      if (start < notBefore || !fitsWindow(org.timeZone, date, w.open, w.close, start, end)) continue;
      const s = start.toMillis();
      const e = end.toMillis();
      const free = practitioners
        .filter((p) => !(byPractitioner.get(p.id) ?? []).some(([bs, be]) => overlaps(s, e, bs, be)))
        .map((p) => p.id);
      if (free.length > 0) slots.push({ start, end, practitionerIds: free });
    }
  }
  return slots;
}

const norm = (s: string) =>
  s
    .toLowerCase()
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .replace(/\b(dr|doctor|mr|mrs|ms|miss|prof)\b\.?/g, ' ')
    .replace(/[^a-z0-9]+/g, ' ')
    .trim();

export function resolveService(org: OrgContext, input: string | undefined): Service {
  if (org.services.length === 0) {
    throw new ToolError('no_services', "I'm sorry, this clinic isn't taking bookings by phone right now.");
  }
  if (input === undefined || input.trim() === '') return org.services[0]!;
  const want = norm(input);
  const exact = org.services.find((s) => norm(s.code) === want || norm(s.name) === want);
  if (exact) return exact;
  const partial = org.services.filter((s) => norm(s.name).includes(want) || want.includes(norm(s.name)));
  if (partial.length === 1) return partial[0]!;
  throw new ToolError(
    'unknown_service',
    `I couldn't match that visit type. We offer ${spokenList(org.services.map((s) => s.name))}. Which would you like?`,
    { services: org.services.map((s) => s.name) },
  );
}

export function resolvePractitioner(org: OrgContext, input: string | undefined): Practitioner | undefined {
  if (input === undefined || input.trim() === '' || norm(input) === 'any' || norm(input) === 'anyone') return undefined;
  const byId = org.practitioners.find((p) => p.id === input.trim().toLowerCase());
  if (byId) return byId;
  const want = norm(input);
  const exact = org.practitioners.filter((p) => norm(p.name) === want);
  if (exact.length === 1) return exact[0];
  const tokens = want.split(' ').filter(Boolean);
  const partial = org.practitioners.filter((p) => {
    const have = norm(p.name).split(' ');
    return tokens.length > 0 && tokens.every((t) => have.includes(t));
  });
  if (partial.length === 1) return partial[0];
  const names = spokenList(org.practitioners.map((p) => p.name));
  throw new ToolError(
    partial.length > 1 ? 'ambiguous_practitioner' : 'unknown_practitioner',
    partial.length > 1
      ? `More than one of our practitioners matches that name: ${spokenList(partial.map((p) => p.name))}. Which one?`
      : `I couldn't find that practitioner. Our practitioners are ${names}.`,
  );
}

/** Practitioners who may perform `service`, optionally narrowed to one the caller asked for. */
export function eligiblePractitioners(org: OrgContext, service: Service, requested?: Practitioner): Practitioner[] {
  const offers = (p: Practitioner) => p.serviceCodes === null || p.serviceCodes.includes(service.code);
  if (requested) {
    if (!offers(requested)) {
      throw new ToolError('practitioner_service_mismatch', `${requested.name} doesn't offer ${service.name} visits.`);
    }
    return [requested];
  }
  const list = org.practitioners.filter(offers);
  if (list.length === 0) {
    throw new ToolError('no_practitioner', `Nobody is available for ${service.name} visits at the moment.`);
  }
  return list;
}

/**
 * Whether the clinic is open at instant `t`: inside one of the opening windows
 * of t's local date, each boundary resolved by the DST policy (wallInstant).
 */
export function isOpenAt(org: OrgContext, t: DateTime): boolean {
  const local = t.setZone(org.timeZone);
  const date = localDateOf(local);
  return openingWindows(org, date).some(
    (w) => wallInstant(date, w.open, org.timeZone) <= local && local < wallInstant(date, w.close, org.timeZone),
  );
}

/** The next instant after `t` at which an opening window starts, looking a week ahead; null if none. */
export function nextOpening(org: OrgContext, t: DateTime): DateTime | null {
  const today = localDateOf(t.setZone(org.timeZone));
  for (let d = 0; d <= 7; d++) {
    const date = addDays(today, d);
    for (const w of openingWindows(org, date)) {
      const open = wallInstant(date, w.open, org.timeZone);
      if (open > t) return open;
    }
  }
  return null;
}
