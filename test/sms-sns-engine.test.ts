// SNS in a clinic's chain: failover Twilio -> SNS, the breaker on an SNS account, recipient errors and opt-outs.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_SNS_ACCOUNT, startFakeSns, type FakeSns } from './fakes/fake-sns.js';
import { startFakeTwilio, type FakeTwilio } from './fakes/fake-twilio.js';
import { ADMIN_TOKEN, createOrg, startHarness, type Harness, type TestOrg } from './helpers/harness.js';
import { attemptsFor, book, freshPhone, outboxFor, putSms, snsLink, twilioLink, type Link } from './helpers/sms.js';

const ATTEMPT_MS = 400;
const COOLDOWN_MS = 400;
let twilio: FakeTwilio;
let sns: FakeSns;
let h: Harness;

beforeAll(async () => {
  twilio = await startFakeTwilio();
  sns = await startFakeSns();
  h = await startHarness({
    TWILIO_API_BASE_URL: twilio.url,
    AWS_ENDPOINT_URL_SNS: sns.url,
    SMS_WORKER_ENABLED: 'true',
    SMS_WORKER_POLL_MS: '50',
    SMS_ATTEMPT_TIMEOUT_MS: String(ATTEMPT_MS),
    SMS_SDK_TIMEOUT_MARGIN_MS: '300',
    SMS_RESPONSE_BUDGET_MS: '2500',
    SMS_RETRY_BASE_MS: '50',
    SMS_RETRY_MAX_MS: '200',
    SMS_MAX_ATTEMPTS: '30',
    SMS_LEASE_MS: '2000',
    SMS_BREAKER_THRESHOLD: '3',
    SMS_BREAKER_COOLDOWN_MS: String(COOLDOWN_MS),
  });
});
afterEach(async () => {
  await twilio.setFault(null);
  await sns.setFault(null);
});
afterAll(async () => {
  await h?.close();
  await twilio?.close();
  await sns?.close();
});

async function clinic(providers: Link[]): Promise<TestOrg> {
  const org = await createOrg(h);
  await putSms(h, org.id, providers, { rateLimitPerHour: 100 });
  return org;
}
const snsTo = (phone: string) => sns.messages.filter((m) => m.to === phone);

describe('Twilio -> SNS', () => {
  it('fails over to SNS, records sns:<MessageId>, and sends Transactional from the origination number with the sender id', async () => {
    const org = await clinic([twilioLink(), snsLink({ senderId: 'Maple', originationNumber: '+13125550199' })]);
    await twilio.setFault({ kind: 'status', status: 401, code: 20003, times: 1 });
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'sns' });
    const [msg] = snsTo(phone);
    expect(msg).toBeDefined();
    expect(msg!.attributes).toEqual({
      'AWS.SNS.SMS.SMSType': 'Transactional',
      'AWS.SNS.SMS.SenderID': 'Maple',
      'AWS.MM.SMS.OriginationNumber': '+13125550199',
    });
    const row = await outboxFor(h, result.appointmentId);
    expect(row).toMatchObject({ status: 'sent', provider: 'sns', from_number: '+13125550199' });
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.map((a) => [a.provider, a.outcome, a.error_class, a.error_code, a.failed_over])).toEqual([
      ['twilio', 'failed', 'provider', '20003', false],
      ['sns', 'accepted', null, null, true],
    ]);
    expect(attempts[1]!.provider_message_id).toBe(`sns:${msg!.messageId}`);
    const [stored] = await h.owner<{ provider_message_id: string }[]>`SELECT provider_message_id FROM sms_outbox WHERE id = ${row.id}`;
    expect(stored!.provider_message_id).toBe(`sns:${msg!.messageId}`);
  });

  it('with Twilio hard down (connection refused) the message reaches SNS after the in-run retries', async () => {
    const org = await clinic([twilioLink(), snsLink()]);
    await twilio.setFault({ kind: 'down' });
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'sns' });
    expect(snsTo(phone)).toHaveLength(1);
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.map((a) => [a.provider, a.error_code])).toEqual([
      ['twilio', 'ECONNREFUSED'],
      ['twilio', 'ECONNREFUSED'],
      ['twilio', 'ECONNREFUSED'],
      ['sns', null],
    ]);
  });

  it('an SNS link without an origination number sends without a sender pool; its adapter says it has no receipts', async () => {
    const org = await clinic([snsLink()]);
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'sns' });
    expect(snsTo(phone)[0]!.attributes).toEqual({ 'AWS.SNS.SMS.SMSType': 'Transactional' });
    const chain = await h.runtime.sms.chains.load(org.id);
    expect(chain!.links[0]!.provider.capabilities.receipts).toBe('none');
  });

  it('a transient SNS throttle is retried on SNS', async () => {
    const org = await clinic([snsLink(), twilioLink()]);
    await sns.setFault({ kind: 'http429', times: 2, scope: 'create' });
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'sns' });
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.map((a) => [a.provider, a.error_class, a.error_code])).toEqual([
      ['sns', 'transient', 'Throttled'],
      ['sns', 'transient', 'Throttled'],
      ['sns', null, null],
    ]);
  });

  it('an SNS timeout cannot be reconciled (no lookup): the message waits rather than go to Twilio', async () => {
    const org = await clinic([snsLink(), twilioLink()]);
    await sns.setFault({ kind: 'hang', scope: 'create' });
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result.smsStatus).toBe('queued');
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.map((a) => [a.provider, a.outcome, a.error_class])).toEqual([['sns', 'in_flight', 'ambiguous']]);
    expect(twilio.messages.filter((m) => m.to === phone)).toHaveLength(0);
  });
});

describe('SNS recipient errors and opt-outs', () => {
  it('InvalidParameter on the phone number stops the walk: no failover', async () => {
    const org = await clinic([snsLink(), twilioLink()]);
    const { result } = await book(h, org, { patientPhone: '+15005550001' });
    expect(result).toMatchObject({ smsStatus: 'failed_but_booked', smsReason: 'invalid_recipient' });
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.map((a) => [a.provider, a.error_class, a.error_code])).toEqual([['sns', 'recipient', 'InvalidParameter:PhoneNumber']]);
  });

  it("a number opted out at SNS is not published to, is recorded in the clinic's opt-outs, and is not failed over", async () => {
    const org = await clinic([snsLink(), twilioLink()]);
    const phone = freshPhone();
    sns.optedOut.add(phone);
    const publishes = () => sns.log.filter((l) => l.action === 'Publish').length;
    const before = publishes();
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'failed_but_booked', smsReason: 'opted_out' });
    expect(publishes()).toBe(before);
    expect(twilio.messages.filter((m) => m.to === phone)).toHaveLength(0);
    const [optOut] = await h.owner<{ source: string }[]>`SELECT source FROM sms_opt_outs WHERE org_id = ${org.id} AND phone = ${phone}`;
    expect(optOut?.source).toBe('provider:sns:OptedOut');
  });

  it("the clinic's own opt-out registry is consulted first: SNS is not even asked", async () => {
    const org = await clinic([snsLink()]);
    const phone = freshPhone();
    await h.owner`INSERT INTO sms_opt_outs (org_id, phone, source) VALUES (${org.id}, ${phone}, 'inbound:STOP')`;
    const before = sns.log.length;
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'failed_but_booked', smsReason: 'opted_out' });
    expect(sns.log.length).toBe(before);
  });
});

describe('breaker on an SNS account', () => {
  it('opens after 3 failures, skips SNS while open, probes once after the cool-down, closes when SNS answers again', async () => {
    const account = { accessKeyId: `AKIABREAKER${Date.now().toString().slice(-9)}`, secretAccessKey: DEFAULT_SNS_ACCOUNT.secretAccessKey };
    sns.addAccount(account);
    const org = await clinic([snsLink(account), twilioLink()]);
    const publishes = () => sns.log.filter((l) => l.action === 'Publish' && l.accessKeyId === account.accessKeyId).length;
    await sns.setFault({ kind: 'status', status: 403, code: 'AuthorizationError', scope: 'create' });

    for (let i = 1; i <= 3; i++) {
      expect((await book(h, org)).result.smsProvider).toBe('twilio');
      expect(publishes()).toBe(i);
    }
    const skipped = await book(h, org);
    expect(skipped.result.smsProvider).toBe('twilio');
    expect(publishes()).toBe(3);
    expect((await attemptsFor(h, skipped.result.appointmentId)).map((a) => [a.provider, a.outcome, a.error_code])).toEqual([
      ['sns', 'skipped', 'BREAKER_OPEN'],
      ['twilio', 'accepted', null],
    ]);

    // Half-open: one probe, which fails, so it opens again.
    await new Promise((r) => setTimeout(r, COOLDOWN_MS + 100));
    expect((await book(h, org)).result.smsProvider).toBe('twilio');
    expect(publishes()).toBe(4);
    expect((await book(h, org)).result.smsProvider).toBe('twilio');
    expect(publishes()).toBe(4);

    await sns.setFault(null);
    await new Promise((r) => setTimeout(r, COOLDOWN_MS + 100));
    expect((await book(h, org)).result.smsProvider).toBe('sns');
    expect((await book(h, org)).result.smsProvider).toBe('sns');
    expect(publishes()).toBe(6);
  });
});

describe('SNS links in the admin API', () => {
  it('GET shows a masked access key id and the region, never the secret; the blob is encrypted', async () => {
    const org = await clinic([twilioLink(), snsLink({ senderId: 'Maple', attemptTimeoutMs: 5000 })]);
    const got = await h.http.get(`/api/admin/orgs/${org.id}/sms`).set('Authorization', `Bearer ${ADMIN_TOKEN}`);
    expect(got.status).toBe(200);
    expect(got.body.providers[1]).toEqual({
      position: 1,
      kind: 'sns',
      senderNumbers: [],
      credentials: 'configured',
      account: `${DEFAULT_SNS_ACCOUNT.accessKeyId.slice(0, 4)}…${DEFAULT_SNS_ACCOUNT.accessKeyId.slice(-4)}`,
      region: 'us-east-1',
      attemptTimeoutMs: 5000,
    });
    expect(JSON.stringify(got.body)).not.toContain(DEFAULT_SNS_ACCOUNT.secretAccessKey);
    expect(JSON.stringify(got.body)).not.toContain(DEFAULT_SNS_ACCOUNT.accessKeyId);
    const [row] = await h.owner<
      { credentials_enc: string }[]
    >`SELECT credentials_enc FROM sms_providers WHERE org_id = ${org.id} AND kind = 'sns'`;
    expect(row!.credentials_enc).toMatch(/^v1\./);
    expect(row!.credentials_enc).not.toContain(DEFAULT_SNS_ACCOUNT.secretAccessKey);
  });

  it('refuses a malformed SNS link', async () => {
    const org = await createOrg(h);
    for (const bad of [
      snsLink({ region: 'mars' }),
      snsLink({ accessKeyId: 'short' }),
      snsLink({ senderId: '123456' }),
      snsLink({ originationNumber: '555' }),
    ]) {
      const res = await h.http
        .put(`/api/admin/orgs/${org.id}/sms`)
        .set('Authorization', `Bearer ${ADMIN_TOKEN}`)
        .send({ providers: [bad] });
      expect(res.status, JSON.stringify(bad)).toBe(400);
      expect(JSON.stringify(res.body)).not.toContain(DEFAULT_SNS_ACCOUNT.secretAccessKey);
    }
  });
});
