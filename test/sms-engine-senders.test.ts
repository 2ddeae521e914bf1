// SMS engine: sticky senders, the text, the response budget. Shared setup in test/helpers/sms-engine.ts.
import { describe, expect, it } from 'vitest';
import { isGsm7 } from '../src/sms/gsm7.js';
import { startFakeTwilio } from './fakes/fake-twilio.js';
import { createOrg, startHarness } from './helpers/harness.js';
import { clinic, h, sentTo, telnyx, twilio, smsEnv, useSmsEngineSuite } from './helpers/sms-engine.js';
import {
  TELNYX_POOL,
  TWILIO_POOL,
  attemptsFor,
  book,
  freshPhone,
  providerEnv,
  putSms,
  settled,
  telnyxLink,
  twilioLink,
} from './helpers/sms.js';

useSmsEngineSuite();

describe('sticky sender', () => {
  it('keeps a patient on one number across bookings, runtimes and pool growth; failover uses the other pool', async () => {
    const org = await clinic();
    const phone = freshPhone();
    const froms: string[] = [];
    for (let i = 0; i < 3; i++) {
      const { result } = await book(h, org, { patientPhone: phone });
      expect(result.smsProvider).toBe('twilio');
      froms.push(sentTo(phone).twilio.at(-1)!.from);
    }
    expect(new Set(froms).size).toBe(1);
    const sticky = froms[0]!;
    expect(TWILIO_POOL).toContain(sticky);

    // A fresh runtime on the same database (the assignment lives in Postgres).
    const h2 = await startHarness({ ...smsEnv(), CREDENTIALS_KEY: h.secrets.credentialsKey }, { ownerUrl: h.ownerUrl });
    try {
      const { result } = await book(h2, org, { patientPhone: phone });
      expect(result.smsProvider, JSON.stringify(result)).toBe('twilio');
      expect(sentTo(phone).twilio.at(-1)!.from).toBe(sticky);
    } finally {
      await h2.close();
    }

    // More numbers in the pool: the patient keeps theirs.
    const grown = [...TWILIO_POOL, '+14155550104', '+14155550105', '+14155550106', '+14155550107'];
    await putSms(h, org.id, [twilioLink({ senderNumbers: grown }), telnyxLink()], { rateLimitPerHour: 100 });
    expect((await book(h, org, { patientPhone: phone })).result.smsProvider).toBe('twilio');
    expect(sentTo(phone).twilio.at(-1)!.from).toBe(sticky);

    // Failover: Telnyx's own number, twice the same; the Twilio assignment is untouched.
    await twilio.setFault({ kind: 'status', status: 400, code: 21606 });
    const viaTelnyx: string[] = [];
    for (let i = 0; i < 2; i++) {
      expect((await book(h, org, { patientPhone: phone })).result.smsProvider).toBe('telnyx');
      viaTelnyx.push(sentTo(phone).telnyx.at(-1)!.from);
    }
    expect(TELNYX_POOL).toContain(viaTelnyx[0]);
    expect(viaTelnyx[1]).toBe(viaTelnyx[0]);
    await twilio.setFault(null);
    expect((await book(h, org, { patientPhone: phone })).result.smsProvider).toBe('twilio');
    expect(sentTo(phone).twilio.at(-1)!.from).toBe(sticky);
    const rows = await h.owner<{ account_key: string; from_number: string }[]>`
      SELECT account_key, from_number FROM sms_sender_assignments WHERE org_id = ${org.id} AND recipient = ${phone} ORDER BY account_key`;
    expect(rows.map((r) => r.from_number).sort()).toEqual([sticky, viaTelnyx[0]].sort());
  });

  it('spreads different patients over the pool', async () => {
    const org = await clinic();
    const froms = new Set<string>();
    for (let i = 0; i < 8; i++) {
      const phone = freshPhone();
      await book(h, org, { patientPhone: phone });
      froms.add(sentTo(phone).twilio[0]!.from);
    }
    expect(froms.size).toBeGreaterThan(1);
  });
});

describe('the text', () => {
  it('is GSM-7, names the clinic and patient, shows the local time with its zone, and says how to opt out', async () => {
    const org = await clinic(undefined, { rateLimitPerHour: 100 }, { name: 'St. Mary’s Family Clinic' });
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone, patientName: 'José Álvarez', appointmentTime: '14:30' });
    expect(result.smsStatus).toBe('sent');
    const body = sentTo(phone).twilio[0]!.body;
    expect(isGsm7(body)).toBe(true);
    expect(body).toContain("St. Mary's Family Clinic");
    expect(body).toMatch(/^Hi José,/);
    expect(body).not.toContain('Álvarez');
    expect(body).toMatch(/at 2:30 PM E[DS]T\./);
    expect(body).toContain('Reply STOP to opt out.');
    const [row] = await h.owner`SELECT body FROM sms_outbox WHERE appointment_id = ${result.appointmentId}`;
    expect(row!.body).toBe(body);
  });

  it('is never sent once the appointment has started: failed with reason expired', async () => {
    const org = await createOrg(h);
    const phone = freshPhone();
    // Booked before SMS was configured, so the outbox row is written by hand below.
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result.smsReason).toBe('not_configured');
    await putSms(h, org.id, [twilioLink(), telnyxLink()]);
    const [row] = await h.owner<{ id: string }[]>`
      INSERT INTO sms_outbox (org_id, appointment_id, kind, to_phone, body, expires_at)
      VALUES (${org.id}, ${result.appointmentId}, 'booked', ${phone}, 'Hi, see you soon.', now() - interval '1 minute')
      RETURNING id`;
    const done = await settled(h, result.appointmentId);
    expect(done).toMatchObject({ id: row!.id, status: 'failed', failure_reason: 'expired' });
    expect(sentTo(phone)).toEqual({ twilio: [], telnyx: [] });
    expect(await attemptsFor(h, result.appointmentId)).toHaveLength(0);
  });
});

describe('response budget', () => {
  it('answers queued within the budget when the provider is slow, and the text still goes out', async () => {
    const slowTwilio = await startFakeTwilio();
    const hb = await startHarness({
      ...providerEnv(slowTwilio.url, telnyx.url),
      SMS_RESPONSE_BUDGET_MS: '300',
      SMS_ATTEMPT_TIMEOUT_MS: '2000',
      SMS_WORKER_ENABLED: 'true',
      SMS_WORKER_POLL_MS: '50',
    });
    try {
      const org = await createOrg(hb);
      await putSms(hb, org.id, [twilioLink(), telnyxLink()]);
      await slowTwilio.setFault({ kind: 'slow', ms: 1200 });
      const phone = freshPhone();
      const { result, ms } = await book(hb, org, { patientPhone: phone });
      expect(result).toMatchObject({ success: true, smsStatus: 'queued' });
      // The whole tool call, not just the SMS wait, fits the budget (counted from arrival).
      expect(ms).toBeGreaterThanOrEqual(250);
      expect(ms).toBeLessThan(300 + 150);
      expect(slowTwilio.messages.filter((m) => m.to === phone)).toHaveLength(0);
      const row = await settled(hb, result.appointmentId);
      expect(row).toMatchObject({ status: 'sent', provider: 'twilio' });
      expect(slowTwilio.messages.filter((m) => m.to === phone)).toHaveLength(1);
      expect(telnyx.messages.filter((m) => m.to === phone)).toHaveLength(0);
    } finally {
      await hb.close();
      await slowTwilio.close();
    }
  });
});
