// The relay in a clinic's chain: failover Twilio -> relay, per-link attempt timeouts, ambiguous resends under one key, refusals.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FAKE_RELAY_SECRET, startFakeRelay, type FakeRelay } from './fakes/fake-relay.js';
import { startFakeTwilio, type FakeTwilio } from './fakes/fake-twilio.js';
import { ADMIN_TOKEN, createOrg, startHarness, type Harness, type TestOrg } from './helpers/harness.js';
import { attemptsFor, book, freshPhone, outboxFor, putSms, relayLink, settled, twilioLink, waitFor, type Link } from './helpers/sms.js';

const ATTEMPT_MS = 400;
let twilio: FakeTwilio;
let relay: FakeRelay;
let h: Harness;

const env = () => ({
  TWILIO_API_BASE_URL: twilio.url,
  SMS_WORKER_ENABLED: 'true',
  SMS_WORKER_POLL_MS: '50',
  SMS_ATTEMPT_TIMEOUT_MS: String(ATTEMPT_MS),
  SMS_SDK_TIMEOUT_MARGIN_MS: '300',
  SMS_RESPONSE_BUDGET_MS: '2500',
  SMS_RETRY_BASE_MS: '50',
  SMS_RETRY_MAX_MS: '200',
  SMS_MAX_ATTEMPTS: '30',
  SMS_LEASE_MS: '3000',
  SMS_BREAKER_THRESHOLD: '3',
  SMS_BREAKER_COOLDOWN_MS: '400',
});

beforeAll(async () => {
  twilio = await startFakeTwilio();
  relay = await startFakeRelay();
  h = await startHarness(env());
});
afterEach(async () => {
  relay.answer(null);
  await relay.setFault(null);
  await twilio.setFault(null);
});
afterAll(async () => {
  await h?.close();
  await twilio?.close();
  await relay?.close();
});

async function clinic(providers: Link[]): Promise<TestOrg> {
  const org = await createOrg(h);
  await putSms(h, org.id, providers, { rateLimitPerHour: 100 });
  return org;
}
const relayed = (phone: string) => relay.messages.filter((m) => m.to === phone);

describe('Twilio -> relay', () => {
  it('fails over to the relay, which gets the outbox id, the clinic, the run and a stable key, signed', async () => {
    const org = await clinic([twilioLink(), relayLink(relay.url, { senderNumbers: ['+13125550177'] })]);
    await twilio.setFault({ kind: 'status', status: 401, code: 20003, times: 1 });
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'relay' });
    const row = await outboxFor(h, result.appointmentId);
    const [m] = relayed(phone);
    expect(m).toMatchObject({ id: row.id, orgId: org.id, attempt: 1, idempotencyKey: `sms-${row.id}`, from: '+13125550177' });
    expect(relay.log.filter((l) => (l.body as { id?: string } | null)?.id === row.id).every((l) => l.verified)).toBe(true);
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.map((a) => [a.provider, a.outcome, a.failed_over, a.provider_message_id])).toEqual([
      ['twilio', 'failed', false, null],
      ['relay', 'accepted', true, m!.messageId],
    ]);
  });

  it('a relay without sender numbers sends without `from`', async () => {
    const org = await clinic([relayLink(relay.url)]);
    const phone = freshPhone();
    expect((await book(h, org, { patientPhone: phone })).result).toMatchObject({ smsStatus: 'sent', smsProvider: 'relay' });
    expect(relayed(phone)[0]!.from).toBeUndefined();
  });

  it('429 is retried on the relay; a relay that keeps failing with 5xx fails over to Twilio', async () => {
    const org = await clinic([relayLink(relay.url), twilioLink()]);
    await relay.setFault({ kind: 'http429', times: 1 });
    const a = await book(h, org);
    expect(a.result.smsProvider).toBe('relay');
    expect((await attemptsFor(h, a.result.appointmentId)).map((x) => [x.provider, x.error_class])).toEqual([
      ['relay', 'transient'],
      ['relay', null],
    ]);

    await relay.setFault({ kind: 'http5xx', status: 503 });
    const b = await book(h, org);
    expect(b.result.smsProvider).toBe('twilio');
    expect((await attemptsFor(h, b.result.appointmentId)).map((x) => [x.provider, x.error_class])).toEqual([
      ['relay', 'transient'],
      ['relay', 'transient'],
      ['relay', 'transient'],
      ['twilio', null],
    ]);
  });

  it("the relay's opted_out stops the walk and records the opt-out; its refusal with a provider hint fails over", async () => {
    const org = await clinic([relayLink(relay.url), twilioLink()]);
    relay.answer({ status: 400, json: { code: 'opted_out', message: 'STOP received' }, times: 1 });
    const phone = freshPhone();
    const stopped = await book(h, org, { patientPhone: phone });
    expect(stopped.result).toMatchObject({ smsStatus: 'failed_but_booked', smsReason: 'opted_out' });
    expect(twilio.messages.filter((m) => m.to === phone)).toHaveLength(0);
    const [optOut] = await h.owner<{ source: string }[]>`SELECT source FROM sms_opt_outs WHERE org_id = ${org.id} AND phone = ${phone}`;
    expect(optOut?.source).toBe('provider:relay:opted_out');

    relay.answer({ status: 422, json: { code: 'no_route', message: 'no upstream', class: 'provider' }, times: 1 });
    const over = await book(h, org);
    expect(over.result.smsProvider).toBe('twilio');
  });
});

describe('per-link attempt timeout', () => {
  it('a relay link with attemptTimeoutMs 1500 gets its 800 ms answer, where the global 400 ms would have given up', async () => {
    const org = await clinic([relayLink(relay.url, { attemptTimeoutMs: 1500 }), twilioLink()]);
    await relay.setFault({ kind: 'slow', ms: 800, times: 1 });
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'relay' });
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts).toHaveLength(1);
    expect(attempts[0]!.latency_ms).toBeGreaterThanOrEqual(750);
  });

  it("a primary's own shorter timeout gives up on it sooner; the relay's ambiguous attempt is resent under the same key and deduped", async () => {
    const org = await clinic([relayLink(relay.url, { attemptTimeoutMs: 150 }), twilioLink()]);
    await relay.setFault({ kind: 'slow', ms: 600, times: 1 });
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    const row = await settled(h, result.appointmentId);
    expect(row).toMatchObject({ status: 'sent', provider: 'relay' });
    const attempts = await attemptsFor(h, result.appointmentId);
    // Left in flight by the timeout, then settled by the resend that was accepted.
    expect(attempts[0]).toMatchObject({ provider: 'relay', error_class: 'ambiguous', error_code: 'SUPERSEDED' });
    expect(attempts[0]!.error_message).toMatch(/timed out or was aborted/);
    expect(attempts[0]!.latency_ms).toBeLessThan(ATTEMPT_MS);
    expect(attempts.at(-1)).toMatchObject({ provider: 'relay', outcome: 'accepted' });
    // Never sent elsewhere, and the receiver has it once, however many requests it took.
    expect(attempts.some((a) => a.provider === 'twilio')).toBe(false);
    expect(relayed(phone)).toHaveLength(1);
    const keys = new Set(
      relay.log
        .filter((l) => (l.body as { to?: string } | null)?.to === phone)
        .map((l) => (l.body as { idempotencyKey: string }).idempotencyKey),
    );
    expect([...keys]).toEqual([`sms-${row.id}`]);
    // `attempt` is the delivery run, and waiting for evidence of an ambiguous
    // attempt uses none (docs/sms.md, "Ambiguous outcomes"): the resend that
    // settled it is still the first run's.
    const runs = relay.log
      .filter((l) => (l.body as { to?: string } | null)?.to === phone)
      .map((l) => (l.body as { attempt: number }).attempt);
    expect(runs.length).toBeGreaterThan(1);
    expect(runs.every((r) => r === 1)).toBe(true);
  });

  it('a Twilio primary with attemptTimeoutMs 1200 is waited for past the global timeout', async () => {
    const org = await clinic([twilioLink({ attemptTimeoutMs: 1200 } as Partial<Extract<Link, { kind: 'twilio' }>>), relayLink(relay.url)]);
    await twilio.setFault({ kind: 'slow', ms: 700, times: 1 });
    const { result } = await book(h, org);
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'twilio' });
    expect(await attemptsFor(h, result.appointmentId)).toHaveLength(1);
  });

  it('is bounded: 100-60000 ms', async () => {
    const org = await createOrg(h);
    for (const attemptTimeoutMs of [99, 60_001, 1.5]) {
      const res = await h.http
        .put(`/api/admin/orgs/${org.id}/sms`)
        .set('Authorization', `Bearer ${ADMIN_TOKEN}`)
        .send({ providers: [relayLink(relay.url, { attemptTimeoutMs })] });
      expect(res.status, String(attemptTimeoutMs)).toBe(400);
    }
  });
});

describe('relay links in the admin API', () => {
  it('GET shows the host only; the URL and secret are in the encrypted blob', async () => {
    const url = `${relay.url}?tenant=private-path-token`;
    const org = await clinic([relayLink(url, { receipts: true })]);
    const got = await h.http.get(`/api/admin/orgs/${org.id}/sms`).set('Authorization', `Bearer ${ADMIN_TOKEN}`);
    expect(got.body.providers[0]).toEqual({
      position: 0,
      kind: 'relay',
      senderNumbers: [],
      credentials: 'configured',
      account: new URL(relay.url).host,
      receipts: true,
    });
    const text = JSON.stringify(got.body);
    expect(text).not.toContain(FAKE_RELAY_SECRET);
    expect(text).not.toContain('private-path-token');
    const [row] = await h.owner<{ credentials_enc: string }[]>`SELECT credentials_enc FROM sms_providers WHERE org_id = ${org.id}`;
    expect(row!.credentials_enc).not.toContain('private-path-token');
  });

  it('refuses URLs with credentials, other schemes and short secrets', async () => {
    const org = await createOrg(h);
    for (const link of [
      relayLink('https://user:pw@edge.example.org/sms'),
      relayLink('ftp://edge.example.org/sms'),
      relayLink('https://edge.example.org/sms', { signingSecret: 'short' }),
    ]) {
      const res = await h.http
        .put(`/api/admin/orgs/${org.id}/sms`)
        .set('Authorization', `Bearer ${ADMIN_TOKEN}`)
        .send({ providers: [link] });
      expect(res.status, JSON.stringify(link)).toBe(400);
      expect(JSON.stringify(res.body)).not.toContain('pw@');
    }
  });

  it('in production a relay must be https', async () => {
    const prod = await startHarness(
      { ...env(), NODE_ENV: 'production', SMS_WORKER_ENABLED: 'false', CREDENTIALS_KEY: h.secrets.credentialsKey },
      { ownerUrl: h.ownerUrl },
    );
    try {
      const org = await createOrg(prod);
      const put = (url: string) =>
        prod.http
          .put(`/api/admin/orgs/${org.id}/sms`)
          .set('Authorization', `Bearer ${ADMIN_TOKEN}`)
          .send({ providers: [relayLink(url)] });
      const refused = await put('http://edge.example.org/sms');
      expect(refused.status).toBe(400);
      expect(refused.body.message).toMatch(/https in production/);
      expect((await put('https://edge.example.org/sms')).status).toBe(200);
      // A plain-http link stored earlier is not used by a production process either.
      const dev = await clinic([relayLink(relay.url)]);
      const chain = await prod.runtime.sms.chains.load(dev.id);
      expect(chain!.links).toHaveLength(0);
      expect(chain!.broken).toEqual([{ position: 0, kind: 'relay', reason: 'Error' }]);
    } finally {
      await prod.close();
    }
  });
});

describe('relay receipts: POST /webhooks/relay/:orgId', () => {
  const signed = async (orgId: string, body: Record<string, unknown>, opts: { secret?: string; ts?: number } = {}) => {
    const { signRelay } = await import('../src/sms/providers/relay.js');
    const raw = JSON.stringify(body);
    const ts = String(opts.ts ?? Math.floor(Date.now() / 1000));
    return h.http
      .post(`/webhooks/relay/${orgId}`)
      .set('content-type', 'application/json')
      .set('x-relay-timestamp', ts)
      .set('x-relay-signature', signRelay(opts.secret ?? FAKE_RELAY_SECRET, ts, raw))
      .send(raw);
  };
  const stateOf = async (appointmentId: string) =>
    (
      await h.owner<{ delivery_state: string | null }[]>`
      SELECT a.delivery_state FROM sms_attempts a JOIN sms_outbox o ON o.id = a.outbox_id
       WHERE o.appointment_id = ${appointmentId} AND a.outcome = 'accepted'`
    )[0]?.delivery_state;

  it('a signed receipt moves the attempt forward; forged, stale and replayed ones are refused with nothing changed', async () => {
    const org = await clinic([relayLink(relay.url, { receipts: true })]);
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'relay' });
    const [m] = relayed(phone);
    expect(await stateOf(result.appointmentId)).toBe('accepted');

    expect((await signed(org.id, { messageId: m!.messageId, status: 'delivered' }, { secret: 'x'.repeat(40) })).status).toBe(403);
    expect(
      (await signed(org.id, { messageId: m!.messageId, status: 'delivered' }, { ts: Math.floor(Date.now() / 1000) - 3600 })).status,
    ).toBe(403);
    expect(
      (
        await h.http
          .post(`/webhooks/relay/${org.id}`)
          .set('content-type', 'application/json')
          .send({ messageId: m!.messageId, status: 'delivered' })
      ).status,
    ).toBe(403);
    expect(await stateOf(result.appointmentId)).toBe('accepted');

    const ts = Math.floor(Date.now() / 1000);
    const ok = await signed(org.id, { messageId: m!.messageId, status: 'delivered' }, { ts });
    expect(ok.status).toBe(200);
    await waitFor('delivered', async () => (await stateOf(result.appointmentId)) === 'delivered');
    // The same signed request again is a replay.
    expect((await signed(org.id, { messageId: m!.messageId, status: 'delivered' }, { ts })).status).toBe(403);
    // A late lower state after delivered changes nothing.
    expect((await signed(org.id, { messageId: m!.messageId, status: 'sent' })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 200));
    expect(await stateOf(result.appointmentId)).toBe('delivered');
  });

  it('a link without receipts: true refuses them (403): its acceptance is final', async () => {
    const org = await clinic([relayLink(relay.url)]);
    const { result } = await book(h, org);
    expect(result.smsProvider).toBe('relay');
    expect((await signed(org.id, { messageId: 'rly_anything', status: 'delivered' })).status).toBe(403);
  });

  it('an undelivered receipt of the sender class is resent once through the next provider', async () => {
    const org = await clinic([relayLink(relay.url, { receipts: true }), twilioLink()]);
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    const [m] = relayed(phone);
    const before = twilio.messages.filter((x) => x.to === phone).length;
    expect((await signed(org.id, { messageId: m!.messageId, status: 'undelivered', code: 'sender_unavailable' })).status).toBe(200);
    await waitFor('resend via twilio', async () => twilio.messages.filter((x) => x.to === phone).length === before + 1);
    // The same failure told again (a new signature) is a duplicate: no second resend.
    expect((await signed(org.id, { messageId: m!.messageId, status: 'undelivered', code: 'sender_unavailable', n: 2 })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 300));
    expect(twilio.messages.filter((x) => x.to === phone)).toHaveLength(before + 1);
    expect(await stateOf(result.appointmentId)).toBe('undelivered');
  });
});
