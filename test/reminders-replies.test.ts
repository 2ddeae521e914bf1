// Replies to reminders (issue 11), through the fake providers' signed inbound
// webhooks on Twilio (answered in TwiML) and Telnyx (answered with a message
// of our own from the number the patient texted): C confirms, R asks to
// reschedule, X cancels where the clinic allows it, everything else goes to
// the inbox with "call us" at most once a day. Shared setup in
// test/helpers/webhooks.ts.
import { describe, expect, it } from 'vitest';
import { replyKeywordOf } from '../src/sms/replies.js';
import { ADMIN_TOKEN, type TestOrg } from './helpers/harness.js';
import { TWILIO_POOL, book, freshPhone, twilioLink, waitFor } from './helpers/sms.js';
import { TELNYX_POOL, clinic, h, sentTo, telnyx, telnyxSigned, twilio, urls, useWebhookSuite } from './helpers/webhooks.js';

useWebhookSuite();

const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };
const CONTACT = '+14155550100';
const EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>';

type Door = 'twilio' | 'telnyx';

async function replyClinic(door: Door, extra: Record<string, unknown> = {}): Promise<TestOrg> {
  const links = door === 'twilio' ? [twilioLink()] : [telnyxSigned()];
  return clinic(links, { rateLimitPerHour: 100, contactPhone: CONTACT, ...extra });
}

/** The patient texts the clinic; resolves with our one answer (or null) once it is on its way. */
async function text(door: Door, org: TestOrg, from: string, body: string): Promise<string | null> {
  if (door === 'twilio') {
    const res = await twilio.sendInbound({ url: urls(org.id).twilioInbound, from, to: TWILIO_POOL[0]!, body });
    expect(res.status).toBe(200);
    if (res.body === EMPTY) return null;
    const m = /<Message>([\s\S]*)<\/Message>/.exec(res.body);
    return m
      ? m[1]!
          .replace(/&apos;/g, "'")
          .replace(/&quot;/g, '"')
          .replace(/&amp;/g, '&')
      : null;
  }
  const before = sentTo(from).telnyx.length;
  const res = await telnyx.sendInbound({ url: urls(org.id).telnyx, from, to: TELNYX_POOL[0]!, text: body });
  expect(res.status).toBe(200);
  const outcome = await waitFor('the inbound text to be processed', async () => {
    const [e] = await h.owner<{ outcome: string | null }[]>`
      SELECT outcome FROM sms_webhook_events
       WHERE org_id = ${org.id} AND provider_message_id = ${res.messageId} AND processed_at IS NOT NULL`;
    return e?.outcome;
  });
  // Whether an answer follows is on record once the event is processed; it is sent just after.
  const [why] = await h.owner<{ answered: boolean }[]>`
    SELECT CASE WHEN EXISTS (SELECT 1 FROM sms_opt_outs WHERE org_id = ${org.id} AND phone = ${from}) AND ${outcome} <> 'opt_out' THEN false
                WHEN ${outcome} = 'inbox' THEN EXISTS (SELECT 1 FROM inbox_messages WHERE org_id = ${org.id}
                                                         AND provider_message_id = ${res.messageId} AND auto_reply IS NOT NULL)
                ELSE true END AS answered`;
  if (!why!.answered) return null;
  const got = await waitFor('our answer', async () => (sentTo(from).telnyx.length > before ? sentTo(from).telnyx : null));
  return got.at(-1)!.body;
}

async function appointment(id: string) {
  const [a] = await h.owner<
    { status: string; confirmed_at: Date | null; reschedule_requested_at: Date | null; cancel_requested_at: Date | null }[]
  >`
    SELECT status, confirmed_at, reschedule_requested_at, cancel_requested_at FROM appointments WHERE id = ${id}`;
  return a!;
}

const inbox = async (orgId: string) =>
  (await h.http.get(`/api/admin/orgs/${orgId}/inbox?unmask=true`).set(admin)).body.items as Array<{
    kind: string;
    body: string;
    from: string;
    appointmentId: string | null;
  }>;

/** Makes the appointment's 24 h reminder due now and waits for the worker to send it. */
async function remind(appointmentId: string): Promise<string> {
  await h.owner`UPDATE sms_outbox SET next_attempt_at = now() WHERE appointment_id = ${appointmentId} AND kind = 'reminder:1440'`;
  const row = await waitFor('the reminder to be sent', async () => {
    const [r] = await h.owner<
      { status: string; body: string }[]
    >`SELECT status, body FROM sms_outbox WHERE appointment_id = ${appointmentId} AND kind = 'reminder:1440'`;
    return r?.status === 'sent' ? r : null;
  });
  return row.body;
}

describe('reply keywords', () => {
  it('C / 1 / confirm, R / 2 / reschedule, X / 3 only when allowed; case and punctuation ignored; never CANCEL', () => {
    for (const t of ['C', 'c', ' c. ', '1', 'Confirm', 'CONFIRM!', '"c"']) expect(replyKeywordOf(t, false), t).toBe('confirm');
    for (const t of ['R', 'r?', '2', 'reschedule', 'Reschedule.']) expect(replyKeywordOf(t, false), t).toBe('reschedule');
    for (const t of ['X', 'x', '3']) {
      expect(replyKeywordOf(t, true), t).toBe('cancel');
      expect(replyKeywordOf(t, false), t).toBeNull();
    }
    for (const t of ['CANCEL', 'cancel', 'yes', 'c please', 'confirmed tomorrow', 'C C', '', 'RR'])
      expect(replyKeywordOf(t, true), t).toBeNull();
  });
});

for (const door of ['twilio', 'telnyx'] as const) {
  describe(`replies on ${door}`, () => {
    it('C confirms the appointment and is answered once; a second C changes nothing and is answered again', async () => {
      const org = await replyClinic(door);
      const phone = freshPhone();
      const { result } = await book(h, org, { patientPhone: phone });
      const reminder = await remind(result.appointmentId);
      expect(reminder).toMatch(/Reply C to confirm or R to reschedule\. Call \(415\) 555-0100\. Reply STOP to opt out\.$/);

      const first = await text(door, org, phone, 'c.');
      expect(first).toMatch(/: thanks, your visit on .+ is confirmed\. Call \(415\) 555-0100\. Reply STOP to opt out\.$/);
      const confirmed = (await appointment(result.appointmentId)).confirmed_at;
      expect(confirmed).not.toBeNull();

      const second = await text(door, org, phone, 'Confirm');
      expect(second).toMatch(/: your visit on .+ is already confirmed\./);
      expect((await appointment(result.appointmentId)).confirmed_at).toEqual(confirmed);
      // The tools show it.
      const found = await findFor(org, phone);
      expect(found.appointments[0]).toMatchObject({ appointmentId: result.appointmentId, status: 'confirmed' });
      expect(found.message).toMatch(/, and you've confirmed it\.$/);
    });

    it('R marks it "reschedule requested", puts it in the inbox and answers with the contact number', async () => {
      const org = await replyClinic(door);
      const phone = freshPhone();
      const { result } = await book(h, org, { patientPhone: phone });
      const answer = await text(door, org, phone, '2');
      expect(answer).toMatch(/: we'll be in touch to move your visit on .+\. Call \(415\) 555-0100\. Reply STOP to opt out\.$/);
      expect((await appointment(result.appointmentId)).reschedule_requested_at).not.toBeNull();
      expect(await inbox(org.id)).toEqual([
        expect.objectContaining({ kind: 'reschedule_request', body: '2', from: phone, appointmentId: result.appointmentId }),
      ]);
      // A second R: answered, not filed twice.
      expect(await text(door, org, phone, 'R')).toMatch(/we'll be in touch/);
      expect(await inbox(org.id)).toHaveLength(1);
    });

    it('X is a message for the inbox where the clinic has not turned cancelling by reply on', async () => {
      const org = await replyClinic(door);
      const phone = freshPhone();
      const { result } = await book(h, org, { patientPhone: phone });
      expect(await text(door, org, phone, 'X')).toMatch(
        /thanks for your message\. For anything about your visit please call us at \(415\) 555-0100\./,
      );
      expect((await appointment(result.appointmentId)).status).toBe('booked');
      expect((await inbox(org.id)).map((i) => i.kind)).toEqual(['sms_reply']);
    });

    it('with cancelling by reply on: X asks once, the second X cancels and voids the reminders', async () => {
      const org = await replyClinic(door, { cancelByReply: true, reminderOffsetsMinutes: [1440, 120] });
      const phone = freshPhone();
      const { result } = await book(h, org, { patientPhone: phone, appointmentTime: '15:00' });
      const reminders = await h.owner<{ kind: string; body: string }[]>`
        SELECT kind, body FROM sms_outbox WHERE appointment_id = ${result.appointmentId} AND kind LIKE 'reminder:%' ORDER BY kind`;
      expect(reminders.map((r) => r.kind)).toEqual(['reminder:120', 'reminder:1440']);
      expect(reminders[0]!.body).toContain('Reply C to confirm, R to reschedule, X to cancel.');

      expect(await text(door, org, phone, 'x')).toMatch(
        /: Reply X again to cancel your visit on .+\. Call \(415\) 555-0100\. Reply STOP to opt out\.$/,
      );
      expect(await appointment(result.appointmentId)).toMatchObject({ status: 'booked' });
      expect(await text(door, org, phone, '3')).toMatch(/: your visit on .+ is cancelled\. Call \(415\) 555-0100\./);
      expect(await appointment(result.appointmentId)).toMatchObject({ status: 'cancelled', cancel_requested_at: null });
      const after = await h.owner<{ status: string; failure_reason: string }[]>`
        SELECT status, failure_reason FROM sms_outbox WHERE appointment_id = ${result.appointmentId} AND kind LIKE 'reminder:%'`;
      expect(after).toEqual([
        { status: 'cancelled', failure_reason: 'appointment_cancelled' },
        { status: 'cancelled', failure_reason: 'appointment_cancelled' },
      ]);
      expect((await inbox(org.id)).map((i) => i.kind)).toEqual(['sms_cancellation']);
      // Nothing upcoming any more: a further X is a message for the inbox.
      expect(await text(door, org, phone, 'X')).toMatch(/thanks for your message/);
    });

    it('everything else goes to the inbox, answered "call us" at most once a day; so does a phone with no upcoming appointment', async () => {
      const org = await replyClinic(door);
      const stranger = freshPhone();
      expect(await text(door, org, stranger, 'C')).toBe(
        `${await orgName(org.id)}: thanks for your message. For anything about your visit please call us at (415) 555-0100. Reply STOP to opt out.`,
      );
      expect(await text(door, org, stranger, 'Is there parking nearby?')).toBeNull();
      const patient = freshPhone();
      await book(h, org, { patientPhone: patient });
      expect(await text(door, org, patient, 'Running late, sorry')).toMatch(/please call us at/);
      expect(await text(door, org, patient, 'See you soon')).toBeNull();
      const items = await inbox(org.id);
      expect(items.map((i) => [i.from, i.body])).toEqual([
        [patient, 'See you soon'],
        [patient, 'Running late, sorry'],
        [stranger, 'Is there parking nearby?'],
        [stranger, 'C'],
      ]);
    });

    it('several upcoming appointments: the reply applies to the one the last reminder was about', async () => {
      const org = await replyClinic(door);
      const phone = freshPhone();
      const soon = (await book(h, org, { patientPhone: phone })).result;
      const later = (await book(h, org, { patientPhone: phone })).result;
      expect(new Date(later.startsAt) > new Date(soon.startsAt)).toBe(true);
      await remind(later.appointmentId);
      await text(door, org, phone, 'C');
      expect((await appointment(later.appointmentId)).confirmed_at).not.toBeNull();
      expect((await appointment(soon.appointmentId)).confirmed_at).toBeNull();
      // Once that one is gone, the soonest is what a reply is about.
      await h.owner`UPDATE appointments SET status = 'cancelled' WHERE id = ${later.appointmentId}`;
      await text(door, org, phone, 'R');
      expect((await appointment(soon.appointmentId)).reschedule_requested_at).not.toBeNull();
    });

    it('STOP is still an opt-out, handled first; an opted-out phone gets no reply but its C still counts', async () => {
      const org = await replyClinic(door);
      const phone = freshPhone();
      const { result } = await book(h, org, { patientPhone: phone });
      await text(door, org, phone, 'STOP');
      const [o] = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM sms_opt_outs WHERE org_id = ${org.id} AND phone = ${phone}`;
      expect(o!.n).toBe(1);
      expect(await text(door, org, phone, 'C')).toBeNull();
      expect((await appointment(result.appointmentId)).confirmed_at).not.toBeNull();
    });
  });
}

async function orgName(id: string): Promise<string> {
  const [o] = await h.owner<{ name: string }[]>`SELECT name FROM orgs WHERE id = ${id}`;
  return o!.name;
}

async function findFor(org: TestOrg, phone: string): Promise<{ appointments: Array<Record<string, unknown>>; message: string }> {
  const { callTools, resultOf, vapiMessage } = await import('./helpers/harness.js');
  const res = await callTools(h, org.token, vapiMessage([{ name: 'findAppointments', args: { patientPhone: phone } }]));
  expect(res.status).toBe(200);
  return resultOf(res) as { appointments: Array<Record<string, unknown>>; message: string };
}
