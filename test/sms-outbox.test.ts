import supertest from 'supertest';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFakeTelnyx, type FakeTelnyx } from './fakes/fake-telnyx.js';
import { startFakeTwilio, type FakeTwilio } from './fakes/fake-twilio.js';
import { startChild, type Child } from './helpers/child.js';
import { ADMIN_TOKEN, createOrg, startHarness, type Harness, type TestOrg } from './helpers/harness.js';
import {
  attemptsFor,
  book,
  enqueue,
  freshPhone,
  outboxFor,
  providerEnv,
  putSms,
  settled,
  telnyxLink,
  twilioLink,
  waitFor,
} from './helpers/sms.js';

let twilio: FakeTwilio;
let telnyx: FakeTelnyx;
let h: Harness;
const children = new Set<Child>();

const LEASE_MS = 1500;

/** The production server in a child process, with small lease and poll intervals. */
async function spawnServer(env: Record<string, string> = {}): Promise<Child> {
  const child = await startChild(h, {
    ...providerEnv(twilio.url, telnyx.url),
    SMS_LEASE_MS: String(LEASE_MS),
    SMS_WORKER_POLL_MS: '50',
    SMS_ATTEMPT_TIMEOUT_MS: '500',
    SMS_RETRY_BASE_MS: '50',
    SMS_RETRY_MAX_MS: '200',
    ...env,
  });
  children.add(child);
  return child;
}

async function kill(child: Child) {
  await child.kill('SIGKILL');
  children.delete(child);
}

beforeAll(async () => {
  twilio = await startFakeTwilio();
  telnyx = await startFakeTelnyx();
  // In-process runtime for setup and assertions only: its own worker stays off.
  h = await startHarness({ ...providerEnv(twilio.url, telnyx.url), SMS_ATTEMPT_TIMEOUT_MS: '500' });
});
afterEach(async () => {
  for (const c of [...children]) await kill(c);
  await twilio.setFault(null);
  await telnyx.setFault(null);
});
afterAll(async () => {
  for (const c of [...children]) await kill(c);
  await h?.close();
  await twilio?.close();
  await telnyx?.close();
});

async function clinic(extra: Record<string, unknown> = { rateLimitPerHour: 1000 }): Promise<TestOrg> {
  const org = await createOrg(h);
  await putSms(h, org.id, [twilioLink(), telnyxLink()], extra);
  return org;
}

const deliveredTo = (phone: string) => [...twilio.messages, ...telnyx.messages].filter((m) => m.to === phone);

describe('crash recovery with real processes', () => {
  it('killed between claim and send: the next process sends it exactly once', async () => {
    const org = await clinic();
    const phone = freshPhone();

    // Hold sms_attempts so the worker blocks writing its attempt row, i.e. after
    // it committed the claim and before it could call any provider.
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let locked!: () => void;
    const isLocked = new Promise<void>((r) => (locked = r));
    const lockTx = h.owner.begin(async (tx) => {
      await tx`LOCK TABLE sms_attempts IN EXCLUSIVE MODE`;
      locked();
      await released;
    });
    await isLocked;
    try {
      const first = await spawnServer();
      const [row] = await enqueue(h, org, [phone]);
      await waitFor('the worker to claim the row and block on the attempt insert', async () => {
        const [o] = await h.owner<{ status: string }[]>`SELECT status FROM sms_outbox WHERE id = ${row!.id}`;
        const [w] = await h.owner<{ n: number }[]>`
          SELECT count(*)::int AS n FROM pg_stat_activity
           WHERE datname = current_database() AND application_name = 'clinic-voice-tools:worker' AND wait_event_type = 'Lock'`;
        return o?.status === 'sending' && w!.n > 0;
      });
      await kill(first);
      expect(deliveredTo(phone)).toHaveLength(0);
    } finally {
      release();
      await lockTx;
    }

    await spawnServer();
    const appointmentId = (await h.owner<{ appointment_id: string }[]>`SELECT appointment_id FROM sms_outbox WHERE to_phone = ${phone}`)[0]!
      .appointment_id;
    const done = await settled(h, appointmentId, 15_000);
    expect(done.status).toBe('sent');
    expect(deliveredTo(phone)).toHaveLength(1);
    const attempts = await attemptsFor(h, appointmentId);
    expect(attempts.filter((a) => a.outcome === 'accepted')).toHaveLength(1);
    expect(attempts.filter((a) => a.outcome === 'in_flight')).toHaveLength(0);
    // The dead process's blocked insert may still land once the lock goes; if it
    // did, the new process asked Twilio about it before sending.
    for (const a of attempts.filter((x) => x.outcome !== 'accepted')) {
      expect(a).toMatchObject({ outcome: 'failed', error_class: 'ambiguous', error_code: 'NOT_FOUND' });
    }
  });

  it('killed after the provider accepted but before recording: reconciled, exactly one delivery', async () => {
    const org = await clinic();
    const phone = freshPhone();
    await twilio.setFault({ kind: 'hang', records: true });
    // A long attempt timeout: the process dies while the request is still hanging.
    const first = await spawnServer({ SMS_ATTEMPT_TIMEOUT_MS: '20000' });
    const [row] = await enqueue(h, org, [phone]);
    await waitFor('Twilio to have accepted the message', async () => twilio.messages.some((m) => m.to === phone));
    await waitFor('the attempt to be in flight', async () => {
      const attempts = await attemptsFor(h, row!.appointment_id);
      return attempts.length === 1 && attempts[0]!.outcome === 'in_flight';
    });
    await kill(first);
    await twilio.setFault(null);

    const second = await spawnServer();
    const done = await settled(h, row!.appointment_id, 15_000);
    expect(done).toMatchObject({ status: 'sent', provider: 'twilio' });
    expect(deliveredTo(phone)).toHaveLength(1);
    const attempts = await attemptsFor(h, row!.appointment_id);
    expect(attempts).toHaveLength(1);
    expect(attempts[0]).toMatchObject({
      provider: 'twilio',
      outcome: 'reconciled',
      provider_message_id: twilio.messages.find((m) => m.to === phone)!.sid,
    });
    void second;
  });

  it('two processes drain one outbox: every row sent exactly once', async () => {
    const org = await clinic();
    await twilio.setFault({ kind: 'slow', ms: 40 });
    const env = { SMS_WORKER_BATCH: '5', SMS_WORKER_CONCURRENCY: '8' };
    const [a, b] = await Promise.all([spawnServer(env), spawnServer(env)]);
    const phones = Array.from({ length: 200 }, () => freshPhone());
    const rows = await enqueue(h, org, phones);
    expect(rows).toHaveLength(200);
    const ids = rows.map((r) => r.id);
    await waitFor(
      'all 200 rows to be sent',
      async () => {
        const [r] = await h.owner<
          { n: number }[]
        >`SELECT count(*)::int AS n FROM sms_outbox WHERE id = ANY(${ids}::uuid[]) AND status = 'sent'`;
        return r!.n === 200;
      },
      30_000,
      100,
    );
    const wanted = new Set(phones);
    const msgs = [...twilio.messages, ...telnyx.messages].filter((m) => wanted.has(m.to));
    expect(msgs).toHaveLength(200);
    expect(new Set(msgs.map((m) => m.body)).size).toBe(200);
    expect(new Set(msgs.map((m) => ('sid' in m ? m.sid : m.id))).size).toBe(200);
    expect(new Set(msgs.map((m) => m.to)).size).toBe(200);
    const perRow = await h.owner<{ n: number }[]>`
      SELECT count(*) FILTER (WHERE a.outcome = 'accepted')::int AS n
        FROM sms_outbox o LEFT JOIN sms_attempts a ON a.outbox_id = o.id
       WHERE o.id = ANY(${ids}::uuid[]) GROUP BY o.id`;
    expect(perRow.every((r) => r.n === 1)).toBe(true);
    // Both processes took part.
    const workers = await h.owner<{ worker: string }[]>`
      SELECT DISTINCT split_part(worker, ':', 2) AS worker FROM sms_attempts WHERE outbox_id = ANY(${ids}::uuid[])`;
    expect(workers.map((w) => Number(w.worker)).sort()).toEqual([a.pid, b.pid].sort());
  });
});

describe('leases between live processes', () => {
  it('a send slower than the lease is not taken over by another process', async () => {
    const org = await clinic();
    const phone = freshPhone();
    // Only the create is slow: a process that wrongly took the row over would
    // look the message up, not find it yet, and send a second copy.
    await twilio.setFault({ kind: 'slow', ms: 3000, scope: 'create' });
    const env = { SMS_LEASE_MS: '1000', SMS_ATTEMPT_TIMEOUT_MS: '6000' };
    await Promise.all([spawnServer(env), spawnServer(env)]);
    const [row] = await enqueue(h, org, [phone]);
    const done = await settled(h, row!.appointment_id, 15_000);
    expect(done.status).toBe('sent');
    // Let any second attempt (there must be none) finish before counting.
    const attempts = await waitFor(
      'no attempt left in flight',
      async () => {
        const list = await attemptsFor(h, row!.appointment_id);
        return list.every((a) => a.outcome !== 'in_flight') ? list : null;
      },
      10_000,
    );
    expect(attempts.map((a) => a.outcome)).toEqual(['accepted']);
    expect(deliveredTo(phone)).toHaveLength(1);
  });

  it('an attempt can only be opened by the lease holder', async () => {
    const org = await clinic();
    const phone = freshPhone();
    const [row] = await enqueue(h, org, [phone]);
    await h.owner`UPDATE sms_outbox SET status = 'sending', locked_by = 'someone-else', locked_until = now() + interval '1 minute' WHERE id = ${row!.id}`;
    const call = h.runtime.workerSql`
      SELECT sms_begin_attempt(${org.id}::uuid, ${row!.id}::uuid, 'stale-worker', ${phone}, 'twilio', 'twilio:AC0',
                               ARRAY['+14155550101'], '+14155550101', false)`;
    await expect(call).rejects.toMatchObject({ code: 'SM001' });
    expect(await attemptsFor(h, row!.appointment_id)).toHaveLength(0);
  });
});

describe('messages that are no longer wanted', () => {
  it('a confirmation for an appointment that has since moved is not sent (superseded)', async () => {
    const org = await clinic();
    const phone = freshPhone();
    const [row] = await enqueue(h, org, [phone]);
    await h.owner`UPDATE appointments SET starts_at = starts_at + interval '1 day', ends_at = ends_at + interval '1 day' WHERE id = ${row!.appointment_id}`;
    const run = await h.runtime.sms.worker.processNow(row!.id);
    expect(run).toEqual({ status: 'skipped', reason: 'superseded' });
    expect(await outboxFor(h, row!.appointment_id)).toMatchObject({ status: 'cancelled', failure_reason: 'superseded' });
    expect(deliveredTo(phone)).toHaveLength(0);
  });

  it('a cancelled appointment gets no confirmation', async () => {
    const org = await clinic();
    const phone = freshPhone();
    const [row] = await enqueue(h, org, [phone]);
    await h.owner`UPDATE appointments SET status = 'cancelled', cancelled_at = now() WHERE id = ${row!.appointment_id}`;
    expect(await h.runtime.sms.worker.processNow(row!.id)).toEqual({ status: 'skipped', reason: 'appointment_cancelled' });
    expect(await outboxFor(h, row!.appointment_id)).toMatchObject({ status: 'cancelled', failure_reason: 'appointment_cancelled' });
    expect(deliveredTo(phone)).toHaveLength(0);
  });
});

describe('per-recipient rate limit', () => {
  it('the 6th text to one phone within an hour is not sent, and is a dead letter', async () => {
    const org = await clinic({ rateLimitPerHour: 5 });
    const phone = freshPhone();
    for (let i = 0; i < 5; i++) expect((await book(h, org, { patientPhone: phone })).result.smsStatus).toBe('sent');
    const sixth = await book(h, org, { patientPhone: phone });
    expect(sixth.result).toMatchObject({ success: true, smsStatus: 'failed_but_booked', smsReason: 'rate_limited' });
    expect(deliveredTo(phone)).toHaveLength(5);
    expect(await outboxFor(h, sixth.result.appointmentId)).toMatchObject({ status: 'failed', failure_reason: 'rate_limited' });
    const list = await h.http.get('/api/admin/failed-sms').query({ orgId: org.id }).set('Authorization', `Bearer ${ADMIN_TOKEN}`);
    expect(list.status).toBe(200);
    expect(list.body.items).toHaveLength(1);
    expect(list.body.items[0]).toMatchObject({
      appointmentId: sixth.result.appointmentId,
      reason: 'rate_limited',
      to: phone,
      providerAttempts: 0,
    });
  });

  it('holds across two runtimes booking at the same time', async () => {
    const org = await clinic({ rateLimitPerHour: 5 });
    const h2 = await startHarness(
      { ...providerEnv(twilio.url, telnyx.url), CREDENTIALS_KEY: h.secrets.credentialsKey },
      { ownerUrl: h.ownerUrl },
    );
    try {
      const phone = freshPhone();
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => book(i % 2 ? h2 : h, org, { patientPhone: phone })));
      const statuses = results.map((r) => r.result.smsStatus);
      expect(statuses.filter((s) => s === 'sent')).toHaveLength(5);
      expect(results.filter((r) => r.result.smsReason === 'rate_limited')).toHaveLength(3);
      expect(deliveredTo(phone)).toHaveLength(5);
    } finally {
      await h2.close();
    }
  });
});

describe('dead letters (admin)', () => {
  const admin = (req: supertest.Test) => req.set('Authorization', `Bearer ${ADMIN_TOKEN}`);

  it('lists failed messages page by page without skipping or repeating', async () => {
    const org = await clinic({ rateLimitPerHour: 1 });
    const phone = freshPhone();
    for (let i = 0; i < 6; i++) await book(h, org, { patientPhone: phone });
    const failed = await h.owner<{ id: string }[]>`SELECT id FROM sms_outbox WHERE org_id = ${org.id} AND status = 'failed' ORDER BY id`;
    expect(failed).toHaveLength(5);
    // Several failures inside one millisecond: the cursor must keep the microseconds.
    await h.owner`
      UPDATE sms_outbox SET failed_at = '2026-01-01T00:00:00.123456Z'::timestamptz - (n * interval '1 microsecond')
        FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM sms_outbox WHERE org_id = ${org.id} AND status = 'failed') x
       WHERE sms_outbox.id = x.id`;

    const seen: string[] = [];
    let next: string | null = null;
    let pages = 0;
    do {
      const res = await admin(h.http.get('/api/admin/failed-sms').query({ orgId: org.id, limit: 2, ...(next ? { before: next } : {}) }));
      expect(res.status).toBe(200);
      expect(res.body.items.length).toBeLessThanOrEqual(2);
      seen.push(...res.body.items.map((i: { id: string }) => i.id));
      next = res.body.next;
      pages += 1;
    } while (next && pages < 10);
    expect(pages).toBe(3);
    expect(seen).toHaveLength(5);
    expect([...seen].sort()).toEqual(failed.map((f) => f.id));
  });

  it('retry sends a rate-limited dead letter (bypassing the limit); delivered ones answer 409; delete is 204 then 404', async () => {
    const org = await clinic({ rateLimitPerHour: 1 });
    const phone = freshPhone();
    const first = await book(h, org, { patientPhone: phone });
    const second = await book(h, org, { patientPhone: phone });
    const third = await book(h, org, { patientPhone: phone });
    expect(first.result.smsStatus).toBe('sent');
    expect(second.result.smsReason).toBe('rate_limited');
    expect(third.result.smsReason).toBe('rate_limited');
    const deadId = (await outboxFor(h, second.result.appointmentId)).id;
    const sentId = (await outboxFor(h, first.result.appointmentId)).id;
    const deleteId = (await outboxFor(h, third.result.appointmentId)).id;

    const retried = await admin(h.http.post(`/api/admin/failed-sms/${deadId}/retry`));
    expect(retried.status).toBe(202);
    expect((await settled(h, second.result.appointmentId)).status).toBe('sent');
    expect(deliveredTo(phone)).toHaveLength(2);

    // A delivered message (and the one just retried) cannot be sent again.
    for (const id of [sentId, deadId]) {
      const again = await admin(h.http.post(`/api/admin/failed-sms/${id}/retry`));
      expect(again.status).toBe(409);
    }
    // Even if it is marked failed after the provider accepted it.
    await h.owner`UPDATE sms_outbox SET status = 'failed', failed_at = now() WHERE id = ${sentId}`;
    const forced = await admin(h.http.post(`/api/admin/failed-sms/${sentId}/retry`));
    expect(forced.status).toBe(409);
    expect(forced.body.error ?? forced.body.code ?? JSON.stringify(forced.body)).toMatch(/already_delivered/);
    expect(deliveredTo(phone)).toHaveLength(2);

    const del = await admin(h.http.delete(`/api/admin/failed-sms/${deleteId}`));
    expect(del.status).toBe(204);
    expect((await admin(h.http.delete(`/api/admin/failed-sms/${deleteId}`))).status).toBe(404);
    expect((await admin(h.http.post(`/api/admin/failed-sms/${deleteId}/retry`))).status).toBe(404);
    expect((await admin(h.http.post(`/api/admin/failed-sms/00000000-0000-4000-8000-000000000000/retry`))).status).toBe(404);
    // The appointment itself stands.
    const [appt] = await h.owner`SELECT status FROM appointments WHERE id = ${third.result.appointmentId}`;
    expect(appt!.status).toBe('booked');
  });

  it('will not re-send the old confirmation once a later one for the appointment was delivered', async () => {
    const org = await clinic();
    const phone = freshPhone();
    const [row] = await enqueue(h, org, [phone]);
    await h.owner`UPDATE sms_outbox SET status = 'failed', failed_at = now(), failure_reason = 'rate_limited' WHERE id = ${row!.id}`;
    await h.owner`
      INSERT INTO sms_outbox (org_id, appointment_id, kind, to_phone, body, expires_at, status, sent_at, created_at)
      SELECT org_id, appointment_id, 'rescheduled:later', to_phone, 'moved', expires_at, 'sent', now(), now() + interval '1 second'
        FROM sms_outbox WHERE id = ${row!.id}`;
    const res = await admin(h.http.post(`/api/admin/failed-sms/${row!.id}/retry`));
    expect(res.status).toBe(409);
    expect((await outboxFor(h, row!.appointment_id)).status).toBe('failed');
    expect(deliveredTo(phone)).toHaveLength(0);
  });

  it('requires the admin token', async () => {
    const id = '00000000-0000-4000-8000-000000000000';
    expect((await h.http.get('/api/admin/failed-sms')).status).toBe(401);
    expect((await h.http.post(`/api/admin/failed-sms/${id}/retry`)).status).toBe(401);
    expect((await h.http.delete(`/api/admin/failed-sms/${id}`)).status).toBe(401);
    expect((await h.http.get('/api/admin/failed-sms').set('Authorization', 'Bearer not-the-admin-token-000000')).status).toBe(401);
  });
});
