/**
 * When reminders are due (src/sms/reminders.ts), on fixed clocks: offsets
 * across a DST change in two zones (whole days are calendar days, the rest
 * elapsed time), the sending window on the patient's or the clinic's clock,
 * quiet hours moving a reminder earlier and never after the appointment.
 */
import { DateTime } from 'luxon';
import { describe, expect, it } from 'vitest';
import type { ReminderSettings } from '../src/booking/org.js';
import { applyWindow, offsetInstant, planReminders, windowZone } from '../src/sms/reminders.js';

const NY = 'America/New_York';
const LON = 'Europe/London';
const US_PHONE = '+14155550123';
const UK_PHONE = '+447400123456';

const settings = (over: Partial<ReminderSettings> = {}): ReminderSettings => ({
  offsetsMinutes: [1440],
  window: { start: '08:00', end: '21:00' },
  zoneRule: 'patient',
  cancelByReply: false,
  ...over,
});

const at = (iso: string, zone: string) => DateTime.fromISO(iso, { zone });
const plan = (startIso: string, zone: string, over: Partial<ReminderSettings> = {}, phone = US_PHONE, nowIso = '2027-01-04T12:00:00Z') =>
  planReminders({
    start: at(startIso, zone),
    settings: settings(over),
    clinicZone: zone,
    patientPhone: phone,
    now: DateTime.fromISO(nowIso),
  });
const utc = (d: DateTime) => d.toUTC().toISO({ suppressMilliseconds: true });
// Zone names as each zone's own locale writes them (en-US calls BST "GMT+1").
const wall = (d: DateTime, zone: string) =>
  d
    .setZone(zone)
    .setLocale(zone.startsWith('Europe/') ? 'en-GB' : 'en-US')
    .toFormat('ccc yyyy-LL-dd HH:mm ZZZZ');
const realHours = (a: DateTime, b: DateTime) => (a.toMillis() - b.toMillis()) / 3_600_000;

describe('offsets across a DST change', () => {
  it('New York, spring forward: 24 h before Sunday 9:00 AM EDT is Saturday 9:00 AM EST, 23 real hours before', () => {
    // US clocks spring forward on Sunday 2027-03-14 at 02:00.
    const start = at('2027-03-14T09:00', NY);
    const r = offsetInstant(start, 1440, NY);
    expect(wall(r, NY)).toBe('Sat 2027-03-13 09:00 EST');
    expect(realHours(start, r)).toBe(23);
  });

  it('New York: a reminder "48 h before" a Monday 9:00 AM appointment after the change goes out Saturday 9:00 AM', () => {
    const start = at('2027-03-15T09:00', NY);
    const [r] = plan('2027-03-15T09:00', NY, { offsetsMinutes: [2880] });
    expect(wall(r!.due, NY)).toBe('Sat 2027-03-13 09:00 EST');
    expect(realHours(start, r!.due)).toBe(47);
    // And 24 h before it, on the Sunday after the change, is Sunday 9:00 AM EDT.
    expect(wall(offsetInstant(start, 1440, NY), NY)).toBe('Sun 2027-03-14 09:00 EDT');
  });

  it('New York, fall back: 24 h before Sunday 9:00 AM EST is Saturday 9:00 AM EDT, 25 real hours before', () => {
    const start = at('2027-11-07T09:00', NY);
    const r = offsetInstant(start, 1440, NY);
    expect(wall(r, NY)).toBe('Sat 2027-11-06 09:00 EDT');
    expect(realHours(start, r)).toBe(25);
  });

  it('London, clocks go forward: Sunday 9:00 BST gets its reminder at Saturday 9:00 GMT', () => {
    // UK clocks go forward on Sunday 2027-03-28 at 01:00 GMT.
    const start = at('2027-03-28T09:00', LON);
    const [r] = plan('2027-03-28T09:00', LON, {}, UK_PHONE);
    expect(wall(r!.due, LON)).toBe('Sat 2027-03-27 09:00 GMT');
    expect(utc(r!.due)).toBe('2027-03-27T09:00:00Z');
    expect(realHours(start, r!.due)).toBe(23);
  });

  it('London, clocks go back: 48 h before Monday 10:00 GMT is Saturday 10:00 BST (49 real hours)', () => {
    const start = at('2027-11-01T10:00', LON);
    const r = offsetInstant(start, 2880, LON);
    expect(wall(r, LON)).toBe('Sat 2027-10-30 10:00 BST');
    expect(realHours(start, r)).toBe(49);
  });

  it('minutes that are not whole days are elapsed time: 120 is two real hours, 1500 is a calendar day and one real hour', () => {
    // Sunday 2027-03-14 05:00 EDT (09:00Z): two real hours before is 07:00Z, which New York reads as 03:00 EDT.
    const start = at('2027-03-14T05:00', NY);
    expect(utc(offsetInstant(start, 120, NY))).toBe('2027-03-14T07:00:00Z');
    expect(wall(offsetInstant(start, 120, NY), NY)).toBe('Sun 2027-03-14 03:00 EDT');
    const monday = at('2027-03-15T09:00', NY);
    expect(wall(offsetInstant(monday, 1500, NY), NY)).toBe('Sun 2027-03-14 08:00 EDT');
  });

  it('a wall time the day before does not have is the moment the clocks jump past it', () => {
    // 2:30 AM does not exist on 2027-03-14 in New York.
    expect(wall(offsetInstant(at('2027-03-15T02:30', NY), 1440, NY), NY)).toBe('Sun 2027-03-14 03:00 EDT');
  });

  it('a repeated wall time the day before is its first occurrence', () => {
    // 1:30 AM happens twice on 2027-11-07 in New York: the first is EDT.
    expect(wall(offsetInstant(at('2027-11-08T01:30', NY), 1440, NY), NY)).toBe('Sun 2027-11-07 01:30 EDT');
  });
});

describe('quiet hours', () => {
  it('a reminder due before the window opens moves to the evening before, 15 minutes before it closes', () => {
    // 120 before Tuesday 8:30 AM is 6:30 AM: quiet. It moves to Monday 20:45.
    const [r] = plan('2027-02-09T08:30', NY, { offsetsMinutes: [120] });
    expect(wall(r!.due, NY)).toBe('Mon 2027-02-08 20:45 EST');
    expect(wall(r!.sendBy, NY)).toBe('Mon 2027-02-08 21:00 EST');
    expect(r!.shifted).toBe(true);
  });

  it('a reminder due after the window closes moves to the same evening', () => {
    const [r] = plan('2027-02-09T22:30', NY);
    expect(wall(r!.due, NY)).toBe('Mon 2027-02-08 20:45 EST');
  });

  it('inside the window nothing moves, and 21:00 itself is already quiet', () => {
    const [inside] = plan('2027-02-09T20:59', NY);
    expect(wall(inside!.due, NY)).toBe('Mon 2027-02-08 20:59 EST');
    expect(inside!.shifted).toBe(false);
    const [edge] = plan('2027-02-09T21:00', NY);
    expect(wall(edge!.due, NY)).toBe('Mon 2027-02-08 20:45 EST');
    const [open] = plan('2027-02-09T08:00', NY);
    expect(wall(open!.due, NY)).toBe('Mon 2027-02-08 08:00 EST');
  });

  it('never after the appointment, and a reminder whose time has passed is dropped', () => {
    // Booked Monday 19:00 for Tuesday 07:30: 24 h before is Monday 07:30 (past); 2 h before is 05:30, moved to Monday 20:45.
    const r = plan('2027-02-09T07:30', NY, { offsetsMinutes: [1440, 120] }, US_PHONE, '2027-02-09T00:00:00Z');
    expect(r.map((x) => [x.kind, wall(x.due, NY)])).toEqual([['reminder:120', 'Mon 2027-02-08 20:45 EST']]);
    // Booked at 20:50: the shifted time has passed too. Nothing is sent late instead.
    expect(plan('2027-02-09T07:30', NY, { offsetsMinutes: [1440, 120] }, US_PHONE, '2027-02-09T01:50:00Z')).toEqual([]);
    // An offset of a minute before an appointment in quiet hours: moved earlier, still before it.
    const [late] = plan('2027-02-09T23:00', NY, { offsetsMinutes: [1] }, US_PHONE, '2027-02-09T00:00:00Z');
    expect(wall(late!.due, NY)).toBe('Tue 2027-02-09 20:45 EST');
    expect(late!.due < at('2027-02-09T23:00', NY)).toBe(true);
  });

  it("the window is read on the patient's clock when the number tells it: a UK mobile at a New York clinic", () => {
    expect(windowZone(UK_PHONE, NY, 'patient')).toBe(LON);
    expect(windowZone(US_PHONE, NY, 'patient')).toBe(NY);
    expect(windowZone(UK_PHONE, NY, 'clinic')).toBe(NY);
    // 24 h before Tuesday 17:00 New York is Monday 22:00 in London: quiet there, so 20:45 London (15:45 New York).
    const [r] = plan('2027-02-09T17:00', NY, {}, UK_PHONE);
    expect(wall(r!.due, LON)).toBe('Mon 2027-02-08 20:45 GMT');
    const [clinicClock] = plan('2027-02-09T17:00', NY, { zoneRule: 'clinic' }, UK_PHONE);
    expect(wall(clinicClock!.due, NY)).toBe('Mon 2027-02-08 17:00 EST');
  });

  it('a clinic window of its own', () => {
    const w = { start: '09:30', end: '18:00' };
    expect(wall(applyWindow(at('2027-02-08T09:00', NY), w, NY).due, NY)).toBe('Sun 2027-02-07 17:45 EST');
    expect(wall(applyWindow(at('2027-02-08T18:10', NY), w, NY).due, NY)).toBe('Mon 2027-02-08 17:45 EST');
    expect(applyWindow(at('2027-02-08T09:30', NY), w, NY).shifted).toBe(false);
  });

  it('a quiet-hours evening across a DST change keeps its wall clock', () => {
    // 120 before Sunday 2027-03-14 04:00 EDT is 01:00 EST on Sunday: quiet, so Saturday 20:45 EST.
    const [r] = plan('2027-03-14T04:00', NY, { offsetsMinutes: [120] });
    expect(wall(r!.due, NY)).toBe('Sat 2027-03-13 20:45 EST');
  });
});

describe('several offsets', () => {
  it('24 h and 2 h before a 3:00 PM visit: two reminders, the day before and the day of', () => {
    const r = plan('2027-02-09T15:00', NY, { offsetsMinutes: [120, 1440] });
    expect(r.map((x) => [x.kind, wall(x.due, NY)])).toEqual([
      ['reminder:1440', 'Mon 2027-02-08 15:00 EST'],
      ['reminder:120', 'Tue 2027-02-09 13:00 EST'],
    ]);
  });

  it('two that land on the same clinic-local day are one: the earliest (the daily cap would skip the other)', () => {
    // 2 h before 9:00 AM is 7:00 AM, quiet, moved to the evening before, the day of the 24 h one.
    const r = plan('2027-02-09T09:00', NY, { offsetsMinutes: [1440, 120] });
    expect(r.map((x) => [x.kind, wall(x.due, NY)])).toEqual([['reminder:1440', 'Mon 2027-02-08 09:00 EST']]);
  });

  it('no offsets: no reminders', () => {
    expect(plan('2027-02-09T15:00', NY, { offsetsMinutes: [] })).toEqual([]);
  });
});
