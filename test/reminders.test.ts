/**
 * Reminders end to end (issue 11), against real PostgreSQL and the fake
 * providers: scheduled by the booking transaction (across DST in two zones, in
 * quiet hours, on a fixed clock), moved by a reschedule and voided by a
 * cancel, never sent for a cancelled or moved appointment, the sending window
 * and the daily and weekly caps held by the gate across runtimes; the settings
 * on PUT /api/admin/orgs/:id/sms and the clinic's locale.
 */
import { randomUUID } from 'node:crypto';
import { DateTime } from 'luxon';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sqlAttemptLog } from '../src/sms/attempts.js';
import { Outbox } from '../src/sms/outbox.js';
import { startFakeTelnyx, type FakeTelnyx } from './fakes/fake-telnyx.js';
import { startFakeTwilio, type FakeTwilio } from './fakes/fake-twilio.js';
import { ADMIN_TOKEN, callTools, createOrg, resultOf, startHarness, vapiMessage, type Harness, type TestOrg } from './helpers/harness.js';
import { book, freshPhone, providerEnv, putSms, twilioLink } from './helpers/sms.js';

const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };
const CONTACT = '+14155550100';
// A fixed clock well before the DST changes below; the database's own clock decides what is due.
const NOW = DateTime.fromISO('2027-02-01T12:00:00Z');

let twilio: FakeTwilio;
let telnyx: FakeTelnyx;
/** Real clock: reminders are made due by moving next_attempt_at to the database's now(). */
let h: Harness;
/** Fixed clock: for the due times themselves. */
let fixed: Harness;

beforeAll(async () => {
  twilio = await startFakeTwilio();
  telnyx = await startFakeTelnyx();
  h = await startHarness({ ...providerEnv(twilio.url, telnyx.url), SMS_ATTEMPT_TIMEOUT_MS: '500' });
  fixed = await startHarness(providerEnv(twilio.url, telnyx.url), { ownerUrl: h.ownerUrl, now: () => NOW });
});
afterAll(async () => {
  await fixed?.close();
  await h?.close();
  await twilio?.close();
  await telnyx?.close();
});

async function clinic(harness: Harness, org: Record<string, unknown> = {}, sms: Record<string, unknown> = {}): Promise<TestOrg> {
  const made = await createOrg(harness, org);
  await putSms(harness, made.id, [twilioLink()], { rateLimitPerHour: 100, contactPhone: CONTACT, ...sms });
  return made;
}

interface ReminderView {
  id: string;
  kind: string;
  status: string;
  failure_reason: string | null;
  next_attempt_at: Date;
  send_by: Date | null;
  expires_at: Date;
  body: string;
}

const reminders = (harness: Harness, appointmentId: string) =>
  harness.owner<ReminderView[]>`
    SELECT id, kind, status, failure_reason, next_attempt_at, send_by, expires_at, body FROM sms_outbox
     WHERE appointment_id = ${appointmentId} AND kind LIKE 'reminder:%' ORDER BY created_at, kind`;

async function bookAt(harness: Harness, org: TestOrg, date: string, time: string, phone = freshPhone()) {
  const res = await callTools(
    harness,
    org.token,
    vapiMessage([
      {
        name: 'bookClinicAppointment',
        args: { patientName: 'Ana Ruiz', patientPhone: phone, appointmentDate: date, appointmentTime: time, serviceType: 'short' },
      },
    ]),
  );
  expect(res.status).toBe(200);
  const r = resultOf(res);
  expect(r.success, JSON.stringify(r)).toBe(true);
  return r as Record<string, any>;
}

async function tool(harness: Harness, org: TestOrg, name: string, args: Record<string, unknown>) {
  const res = await callTools(harness, org.token, vapiMessage([{ name, args }]));
  expect(res.status).toBe(200);
  const r = res.body.results[0];
  return r.result !== undefined ? (resultOf(res) as Record<string, any>) : { success: false, message: r.error as string };
}

const iso = (d: Date) => d.toISOString().replace('.000Z', 'Z');
const sentTo = (phone: string) => twilio.messages.filter((m) => m.to === phone);

/** Time passes: the reminder is due now, its window still open. */
const makeDue = (id: string) =>
  h.owner`UPDATE sms_outbox SET next_attempt_at = now(), send_by = now() + interval '1 hour' WHERE id = ${id}`;

describe('scheduled by the booking transaction', () => {
  it('New York across the spring change: 24 h before Sunday 9:00 AM EDT goes out Saturday 9:00 AM EST', async () => {
    const org = await clinic(fixed, { timeZone: 'America/New_York' });
    const r = await bookAt(fixed, org, '2027-03-14', '09:00');
    const [rem] = await reminders(fixed, r.appointmentId);
    expect(rem).toMatchObject({ kind: 'reminder:1440', status: 'pending' });
    expect(iso(rem!.next_attempt_at)).toBe('2027-03-13T14:00:00Z');
    expect(iso(rem!.expires_at)).toBe('2027-03-14T13:00:00Z');
    expect(iso(rem!.send_by!)).toBe('2027-03-14T02:00:00Z');
    expect(rem!.body).toBe(
      `${await nameOf(org.id)}: reminder of your visit on Sun, Mar 14 at 9:00 AM EDT. Reply C to confirm or R to reschedule. Call (415) 555-0100. Reply STOP to opt out.`,
    );
  });

  it('London across the autumn change, en-GB: 24 h before Sunday 9:00 GMT goes out Saturday 9:00 BST', async () => {
    const org = await clinic(
      fixed,
      { timeZone: 'Europe/London', defaultRegion: 'GB', locale: 'en-GB', name: 'Harley Health' },
      { contactPhone: '+442079460018' },
    );
    const r = await bookAt(fixed, org, '2027-10-31', '09:00', '+447400123456');
    expect(r.spokenTime).toBe('Sunday 31 October at 09:00');
    const [rem] = await reminders(fixed, r.appointmentId);
    expect(iso(rem!.next_attempt_at)).toBe('2027-10-30T08:00:00Z');
    expect(rem!.body).toBe(
      'Harley Health: reminder of your visit on Sun 31 Oct at 09:00 GMT. Reply C to confirm or R to reschedule. Call 020 7946 0018. Reply STOP to opt out.',
    );
    const [conf] = await fixed.owner<
      { body: string }[]
    >`SELECT body FROM sms_outbox WHERE appointment_id = ${r.appointmentId} AND kind = 'booked'`;
    expect(conf!.body).toBe(
      'Hi Ana, your appointment at Harley Health is confirmed for Sun 31 Oct at 09:00 GMT. Call 020 7946 0018. Reply STOP to opt out.',
    );
  });

  it("quiet hours: 2 h before 7:30 AM moves to 8:45 PM the evening before; a window of the clinic's own", async () => {
    const org = await clinic(fixed, {}, { reminderOffsetsMinutes: [120] });
    const r = await bookAt(fixed, org, '2027-02-10', '07:30');
    const [rem] = await reminders(fixed, r.appointmentId);
    expect(DateTime.fromJSDate(rem!.next_attempt_at, { zone: 'America/New_York' }).toFormat('yyyy-LL-dd HH:mm')).toBe('2027-02-09 20:45');
    expect(DateTime.fromJSDate(rem!.send_by!, { zone: 'America/New_York' }).toFormat('yyyy-LL-dd HH:mm')).toBe('2027-02-09 21:00');

    const own = await clinic(fixed, {}, { reminderOffsetsMinutes: [120], sendingWindow: { start: '09:00', end: '17:00' } });
    const r2 = await bookAt(fixed, own, '2027-02-10', '19:30');
    const [rem2] = await reminders(fixed, r2.appointmentId);
    expect(DateTime.fromJSDate(rem2!.next_attempt_at, { zone: 'America/New_York' }).toFormat('yyyy-LL-dd HH:mm')).toBe('2027-02-10 16:45');
  });

  it('two offsets; none without a number to call; none for a clinic that turned them off', async () => {
    const org = await clinic(fixed, {}, { reminderOffsetsMinutes: [1440, 120] });
    const r = await bookAt(fixed, org, '2027-02-10', '15:00');
    expect((await reminders(fixed, r.appointmentId)).map((x) => [x.kind, iso(x.next_attempt_at)])).toEqual(
      [
        ['reminder:120', '2027-02-10T18:00:00Z'],
        ['reminder:1440', '2027-02-09T20:00:00Z'],
      ].sort(),
    );
    const silent = await createOrg(fixed);
    await putSms(fixed, silent.id, [twilioLink()], { rateLimitPerHour: 100 });
    expect(await reminders(fixed, (await bookAt(fixed, silent, '2027-02-10', '15:00')).appointmentId)).toEqual([]);
    const off = await clinic(fixed, {}, { reminderOffsetsMinutes: [] });
    expect(await reminders(fixed, (await bookAt(fixed, off, '2027-02-10', '15:00')).appointmentId)).toEqual([]);
  });
});

describe('never for a cancelled or moved appointment', () => {
  it('the cancel transaction voids them', async () => {
    const org = await clinic(h);
    const { result } = await book(h, org);
    const cancelled = await tool(h, org, 'cancelAppointment', { appointmentId: result.appointmentId });
    expect(cancelled.success).toBe(true);
    expect(await reminders(h, result.appointmentId)).toEqual([
      expect.objectContaining({ kind: 'reminder:1440', status: 'cancelled', failure_reason: 'appointment_cancelled' }),
    ]);
  });

  it('the reschedule transaction moves them to the new time, text and all', async () => {
    const org = await clinic(h);
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    const [before] = await reminders(h, result.appointmentId);
    const newDate = DateTime.fromISO(result.startsAt).plus({ days: 2 });
    const moved = await tool(h, org, 'rescheduleAppointment', {
      appointmentId: result.appointmentId,
      newDate: newDate.toISODate(),
      newTime: '10:00',
    });
    expect(moved.success, moved.message).toBe(true);
    const [after] = await reminders(h, result.appointmentId);
    expect(after!.id).toBe(before!.id);
    expect(after).toMatchObject({ kind: 'reminder:1440', status: 'pending' });
    expect(iso(after!.expires_at)).toBe(iso(new Date(moved.startsAt)));
    expect(after!.next_attempt_at.getTime()).toBe(DateTime.fromISO(moved.startsAt).minus({ days: 1 }).toMillis());
    expect(after!.body).toContain(DateTime.fromISO(moved.startsAt).setZone('America/New_York').toFormat("ccc, LLL d 'at' h:mm a"));
    // It goes out, once, for the new time.
    await makeDue(after!.id);
    expect(await h.runtime.sms.worker.processNow(after!.id)).toMatchObject({ status: 'sent' });
    expect(sentTo(phone).filter((m) => m.body === after!.body)).toHaveLength(1);
  });

  it('a move that lands between scheduling and sending: the claimed reminder is superseded, the new time gets its own', async () => {
    const org = await clinic(h);
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    const [rem] = await reminders(h, result.appointmentId);
    await makeDue(rem!.id);
    // A worker has claimed it (its gate not yet run) when the patient moves the appointment.
    const worker = new Outbox(h.runtime.workerSql, `test-${randomUUID()}`, {
      leaseMs: 30_000,
      retryBaseMs: 50,
      retryMaxMs: 200,
      maxAttempts: 6,
      defaultRateLimit: 5,
    });
    const claimed = await worker.claimDue(500);
    expect(claimed.map((c) => c.id)).toContain(rem!.id);
    const moved = await tool(h, org, 'rescheduleAppointment', {
      appointmentId: result.appointmentId,
      newDate: DateTime.fromISO(result.startsAt).plus({ days: 3 }).toISODate(),
      newTime: '11:00',
    });
    expect(moved.success, moved.message).toBe(true);
    const [verdict] = await worker.gate([rem!.id]);
    expect(verdict).toEqual({ status: 'cancelled', reason: 'superseded' });
    const next = (await reminders(h, result.appointmentId)).find((x) => x.id !== rem!.id)!;
    expect(next).toMatchObject({ kind: 'reminder:1440#2', status: 'pending' });
    expect(iso(next.expires_at)).toBe(iso(new Date(moved.startsAt)));
    expect(sentTo(phone).filter((m) => m.body.includes('reminder'))).toHaveLength(0);
  });

  it('a cancel that commits after the gate passed and before the send began: the send does not begin', async () => {
    const org = await clinic(h);
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    const [rem] = await reminders(h, result.appointmentId);
    await makeDue(rem!.id);
    const holder = `test-${randomUUID()}`;
    const worker = new Outbox(h.runtime.workerSql, holder, {
      leaseMs: 30_000,
      retryBaseMs: 50,
      retryMaxMs: 200,
      maxAttempts: 6,
      defaultRateLimit: 5,
    });
    expect((await worker.claimDue(500)).map((c) => c.id)).toContain(rem!.id);
    expect(await worker.gate([rem!.id])).toEqual([{ status: 'sending', inFlight: null, resendAfter: null }]);
    expect((await tool(h, org, 'cancelAppointment', { appointmentId: result.appointmentId })).success).toBe(true);
    const link = (await h.runtime.sms.chains.load(org.id))!.links[0]!;
    const open = sqlAttemptLog(h.runtime.workerSql).open(
      { id: rem!.id, orgId: org.id, to: phone, body: rem!.body, leaseHolder: holder },
      link,
      link.pool[0]!,
      false,
    );
    await expect(open).rejects.toMatchObject({ code: 'SM003', reason: 'appointment_cancelled' });
    expect((await reminders(h, result.appointmentId))[0]).toMatchObject({ status: 'cancelled', failure_reason: 'appointment_cancelled' });
    const [n] = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM sms_attempts WHERE outbox_id = ${rem!.id}`;
    expect(n!.n).toBe(0);
    expect(sentTo(phone).filter((m) => m.body.includes('reminder'))).toHaveLength(0);
  });

  it('moved or cancelled by any other path after scheduling: the gate refuses it, nothing is sent', async () => {
    const org = await clinic(h);
    const phone = freshPhone();
    const a = (await book(h, org, { patientPhone: phone })).result;
    const b = (await book(h, org, { patientPhone: phone })).result;
    const [ra] = await reminders(h, a.appointmentId);
    const [rb] = await reminders(h, b.appointmentId);
    await h.owner`UPDATE appointments SET starts_at = starts_at + interval '1 day', ends_at = ends_at + interval '1 day' WHERE id = ${a.appointmentId}`;
    await h.owner`UPDATE appointments SET status = 'cancelled' WHERE id = ${b.appointmentId}`;
    await makeDue(ra!.id);
    await makeDue(rb!.id);
    expect(await h.runtime.sms.worker.processNow(ra!.id)).toEqual({ status: 'skipped', reason: 'superseded' });
    expect(await h.runtime.sms.worker.processNow(rb!.id)).toEqual({ status: 'skipped', reason: 'appointment_cancelled' });
    expect(sentTo(phone).filter((m) => m.body.includes('reminder'))).toHaveLength(0);
  });
});

describe('the gate: sending window and caps', () => {
  it('a reminder whose window closed while it waited is skipped and recorded, not sent at night', async () => {
    const org = await clinic(h);
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    const [rem] = await reminders(h, result.appointmentId);
    await h.owner`UPDATE sms_outbox SET next_attempt_at = now() - interval '2 hours', send_by = now() - interval '1 minute' WHERE id = ${rem!.id}`;
    expect(await h.runtime.sms.worker.processNow(rem!.id)).toEqual({ status: 'skipped', reason: 'outside_window' });
    expect((await reminders(h, result.appointmentId))[0]).toMatchObject({ status: 'cancelled', failure_reason: 'outside_window' });
    expect(sentTo(phone).filter((m) => m.body.includes('reminder'))).toHaveLength(0);
  });

  it('one reminder a clinic-local day per patient; the confirmation does not count', async () => {
    const org = await clinic(h);
    const phone = freshPhone();
    const a = (await book(h, org, { patientPhone: phone })).result;
    const b = (await book(h, org, { patientPhone: phone })).result;
    expect(a.smsStatus).toBe('sent');
    expect(b.smsStatus).toBe('sent');
    const [ra] = await reminders(h, a.appointmentId);
    const [rb] = await reminders(h, b.appointmentId);
    await makeDue(ra!.id);
    await makeDue(rb!.id);
    expect(await h.runtime.sms.worker.processNow(ra!.id)).toMatchObject({ status: 'sent' });
    expect(await h.runtime.sms.worker.processNow(rb!.id)).toEqual({ status: 'skipped', reason: 'capped_daily' });
    expect((await reminders(h, b.appointmentId))[0]).toMatchObject({ status: 'cancelled', failure_reason: 'capped_daily' });
    // Two confirmations and one reminder reached the patient.
    expect(sentTo(phone)).toHaveLength(3);
  });

  it('three reminders in any 7 days per patient; the fourth is capped', async () => {
    const org = await clinic(h);
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    const [rem] = await reminders(h, result.appointmentId);
    // Three reminders this week, on earlier days (other appointments, since settled).
    const others = await Promise.all(
      [1, 2, 3].map(async () => (await reminders(h, (await book(h, org, { patientPhone: phone })).result.appointmentId))[0]!),
    );
    for (const [i, o] of others.entries()) {
      await h.owner`INSERT INTO sms_reminder_log (org_id, recipient, outbox_id, at) VALUES (${org.id}, ${phone}, ${o.id}, now() - ${`${i + 1} days 1 hour`}::interval)`;
    }
    await makeDue(rem!.id);
    expect(await h.runtime.sms.worker.processNow(rem!.id)).toEqual({ status: 'skipped', reason: 'capped_weekly' });
    // Once the oldest is more than 7 days back, a reminder passes again.
    await h.owner`UPDATE sms_reminder_log SET at = now() - interval '7 days 1 minute' WHERE outbox_id = ${others[2]!.id}`;
    const again = (await reminders(h, (await book(h, org, { patientPhone: phone })).result.appointmentId))[0]!;
    await makeDue(again.id);
    expect(await h.runtime.sms.worker.processNow(again.id)).toMatchObject({ status: 'sent' });
  });

  it('the daily cap holds across two runtimes gating at the same time', async () => {
    const org = await clinic(h);
    const h2 = await startHarness(
      { ...providerEnv(twilio.url, telnyx.url), CREDENTIALS_KEY: h.secrets.credentialsKey },
      { ownerUrl: h.ownerUrl },
    );
    try {
      const phone = freshPhone();
      const booked = await Promise.all(Array.from({ length: 6 }, () => book(h, org, { patientPhone: phone })));
      const rows = await Promise.all(booked.map(async (b) => (await reminders(h, b.result.appointmentId))[0]!));
      for (const r of rows) await makeDue(r.id);
      const runs = await Promise.all(rows.map((r, i) => (i % 2 ? h2 : h).runtime.sms.worker.processNow(r.id)));
      expect(runs.filter((r) => r?.status === 'sent')).toHaveLength(1);
      expect(runs.filter((r) => r?.status === 'skipped' && r.reason === 'capped_daily')).toHaveLength(5);
      expect(sentTo(phone).filter((m) => m.body.includes('reminder'))).toHaveLength(1);
    } finally {
      await h2.close();
    }
  });
});

describe('settings', () => {
  it('PUT /sms takes the schedule, window, zone rule, cancel switch and contact number; GET shows them; a PUT without them keeps them', async () => {
    const org = await createOrg(h);
    const first = await putSms(h, org.id, [twilioLink()], { contactPhone: CONTACT });
    expect(first).toMatchObject({
      contactPhone: CONTACT,
      reminderOffsetsMinutes: [1440],
      sendingWindow: { start: '08:00', end: '21:00' },
      quietHoursZone: 'patient',
      cancelByReply: false,
    });
    await putSms(h, org.id, [twilioLink()], {
      contactPhone: CONTACT,
      reminderOffsetsMinutes: [2880, 90],
      sendingWindow: { start: '09:30', end: '19:00' },
      quietHoursZone: 'clinic',
      cancelByReply: true,
    });
    const kept = await putSms(h, org.id, [twilioLink()], { contactPhone: CONTACT });
    expect(kept).toMatchObject({
      reminderOffsetsMinutes: [2880, 90],
      sendingWindow: { start: '09:30', end: '19:00' },
      quietHoursZone: 'clinic',
      cancelByReply: true,
    });
    for (const bad of [
      { reminderOffsetsMinutes: [0] },
      { reminderOffsetsMinutes: [1.5] },
      { reminderOffsetsMinutes: [60, 60] },
      { reminderOffsetsMinutes: [10, 20, 30, 40] },
      { sendingWindow: { start: '21:00', end: '08:00' } },
      { sendingWindow: { start: '08:00', end: '08:30' } },
      { sendingWindow: { start: '8am', end: '21:00' } },
      { quietHoursZone: 'Europe/London' },
      { contactPhone: '555-0100' },
    ]) {
      const res = await h.http
        .put(`/api/admin/orgs/${org.id}/sms`)
        .set(admin)
        .send({ providers: [twilioLink()], ...bad });
      expect(res.status, JSON.stringify(bad)).toBe(400);
    }
  });

  it('the locale is a clinic setting: en-GB for the voice tools, en-US by default, nothing else accepted', async () => {
    const org = await createOrg(h);
    expect((await h.http.get(`/api/admin/orgs/${org.id}`).set(admin)).body.locale).toBe('en-US');
    expect((await h.http.patch(`/api/admin/orgs/${org.id}`).set(admin).send({ locale: 'fr-FR' })).status).toBe(400);
    const day = DateTime.now().setZone('America/New_York').plus({ days: 30 }).toISODate()!;
    const us = await tool(h, org, 'checkAvailability', { date: day, serviceType: 'short' });
    expect(us.message).toMatch(/is open at \d{1,2}:\d{2} [AP]M/);
    expect((await h.http.patch(`/api/admin/orgs/${org.id}`).set(admin).send({ locale: 'en-GB' })).body.locale).toBe('en-GB');
    const gb = await tool(h, org, 'checkAvailability', { date: day, serviceType: 'short' });
    expect(gb.message).toMatch(new RegExp(`^On ${DateTime.fromISO(day).toFormat('cccc d MMMM')}, a Short Visit is open at 00:00, 00:15`));
  });
});

async function nameOf(id: string): Promise<string> {
  const [o] = await h.owner<{ name: string }[]>`SELECT name FROM orgs WHERE id = ${id}`;
  return o!.name;
}
