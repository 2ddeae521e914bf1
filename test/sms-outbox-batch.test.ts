/**
 * The outbox state machine in batch form, against real PostgreSQL: the gate,
 * the opening of attempts and the settle of a whole claimed batch, each one
 * statement; the lease fencing of each; the backoff computed in SQL; and the
 * table of moves as the only changes of status the service roles can make.
 */
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { withOrg } from '../src/db/pool.js';
import { sqlAttemptLog } from '../src/sms/attempts.js';
import { MOVES, Outbox, isLeaseLost, type OutboxRow, type OutboxStatus } from '../src/sms/outbox.js';
import { startFakeTelnyx, type FakeTelnyx } from './fakes/fake-telnyx.js';
import { startFakeTwilio, type FakeTwilio } from './fakes/fake-twilio.js';
import { createOrg, startHarness, type Harness, type TestOrg } from './helpers/harness.js';
import { attemptsFor, enqueue, freshPhone, outboxFor, providerEnv, putSms, telnyxLink, twilioLink, waitFor } from './helpers/sms.js';

let twilio: FakeTwilio;
let telnyx: FakeTelnyx;
let h: Harness;
const logLines: Array<Record<string, unknown>> = [];

const RETRY_BASE_MS = 1000;
const RETRY_MAX_MS = 300_000;
const MAX_ATTEMPTS = 6;

beforeAll(async () => {
  twilio = await startFakeTwilio();
  telnyx = await startFakeTelnyx();
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) logLines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  h = await startHarness(
    {
      ...providerEnv(twilio.url, telnyx.url),
      SMS_ATTEMPT_TIMEOUT_MS: '300',
      SMS_SDK_TIMEOUT_MARGIN_MS: '200',
      SMS_RETRY_BASE_MS: String(RETRY_BASE_MS),
      SMS_RETRY_MAX_MS: String(RETRY_MAX_MS),
      SMS_MAX_ATTEMPTS: String(MAX_ATTEMPTS),
    },
    { log: pino({ level: 'info' }, sink) },
  );
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

async function clinic(rateLimitPerHour = 1000): Promise<TestOrg> {
  const org = await createOrg(h);
  await putSms(h, org.id, [twilioLink(), telnyxLink()], { rateLimitPerHour });
  return org;
}

/** An outbox for one worker id on the worker role, as the service uses it. */
const outboxAs = (worker: string) =>
  new Outbox(h.runtime.workerSql, worker, {
    leaseMs: 30_000,
    retryBaseMs: RETRY_BASE_MS,
    retryMaxMs: RETRY_MAX_MS,
    maxAttempts: MAX_ATTEMPTS,
    defaultRateLimit: 5,
  });

async function claimAll(ob: Outbox, ids: string[]): Promise<OutboxRow[]> {
  const rows = await ob.claimDue(ids.length + 50);
  return ids.map((id) => {
    const r = rows.find((x) => x.id === id);
    if (!r) throw new Error(`row ${id} was not claimed`);
    return r;
  });
}

describe('the gate of a claimed batch', () => {
  it('decides every row in one statement: send, cancelled, moved, expired, opted out, rate limited in creation order, gone', async () => {
    const org = await clinic(2);
    const repeat = freshPhone();
    const [ok, cancelled, moved, expired, optedOut, r1, r2, r3] = await enqueue(h, org, [
      freshPhone(),
      freshPhone(),
      freshPhone(),
      freshPhone(),
      freshPhone(),
      repeat,
      repeat,
      repeat,
    ]);
    await h.owner`UPDATE appointments SET status = 'cancelled' WHERE id = ${cancelled!.appointment_id}`;
    await h.owner`UPDATE appointments SET starts_at = starts_at + interval '1 day', ends_at = ends_at + interval '1 day' WHERE id = ${moved!.appointment_id}`;
    await h.owner`UPDATE sms_outbox SET expires_at = now() - interval '1 minute' WHERE id = ${expired!.id}`;
    await h.owner`INSERT INTO sms_opt_outs (org_id, phone, source) VALUES (${org.id}, ${optedOut!.to_phone}, 'test')`;
    const gone = '00000000-0000-4000-8000-000000000000';
    const ob = outboxAs('gate-test');
    const rows = await claimAll(
      ob,
      [ok, cancelled, moved, expired, optedOut, r1, r2, r3].map((r) => r!.id),
    );
    const verdicts = await ob.gate([...rows.map((r) => r.id), gone]);
    expect(verdicts.map((v) => [v.status, 'reason' in v ? v.reason : null])).toEqual([
      ['sending', null],
      ['cancelled', 'appointment_cancelled'],
      ['cancelled', 'superseded'],
      ['failed', 'expired'],
      ['failed', 'opted_out'],
      ...verdicts.slice(5, 8).map((v) => [v.status, 'reason' in v ? v.reason : null]),
      ['gone', null],
    ]);
    // Limit 2 an hour: two of the three to one recipient pass, in creation order (ties by id).
    const repeats = verdicts.slice(5, 8).map((v, i) => ({ v, id: rows[5 + i]!.id }));
    expect(repeats.filter((x) => x.v.status === 'sending')).toHaveLength(2);
    const limited = repeats.filter((x) => x.v.status === 'failed');
    expect(limited.map((x) => ('reason' in x.v ? x.v.reason : null))).toEqual(['rate_limited']);
    expect(limited[0]!.id).toBe([...repeats.map((x) => x.id)].sort().at(-1));
    // The two let through were counted; a second gate of the same rows does not count them again.
    const [log] = await h.owner<
      { n: number }[]
    >`SELECT count(*)::int AS n FROM sms_rate_log WHERE org_id = ${org.id} AND recipient = ${repeat}`;
    expect(log!.n).toBe(2);
    const again = await ob.gate(repeats.filter((x) => x.v.status === 'sending').map((x) => x.id));
    expect(again.map((v) => v.status)).toEqual(['sending', 'sending']);
  });

  it('reports an attempt a previous run left in flight', async () => {
    const org = await clinic();
    const [row] = await enqueue(h, org, [freshPhone()]);
    const ob = outboxAs('inflight-test');
    await claimAll(ob, [row!.id]);
    const log = sqlAttemptLog(h.runtime.workerSql);
    const link = (await h.runtime.sms.chains.load(org.id))!.links[0]!;
    const msg = { id: row!.id, orgId: org.id, to: row!.to_phone, body: row!.body, leaseHolder: 'inflight-test' };
    const opened = await log.open(msg, link, link.pool[0]!, false);
    const [v] = await ob.gate([row!.id]);
    expect(v).toMatchObject({
      status: 'sending',
      inFlight: { attemptId: opened.attemptId, provider: 'twilio', accountKey: link.provider.accountKey, from: link.pool[0] },
    });
  });
});

describe('opening the first attempts of a batch', () => {
  it('opens one in-flight attempt per row in one statement, but none for a row whose lease was taken over', async () => {
    const org = await clinic();
    const rows = await enqueue(h, org, [freshPhone(), freshPhone(), freshPhone()]);
    const ob = outboxAs('worker-a');
    await claimAll(
      ob,
      rows.map((r) => r.id),
    );
    // The lease of the second row ran out and worker B claimed it.
    await h.owner`UPDATE sms_outbox SET locked_by = 'worker-b' WHERE id = ${rows[1]!.id}`;
    const log = sqlAttemptLog(h.runtime.workerSql);
    const link = (await h.runtime.sms.chains.load(org.id))!.links[0]!;
    const results = await Promise.allSettled(
      rows.map((r) =>
        log.open({ id: r.id, orgId: org.id, to: r.to_phone, body: r.body, leaseHolder: 'worker-a' }, link, link.pool[0]!, false),
      ),
    );
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(isLeaseLost((results[1] as PromiseRejectedResult).reason)).toBe(true);
    expect(await attemptsFor(h, rows[1]!.appointment_id)).toHaveLength(0);
    const opened = await h.owner<{ started_at: Date; outcome: string; worker: string }[]>`
      SELECT started_at, outcome, worker FROM sms_attempts WHERE outbox_id = ANY(${[rows[0]!.id, rows[2]!.id]}::uuid[])`;
    expect(opened.map((a) => [a.outcome, a.worker])).toEqual([
      ['in_flight', 'worker-a'],
      ['in_flight', 'worker-a'],
    ]);
    // now() is the transaction's start: both rows came from one statement.
    expect(new Set(opened.map((a) => a.started_at.getTime())).size).toBe(1);
  });
});

describe('settling a batch', () => {
  it('moves every row in one statement, and only rows this worker holds', async () => {
    const org = await clinic();
    const rows = await enqueue(h, org, [freshPhone(), freshPhone(), freshPhone(), freshPhone(), freshPhone()]);
    const ob = outboxAs('settler');
    const [sent, retry, dead, cancel, stolen] = await claimAll(
      ob,
      rows.map((r) => r.id),
    );
    const log = sqlAttemptLog(h.runtime.workerSql);
    const link = (await h.runtime.sms.chains.load(org.id))!.links[0]!;
    const msg = { id: sent!.id, orgId: org.id, to: sent!.to_phone, body: sent!.body, leaseHolder: 'settler' };
    const earlier = await log.open(msg, link, link.pool[0]!, false);
    await log.close(msg, earlier.attemptId, { outcome: 'in_flight', errorClass: 'ambiguous', code: 'TIMEOUT', message: 'no answer' });
    const accepted = await log.open(msg, link, link.pool[0]!, false);
    await h.owner`UPDATE sms_outbox SET locked_by = 'someone-else' WHERE id = ${stolen!.id}`;

    const statuses = await ob.settle([
      {
        row: sent!,
        settlement: {
          status: 'sent',
          provider: 'twilio',
          providerMessageId: 'SM1',
          from: accepted.from,
          failedOver: false,
          reconciled: false,
          attempt: { id: accepted.attemptId, outcome: 'accepted', providerMessageId: 'SM1', latencyMs: 12 },
        },
      },
      {
        row: retry!,
        settlement: {
          status: 'pending',
          reason: 'all_providers_failed:transient',
          errorClass: 'transient',
          code: '20429',
          provider: 'twilio',
          message: 'busy',
        },
      },
      {
        row: dead!,
        settlement: {
          status: 'failed',
          reason: 'invalid_recipient',
          errorClass: 'recipient',
          code: '21211',
          provider: 'twilio',
          message: 'bad number',
        },
      },
      { row: cancel!, settlement: { status: 'cancelled', reason: 'superseded' } },
      { row: stolen!, settlement: { status: 'failed', reason: 'expired', message: 'not sent: expired' } },
    ]);
    expect(statuses).toEqual(['sent', 'pending', 'failed', 'cancelled', 'not_held']);

    expect(await outboxFor(h, sent!.appointment_id)).toMatchObject({ status: 'sent', provider: 'twilio', from_number: accepted.from });
    expect(await outboxFor(h, retry!.appointment_id)).toMatchObject({ status: 'pending' });
    expect(await outboxFor(h, dead!.appointment_id)).toMatchObject({ status: 'failed', failure_reason: 'invalid_recipient' });
    expect(await outboxFor(h, cancel!.appointment_id)).toMatchObject({ status: 'cancelled', failure_reason: 'superseded' });
    expect(await outboxFor(h, stolen!.appointment_id)).toMatchObject({ status: 'sending' });
    const [detail] = await h.owner`SELECT last_error, last_error_class, last_error_code, locked_by FROM sms_outbox WHERE id = ${dead!.id}`;
    expect(detail).toEqual({
      last_error: 'invalid_recipient: bad number',
      last_error_class: 'recipient',
      last_error_code: '21211',
      locked_by: null,
    });
    // The accepted attempt was closed with its row; the earlier one at the same account is settled by it.
    const attempts = await attemptsFor(h, sent!.appointment_id);
    expect(attempts.map((a) => [a.outcome, a.error_code, a.provider_message_id, a.latency_ms])).toEqual([
      ['failed', 'SUPERSEDED', null, null],
      ['accepted', null, 'SM1', 12],
    ]);
    const times = await h.owner<
      { t: Date }[]
    >`SELECT updated_at AS t FROM sms_outbox WHERE id = ANY(${[sent!.id, retry!.id, dead!.id, cancel!.id]}::uuid[])`;
    expect(new Set(times.map((r) => r.t.getTime())).size).toBe(1);
  });

  it('computes the retry backoff in SQL: base * 2^(runs - 1), capped, with equal jitter; the last run fails as retries_exhausted', async () => {
    const org = await clinic();
    // Runs so far (this one included), as the claim counts them.
    const runs = [1, 2, 3, 5, 5, 5, 5, 5];
    const rows = await enqueue(
      h,
      org,
      runs.map(() => freshPhone()),
    );
    const ob = outboxAs('backoff');
    await claimAll(
      ob,
      rows.map((r) => r.id),
    );
    for (const [i, r] of rows.entries()) await h.owner`UPDATE sms_outbox SET attempts = ${runs[i]!} WHERE id = ${r.id}`;
    const before = Date.now();
    const statuses = await ob.settle(
      rows.map((r) => ({
        row: { id: r.id, org_id: org.id },
        settlement: { status: 'pending', reason: 'all_providers_failed:transient', message: 'busy' },
      })),
    );
    const after = Date.now();
    expect(statuses).toEqual(runs.map(() => 'pending'));
    const got = await h.owner<{ id: string; at_ms: number }[]>`
      SELECT id, (extract(epoch FROM next_attempt_at) * 1000)::float8 AS at_ms FROM sms_outbox WHERE id = ANY(${rows.map((r) => r.id)}::uuid[])`;
    const jitter: number[] = [];
    for (const [i, r] of rows.entries()) {
      const cap = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** (runs[i]! - 1));
      const at = got.find((g) => g.id === r.id)!.at_ms;
      expect(at - after, `run ${runs[i]}`).toBeGreaterThanOrEqual(cap / 2 - 50);
      expect(at - before, `run ${runs[i]}`).toBeLessThanOrEqual(cap + 50);
      if (runs[i] === 5) jitter.push(at);
    }
    // Random, not fixed: four rows with the same run count do not all wait the same.
    expect(new Set(jitter).size).toBeGreaterThan(1);

    // The run that was the last one allowed: a dead letter, not another retry.
    const [last] = await enqueue(h, org, [freshPhone()]);
    await claimAll(ob, [last!.id]);
    await h.owner`UPDATE sms_outbox SET attempts = ${MAX_ATTEMPTS} WHERE id = ${last!.id}`;
    expect(
      await ob.settle([
        {
          row: { id: last!.id, org_id: org.id },
          settlement: {
            status: 'pending',
            reason: 'ambiguous_unreconciled',
            errorClass: 'ambiguous',
            code: 'TIMEOUT',
            message: 'no answer',
          },
        },
      ]),
    ).toEqual(['failed']);
    const [row] =
      await h.owner`SELECT status, failure_reason, last_error, last_error_class, failed_at IS NOT NULL AS failed FROM sms_outbox WHERE id = ${last!.id}`;
    expect(row).toEqual({
      status: 'failed',
      failure_reason: 'retries_exhausted',
      last_error: 'retries_exhausted: ambiguous_unreconciled: no answer',
      last_error_class: 'ambiguous',
      failed: true,
    });
  });

  it('a drained batch is gated, opened and settled in a few statements, not three per message', async () => {
    const org = await clinic();
    const rows = await enqueue(
      h,
      org,
      Array.from({ length: 30 }, () => freshPhone()),
    );
    const ids = rows.map((r) => r.id);
    const worker = h.runtime.sms.worker;
    worker.start();
    try {
      await waitFor('the batch to be sent', async () => {
        const [n] = await h.owner<
          { n: number }[]
        >`SELECT count(*)::int AS n FROM sms_outbox WHERE id = ANY(${ids}::uuid[]) AND status = 'sent'`;
        return n!.n === ids.length;
      });
    } finally {
      await worker.stop();
    }
    // now() is the transaction's start time, so each distinct value is one statement.
    const [s] = await h.owner<{ gates: number; opens: number; settles: number }[]>`
      SELECT (SELECT count(DISTINCT at) FROM sms_rate_log WHERE outbox_id = ANY(${ids}::uuid[]))::int AS gates,
             (SELECT count(DISTINCT started_at) FROM sms_attempts WHERE outbox_id = ANY(${ids}::uuid[]))::int AS opens,
             (SELECT count(DISTINCT sent_at) FROM sms_outbox WHERE id = ANY(${ids}::uuid[]))::int AS settles`;
    // The worker claims up to SMS_WORKER_CONCURRENCY (16) rows, then refills 8 at a time.
    expect(s!.gates).toBeLessThanOrEqual(5);
    expect(s!.opens).toBeLessThanOrEqual(5);
    expect(s!.settles).toBeLessThan(ids.length);
  });
});

describe('the table of moves', () => {
  const STATUSES: OutboxStatus[] = ['pending', 'sending', 'sent', 'failed', 'cancelled'];
  const allowed = new Set(MOVES.filter((m) => m.from && m.to && m.from !== m.to).map((m) => `${m.from}>${m.to}`));

  it('lists exactly the changes of status the database lets the worker make; every other one is refused', async () => {
    const org = await clinic();
    const [row] = await enqueue(h, org, [freshPhone()]);
    for (const from of STATUSES) {
      for (const to of STATUSES) {
        if (from === to) continue;
        await h.owner`UPDATE sms_outbox SET status = ${from} WHERE id = ${row!.id}`;
        const move = h.runtime.workerSql`UPDATE sms_outbox SET status = ${to} WHERE id = ${row!.id}`;
        if (allowed.has(`${from}>${to}`)) await expect(move, `${from} -> ${to}`).resolves.toBeDefined();
        else await expect(move, `${from} -> ${to}`).rejects.toMatchObject({ code: 'SM002' });
      }
    }
    // pending>cancelled: issue 11's "void" of a waiting reminder by the cancel or reschedule transaction.
    expect([...allowed].sort()).toEqual([
      'failed>pending',
      'pending>cancelled',
      'pending>sending',
      'sending>cancelled',
      'sending>failed',
      'sending>pending',
      'sending>sent',
    ]);
  });

  it('a new row starts pending: the app cannot enqueue a row in any other state', async () => {
    const org = await clinic();
    const [row] = await enqueue(h, org, [freshPhone()]);
    const insert = (status: string) =>
      withOrg(
        h.runtime.sql,
        org.id,
        (tx) => tx`
        INSERT INTO sms_outbox (org_id, appointment_id, kind, to_phone, body, expires_at, status)
        SELECT org_id, appointment_id, ${`k-${status}`}, to_phone, body, expires_at, ${status} FROM sms_outbox WHERE id = ${row!.id}`,
      );
    await expect(insert('sent')).rejects.toMatchObject({ code: 'SM002' });
    await expect(insert('pending')).resolves.toBeDefined();
  });

  it('marking an attempt delivered happens only in the settle', async () => {
    const org = await clinic();
    const [row] = await enqueue(h, org, [freshPhone()]);
    const call = h.runtime.workerSql`SELECT sms_finish_attempt(${org.id}::uuid, 1, 'accepted', NULL, NULL, NULL, 'SM1', 1, false, 'w')`;
    await expect(call).rejects.toMatchObject({ code: 'SM002' });
    expect((await outboxFor(h, row!.appointment_id)).status).toBe('pending');
  });
});

describe('patient phones in provider error text', () => {
  it('are scrubbed from the attempt audit, the dead letter and the log line', async () => {
    const org = await clinic();
    const phone = freshPhone();
    await twilio.setFault({ kind: 'status', status: 400, code: 21211, message: `The 'To' number ${phone} is not a valid phone number.` });
    const [row] = await enqueue(h, org, [phone]);
    expect(await h.runtime.sms.worker.processNow(row!.id)).toEqual({ status: 'failed', reason: 'invalid_recipient' });
    const last4 = phone.slice(-4);
    const [attempt] = await attemptsFor(h, row!.appointment_id);
    expect(attempt!.error_message).toContain(`…${last4}`);
    expect(attempt!.error_message).not.toContain(phone);
    const [dead] = await h.owner<{ last_error: string }[]>`SELECT last_error FROM sms_outbox WHERE id = ${row!.id}`;
    expect(dead!.last_error).toContain(`…${last4}`);
    expect(dead!.last_error).not.toContain(phone.slice(1));
  });

  it('a failed reconcile lookup logs the provider text without the number', async () => {
    const org = await clinic();
    const phone = freshPhone();
    // The send hangs (ambiguous), then the lookup answers 500 quoting the number.
    await twilio.setFault({ kind: 'hang', records: false, scope: 'create' });
    const [row] = await enqueue(h, org, [phone]);
    const posts = () => twilio.log.filter((r) => r.method === 'POST').length;
    const before = posts();
    const run = h.runtime.sms.worker.processNow(row!.id);
    await waitFor('the send to reach Twilio', async () => posts() > before);
    await twilio.setFault({ kind: 'status', status: 500, code: 20500, message: `Unable to list messages To=${phone}` });
    expect(await run).toEqual({ status: 'retry', reason: 'ambiguous_unreconciled' });
    const line = await waitFor('the lookup failure to be logged', async () =>
      logLines.find((l) => l.msg === 'sms reconcile lookup failed'),
    );
    expect(String(line.err)).toContain(`To=…${phone.slice(-4)}`);
    expect(JSON.stringify(logLines)).not.toContain(phone.slice(1));
  });
});
