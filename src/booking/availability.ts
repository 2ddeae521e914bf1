import { DateTime } from 'luxon';
import type { Sql } from 'postgres';
import { rethrowTenant, type Tenant } from '../db/pool.js';
import { ToolError } from './errors.js';
import type { OrgContext, Practitioner, Service } from './org.js';
import { type LocalDate, spokenList } from './time.js';

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

/** The clinic's open windows on a local date, as instants. "24:00" closes at the next midnight. */
export function openingWindows(org: OrgContext, date: LocalDate): Array<{ open: DateTime; close: DateTime }> {
  const day = DateTime.fromObject(date, { zone: org.timeZone });
  if (!day.isValid) return [];
  const windows = org.openingHours[String(day.weekday)] ?? [];
  const at = (hhmm: string) => {
    const [h, m] = hhmm.split(':').map(Number) as [number, number];
    return h === 24 ? day.plus({ days: 1 }).startOf('day') : day.set({ hour: h, minute: m });
  };
  return windows.map(([o, c]) => ({ open: at(o), close: at(c) })).filter((w) => w.open < w.close);
}

const minutesOf = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

/**
 * Whether [start, end) lies inside one opening window of start's local day,
 * compared on the clinic's wall clock ("24:00" closes at the next midnight).
 */
export function isWithinOpeningHours(org: OrgContext, start: DateTime, end: DateTime): boolean {
  // Calendar fields are cached on a DateTime; comparing them avoids the zone
  // offset lookups that building new DateTimes would cost on every booking.
  const dayNumber = (d: DateTime) => Date.UTC(d.year, d.month - 1, d.day) / 86_400_000;
  const startMin = start.hour * 60 + start.minute;
  const span = dayNumber(end) - dayNumber(start);
  const endsAtMidnight = span === 1 && end.hour === 0 && end.minute === 0;
  if (span !== 0 && !endsAtMidnight) return false;
  const endMin = endsAtMidnight ? 24 * 60 : end.hour * 60 + end.minute;
  const windows = org.openingHours[String(start.weekday)] ?? [];
  return windows.some(([o, c]) => minutesOf(o) <= startMin && endMin <= minutesOf(c));
}

/** "9:00 AM to 5:00 PM", or "closed", for the agent to explain a refusal. */
export function describeHours(org: OrgContext, date: LocalDate): string {
  const windows = openingWindows(org, date);
  if (windows.length === 0) return 'closed';
  return spokenList(windows.map((w) => `${w.open.toFormat('h:mm a')} to ${w.close.toFormat('h:mm a')}`));
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
  for (const w of openingWindows(org, date)) {
    for (let start = w.open; start.plus({ minutes: service.durationMinutes }) <= w.close; ) {
      const end = start.plus({ minutes: service.durationMinutes });
      if (start >= notBefore) {
        const s = start.toMillis();
        const e = end.toMillis();
        const free = practitioners
          .filter((p) => !(byPractitioner.get(p.id) ?? []).some(([bs, be]) => overlaps(s, e, bs, be)))
          .map((p) => p.id);
        if (free.length > 0) slots.push({ start, end, practitionerIds: free });
      }
      start = start.plus({ minutes: org.slotIntervalMinutes });
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
