import supertest from 'supertest';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { generateKeySpec } from '../src/sms/crypto.js';
import { isGsm7 } from '../src/sms/gsm7.js';
import { DEFAULT_TELNYX_API_KEY, startFakeTelnyx, type FakeTelnyx } from './fakes/fake-telnyx.js';
import { DEFAULT_TWILIO_ACCOUNT, startFakeTwilio, type FakeTwilio } from './fakes/fake-twilio.js';
import { ADMIN_TOKEN, createOrg, startHarness, type Harness, type TestOrg } from './helpers/harness.js';
import {
  TELNYX_POOL,
  TWILIO_POOL,
  appointmentExists,
  attemptsFor,
  book,
  freshPhone,
  newTwilioAccount,
  nextSlot,
  outboxFor,
  providerEnv,
  putSms,
  settled,
  telnyxLink,
  twilioCreates,
  twilioLink,
  type Link,
} from './helpers/sms.js';

let twilio: FakeTwilio;
let telnyx: FakeTelnyx;
let h: Harness;

const ATTEMPT_MS = 400;
const COOLDOWN_MS = 1000;

/** Small timeouts so failure paths run in well under a second each. */
const smsEnv = (): Record<string, string> => ({
  ...providerEnv(twilio.url, telnyx.url),
  SMS_WORKER_ENABLED: 'true',
  SMS_WORKER_POLL_MS: '50',
  SMS_ATTEMPT_TIMEOUT_MS: String(ATTEMPT_MS),
  SMS_RESPONSE_BUDGET_MS: '2500',
  SMS_RETRY_BASE_MS: '50',
  SMS_RETRY_MAX_MS: '200',
  SMS_MAX_ATTEMPTS: '30',
  SMS_LEASE_MS: '2000',
  SMS_BREAKER_THRESHOLD: '3',
  SMS_BREAKER_COOLDOWN_MS: String(COOLDOWN_MS),
});

beforeAll(async () => {
  twilio = await startFakeTwilio();
  telnyx = await startFakeTelnyx();
  h = await startHarness(smsEnv());
});
afterEach(async () => {
  await twilio.setFault(null);
  await telnyx.setFault(null);
});
afterAll(async () => {
  await h?.close();
  await twilio?.close();
  await telnyx?.close();
});

/** A clinic with breakers of its own, chained Twilio then Telnyx unless told otherwise. */
async function clinic(providers: Link[] = [twilioLink(), telnyxLink()], extra: Record<string, unknown> = { rateLimitPerHour: 100 }, orgOver: Record<string, unknown> = {}): Promise<TestOrg> {
  const org = await createOrg(h, orgOver);
  await putSms(h, org.id, providers, extra);
  return org;
}

const sentTo = (phone: string) => ({
  twilio: twilio.messages.filter((m) => m.to === phone),
  telnyx: telnyx.messages.filter((m) => m.to === phone),
});

describe('delivery through the provider chain', () => {
  it('sends through the primary (Twilio) and audits the attempt', async () => {
    const org = await clinic();
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result.smsStatus).toBe('sent');
    expect(result.smsProvider).toBe('twilio');
    const { twilio: tw, telnyx: tx } = sentTo(phone);
    expect(tw).toHaveLength(1);
    expect(tx).toHaveLength(0);
    expect(TWILIO_POOL).toContain(tw[0]!.from);
    const row = await outboxFor(h, result.appointmentId);
    expect(row).toMatchObject({ status: 'sent', provider: 'twilio', from_number: tw[0]!.from });
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts).toHaveLength(1);
    expect(attempts[0]).toMatchObject({ provider: 'twilio', outcome: 'accepted', failed_over: false, from_number: tw[0]!.from, provider_message_id: tw[0]!.sid, error_class: null });
    expect(attempts[0]!.latency_ms).toBeGreaterThanOrEqual(0);
  });

  it('the legacy single-call route reports the same smsStatus', async () => {
    const org = await clinic();
    const phone = freshPhone();
    const res = await h.http
      .post('/api/vapi/tools/bookClinicAppointment')
      .set('Authorization', `Bearer ${org.token}`)
      .send({ toolCallId: 'legacy-1', arguments: { patientName: 'Lee Park', patientPhone: phone, serviceType: 'short', ...nextSlot() } });
    expect(res.status).toBe(200);
    expect(res.body.result).toMatchObject({ success: true, smsStatus: 'sent', smsProvider: 'twilio' });
    expect(sentTo(phone).twilio).toHaveLength(1);
  });
});

describe('error classes', () => {
  it('transient (429): retried on the same provider with backoff, then sent there', async () => {
    const org = await clinic();
    const phone = freshPhone();
    await twilio.setFault({ kind: 'http429', times: 2 });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result.smsStatus).toBe('sent');
    expect(result.smsProvider).toBe('twilio');
    expect(sentTo(phone).twilio).toHaveLength(1);
    expect(sentTo(phone).telnyx).toHaveLength(0);
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.map((a) => [a.provider, a.outcome, a.error_class, a.error_code])).toEqual([
      ['twilio', 'failed', 'transient', '20429'],
      ['twilio', 'failed', 'transient', '20429'],
      ['twilio', 'accepted', null, null],
    ]);
    expect(attempts.every((a) => !a.failed_over)).toBe(true);
  });

  it('transient (5xx): retried on the same provider, then sent there', async () => {
    const org = await clinic();
    const phone = freshPhone();
    await twilio.setFault({ kind: 'http5xx', status: 503, times: 1 });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result.smsProvider).toBe('twilio');
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.map((a) => [a.outcome, a.error_class])).toEqual([
      ['failed', 'transient'],
      ['accepted', null],
    ]);
  });

  it('refused connections are retried, then the message fails over', async () => {
    const org = await clinic();
    const phone = freshPhone();
    await twilio.setFault({ kind: 'down' });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'telnyx' });
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.map((a) => [a.provider, a.outcome, a.error_class, a.error_code])).toEqual([
      ['twilio', 'failed', 'transient', 'ECONNREFUSED'],
      ['twilio', 'failed', 'transient', 'ECONNREFUSED'],
      ['twilio', 'failed', 'transient', 'ECONNREFUSED'],
      ['telnyx', 'accepted', null, null],
    ]);
    expect(attempts[3]!.failed_over).toBe(true);
  });

  it.each([
    { status: 401, code: 20003 },
    { status: 400, code: 21212 },
    { status: 400, code: 21606 },
    { status: 400, code: 21408 },
    { status: 400, code: 30034 },
  ])('provider/config error $code: fails over to Telnyx at once, from the Telnyx pool', async ({ status, code }) => {
    const org = await clinic();
    const phone = freshPhone();
    await twilio.setFault({ kind: 'status', status, code });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'telnyx' });
    const { twilio: tw, telnyx: tx } = sentTo(phone);
    expect(tw).toHaveLength(0);
    expect(tx).toHaveLength(1);
    expect(TELNYX_POOL).toContain(tx[0]!.from);
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts).toHaveLength(2);
    expect(attempts[0]).toMatchObject({ provider: 'twilio', outcome: 'failed', error_class: 'provider', error_code: String(code), failed_over: false });
    expect(attempts[0]!.error_message).toContain(String(code));
    expect(attempts[1]).toMatchObject({ provider: 'telnyx', outcome: 'accepted', failed_over: true, from_number: tx[0]!.from });
    expect((await outboxFor(h, result.appointmentId)).from_number).toBe(tx[0]!.from);
  });

  it('provider/config error on Telnyx as primary (40305) fails over to Twilio', async () => {
    const org = await clinic([telnyxLink(), twilioLink()]);
    const phone = freshPhone();
    await telnyx.setFault({ kind: 'status', status: 400, code: '40305' });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'twilio' });
    expect(sentTo(phone).telnyx).toHaveLength(0);
    expect(TWILIO_POOL).toContain(sentTo(phone).twilio[0]!.from);
  });

  it.each([
    { code: 21211, reason: 'invalid_recipient' },
    { code: 21614, reason: 'invalid_recipient' },
  ])('recipient error $code: failed_but_booked, never retried or failed over', async ({ code, reason }) => {
    const org = await clinic();
    const phone = freshPhone();
    const telnyxBefore = telnyx.requests;
    await twilio.setFault({ kind: 'status', status: 400, code });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ success: true, smsStatus: 'failed_but_booked', smsReason: reason });
    expect(result.message).toMatch(/booked/);
    expect(await appointmentExists(h, result.appointmentId)).toBe(true);
    expect(telnyx.requests).toBe(telnyxBefore);
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.map((a) => [a.provider, a.outcome, a.error_class, a.error_code])).toEqual([['twilio', 'failed', 'recipient', String(code)]]);
    expect(await outboxFor(h, result.appointmentId)).toMatchObject({ status: 'failed', failure_reason: reason });
  });

  it('recipient error from Telnyx (40310) stops there too', async () => {
    const org = await clinic([telnyxLink(), twilioLink()]);
    const phone = freshPhone();
    await telnyx.setFault({ kind: 'status', status: 400, code: '40310' });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'failed_but_booked', smsReason: 'invalid_recipient' });
    expect(sentTo(phone).twilio).toHaveLength(0);
  });

  it('STOP (21610) records an opt-out; the next booking for that phone makes no provider call', async () => {
    const org = await clinic();
    const phone = freshPhone();
    await twilio.setFault({ kind: 'status', status: 400, code: 21610, times: 1 });
    const first = await book(h, org, { patientPhone: phone });
    expect(first.result).toMatchObject({ smsStatus: 'failed_but_booked', smsReason: 'opted_out' });
    const optOuts = await h.owner`SELECT phone, source FROM sms_opt_outs WHERE org_id = ${org.id}`;
    expect(optOuts).toEqual([{ phone, source: 'provider:twilio:21610' }]);
    expect(sentTo(phone).telnyx).toHaveLength(0);

    const twilioBefore = twilio.requests;
    const telnyxBefore = telnyx.requests;
    const second = await book(h, org, { patientPhone: phone });
    expect(second.result).toMatchObject({ success: true, smsStatus: 'failed_but_booked', smsReason: 'opted_out' });
    expect(twilio.requests).toBe(twilioBefore);
    expect(telnyx.requests).toBe(telnyxBefore);
    expect(await attemptsFor(h, second.result.appointmentId)).toHaveLength(0);
    expect(await appointmentExists(h, second.result.appointmentId)).toBe(true);
  });

  it('STOP from Telnyx (40300) is an opt-out as well', async () => {
    const org = await clinic([telnyxLink(), twilioLink()]);
    const phone = freshPhone();
    await telnyx.setFault({ kind: 'status', status: 422, code: '40300', times: 1 });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'failed_but_booked', smsReason: 'opted_out' });
    const [row] = await h.owner`SELECT source FROM sms_opt_outs WHERE org_id = ${org.id} AND phone = ${phone}`;
    expect(row?.source).toBe('provider:telnyx:40300');
    expect(sentTo(phone).twilio).toHaveLength(0);
  });
});

describe('ambiguous outcomes (timeout after the request left)', () => {
  it('create hung but the message was accepted: reconciled, exactly one text across both providers', async () => {
    const org = await clinic();
    const phone = freshPhone();
    await twilio.setFault({ kind: 'hang', records: true, scope: 'create' });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'twilio' });
    expect(sentTo(phone).twilio).toHaveLength(1);
    expect(sentTo(phone).telnyx).toHaveLength(0);
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts).toHaveLength(1);
    expect(attempts[0]).toMatchObject({ provider: 'twilio', outcome: 'reconciled', error_class: 'ambiguous', error_code: 'TIMEOUT', provider_message_id: sentTo(phone).twilio[0]!.sid });
  });

  it('create hung and nothing was accepted: the lookup says so, and it fails over after one attempt timeout', async () => {
    const org = await clinic();
    const phone = freshPhone();
    const account = newTwilioAccount(twilio);
    await putSms(h, org.id, [twilioLink({ accountSid: account.sid, authToken: account.token }), telnyxLink()], { rateLimitPerHour: 100 });
    await twilio.setFault({ kind: 'hang', records: false, scope: 'create' });
    const { result, ms } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'telnyx' });
    expect(ms).toBeGreaterThanOrEqual(ATTEMPT_MS);
    // One create, no blind retry of an ambiguous attempt.
    expect(twilioCreates(twilio, account.sid)).toBe(1);
    expect(sentTo(phone).twilio).toHaveLength(0);
    expect(sentTo(phone).telnyx).toHaveLength(1);
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.map((a) => [a.provider, a.outcome, a.error_class, a.failed_over])).toEqual([
      ['twilio', 'failed', 'ambiguous', false],
      ['telnyx', 'accepted', null, true],
    ]);
    expect(attempts[0]!.error_message).toMatch(/not found/);
  });

  it('a slow provider that answers just after the attempt timeout is taken at its word: no failover, no second text', async () => {
    const org = await clinic();
    const phone = freshPhone();
    // Only the create is slow, so a premature lookup would answer "not found".
    await twilio.setFault({ kind: 'slow', ms: ATTEMPT_MS + 300, scope: 'create' });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'twilio' });
    expect(sentTo(phone).twilio).toHaveLength(1);
    expect(sentTo(phone).telnyx).toHaveLength(0);
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.map((a) => [a.provider, a.outcome])).toEqual([['twilio', 'accepted']]);
    expect(attempts[0]!.latency_ms).toBeGreaterThanOrEqual(ATTEMPT_MS + 250);
  });

  it('provider fully hung (lookups too): waits for reconcile instead of resending elsewhere', async () => {
    const org = await clinic();
    const phone = freshPhone();
    await twilio.setFault({ kind: 'hang', records: true });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ success: true, smsStatus: 'queued' });
    expect(sentTo(phone).twilio).toHaveLength(1); // accepted, answer lost
    expect(sentTo(phone).telnyx).toHaveLength(0);
    const inFlight = await attemptsFor(h, result.appointmentId);
    expect(inFlight.map((a) => [a.provider, a.outcome])).toContainEqual(['twilio', 'in_flight']);
    // Still hung a while later: background runs keep asking, nobody resends.
    await new Promise((r) => setTimeout(r, 600));
    expect(sentTo(phone).telnyx).toHaveLength(0);
    expect(sentTo(phone).twilio).toHaveLength(1);
    expect((await outboxFor(h, result.appointmentId)).status).not.toBe('sent');

    await twilio.setFault(null);
    const row = await settled(h, result.appointmentId);
    expect(row.status).toBe('sent');
    expect(sentTo(phone).twilio).toHaveLength(1);
    expect(sentTo(phone).telnyx).toHaveLength(0);
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.filter((a) => a.outcome === 'reconciled')).toHaveLength(1);
    expect(attempts.filter((a) => a.outcome === 'accepted')).toHaveLength(0);
  });

  it('Telnyx has no lookup: an ambiguous attempt is resent only to Telnyx, under the same idempotency key', async () => {
    const org = await clinic([telnyxLink(), twilioLink()]);
    const phone = freshPhone();
    await telnyx.setFault({ kind: 'hang', records: true });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result.smsStatus).toBe('queued');
    expect(sentTo(phone).telnyx).toHaveLength(1);
    await telnyx.setFault(null);
    const row = await settled(h, result.appointmentId);
    expect(row).toMatchObject({ status: 'sent', provider: 'telnyx' });
    // The resend was answered from Telnyx's idempotency store: still one text, none via Twilio.
    expect(sentTo(phone).telnyx).toHaveLength(1);
    expect(sentTo(phone).twilio).toHaveLength(0);
    const keys = telnyx.log.filter((r) => r.method === 'POST').map((r) => r.idempotencyKey);
    expect(keys.filter((k) => k === `sms-${row.id}`).length).toBeGreaterThanOrEqual(2);
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.every((a) => a.provider === 'telnyx')).toBe(true);
    expect(attempts.filter((a) => a.outcome === 'accepted')).toHaveLength(1);
    expect(attempts.filter((a) => a.outcome === 'in_flight')).toHaveLength(0);
    expect(attempts.filter((a) => a.error_code === 'SUPERSEDED').length).toBeGreaterThanOrEqual(1);
  });
});

describe('circuit breaker per (org, provider account)', () => {
  it('opens after N consecutive failures, skips Twilio while open, probes after the cool-down, closes on success', async () => {
    const org = await clinic();
    const account = newTwilioAccount(twilio);
    await putSms(h, org.id, [twilioLink({ accountSid: account.sid, authToken: account.token }), telnyxLink()], { rateLimitPerHour: 100 });
    const creates = () => twilioCreates(twilio, account.sid);
    await twilio.setFault({ kind: 'status', status: 401, code: 20003 });

    for (let i = 1; i <= 3; i++) {
      const { result } = await book(h, org);
      expect(result.smsProvider).toBe('telnyx');
      expect(creates()).toBe(i);
    }
    // Open: straight to Telnyx, Twilio's request count stops growing, no waiting.
    const openedAt = Date.now();
    const skipped = await book(h, org);
    expect(Date.now() - openedAt).toBeLessThan(COOLDOWN_MS);
    expect(skipped.result.smsProvider).toBe('telnyx');
    expect(creates()).toBe(3);
    const audit = await attemptsFor(h, skipped.result.appointmentId);
    expect(audit.map((a) => [a.provider, a.outcome, a.error_code])).toEqual([
      ['twilio', 'skipped', 'BREAKER_OPEN'],
      ['telnyx', 'accepted', null],
    ]);

    // Half-open after the cool-down: one probe goes through; it fails, so the breaker opens again.
    await new Promise((r) => setTimeout(r, COOLDOWN_MS + 100));
    expect((await book(h, org)).result.smsProvider).toBe('telnyx');
    expect(creates()).toBe(4);
    expect((await book(h, org)).result.smsProvider).toBe('telnyx');
    expect(creates()).toBe(4);

    // Twilio recovers; the next probe succeeds and closes the breaker.
    await twilio.setFault(null);
    await new Promise((r) => setTimeout(r, COOLDOWN_MS + 100));
    expect((await book(h, org)).result.smsProvider).toBe('twilio');
    expect((await book(h, org)).result.smsProvider).toBe('twilio');
    expect(creates()).toBe(6);
  });

  it("one clinic's open breaker does not affect another clinic on the same provider", async () => {
    const broken = await clinic();
    const healthy = await clinic();
    const account = newTwilioAccount(twilio);
    await putSms(h, broken.id, [twilioLink({ accountSid: account.sid, authToken: 'wrong-token-0123456789' }), telnyxLink()], { rateLimitPerHour: 100 });
    for (let i = 0; i < 4; i++) expect((await book(h, broken)).result.smsProvider).toBe('telnyx');
    expect(h.runtime.sms.engine.breaker(broken.id, `twilio:${account.sid}`).state).not.toBe(0);
    expect((await book(h, healthy)).result.smsProvider).toBe('twilio');
  });
});

describe('chain of one (failover disabled)', () => {
  it('transient failures stay on the one provider: queued, retried in the background, later sent', async () => {
    const org = await clinic([twilioLink()]);
    const phone = freshPhone();
    const telnyxBefore = telnyx.requests;
    await twilio.setFault({ kind: 'http5xx', status: 500 });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ success: true, smsStatus: 'queued' });
    expect(await appointmentExists(h, result.appointmentId)).toBe(true);
    expect(telnyx.requests).toBe(telnyxBefore);
    expect((await outboxFor(h, result.appointmentId)).status).toMatch(/pending|sending/);

    await twilio.setFault(null);
    // The breaker opened on the three failures; after its cool-down the worker gets through.
    const row = await settled(h, result.appointmentId, COOLDOWN_MS + 8_000);
    expect(row).toMatchObject({ status: 'sent', provider: 'twilio' });
    expect(sentTo(phone).twilio).toHaveLength(1);
    expect(telnyx.requests).toBe(telnyxBefore);
  });

  it('a provider/config error does not fail over anywhere', async () => {
    const org = await clinic([twilioLink()]);
    const phone = freshPhone();
    const telnyxBefore = telnyx.requests;
    await twilio.setFault({ kind: 'status', status: 400, code: 21606 });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result.smsStatus).toBe('queued');
    expect(telnyx.requests).toBe(telnyxBefore);
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts[0]).toMatchObject({ provider: 'twilio', outcome: 'failed', error_class: 'provider' });
    expect(attempts.some((a) => a.provider !== 'twilio')).toBe(false);
  });
});

describe('the booking always stands', () => {
  it('an unexpected SMS-side error answers error_but_booked; the message goes out once things recover', async () => {
    const org = await clinic();
    const phone = freshPhone();
    await h.owner`ALTER TABLE sms_rate_log RENAME TO sms_rate_log_away`;
    let booked;
    try {
      booked = await book(h, org, { patientPhone: phone });
    } finally {
      await h.owner`ALTER TABLE sms_rate_log_away RENAME TO sms_rate_log`;
    }
    expect(booked.result).toMatchObject({ success: true, smsStatus: 'error_but_booked' });
    expect(await appointmentExists(h, booked.result.appointmentId)).toBe(true);
    const row = await settled(h, booked.result.appointmentId);
    expect(row.status).toBe('sent');
    expect(sentTo(phone).twilio).toHaveLength(1);
  });
});

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

describe('per-clinic credentials', () => {
  it("each clinic's messages go out under its own Twilio account, never another clinic's", async () => {
    const a = newTwilioAccount(twilio);
    const b = newTwilioAccount(twilio);
    const orgA = await clinic([twilioLink({ accountSid: a.sid, authToken: a.token })]);
    const orgB = await clinic([twilioLink({ accountSid: b.sid, authToken: b.token })]);
    const phonesA = [freshPhone(), freshPhone()];
    const phonesB = [freshPhone(), freshPhone()];
    for (let i = 0; i < 2; i++) {
      expect((await book(h, orgA, { patientPhone: phonesA[i] })).result.smsStatus).toBe('sent');
      expect((await book(h, orgB, { patientPhone: phonesB[i] })).result.smsStatus).toBe('sent');
    }
    for (const p of phonesA) expect(sentTo(p).twilio.map((m) => m.accountSid)).toEqual([a.sid]);
    for (const p of phonesB) expect(sentTo(p).twilio.map((m) => m.accountSid)).toEqual([b.sid]);
    const basic = (acc: { sid: string; token: string }) => `Basic ${Buffer.from(`${acc.sid}:${acc.token}`).toString('base64')}`;
    for (const [acc, other] of [[a, b], [b, a]] as const) {
      const reqs = twilio.log.filter((r) => r.path.includes(acc.sid));
      expect(reqs.length).toBeGreaterThanOrEqual(2);
      expect(reqs.every((r) => r.authorization === basic(acc))).toBe(true);
      expect(twilio.log.some((r) => r.path.includes(acc.sid) && r.authorization === basic(other))).toBe(false);
    }
  });

  it('credentials never come back out of the API and are not stored in plaintext', async () => {
    const org = await createOrg(h);
    const account = newTwilioAccount(twilio);
    const telnyxKey = `KEY_${account.token}`;
    telnyx.addApiKey(telnyxKey);
    const put = await putSms(h, org.id, [twilioLink({ accountSid: account.sid, authToken: account.token }), telnyxLink({ apiKey: telnyxKey })]);
    const got = await h.http.get(`/api/admin/orgs/${org.id}/sms`).set('Authorization', `Bearer ${ADMIN_TOKEN}`);
    expect(got.status).toBe(200);
    expect(got.body.providers.map((p: { kind: string }) => p.kind)).toEqual(['twilio', 'telnyx']);
    for (const text of [JSON.stringify(put), JSON.stringify(got.body)]) {
      expect(text).not.toContain(account.token);
      expect(text).not.toContain(telnyxKey);
      expect(text).not.toContain(account.sid);
    }
    const rows = await h.owner<{ kind: string; credentials_enc: string }[]>`
      SELECT kind, credentials_enc FROM sms_providers WHERE org_id = ${org.id} ORDER BY position`;
    expect(rows).toHaveLength(2);
    for (const r of rows) {
      expect(r.credentials_enc).toMatch(/^v1\.k1\./);
      for (const secret of [account.token, telnyxKey, account.sid]) {
        expect(r.credentials_enc).not.toContain(secret);
        expect(r.credentials_enc).not.toContain(Buffer.from(secret).toString('base64').slice(0, 16));
      }
    }
    // Admin auth is required to read the chain at all.
    expect((await h.http.get(`/api/admin/orgs/${org.id}/sms`)).status).toBe(401);
  });

  it('CREDENTIALS_KEY rotation: a runtime with "k2,k1" still sends and re-encrypts under k2', async () => {
    const k1 = generateKeySpec('k1');
    const k2 = generateKeySpec('k2');
    const h1 = await startHarness({ ...smsEnv(), CREDENTIALS_KEY: k1 });
    let ownerUrl: string;
    let org: TestOrg;
    try {
      ownerUrl = h1.ownerUrl;
      org = await createOrg(h1);
      await putSms(h1, org.id, [twilioLink()]);
      const [before] = await h1.owner<{ credentials_enc: string }[]>`SELECT credentials_enc FROM sms_providers WHERE org_id = ${org.id}`;
      expect(before!.credentials_enc).toMatch(/^v1\.k1\./);
    } finally {
      await h1.close();
    }
    const h2 = await startHarness({ ...smsEnv(), CREDENTIALS_KEY: `${k2},${k1}` }, { ownerUrl });
    try {
      const phone = freshPhone();
      expect((await book(h2, org, { patientPhone: phone })).result).toMatchObject({ smsStatus: 'sent', smsProvider: 'twilio' });
      expect(sentTo(phone).twilio).toHaveLength(1);
      const [after] = await h2.owner<{ credentials_enc: string }[]>`SELECT credentials_enc FROM sms_providers WHERE org_id = ${org.id}`;
      expect(after!.credentials_enc).toMatch(/^v1\.k2\./);
    } finally {
      await h2.close();
    }
    // k1 can now be retired.
    const h3 = await startHarness({ ...smsEnv(), CREDENTIALS_KEY: k2 }, { ownerUrl });
    try {
      const phone = freshPhone();
      expect((await book(h3, org, { patientPhone: phone })).result.smsStatus).toBe('sent');
    } finally {
      await h3.close();
    }
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

describe('diagnostics', () => {
  it("reports, for the token's own clinic, whether credentials decrypt and providers answer, without secrets", async () => {
    const org = await clinic();
    const res = await h.http.get('/api/sms/diagnostics').set('Authorization', `Bearer ${org.token}`);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      configured: true,
      enabled: true,
      providers: [
        { position: 0, kind: 'twilio', decrypts: true, senders: TWILIO_POOL.length, reachable: true },
        { position: 1, kind: 'telnyx', decrypts: true, senders: TELNYX_POOL.length, reachable: true },
      ],
    });
    const text = JSON.stringify(res.body);
    expect(text).not.toContain(DEFAULT_TWILIO_ACCOUNT.token);
    expect(text).not.toContain(DEFAULT_TELNYX_API_KEY);
    expect((await h.http.get('/api/sms/diagnostics')).status).toBe(401);
  });
});

describe('admin API surface', () => {
  it('rejects an invalid chain and unknown orgs', async () => {
    const org = await createOrg(h);
    const bad = await h.http
      .put(`/api/admin/orgs/${org.id}/sms`)
      .set('Authorization', `Bearer ${ADMIN_TOKEN}`)
      .send({ providers: [{ kind: 'twilio', accountSid: 'nope', authToken: 'x', senderNumbers: ['123'] }] });
    expect(bad.status).toBe(400);
    expect(JSON.stringify(bad.body)).not.toContain('"x"');
    const missing = await h.http
      .put('/api/admin/orgs/00000000-0000-4000-8000-000000000000/sms')
      .set('Authorization', `Bearer ${ADMIN_TOKEN}`)
      .send({ providers: [twilioLink()] });
    expect(missing.status).toBe(404);
    const unauth = await supertest(h.runtime.app).put(`/api/admin/orgs/${org.id}/sms`).send({ providers: [twilioLink()] });
    expect(unauth.status).toBe(401);
  });
});
