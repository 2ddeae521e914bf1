/**
 * Daylight saving time: the fall-back (repeated) hour and the spring-forward
 * gap, in northern and southern zones, a 30-minute shift (Lord Howe Island) and
 * zones whose clocks change at midnight (Chile, Cuba).
 *
 * Policy under test: a wall-clock time that happens twice means its first
 * occurrence (the earlier instant, on the pre-change offset); a time that never
 * happens is neither offered nor accepted. Whatever is offered books, fed back
 * verbatim, at the instant that was offered; no spoken list repeats a time.
 * (Issue 6. The last block checks the module layering of issue 7.)
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DateTime } from 'luxon';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { computeSlots, describeHours, isWithinOpeningHours } from '../src/booking/availability.js';
import type { OrgContext, Practitioner, Service } from '../src/booking/org.js';
import * as time from '../src/booking/time.js';
import { isoLocal, parseLocalTime, resolveLocal, spokenClock, type LocalDate } from '../src/booking/time.js';
import { renderConfirmation } from '../src/sms/texts.js';
import { putSms } from './helpers/sms.js';
import { callTools, createOrg, startHarness, vapiMessage, type Harness, type TestOrg } from './helpers/harness.js';

// A fixed clock well before every date below.
const NOW = DateTime.fromISO('2027-01-04T12:00:00Z');

const everyDay = (windows: Array<[string, string]>) => Object.fromEntries(['1', '2', '3', '4', '5', '6', '7'].map((d) => [d, windows]));

const STANDARD: Service = { id: 'svc-standard', code: 'standard', name: 'Standard Visit', durationMinutes: 30 };
const SOLO: Practitioner = { id: 'pr-solo', name: 'Dr. Solo Smith', serviceCodes: null };

function pureOrg(timeZone: string, openingHours: Record<string, Array<[string, string]>>, services: Service[] = [STANDARD]): OrgContext {
  return {
    id: '00000000-0000-4000-8000-000000000001',
    name: 'Pure Clinic',
    timeZone,
    defaultRegion: 'US',
    openingHours,
    slotIntervalMinutes: 15,
    active: true,
    vapiSecretSha256: null,
    vapiHmacSecretEnc: null,
    services,
    practitioners: [SOLO],
    clientActive: true,
    smsConfigured: false,
  };
}

const ld = (iso: string): LocalDate => {
  const [year, month, day] = iso.split('-').map(Number) as [number, number, number];
  return { year, month, day };
};

/** The offset change from noon the day before to noon of a date, in minutes (luxon's view of tzdata). */
function shiftOn(zone: string, iso: string): number {
  const noon = DateTime.fromObject({ ...ld(iso), hour: 12 }, { zone });
  return noon.offset - noon.minus({ days: 1 }).offset;
}

const wallMinutes = (dt: DateTime) => dt.hour * 60 + dt.minute;

interface ZoneCase {
  zone: string;
  /** Fall back: this date has the repeated time(s). */
  fall: string;
  /** Spring forward: this date has the skipped time(s). */
  spring: string;
  shift: number;
  /** Wall time (minutes) at which the clocks fall back: first occurrences before it keep the old offset. */
  fallAt: number;
  offsets: { before: number; after: number };
  /** A repeated time, its first occurrence, and the abbreviation the SMS prints for it. */
  repeated: { time: string; iso: string; abbreviation: string };
  skipped: string;
  /** Slots for a 30-minute visit on a 15-minute grid: [open 00:00-04:00, open 00:00-24:00]. */
  counts: { fall: [number, number]; spring: [number, number] };
}

const ZONES: ZoneCase[] = [
  {
    zone: 'America/New_York',
    fall: '2027-11-07',
    spring: '2027-03-14',
    shift: 60,
    fallAt: 120,
    offsets: { before: -240, after: -300 },
    repeated: { time: '1:30 AM', iso: '2027-11-07T01:30:00-04:00', abbreviation: 'EDT' },
    skipped: '2:30 AM',
    counts: { fall: [15, 95], spring: [11, 91] },
  },
  {
    zone: 'America/Los_Angeles',
    fall: '2027-11-07',
    spring: '2027-03-14',
    shift: 60,
    fallAt: 120,
    offsets: { before: -420, after: -480 },
    repeated: { time: '1:00 AM', iso: '2027-11-07T01:00:00-07:00', abbreviation: 'PDT' },
    skipped: '2:00 AM',
    counts: { fall: [15, 95], spring: [11, 91] },
  },
  {
    zone: 'Europe/London',
    fall: '2027-10-31',
    spring: '2027-03-28',
    shift: 60,
    fallAt: 120,
    offsets: { before: 60, after: 0 },
    repeated: { time: '1:45 AM', iso: '2027-10-31T01:45:00+01:00', abbreviation: 'BST' },
    skipped: '1:30 AM',
    counts: { fall: [15, 95], spring: [11, 91] },
  },
  {
    zone: 'America/St_Johns',
    fall: '2027-11-07',
    spring: '2027-03-14',
    shift: 60,
    fallAt: 120,
    offsets: { before: -150, after: -210 },
    repeated: { time: '1:30 AM', iso: '2027-11-07T01:30:00-02:30', abbreviation: 'NDT' },
    skipped: '2:30 AM',
    counts: { fall: [15, 95], spring: [11, 91] },
  },
  {
    zone: 'Australia/Sydney',
    fall: '2027-04-04',
    spring: '2027-10-03',
    shift: 60,
    fallAt: 180,
    offsets: { before: 660, after: 600 },
    repeated: { time: '2:30 AM', iso: '2027-04-04T02:30:00+11:00', abbreviation: 'AEDT' },
    skipped: '2:30 AM',
    counts: { fall: [15, 95], spring: [11, 91] },
  },
  {
    zone: 'Australia/Lord_Howe',
    fall: '2027-04-04',
    spring: '2027-10-03',
    shift: 30,
    fallAt: 120,
    offsets: { before: 660, after: 630 },
    repeated: { time: '1:45 AM', iso: '2027-04-04T01:45:00+11:00', abbreviation: 'LHDT' },
    skipped: '2:15 AM',
    counts: { fall: [15, 95], spring: [13, 93] },
  },
];

/** Fails loudly if the runtime's tzdata no longer has the change on that date. */
function expectChange(zone: string, fall: string, spring: string, shift: number) {
  expect(shiftOn(zone, fall), `tzdata: ${zone} falls back ${shift} min on ${fall}`).toBe(-shift);
  expect(shiftOn(zone, spring), `tzdata: ${zone} springs forward ${shift} min on ${spring}`).toBe(shift);
}

describe('slot generation on 23- and 25-hour days (pure)', () => {
  for (const z of ZONES) {
    it(`${z.zone}: each distinct wall time once, at its first occurrence, and each one books as offered`, () => {
      expectChange(z.zone, z.fall, z.spring, z.shift);
      for (const kind of ['fall', 'spring'] as const) {
        const date = ld(z[kind]);
        const shapes: Array<[Array<[string, string]>, number]> = [
          [[['00:00', '04:00']], z.counts[kind][0]],
          [[['00:00', '24:00']], z.counts[kind][1]],
        ];
        for (const [windows, expected] of shapes) {
          const org = pureOrg(z.zone, everyDay(windows));
          const slots = computeSlots({ org, date, service: STANDARD, practitioners: [SOLO], busy: [], notBefore: NOW });
          const label = `${z.zone} ${z[kind]} ${windows[0]!.join('-')}`;
          expect(slots.length, label).toBe(expected);
          const times = slots.map((s) => spokenClock(s.start));
          expect(new Set(times).size, `${label}: a time offered twice`).toBe(times.length);
          // On the wall clock: the grid from midnight, minus only the skipped times, in order.
          const walls = slots.map((s) => wallMinutes(s.start));
          expect(walls).toEqual([...walls].sort((a, b) => a - b));
          for (const s of slots) {
            expect(s.start.toISODate(), label).toBe(z[kind]);
            if (kind === 'fall')
              expect(s.start.offset, `${label} ${times}`).toBe(wallMinutes(s.start) < z.fallAt ? z.offsets.before : z.offsets.after);
            expect(s.end.toMillis() - s.start.toMillis(), label).toBe(30 * 60_000);
            // Fed back verbatim, the spoken time means the offered instant, and booking's hours check takes it.
            const again = resolveLocal(date, parseLocalTime(spokenClock(s.start)), z.zone);
            expect(isoLocal(again), `${label} ${spokenClock(s.start)}`).toBe(isoLocal(s.start));
            expect(isWithinOpeningHours(org, s.start, s.end), `${label} ${spokenClock(s.start)}`).toBe(true);
          }
        }
      }
      // The repeated time is its first occurrence; a skipped one is still refused.
      expect(isoLocal(resolveLocal(ld(z.fall), parseLocalTime(z.repeated.time), z.zone))).toBe(z.repeated.iso);
      expect(() => resolveLocal(ld(z.spring), parseLocalTime(z.skipped), z.zone)).toThrow(
        new RegExp(`^${z.skipped} doesn't exist on .* because the clocks spring forward`),
      );
    });
  }
});

describe('wall-clock instants and local days (pure)', () => {
  it('a local day runs from its first midnight to the next: 23, 23.5, 24.5 or 25 hours, and never drops an hour (Cuba)', () => {
    expectChange('America/Havana', '2027-11-07', '2027-03-14', 60);
    const hours = (zone: string, iso: string) => {
      const { start, end } = time.localDayBounds(ld(iso), zone);
      return (end.toMillis() - start.toMillis()) / 3_600_000;
    };
    expect(hours('America/New_York', '2027-11-07')).toBe(25);
    expect(hours('America/New_York', '2027-03-14')).toBe(23);
    expect(hours('America/New_York', '2027-11-08')).toBe(24);
    expect(hours('Australia/Lord_Howe', '2027-04-04')).toBe(24.5);
    expect(hours('Australia/Lord_Howe', '2027-10-03')).toBe(23.5);
    // Cuba falls back from 01:00 to 00:00: November 7 has two midnights and starts at the first.
    expect(time.localDayBounds(ld('2027-11-07'), 'America/Havana').start.toISO()).toBe('2027-11-07T00:00:00.000-04:00');
    expect(time.localDayBounds(ld('2027-11-06'), 'America/Havana').end.toISO()).toBe('2027-11-07T00:00:00.000-04:00');
    expect(hours('America/Havana', '2027-11-07')).toBe(25);
    // Chile springs forward at midnight: September 5 starts at 01:00, the moment the clocks jump.
    expect(time.localDayBounds(ld('2027-09-05'), 'America/Santiago').start.toISO()).toBe('2027-09-05T01:00:00.000-03:00');
    expect(hours('America/Santiago', '2027-09-04')).toBe(24);
    expect(hours('America/Santiago', '2027-09-05')).toBe(23);
  });

  it('wallInstant: first occurrence of a repeated time, the jump for a skipped one', () => {
    const at = (zone: string, iso: string, hhmm: string) =>
      time
        .wallInstant(ld(iso), Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3)), zone)
        .toUTC()
        .toISO();
    expect(at('America/New_York', '2027-11-07', '01:30')).toBe('2027-11-07T05:30:00.000Z');
    expect(at('America/New_York', '2027-03-14', '02:30')).toBe('2027-03-14T07:00:00.000Z');
    expect(at('Europe/London', '2027-10-31', '01:00')).toBe('2027-10-31T00:00:00.000Z');
    expect(at('Australia/Sydney', '2027-04-04', '02:00')).toBe('2027-04-03T15:00:00.000Z');
    expect(at('Australia/Lord_Howe', '2027-04-04', '01:30')).toBe('2027-04-03T14:30:00.000Z');
    expect(at('Australia/Lord_Howe', '2027-10-03', '02:15')).toBe('2027-10-02T15:30:00.000Z');
    expect(at('America/Havana', '2027-11-07', '00:00')).toBe('2027-11-07T04:00:00.000Z');
    expect(at('America/Santiago', '2027-09-04', '24:00')).toBe('2027-09-05T04:00:00.000Z');
  });

  it('opening hours are spoken as the clinic set them, whatever the clocks do that day', () => {
    const org = pureOrg('America/New_York', everyDay([['02:30', '17:00']]));
    expect(describeHours(org, ld('2027-03-14'))).toBe('2:30 AM to 5:00 PM');
    const chile = pureOrg(
      'America/Santiago',
      everyDay([
        ['00:00', '12:00'],
        ['13:00', '24:00'],
      ]),
    );
    for (const iso of ['2027-09-04', '2027-09-05', '2027-04-03', '2027-04-04']) {
      expect(describeHours(chile, ld(iso)), iso).toBe('12:00 AM to 12:00 PM and 1:00 PM to 12:00 AM');
    }
  });

  it('a stored second occurrence is spoken as such; first occurrences and ordinary times are not', () => {
    const zone = 'America/New_York';
    const first = DateTime.fromISO('2027-11-07T01:30:00-04:00').setZone(zone);
    const second = DateTime.fromISO('2027-11-07T01:30:00-05:00').setZone(zone);
    expect(spokenClock(first)).toBe('1:30 AM');
    expect(spokenClock(second)).toBe('1:30 AM after the clocks fall back');
    expect(spokenClock(DateTime.fromISO('2027-11-07T02:00:00-05:00').setZone(zone))).toBe('2:00 AM');
    expect(spokenClock(DateTime.fromISO('2027-04-04T02:30:00+10:00').setZone('Australia/Sydney'))).toBe(
      '2:30 AM after the clocks fall back',
    );
    expect(spokenClock(DateTime.fromISO('2027-04-04T01:45:00+10:30').setZone('Australia/Lord_Howe'))).toBe(
      '1:45 AM after the clocks fall back',
    );
  });
});

describe('opening hours across a clock change (pure)', () => {
  const at = (zone: string, iso: string) => DateTime.fromISO(iso).setZone(zone);
  const fits = (org: OrgContext, startIso: string, minutes: number) => {
    const start = at(org.timeZone, startIso);
    return isWithinOpeningHours(org, start, start.plus({ minutes }));
  };

  it('keeps the real duration and checks the hours on the wall clock, each boundary read by the policy', () => {
    const ny = (windows: Array<[string, string]>) => pureOrg('America/New_York', everyDay(windows));
    // 60 minutes at 1:30 AM (first occurrence) ends at 1:30 AM EST: inside 00:00-24:00 and 00:00-04:00.
    expect(fits(ny([['00:00', '24:00']]), '2027-11-07T01:30:00-04:00', 60)).toBe(true);
    expect(fits(ny([['00:00', '04:00']]), '2027-11-07T01:30:00-04:00', 60)).toBe(true);
    // The last slot before 24:00 on both change days.
    expect(fits(ny([['00:00', '24:00']]), '2027-11-07T23:30:00-05:00', 30)).toBe(true);
    expect(fits(ny([['00:00', '24:00']]), '2027-03-14T23:30:00-04:00', 30)).toBe(true);
    // A clinic closing at 1:30 AM closes at the first 1:30: a 60-minute visit at 1:00 AM would run
    // through 1:30-2:00 EDT, closed, even though its end reads 1:00 AM on the wall clock.
    expect(fits(ny([['00:00', '01:30']]), '2027-11-07T01:00:00-04:00', 60)).toBe(false);
    expect(fits(ny([['00:00', '01:30']]), '2027-11-07T01:00:00-04:00', 30)).toBe(true);
    // A clinic closing at 2:30 AM on the day 2:30 does not exist closes when the clocks jump.
    expect(fits(ny([['00:00', '02:30']]), '2027-03-14T01:30:00-05:00', 30)).toBe(true);
    expect(fits(ny([['00:00', '02:30']]), '2027-03-14T01:45:00-05:00', 30)).toBe(false);
    // Chile: Saturday 24:00 does not exist (the clocks jump to Sunday 01:00); a visit ending then fits.
    const chile = pureOrg('America/Santiago', everyDay([['20:00', '24:00']]));
    expect(fits(chile, '2027-09-04T23:30:00-04:00', 30)).toBe(true);
    // Cuba: Sunday's midnight happens twice; a visit ending at the second one runs an hour into Sunday.
    const cuba = pureOrg('America/Havana', { '6': [['20:00', '24:00']] });
    expect(fits(cuba, '2027-11-06T23:00:00-04:00', 60)).toBe(true);
    expect(fits(cuba, '2027-11-06T23:30:00-04:00', 90)).toBe(false);
  });

  it('never offers what the hours check refuses, on windows that open or close inside the change', () => {
    const cases: Array<[string, string, Array<[string, string]>, string[]]> = [
      // Opening inside the gap: the first slot is the first time that exists.
      ['America/New_York', '2027-03-14', [['02:30', '04:00']], ['3:00 AM', '3:15 AM', '3:30 AM']],
      // Closing inside the gap: the last slot ends when the clocks jump.
      ['America/New_York', '2027-03-14', [['01:00', '02:30']], ['1:00 AM', '1:15 AM', '1:30 AM']],
      // Closing inside the repeated hour: it closes at the first 1:30.
      ['America/New_York', '2027-11-07', [['00:30', '01:30']], ['12:30 AM', '12:45 AM', '1:00 AM']],
      // Lord Howe, the repeated half hour.
      ['Australia/Lord_Howe', '2027-04-04', [['01:00', '02:30']], ['1:00 AM', '1:15 AM', '1:30 AM', '1:45 AM', '2:00 AM']],
    ];
    for (const [zone, iso, windows, expected] of cases) {
      const org = pureOrg(zone, everyDay(windows));
      const slots = computeSlots({ org, date: ld(iso), service: STANDARD, practitioners: [SOLO], busy: [], notBefore: NOW });
      expect(
        slots.map((s) => spokenClock(s.start)),
        `${zone} ${iso} ${windows[0]!.join('-')}`,
      ).toEqual(expected);
      for (const s of slots) expect(isWithinOpeningHours(org, s.start, s.end)).toBe(true);
    }
  });
});

describe('confirmation SMS text of a first occurrence', () => {
  it('prints the pre-change abbreviation in every tested zone', () => {
    for (const z of ZONES) {
      const start = resolveLocal(ld(z.fall), parseLocalTime(z.repeated.time), z.zone);
      const text = renderConfirmation({ clinicName: 'Clinic', patientName: 'Ana', startsAt: isoLocal(start), timeZone: z.zone });
      expect(text, z.zone).toContain(`at ${z.repeated.time} ${z.repeated.abbreviation}.`);
    }
  });
});

// ---------------------------------------------------------------------------
// Through the real HTTP endpoint and the real booking transaction.

let h: Harness;

beforeAll(async () => {
  h = await startHarness({}, { now: () => NOW });
});
afterAll(async () => h?.close());

let phoneSeq = 0;
const phone = () => `+1415555${String(6000 + ++phoneSeq).padStart(4, '0')}`;

async function clinic(zone: string, openingHours: Record<string, Array<[string, string]>>, extra: Record<string, unknown> = {}) {
  return createOrg(h, {
    timeZone: zone,
    openingHours,
    services: [
      { code: 'standard', name: 'Standard Visit', durationMinutes: 30 },
      { code: 'extended', name: 'Extended Visit', durationMinutes: 60 },
      { code: 'ninety', name: 'Ninety Minute Visit', durationMinutes: 90 },
    ],
    practitioners: [{ name: 'Dr. Solo Smith' }],
    ...extra,
  });
}

async function tool(org: TestOrg, name: string, args: Record<string, unknown>) {
  const res = await callTools(h, org.token, vapiMessage([{ name, args }]));
  expect(res.status).toBe(200);
  return res.body.results[0] as { result?: string; error?: string };
}

async function ok(org: TestOrg, name: string, args: Record<string, unknown>) {
  const r = await tool(org, name, args);
  if (r.result === undefined) throw new Error(`${name} refused: ${r.error}`);
  return JSON.parse(r.result) as Record<string, any>;
}

const book = (org: TestOrg, date: string, appointmentTime: string, over: Record<string, unknown> = {}) =>
  ok(org, 'bookClinicAppointment', {
    patientName: 'Ana Ruiz',
    patientPhone: phone(),
    appointmentDate: date,
    appointmentTime,
    serviceType: 'standard',
    ...over,
  });

/** "a, b and c" back into its items. */
const items = (spoken: string) => spoken.split(/, (?:and )?| and /);

describe('checkAvailability and booking on the change days (HTTP)', () => {
  for (const z of ZONES) {
    it(`${z.zone}: every offered time, fed back verbatim, books at the offered instant`, async () => {
      expectChange(z.zone, z.fall, z.spring, z.shift);
      const night = await clinic(z.zone, everyDay([['00:00', '04:00']]));
      const allDay = await clinic(z.zone, everyDay([['00:00', '24:00']]));
      for (const kind of ['fall', 'spring'] as const) {
        const date = z[kind];
        const avail = await ok(night, 'checkAvailability', { date, serviceType: 'standard' });
        expect(avail.slots.length, `${z.zone} ${date}`).toBe(z.counts[kind][0]);
        expect(avail.moreSlots).toBe(0);
        const times: string[] = avail.slots.map((s: { time: string }) => s.time);
        expect(new Set(times).size, `${z.zone} ${date}: ${times.join(', ')}`).toBe(times.length);
        const spoken = items(avail.spoken.replace(/, and \d+ more until .*$/, ''));
        expect(new Set(spoken).size, avail.spoken).toBe(spoken.length);
        for (const slot of avail.slots as Array<{ time: string; startsAt: string }>) {
          const booked = await book(night, date, slot.time);
          expect(booked.success, `${z.zone} ${date} ${slot.time}: ${booked.message}`).toBe(true);
          expect(booked.startsAt, `${z.zone} ${date} ${slot.time}`).toBe(slot.startsAt);
          const [row] = await h.owner<{ ms: number }[]>`
            SELECT (extract(epoch FROM ends_at - starts_at) * 1000)::int AS ms FROM appointments WHERE id = ${booked.appointmentId}`;
          expect(row!.ms).toBe(30 * 60_000);
          expect((await ok(night, 'cancelAppointment', { appointmentId: booked.appointmentId })).success).toBe(true);
        }
        const whole = await ok(allDay, 'checkAvailability', { date, serviceType: 'standard' });
        expect(whole.slots.length + whole.moreSlots, `${z.zone} ${date} all day`).toBe(z.counts[kind][1]);
      }
    });
  }

  it('the nearest openings after a taken slot are distinct and each books as offered (New York, Sydney, Lord Howe)', async () => {
    const cases: Array<[string, string, string, string[]]> = [
      ['America/New_York', '2027-11-07', '1:00 AM', ['1:30 AM', '1:45 AM', '2:00 AM']],
      ['Australia/Sydney', '2027-04-04', '2:00 AM', ['2:30 AM', '2:45 AM', '3:00 AM']],
      ['Australia/Lord_Howe', '2027-04-04', '1:30 AM', ['2:00 AM', '2:15 AM', '2:30 AM']],
    ];
    for (const [zone, date, taken, expected] of cases) {
      const org = await clinic(zone, everyDay([['00:00', '24:00']]));
      const first = await book(org, date, taken);
      expect(first.success).toBe(true);
      const refused = await book(org, date, taken, { patientName: 'Someone Else' });
      expect(refused.success).toBe(false);
      expect(refused.reason).toBe('slot_taken');
      expect(
        refused.alternatives.map((a: { spoken: string }) => a.spoken),
        zone,
      ).toEqual(expected);
      expect(refused.message).toContain(`The nearest openings are ${expected[0]}, ${expected[1]} and ${expected[2]}.`);
      for (const alt of refused.alternatives as Array<{ spoken: string; startsAt: string }>) {
        const booked = await book(org, date, alt.spoken, { patientName: 'Alt Patient' });
        expect(booked.success, `${zone} ${alt.spoken}: ${booked.message}`).toBe(true);
        expect(booked.startsAt).toBe(alt.startsAt);
        await ok(org, 'cancelAppointment', { appointmentId: booked.appointmentId });
      }
    }
  });

  it('a 60-minute visit at the first 1:30 AM keeps its hour and the database agrees on the hours', async () => {
    for (const windows of [[['00:00', '24:00']], [['00:00', '04:00']]] as Array<Array<[string, string]>>) {
      const org = await clinic('America/New_York', everyDay(windows));
      const r = await book(org, '2027-11-07', '1:30 AM', { serviceType: 'extended' });
      expect(r.success, r.message).toBe(true);
      expect(r.startsAt).toBe('2027-11-07T01:30:00-04:00');
      expect(r.endsAt).toBe('2027-11-07T01:30:00-05:00');
      expect(r.spokenTime).toBe('Sunday, November 7 at 1:30 AM');
    }
    // The last slot before 24:00 on both change days books and ends at midnight.
    const org = await clinic('America/New_York', everyDay([['00:00', '24:00']]));
    for (const [date, end] of [
      ['2027-11-07', '2027-11-08T00:00:00-05:00'],
      ['2027-03-14', '2027-03-15T00:00:00-04:00'],
    ]) {
      const r = await book(org, date!, '11:30 PM');
      expect(r.success, r.message).toBe(true);
      expect(r.endsAt).toBe(end);
    }
  });

  it('rescheduling to a repeated time moves to its first occurrence', async () => {
    const org = await clinic('Australia/Sydney', everyDay([['00:00', '24:00']]));
    const booked = await book(org, '2027-04-04', '4:00 AM');
    expect(booked.startsAt).toBe('2027-04-04T04:00:00+10:00');
    const moved = await ok(org, 'rescheduleAppointment', {
      appointmentId: booked.appointmentId,
      newDate: '2027-04-04',
      newTime: '2:30 AM',
    });
    expect(moved.success, moved.message).toBe(true);
    expect(moved.startsAt).toBe('2027-04-04T02:30:00+11:00');
    expect(moved.message).toBe('Done. Your appointment has moved from Sunday, April 4 at 4:00 AM to Sunday, April 4 at 2:30 AM.');
  });

  it('the confirmation SMS of a first occurrence carries the pre-change abbreviation', async () => {
    for (const z of ZONES) {
      const org = await clinic(z.zone, everyDay([['00:00', '24:00']]));
      await putSms(h, org.id, [{ kind: 'sandbox', senderNumbers: ['+14155550199'] }]);
      const r = await book(org, z.fall, z.repeated.time);
      expect(r.success, r.message).toBe(true);
      expect(r.startsAt).toBe(z.repeated.iso);
      const [row] = await h.owner<{ body: string }[]>`SELECT body FROM sms_outbox WHERE appointment_id = ${r.appointmentId}`;
      expect(row!.body, z.zone).toContain(`at ${z.repeated.time} ${z.repeated.abbreviation}.`);
    }
  });
});

describe('the same defect class elsewhere (HTTP)', () => {
  it('Cuba, two midnights: the day starts at the first; availability, lookup by date and cancel agree', async () => {
    const org = await clinic('America/Havana', everyDay([['00:00', '02:00']]));
    const patient = phone();
    const booked = await book(org, '2027-11-07', '12:30 AM', { patientPhone: patient });
    expect(booked.startsAt).toBe('2027-11-07T00:30:00-04:00');
    const avail = await ok(org, 'checkAvailability', { date: '2027-11-07', serviceType: 'standard' });
    expect(avail.slots[0]).toMatchObject({ time: '12:00 AM', startsAt: '2027-11-07T00:00:00-04:00' });
    // 12:15 and 12:30 overlap the booking, so the busy time of the first hour was seen.
    expect(avail.slots.map((s: { time: string }) => s.time)).not.toContain('12:30 AM');
    expect(avail.slots.map((s: { time: string }) => s.time)).not.toContain('12:15 AM');
    const wrongDay = await tool(org, 'cancelAppointment', { patientPhone: patient, appointmentDate: '2027-11-06' });
    expect(wrongDay.error).toMatch(/couldn't find an appointment for that number on Saturday, November 6/);
    const cancelled = await ok(org, 'cancelAppointment', { patientPhone: patient, appointmentDate: '2027-11-07' });
    expect(cancelled.message).toBe('Your appointment on Sunday, November 7 at 12:30 AM is cancelled.');
    // The closest openings to a time outside the hours are searched from the first midnight too.
    expect((await book(org, '2027-11-07', '12:00 AM')).startsAt).toBe('2027-11-07T00:00:00-04:00');
    const outside = await tool(org, 'bookClinicAppointment', {
      patientName: 'Ana Ruiz',
      patientPhone: phone(),
      appointmentDate: '2027-11-07',
      appointmentTime: '3:00 AM',
      serviceType: 'standard',
    });
    expect(outside.error).toMatch(/The closest openings are 12:30 AM, 12:45 AM and 1:00 AM\.$/);
  });

  it('Cuba: the next opening after a closed day is the first midnight, and books as offered', async () => {
    const org = await clinic('America/Havana', { '7': [['00:00', '02:00']] });
    const avail = await ok(org, 'checkAvailability', { date: '2027-11-06', serviceType: 'standard' });
    expect(avail.slots).toEqual([]);
    expect(avail.nextAvailable).toEqual({ startsAt: '2027-11-07T00:00:00-04:00', spoken: 'Sunday, November 7 at 12:00 AM' });
    const booked = await book(org, '2027-11-07', '12:00 AM');
    expect(booked.startsAt).toBe(avail.nextAvailable.startsAt);
  });

  it('Chile and Cuba: the last slot before a 24:00 close is offered only if it books', async () => {
    // Chile: Saturday September 4 ends when the clocks jump to Sunday 01:00.
    const chile = await clinic('America/Santiago', everyDay([['22:00', '24:00']]));
    const sat = await ok(chile, 'checkAvailability', { date: '2027-09-04', serviceType: 'standard' });
    const last = sat.slots[sat.slots.length - 1];
    expect(last).toMatchObject({ time: '11:30 PM', startsAt: '2027-09-04T23:30:00-04:00' });
    const booked = await book(chile, '2027-09-04', last.time);
    expect(booked.success, booked.message).toBe(true);
    expect(booked.endsAt).toBe('2027-09-05T01:00:00-03:00');
    // Cuba: a 90-minute visit at 11:30 PM Saturday would end at Sunday's second midnight.
    const cuba = await clinic('America/Havana', { '6': [['20:00', '24:00']] });
    const avail = await ok(cuba, 'checkAvailability', { date: '2027-11-06', serviceType: 'ninety' });
    const times = avail.slots.map((s: { time: string }) => s.time);
    expect(times[times.length - 1]).toBe('10:30 PM');
    const late = await tool(cuba, 'bookClinicAppointment', {
      patientName: 'Ana Ruiz',
      patientPhone: phone(),
      appointmentDate: '2027-11-06',
      appointmentTime: '11:30 PM',
      serviceType: 'ninety',
    });
    expect(late.error).toMatch(/On Saturdays we're open 8:00 PM to 12:00 AM, and a 90-minute Ninety Minute Visit at 11:30 PM doesn't fit/);
  });

  it('a window closing inside the spring-forward gap offers only what books', async () => {
    const org = await clinic('America/New_York', everyDay([['00:00', '02:30']]));
    const avail = await ok(org, 'checkAvailability', { date: '2027-03-14', serviceType: 'standard' });
    const times = avail.slots.map((s: { time: string }) => s.time);
    expect(times.slice(-2)).toEqual(['1:15 AM', '1:30 AM']);
    expect(avail.openingHours).toBe('12:00 AM to 2:30 AM');
    for (const slot of avail.slots.slice(-3) as Array<{ time: string; startsAt: string }>) {
      const r = await book(org, '2027-03-14', slot.time);
      expect(r.success, `${slot.time}: ${r.message}`).toBe(true);
      expect(r.startsAt).toBe(slot.startsAt);
      await ok(org, 'cancelAppointment', { appointmentId: r.appointmentId });
    }
  });

  it('two appointments at the same wall time on a fall-back day are listed so they can be told apart', async () => {
    const org = await clinic('America/New_York', everyDay([['00:00', '24:00']]));
    const patient = phone();
    const first = await book(org, '2027-11-07', '1:00 AM', { patientPhone: patient });
    expect(first.startsAt).toBe('2027-11-07T01:00:00-04:00');
    // Nothing offered or booked here is ever a second occurrence; a row written another way can be.
    await h.owner`
      INSERT INTO appointments (org_id, practitioner_id, service_id, patient_name, patient_phone, starts_at, ends_at)
      SELECT org_id, practitioner_id, service_id, patient_name, patient_phone,
             '2027-11-07T01:00:00-05:00'::timestamptz, '2027-11-07T01:30:00-05:00'::timestamptz
        FROM appointments WHERE id = ${first.appointmentId}`;
    const r = await tool(org, 'cancelAppointment', { patientPhone: patient, appointmentDate: '2027-11-07' });
    expect(r.error).toBe(
      'There are 2 appointments for that number on Sunday, November 7, at 1:00 AM and 1:00 AM after the clocks fall back. Which one?',
    );
  });
});

describe('the database and the application agree on opening hours', () => {
  const ZONES_SQL: Array<[string, string[]]> = [
    ['America/New_York', ['2027-11-07', '2027-03-14']],
    ['Europe/London', ['2027-10-31', '2027-03-28']],
    ['America/St_Johns', ['2027-11-07', '2027-03-14']],
    ['Australia/Sydney', ['2027-04-04', '2027-10-03']],
    ['Australia/Lord_Howe', ['2027-04-04', '2027-10-03']],
    ['America/Santiago', ['2027-04-03', '2027-09-04', '2027-09-05']],
    ['America/Havana', ['2027-11-06', '2027-11-07', '2027-03-13', '2027-03-14']],
  ];
  const WINDOWS: Array<Array<[string, string]>> = [
    [['00:00', '24:00']],
    [['00:00', '04:00']],
    [['00:00', '01:30']],
    [['01:30', '04:00']],
    [['01:00', '02:00']],
    [['02:00', '03:00']],
    [['01:45', '02:15']],
    [['02:30', '17:00']],
    [
      ['00:00', '02:30'],
      ['02:30', '24:00'],
    ],
    [['20:00', '24:00']],
    [
      ['00:00', '00:30'],
      ['23:00', '24:00'],
    ],
  ];

  it('wall_instant() and wallInstant() resolve every quarter hour of the change days alike', async () => {
    const zs: string[] = [];
    const ds: string[] = [];
    const ts: string[] = [];
    const want: number[] = [];
    for (const [zone, days] of ZONES_SQL) {
      for (const iso of days) {
        for (let m = 0; m <= 1440; m += 15) {
          zs.push(zone);
          ds.push(iso);
          ts.push(m === 1440 ? '24:00' : `${String(Math.floor(m / 60)).padStart(2, '0')}:${String(m % 60).padStart(2, '0')}`);
          want.push(time.wallInstant(ld(iso), m, zone).toMillis());
        }
      }
    }
    const rows = await h.owner<{ i: string; ms: string }[]>`
      SELECT t.i, (extract(epoch FROM wall_instant(t.z, t.d::date, t.t::time)) * 1000)::bigint AS ms
        FROM unnest(${zs}::text[], ${ds}::text[], ${ts}::text[]) WITH ORDINALITY AS t(z, d, t, i)
       ORDER BY t.i`;
    const mismatches = rows
      .filter((r) => Number(r.ms) !== want[Number(r.i) - 1])
      .map((r) => {
        const i = Number(r.i) - 1;
        return `${zs[i]} ${ds[i]} ${ts[i]}: sql ${new Date(Number(r.ms)).toISOString()} ts ${new Date(want[i]!).toISOString()}`;
      });
    expect(rows.length).toBe(want.length);
    expect(mismatches).toEqual([]);
  });

  it('within_opening_hours() and isWithinOpeningHours() agree around every change, for any instant and duration', async () => {
    const hours = WINDOWS.map((w) => everyDay(w));
    const hi: number[] = [];
    const zs: string[] = [];
    const ss: string[] = [];
    const es: string[] = [];
    const want: boolean[] = [];
    for (const [zone, days] of ZONES_SQL) {
      const orgs = hours.map((oh) => pureOrg(zone, oh));
      for (const iso of days) {
        const { start: dayStart, end: dayEnd } = time.localDayBounds(ld(iso), zone);
        // Every quarter hour of the day in real time (second occurrences included), and the evening before.
        for (let t = dayStart.toMillis() - 2 * 3_600_000; t < dayEnd.toMillis(); t += 15 * 60_000) {
          const start = DateTime.fromMillis(t, { zone });
          const startIso = start.toISO()!;
          for (const minutes of [30, 60, 90]) {
            const end = start.plus({ minutes });
            // Formatted once for every set of hours, not once per set.
            const endIso = end.toISO()!;
            orgs.forEach((org, i) => {
              hi.push(i + 1);
              zs.push(zone);
              ss.push(startIso);
              es.push(endIso);
              want.push(isWithinOpeningHours(org, start, end));
            });
          }
        }
      }
    }
    const rows = await h.owner<{ i: string; ok: boolean }[]>`
      WITH hours AS (SELECT j::jsonb AS h, n FROM unnest(${hours.map((x) => JSON.stringify(x))}::text[]) WITH ORDINALITY AS u(j, n))
      SELECT t.i, within_opening_hours(hours.h, t.z, t.s::timestamptz, t.e::timestamptz) AS ok
        FROM unnest(${hi}::int[], ${zs}::text[], ${ss}::text[], ${es}::text[]) WITH ORDINALITY AS t(hi, z, s, e, i)
        JOIN hours ON hours.n = t.hi
       ORDER BY t.i`;
    expect(rows.length).toBe(want.length);
    const mismatches = rows
      .filter((r) => r.ok !== want[Number(r.i) - 1])
      .map((r) => {
        const i = Number(r.i) - 1;
        return `${zs[i]} ${ss[i]} -> ${es[i]} ${JSON.stringify(WINDOWS[hi[i]! - 1])}: sql ${r.ok} ts ${want[i]}`;
      });
    expect(mismatches.slice(0, 20)).toEqual([]);
    // Both sides say yes and no somewhere: the comparison is not vacuous.
    expect(want.some(Boolean) && want.some((w) => !w)).toBe(true);
  });
});

describe('module layering (issue 7)', () => {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'src');
  const localImports = (source: string) => [...source.matchAll(/from '(\.{1,2}\/[^']+)\.js'/g)].map((m) => m[1]!);

  it('no tool imports another tool, and the domain imports no tool', async () => {
    const helpers = new Set(['./args', './booking-shared', './locateAppointment', './types']);
    // The registry and the runner list the tools by design.
    const registry = new Set(['index.ts', 'execute.ts']);
    const offences: string[] = [];
    for (const f of await fs.readdir(path.join(root, 'tools'))) {
      if (registry.has(f)) continue;
      const source = await fs.readFile(path.join(root, 'tools', f), 'utf8');
      for (const spec of localImports(source)) {
        if (spec.startsWith('./') && !helpers.has(spec)) offences.push(`tools/${f} imports ${spec}`);
      }
    }
    for (const f of await fs.readdir(path.join(root, 'booking'))) {
      const source = await fs.readFile(path.join(root, 'booking', f), 'utf8');
      for (const spec of localImports(source)) {
        if (/^\.\.\/(tools|http)\//.test(spec)) offences.push(`booking/${f} imports ${spec}`);
      }
    }
    expect(offences).toEqual([]);
  });
});
