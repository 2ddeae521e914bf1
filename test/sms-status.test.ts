// The SMS status API (src/sms/status.ts): GET /api/admin/sms/status for the
// operator, GET /api/sms/status for a clinic's own token, and the matching
// Prometheus series. Real sends through the fakes, real receipts (shared
// setup in test/helpers/webhooks.ts), real probes for the health figures.
import { describe, expect, it } from 'vitest';
import { DELIVERED } from './fakes/receipts.js';
import { ADMIN_TOKEN, createOrg, startHarness, type Harness } from './helpers/harness.js';
import { book, enqueue, freshPhone, newTwilioAccount, putSms, telnyxLink, twilioLink, waitFor } from './helpers/sms.js';
import { clinic, h, telnyxSigned, twilio, untilDelivery, useWebhookSuite } from './helpers/webhooks.js';

useWebhookSuite({ SMS_HEALTH_ENABLED: 'true', SMS_HEALTH_INTERVAL_MS: '300', SMS_HEALTH_PROBE_TIMEOUT_MS: '150' });

const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };

async function adminStatus(orgId?: string, on: Harness = h) {
  const res = await on.http.get(`/api/admin/sms/status${orgId ? `?orgId=${orgId}` : ''}`).set(admin);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  expect(res.headers['cache-control']).toBe('no-store');
  return res.body as { clinics: Array<Record<string, any>>; totals: Record<string, any>; since: string; generatedAt: string };
}

const clinicOf = async (orgId: string, on: Harness = h) => (await adminStatus(orgId, on)).clinics.find((c) => c.orgId === orgId)!;

describe('the last hour, per clinic and provider link', () => {
  it('accepted, delivered, undelivered, delivery rate, latency percentiles, failovers and async failovers', async () => {
    const account = newTwilioAccount(twilio);
    const org = await clinic([twilioLink({ accountSid: account.sid, authToken: account.token }), telnyxSigned()]);
    // Two delivered through Twilio.
    const a = await book(h, org);
    const b = await book(h, org);
    await untilDelivery(a.result.appointmentId, (ds) => ds.some((d) => d.delivery_state === 'delivered'));
    await untilDelivery(b.result.appointmentId, (ds) => ds.some((d) => d.delivery_state === 'delivered'));
    // One filtered by the carrier after Twilio accepted it: undelivered there, resent through Telnyx (an async failover).
    const filtered = freshPhone();
    twilio.setReceipts({ steps: ['sent', { status: 'undelivered', code: 30007 }], delayMs: 5, gapMs: 10 }, filtered);
    const c = await book(h, org, { patientPhone: filtered });
    await untilDelivery(c.result.appointmentId, (ds) => ds.some((d) => d.provider === 'telnyx' && d.delivery_state === 'delivered'));
    twilio.setReceipts(DELIVERED);
    // One refused by Twilio at once (bad credentials): failed over to Telnyx in the same run.
    await twilio.setFault({ kind: 'status', status: 401, code: 20003, times: 1, scope: 'create' });
    const d = await book(h, org);
    expect(d.result.smsProvider).toBe('telnyx');

    const s = await clinicOf(org.id);
    const [tw, tx] = s.providers as Array<Record<string, any>>;
    expect(tw).toMatchObject({
      position: 0,
      kind: 'twilio',
      accepted: 3,
      delivered: 2,
      undelivered: 1,
      refused: 1,
      asyncFailovers: 1,
      failovers: 0,
    });
    expect(tw!.deliveryRate).toBeCloseTo(2 / 3, 5);
    expect(tw!.attempts).toBe(4);
    expect(tw!.account).toMatch(/^twilio:AC[0-9a-f]{4}…[0-9a-f]{4}$/);
    // The resend of the filtered message is an async failover, not one of these.
    expect(tx).toMatchObject({ position: 1, kind: 'telnyx', failovers: 1, refused: 0 });
    expect(tx!.accepted).toBe(2);
    for (const l of [tw!, tx!]) {
      expect(l.latencyMs.p50).toEqual(expect.any(Number));
      expect(l.latencyMs.p99).toBeGreaterThanOrEqual(l.latencyMs.p50);
    }
    // The clinic's totals: one message failed over at once, one after acceptance.
    expect(s.lastHour).toMatchObject({ accepted: 5, undelivered: 1, refused: 1, failovers: 1, asyncFailovers: 1 });
    expect(s.lastHour.latencyMs.p99).toBeGreaterThanOrEqual(s.lastHour.latencyMs.p50);
    expect(s.sms).toEqual({ configured: true, enabled: true, failoverEnabled: true });
  });

  it('only the last hour counts', async () => {
    const org = await clinic();
    const { result } = await book(h, org);
    await untilDelivery(result.appointmentId, (ds) => ds.some((d) => d.delivery_state === 'delivered'));
    expect((await clinicOf(org.id)).lastHour.accepted).toBe(1);
    await h.owner`UPDATE sms_attempts SET started_at = started_at - interval '61 minutes' WHERE org_id = ${org.id}`;
    const s = await clinicOf(org.id);
    expect(s.lastHour).toMatchObject({ accepted: 0, delivered: 0, attempts: 0 });
    expect(s.lastHour.deliveryRate).toBeNull();
  });
});

describe('health and breakers', () => {
  it("a down account shows its probe's error class and an open shared breaker; this process's breaker is reported too", async () => {
    const account = newTwilioAccount(twilio);
    const org = await clinic([twilioLink({ accountSid: account.sid, authToken: account.token }), telnyxSigned()]);
    const up = await waitFor('a first good probe', async () => {
      const l = (await clinicOf(org.id)).providers[0];
      return l.health.state === 'up' ? l : null;
    });
    expect(up.health).toMatchObject({ ok: true, errorClass: null, fresh: true });
    expect(up.health.latencyMs).toEqual(expect.any(Number));
    expect(up.breaker).toEqual({ shared: 'closed', here: 'closed' });

    await twilio.setFault({ kind: 'status', status: 401, code: 20003, scope: 'probe' });
    const down = await waitFor('the probe to find it down', async () => {
      const l = (await clinicOf(org.id)).providers[0];
      return l.health.state === 'down' ? l : null;
    });
    expect(down.health).toMatchObject({ ok: false, errorClass: 'provider', errorCode: '20003' });
    expect(down.breaker.shared).toBe('open');
    // A message meets the shared verdict: this process's breaker opens too, and the message fails over.
    const { result } = await book(h, org);
    expect(result.smsProvider).toBe('telnyx');
    expect((await clinicOf(org.id)).providers[0].breaker.here).toBe('open');
    expect((await adminStatus()).totals.linksDown).toBeGreaterThanOrEqual(1);
  });
});

describe('outbox, dead letters, opt-outs, bookings today', () => {
  it('counts each per clinic, and across clinics in the totals', async () => {
    // A database of its own without an outbox worker: the rows written here stay where they are put.
    const q = await startHarness();
    const org = await createOrg(q);
    // The sandbox: its messages go nowhere, and the outbox rows written here wait for a worker that never claims them.
    await putSms(q, org.id, [{ kind: 'sandbox', senderNumbers: ['+15005550006'] }]);
    const rows = await enqueue(q, org, [freshPhone(), freshPhone(), freshPhone()]);
    // Not due yet, due 90 s ago, and a dead letter.
    await q.owner`UPDATE sms_outbox SET next_attempt_at = now() + interval '1 hour' WHERE id = ${rows[0]!.id}`;
    await q.owner`UPDATE sms_outbox SET next_attempt_at = now() - interval '90 seconds', status = 'pending' WHERE id = ${rows[1]!.id}`;
    await q.owner`UPDATE sms_outbox SET status = 'failed', failed_at = now(), failure_reason = 'retries_exhausted' WHERE id = ${rows[2]!.id}`;
    await q.owner`INSERT INTO sms_opt_outs (org_id, phone, source) VALUES (${org.id}, ${freshPhone()}, 'test'), (${org.id}, ${freshPhone()}, 'test')`;

    const s = await clinicOf(org.id, q);
    expect(s.outbox).toMatchObject({ depth: 2, pending: 2, sending: 0 });
    expect(s.outbox.oldestDueAgeSeconds).toBeGreaterThanOrEqual(89);
    expect(s.outbox.oldestDueAgeSeconds).toBeLessThan(200);
    expect(s.deadLetters).toBe(1);
    expect(s.lastHour.deadLettered).toBe(1);
    expect(s.optOuts).toBe(2);
    // enqueue() writes the appointments as a booking would: all three made today.
    expect(s.bookingsToday).toBe(3);

    const all = await adminStatus(undefined, q);
    expect(all.clinics.map((c) => c.orgId)).toContain(org.id);
    expect(all.totals.deadLetters).toBe(all.clinics.reduce((n, c) => n + c.deadLetters, 0));
    expect(all.totals.outboxDepth).toBe(all.clinics.reduce((n, c) => n + c.outbox.depth, 0));
    expect(all.totals.oldestDueAgeSeconds).toBeGreaterThanOrEqual(89);
    await q.close();
  });

  it("bookings today are counted from midnight in the clinic's own zone", async () => {
    // A zone where it is a different calendar day than in UTC for part of every day.
    const org = await createOrg(h, { timeZone: 'Pacific/Kiritimati' });
    await putSms(h, org.id, [{ kind: 'sandbox', senderNumbers: ['+15005550006'] }]);
    const rows = await enqueue(h, org, [freshPhone(), freshPhone()]);
    const [mid] = await h.owner<
      { midnight: Date }[]
    >`SELECT (date_trunc('day', now() AT TIME ZONE 'Pacific/Kiritimati') AT TIME ZONE 'Pacific/Kiritimati') AS midnight`;
    // One made just before the clinic's midnight (yesterday there), one just after.
    await h.owner`UPDATE appointments SET created_at = ${new Date(mid!.midnight.getTime() - 60_000)} WHERE id = ${rows[0]!.appointment_id}`;
    await h.owner`UPDATE appointments SET created_at = ${new Date(mid!.midnight.getTime() + 60_000)} WHERE id = ${rows[1]!.appointment_id}`;
    expect((await clinicOf(org.id)).bookingsToday).toBe(1);
  });
});

describe("a clinic's own view: GET /api/sms/status", () => {
  it('shows its own clinic only, with no phone, text or credential in it', async () => {
    const mine = await clinic();
    const other = await clinic();
    const phone = freshPhone();
    await book(h, mine, { patientPhone: phone });
    await book(h, other);
    const res = await h.http.get('/api/sms/status').set('Authorization', `Bearer ${mine.token}`);
    expect(res.status).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.body).toMatchObject({ orgId: mine.id, sms: { configured: true } });
    expect(res.body.providers.map((p: { kind: string }) => p.kind)).toEqual(['twilio', 'telnyx']);
    expect(res.body.lastHour.attempts).toBe(1);
    const text = JSON.stringify(res.body);
    expect(text).not.toContain(other.id);
    expect(text).not.toContain(phone);
    expect(text).not.toContain(phone.slice(-4) + '#');
    expect(text).not.toMatch(/authToken|apiKey|secret|Hi Ana/i);
    // The admin view of the same clinic has the same figures.
    const adminView = await clinicOf(mine.id);
    expect(adminView.lastHour).toEqual(res.body.lastHour);
  });

  it('needs the clinic token: none, the admin token, or a revoked client is refused; a clinic token gets nothing of the admin view', async () => {
    const org = await clinic();
    expect((await h.http.get('/api/sms/status')).status).toBe(401);
    expect((await h.http.get('/api/sms/status').set(admin)).status).toBe(401);
    expect((await h.http.get('/api/admin/sms/status').set('Authorization', `Bearer ${org.token}`)).status).toBe(401);
    await h.owner`UPDATE oauth_clients SET revoked_at = now() WHERE client_id = ${org.clientId}`;
    expect((await h.http.get('/api/sms/status').set('Authorization', `Bearer ${org.token}`)).status).toBe(401);
  });

  it('the admin view takes orgId, and refuses one that is not a uuid', async () => {
    const org = await clinic();
    const s = await adminStatus(org.id);
    expect(s.clinics.map((c) => c.orgId)).toEqual([org.id]);
    expect((await h.http.get('/api/admin/sms/status?orgId=nope').set(admin)).status).toBe(400);
  });
});

describe('/metrics', () => {
  it('has the outbox, dead-letter and opt-out totals, with no clinic or phone in any label', async () => {
    // Its own database without a worker, so nothing moves between the two reads; the gauges read the latest runtime's.
    const q = await startHarness();
    try {
      const org = await createOrg(q);
      await putSms(q, org.id, [twilioLink(), telnyxLink()]);
      const rows = await enqueue(q, org, [freshPhone(), freshPhone()]);
      await q.owner`UPDATE sms_outbox SET status = 'failed', failed_at = now(), failure_reason = 'retries_exhausted' WHERE id = ${rows[0]!.id}`;
      await q.owner`INSERT INTO sms_opt_outs (org_id, phone, source) VALUES (${org.id}, ${freshPhone()}, 'test')`;
      const totals = (await adminStatus(undefined, q)).totals;
      expect(totals).toMatchObject({ deadLetters: 1, outboxDepth: 1, optOuts: 1 });
      const text = (await q.http.get('/metrics')).text;
      const value = (series: string) => Number(new RegExp(`^${series.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1]);
      expect(value('sms_outbox_depth{status="pending"}')).toBe(1);
      expect(value('sms_outbox_depth{status="sending"}')).toBe(0);
      expect(value('sms_dead_letters')).toBe(1);
      expect(value('sms_opt_outs')).toBe(1);
      expect(value('sms_outbox_oldest_due_seconds')).toBeGreaterThanOrEqual(0);
      for (const line of text.split('\n').filter((l) => /^sms_(outbox_depth|outbox_oldest|dead_letters|opt_outs)/.test(l))) {
        expect(line).not.toMatch(/org|\+\d{6,}/);
      }
    } finally {
      await q.close();
    }
  });
});

describe("the console's hourly delivery series", () => {
  it('buckets the last 24 hours by hour; with its cache, the finished hours are reused and the current one is read fresh', async () => {
    const { SeriesCache, readDeliverySeries } = await import('../src/sms/status.js');
    const org = await clinic();
    const a = await book(h, org);
    const b = await book(h, org);
    for (const x of [a, b]) await untilDelivery(x.result.appointmentId, (ds) => ds.some((d) => d.delivery_state === 'delivered'));
    // One of them three hours ago.
    await h.owner`UPDATE sms_attempts SET started_at = started_at - interval '3 hours'
                   WHERE outbox_id = (SELECT id FROM sms_outbox WHERE appointment_id = ${a.result.appointmentId})`;
    const cache = new SeriesCache();
    const plain = (await readDeliverySeries(h.runtime.workerSql, { hours: 24 })).get(org.id)!;
    const cached = (await readDeliverySeries(h.runtime.workerSql, { hours: 24, cache })).get(org.id)!;
    expect(cached).toEqual(plain);
    expect(plain).toHaveLength(24);
    expect(plain.map((x) => x.delivered).reduce((n, d) => n + d)).toBe(2);
    // Each in the bucket of the hour its attempt started (read back, so an hour turning over mid-test changes nothing).
    const hours = await h.owner<{ hour: Date }[]>`
      SELECT date_trunc('hour', a.started_at) AS hour FROM sms_attempts a JOIN sms_outbox o ON o.id = a.outbox_id
       WHERE o.appointment_id IN (${a.result.appointmentId}, ${b.result.appointmentId}) ORDER BY a.started_at`;
    expect(hours[1]!.hour.getTime() - hours[0]!.hour.getTime()).toBe(3 * 3_600_000);
    for (const { hour } of hours)
      expect(plain.find((x) => x.hour === hour.toISOString())).toMatchObject({ accepted: 1, delivered: 1, rate: 1 });
    // A new message this hour shows at once, cache or not.
    const c = await book(h, org);
    await untilDelivery(c.result.appointmentId, (ds) => ds.some((d) => d.delivery_state === 'delivered'));
    const latest = (await readDeliverySeries(h.runtime.workerSql, { hours: 24, cache })).get(org.id)!;
    expect(latest.reduce((n, x) => n + x.delivered, 0)).toBe(3);
  });
});
