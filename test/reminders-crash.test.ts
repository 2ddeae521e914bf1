/**
 * Reminders are sent exactly once across real processes (issue 11): one
 * server is SIGKILLed while its provider calls hang after the provider took
 * them, two more drain what is left. Every reminder reaches its patient once.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeTelnyx, type FakeTelnyx } from './fakes/fake-telnyx.js';
import { startFakeTwilio, type FakeTwilio } from './fakes/fake-twilio.js';
import { startChild, type Child } from './helpers/child.js';
import { createOrg, startHarness, type Harness, type TestOrg } from './helpers/harness.js';
import { freshPhone, providerEnv, putSms, twilioLink, waitFor } from './helpers/sms.js';

let twilio: FakeTwilio;
let telnyx: FakeTelnyx;
let h: Harness;
const children = new Set<Child>();

beforeAll(async () => {
  twilio = await startFakeTwilio();
  telnyx = await startFakeTelnyx();
  h = await startHarness({ ...providerEnv(twilio.url, telnyx.url), SMS_ATTEMPT_TIMEOUT_MS: '500' });
});
afterAll(async () => {
  for (const c of [...children]) await c.kill('SIGKILL');
  await h?.close();
  await twilio?.close();
  await telnyx?.close();
});

async function spawn(env: Record<string, string>): Promise<Child> {
  const child = await startChild(h, {
    ...providerEnv(twilio.url, telnyx.url),
    SMS_LEASE_MS: '1500',
    SMS_WORKER_POLL_MS: '50',
    SMS_ATTEMPT_TIMEOUT_MS: '500',
    SMS_RETRY_BASE_MS: '50',
    SMS_RETRY_MAX_MS: '200',
    SMS_WORKER_BATCH: '5',
    SMS_WORKER_CONCURRENCY: '8',
    ...env,
  });
  children.add(child);
  return child;
}

/** Appointments with one 24 h reminder each, due now (their window open for an hour), as the booking transaction writes them. */
async function dueReminders(org: TestOrg, phones: string[]) {
  const base = Date.now() + 86_400_000;
  const starts = phones.map((_, i) => new Date(base + i * 15 * 60_000).toISOString());
  return h.owner<Array<{ id: string; to_phone: string; body: string }>>`
    WITH src AS (SELECT * FROM unnest(${phones}::text[], ${starts}::timestamptz[]) AS t(phone, starts_at)),
    appt AS (
      INSERT INTO appointments (org_id, practitioner_id, service_id, patient_name, patient_phone, starts_at, ends_at)
      SELECT ${org.id}, ${org.practitioners[0]!.id}, ${org.services.find((s) => s.durationMinutes === 15)!.id}, 'Pat Doe', phone,
             starts_at, starts_at + interval '15 minutes' FROM src
      RETURNING id, patient_phone, starts_at
    )
    INSERT INTO sms_outbox (org_id, appointment_id, kind, to_phone, body, expires_at, next_attempt_at, send_by)
    SELECT ${org.id}, id, 'reminder:1440', patient_phone, 'Reminder ' || ${randomUUID()} || ' ' || patient_phone, starts_at, now(), now() + interval '1 hour'
      FROM appt
    RETURNING id, to_phone, body`;
}

describe('exactly once across processes', () => {
  it('SIGKILL mid-send, then two processes drain: every reminder delivered once, the hung ones reconciled', async () => {
    const org = await createOrg(h);
    await putSms(h, org.id, [twilioLink()], { rateLimitPerHour: 1000, contactPhone: '+14155550100' });
    // The provider takes each message, then hangs before answering.
    await twilio.setFault({ kind: 'hang', records: true });
    const first = await spawn({ SMS_ATTEMPT_TIMEOUT_MS: '20000' });
    const phones = Array.from({ length: 40 }, () => freshPhone());
    const rows = await dueReminders(org, phones);
    const ids = rows.map((r) => r.id);
    await waitFor('the first process to have sends in flight', async () => {
      const [n] = await h.owner<{ n: number }[]>`
        SELECT count(*)::int AS n FROM sms_attempts WHERE outbox_id = ANY(${ids}::uuid[]) AND outcome = 'in_flight'`;
      return n!.n >= 4 && twilio.messages.filter((m) => phones.includes(m.to)).length >= 4;
    });
    await first.kill('SIGKILL');
    children.delete(first);
    await twilio.setFault(null);

    // Both processes must take part, so neither may drain the outbox before the
    // other is up: until both answer, sms_attempts is locked, and a process that
    // claimed rows waits on its first attempt row instead of sending.
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
    let b: Child, c: Child;
    try {
      [b, c] = await Promise.all([spawn({}), spawn({})]);
    } finally {
      release();
      await lockTx;
    }
    await waitFor(
      'every reminder to be sent',
      async () => {
        const [n] = await h.owner<
          { n: number }[]
        >`SELECT count(*)::int AS n FROM sms_outbox WHERE id = ANY(${ids}::uuid[]) AND status = 'sent'`;
        return n!.n === rows.length;
      },
      30_000,
      100,
    );
    const delivered = twilio.messages.filter((m) => phones.includes(m.to));
    expect(delivered).toHaveLength(rows.length);
    expect(new Set(delivered.map((m) => m.to)).size).toBe(rows.length);
    const outcomes = await h.owner<{ outcome: string; n: number }[]>`
      SELECT outcome, count(*)::int AS n FROM sms_attempts WHERE outbox_id = ANY(${ids}::uuid[]) GROUP BY outcome`;
    const by = Object.fromEntries(outcomes.map((o) => [o.outcome, o.n]));
    // Each row: one attempt that delivered (accepted, or the killed one's reconciled).
    expect((by.accepted ?? 0) + (by.reconciled ?? 0)).toBe(rows.length);
    expect(by.reconciled ?? 0).toBeGreaterThanOrEqual(4);
    expect(by.in_flight ?? 0).toBe(0);
    // Each counted once toward the caps.
    const [log] = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM sms_reminder_log WHERE outbox_id = ANY(${ids}::uuid[])`;
    expect(log!.n).toBe(rows.length);
    const workers = await h.owner<{ pid: string }[]>`
      SELECT DISTINCT split_part(worker, ':', 2) AS pid FROM sms_attempts WHERE outbox_id = ANY(${ids}::uuid[]) AND outcome = 'accepted'`;
    expect(workers.map((w) => Number(w.pid)).sort()).toEqual([b.pid, c.pid].sort());
  });
});
