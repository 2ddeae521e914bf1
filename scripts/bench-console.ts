/**
 * The console's overview under a realistic load: 200 clinics, each with a
 * Twilio account of its own failing over to a shared Telnyx account (probed
 * by the health monitor against the local fakes), and 100,000 confirmations
 * with their appointments and provider attempts. Renders GET /ops (the whole
 * page, and the fragment htmx asks for every few seconds) over HTTP on
 * loopback, sequentially, and prints p50 / p95 / p99 / max server-side time.
 * Target: p99 <= 200 ms.
 *
 *   npm run bench:console
 *   BENCH_CLINICS=200 BENCH_MESSAGES=100000 BENCH_DAYS=7 BENCH_RENDERS=200 npm run bench:console
 *
 * BENCH_DAYS spreads the messages' times over that many days (1: all of them
 * inside the 24 hours the overview's charts read, the worst case).
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import postgres from 'postgres';
import { loadConfig } from '../src/config.js';
import { generateKeySpec } from '../src/crypto.js';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import { createSession } from '../src/ops/sessions.js';
import { createOrg, createOrgSchema } from '../src/orgs/orgs.js';
import { freePort } from '../src/net.js';
import { createRuntime } from '../src/runtime.js';
import { putSmsConfig, smsConfigSchema } from '../src/sms/config.js';
import { DEFAULT_TELNYX_API_KEY, startFakeTelnyx } from '../test/fakes/fake-telnyx.js';
import { startFakeTwilio } from '../test/fakes/fake-twilio.js';

const CLINICS = Number(process.env.BENCH_CLINICS ?? 200);
const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 100_000);
const DAYS = Number(process.env.BENCH_DAYS ?? 7);
const RENDERS = Number(process.env.BENCH_RENDERS ?? 200);
const TARGET_MS = 200;

const pct = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.ceil((p / 100) * xs.length) - 1)]!;

const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bench-console-'));
const db = await startEmbeddedPostgres({ dataDir: dir });
const twilio = await startFakeTwilio();
const telnyx = await startFakeTelnyx();
try {
  const cfg = loadConfig({
    DATA_DIR: dir,
    SEED_DEMO: 'false',
    LOG_LEVEL: 'silent',
    SMS_WORKER_ENABLED: 'false',
    // The monitor probes every account once, at start, through the fakes: every link has a health record.
    SMS_HEALTH_ENABLED: 'true',
    SMS_HEALTH_INTERVAL_MS: '600000',
    TWILIO_API_BASE_URL: twilio.url,
    TELNYX_API_BASE_URL: `${telnyx.url}/v2`,
  });
  const secrets = {
    jwtSecret: `bench-jwt-${randomUUID()}`,
    adminToken: `bench-admin-${randomUUID()}`,
    credentialsKey: generateKeySpec(),
    appDbPassword: 'bench-app',
    workerDbPassword: 'bench-worker',
    generated: [],
  };
  const owner = postgres(db.ownerUrl, { max: 4, onnotice: () => {} });
  // Clinics and chains through the domain functions, as the admin API makes them (migrations first, by a runtime).
  const setup = await createRuntime({
    cfg: { ...cfg, SMS_HEALTH_ENABLED: false },
    secrets,
    ownerUrl: db.ownerUrl,
    log: pino({ level: 'silent' }),
    embedded: true,
  });
  const started = Date.now();
  const orgs: Array<{ id: string; practitioner: string; service: string; twilioKey: string; telnyxKey: string }> = [];
  for (let i = 0; i < CLINICS; i++) {
    const org = await createOrg(
      setup.sql,
      setup.deps.keyring,
      createOrgSchema.parse({
        name: `Clinic ${String(i + 1).padStart(3, '0')} ${['Family Practice', 'Pediatrics', 'Dental', 'Dermatology', 'Physiotherapy'][i % 5]}`,
        timeZone: ['America/New_York', 'America/Chicago', 'America/Denver', 'America/Los_Angeles', 'Europe/London'][i % 5]!,
        defaultRegion: 'US',
        slotIntervalMinutes: 15,
        openingHours: { '1': [['08:00', '17:00']] },
        services: [{ name: 'Visit', durationMinutes: 15 }],
        practitioners: [{ name: 'Dr. Lee' }],
      }),
    );
    const sid = `AC${randomUUID().replace(/-/g, '')}`;
    const token = `token-${randomUUID()}`;
    twilio.addAccount(sid, token);
    await putSmsConfig(
      setup.sql,
      setup.deps.keyring,
      org.id,
      smsConfigSchema.parse({
        enabled: true,
        failoverEnabled: i % 3 !== 0,
        providers: [
          { kind: 'twilio', accountSid: sid, authToken: token, senderNumbers: ['+14155550101'] },
          { kind: 'telnyx', apiKey: DEFAULT_TELNYX_API_KEY, senderNumbers: ['+13125550101'] },
        ],
      }),
      5,
    );
    // The account keys the adapters write into the attempts, so the figures meet their links.
    const chain = await setup.sms.chains.load(org.id);
    const [tw, tx] = chain!.links.map((l) => l.provider.accountKey);
    orgs.push({ id: org.id, practitioner: org.practitioners[0]!.id, service: org.services[0]!.id, twilioKey: tw!, telnyxKey: tx! });
  }
  await setup.close();

  // 100k messages in bulk, as the owner: appointments, their outbox rows, and the attempts' audit trail.
  await owner.begin(async (tx) => {
    await tx`CREATE TEMP TABLE bench_orgs (org_id uuid, prac uuid, svc uuid, twilio_key text, telnyx_key text) ON COMMIT DROP`;
    await tx`
      INSERT INTO bench_orgs
      SELECT * FROM unnest(${orgs.map((o) => o.id)}::uuid[], ${orgs.map((o) => o.practitioner)}::uuid[], ${orgs.map((o) => o.service)}::uuid[],
                           ${orgs.map((o) => o.twilioKey)}::text[], ${orgs.map((o) => o.telnyxKey)}::text[])`;
    await tx`
      CREATE TEMP TABLE bench_msgs ON COMMIT DROP AS
      SELECT gen_random_uuid() AS appt, gen_random_uuid() AS outbox, o.org_id, o.prac, o.svc, o.twilio_key, o.telnyx_key, g,
             now() - random() * make_interval(days => ${DAYS}) AS at, random() AS r
        FROM bench_orgs o CROSS JOIN generate_series(1, ${Math.ceil(MESSAGES / CLINICS)}) g`;
    await tx`
      INSERT INTO appointments (id, org_id, practitioner_id, service_id, patient_name, patient_phone, starts_at, ends_at, created_at)
      SELECT appt, org_id, prac, svc, 'Pat Doe', '+1415' || lpad((2000000 + g)::text, 7, '0'),
             now() + interval '40 days' + g * interval '20 minutes', now() + interval '40 days' + g * interval '20 minutes' + interval '15 minutes', at
        FROM bench_msgs`;
    await tx`
      INSERT INTO sms_outbox (id, org_id, appointment_id, kind, to_phone, body, status, attempts, next_attempt_at, expires_at,
                              provider, failure_reason, created_at, updated_at, sent_at, failed_at)
      SELECT outbox, org_id, appt, 'booked', '+1415' || lpad((2000000 + g)::text, 7, '0'),
             'Hi Pat, your Visit is confirmed for Monday, January 11 at 9:30 AM EST. Reply STOP to opt out.',
             CASE WHEN r < 0.02 THEN 'failed' WHEN r < 0.025 THEN 'pending' ELSE 'sent' END,
             CASE WHEN r < 0.02 THEN 6 ELSE 1 END, at, now() + interval '40 days',
             CASE WHEN r < 0.02 THEN 'twilio' WHEN r < 0.025 THEN NULL WHEN r < 0.07 THEN 'telnyx' ELSE 'twilio' END,
             CASE WHEN r < 0.02 THEN 'retries_exhausted' END, at, at,
             CASE WHEN r >= 0.025 THEN at END, CASE WHEN r < 0.02 THEN at END
        FROM bench_msgs`;
    // Twilio: accepted and delivered (undelivered for 1 %), or refused for the messages that failed or failed over;
    // Telnyx took the ones Twilio refused where the clinic fails over. Written in time order, as the engine writes them.
    await tx`
      INSERT INTO sms_attempts (outbox_id, org_id, provider, account_key, from_number, outcome, error_class, error_code,
                                failed_over, latency_ms, started_at, finished_at, delivery_state, delivery_code)
      SELECT * FROM (
        SELECT m.outbox, m.org_id, 'twilio', m.twilio_key, '+14155550101',
               CASE WHEN m.r < 0.07 AND m.r >= 0.025 OR m.r < 0.02 THEN 'failed' WHEN m.r < 0.025 THEN 'in_flight' ELSE 'accepted' END,
               CASE WHEN m.r < 0.07 AND m.r >= 0.025 OR m.r < 0.02 THEN 'provider' END,
               CASE WHEN m.r < 0.07 AND m.r >= 0.025 OR m.r < 0.02 THEN '21612' END,
               false, (40 + random() * 300)::int, m.at, m.at,
               CASE WHEN m.r >= 0.08 THEN 'delivered' WHEN m.r >= 0.07 THEN 'undelivered' END,
               CASE WHEN m.r >= 0.07 AND m.r < 0.08 THEN '30003' END
          FROM bench_msgs m
        UNION ALL
        SELECT m.outbox, m.org_id, 'telnyx', m.telnyx_key, '+13125550101', 'accepted', NULL, NULL, true, (60 + random() * 200)::int,
               m.at + interval '300 milliseconds', m.at + interval '300 milliseconds', 'delivered', NULL
          FROM bench_msgs m WHERE m.r >= 0.025 AND m.r < 0.07
      ) x ORDER BY 11`;
  });
  await owner`ANALYZE`;
  const [counts] = await owner<{ outbox: number; attempts: number; appts: number }[]>`
    SELECT (SELECT count(*)::int FROM sms_outbox) AS outbox, (SELECT count(*)::int FROM sms_attempts) AS attempts,
           (SELECT count(*)::int FROM appointments) AS appts`;
  console.log(
    `seeded ${CLINICS} clinics, ${counts!.outbox} messages, ${counts!.attempts} attempts, ${counts!.appts} appointments over ${DAYS} days in ${((Date.now() - started) / 1000).toFixed(1)} s`,
  );

  // The serving runtime, probing every account once through the fakes.
  const runtime = await createRuntime({ cfg, secrets, ownerUrl: db.ownerUrl, log: pino({ level: 'silent' }), embedded: true });
  try {
    const probed = Date.now();
    for (;;) {
      const [h] = await owner<{ n: number }[]>`SELECT count(*)::int AS n FROM sms_provider_health WHERE probed_at IS NOT NULL`;
      if (h!.n >= CLINICS + 1) break;
      if (Date.now() - probed > 60_000) throw new Error(`only ${h!.n} accounts probed`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const port = await freePort();
    const server = runtime.app.listen(port, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const { id } = await createSession(runtime.workerSql, { idleMinutes: 60, maxHours: 1 });
    const headers = { Cookie: `ops_session=${id}`, Accept: 'text/html' };
    const render = async (fragment: boolean) => {
      const t = performance.now();
      const res = await fetch(`http://127.0.0.1:${port}/ops`, { headers: fragment ? { ...headers, 'HX-Request': 'true' } : headers });
      const body = await res.text();
      if (res.status !== 200) throw new Error(`GET /ops answered ${res.status}`);
      return { ms: performance.now() - t, bytes: body.length, body };
    };
    const first = await render(false);
    if (!first.body.includes('Clinic 001')) throw new Error('the overview does not list the clinics');
    const links = (first.body.match(/class="link /g) ?? []).length;
    console.log(
      `first render (cold caches: ${CLINICS * 2} links' credentials decrypted): ${first.ms.toFixed(1)} ms, ${(first.bytes / 1024).toFixed(0)} KiB, ${links} links shown`,
    );
    for (let i = 0; i < 10; i++) await render(i % 2 === 0);
    if (process.env.BENCH_PARTS) {
      // Where the time goes: each statement of the overview alone, then the HTML alone.
      const { SeriesCache, readStatus, readDeliverySeries } = await import('../src/sms/status.js');
      const { overviewPage } = await import('../src/http/console/views.js');
      const { healthSettings, readHealth } = await import('../src/sms/health.js');
      const deps = {
        workerSql: runtime.workerSql,
        sql: runtime.sql,
        chains: runtime.sms.chains,
        engine: runtime.sms.engine,
        staleMs: healthSettings(cfg).staleMs,
      };
      const time = async (what: string, fn: () => Promise<unknown>) => {
        const ts: number[] = [];
        for (let i = 0; i < 30; i++) {
          const t = performance.now();
          await fn();
          ts.push(performance.now() - t);
        }
        ts.sort((a, b) => a - b);
        console.log(`  ${what}: p50 ${pct(ts, 50).toFixed(1)} ms, p99 ${pct(ts, 99).toFixed(1)} ms`);
      };
      const report = await readStatus(deps);
      const series = await readDeliverySeries(runtime.workerSql, { hours: 24 });
      await time('readStatus', () => readStatus(deps));
      await time('readHealth', () => readHealth(runtime.workerSql, runtime.sms.chains, { staleMs: deps.staleMs }));
      await time('readDeliverySeries, uncached', () => readDeliverySeries(runtime.workerSql, { hours: 24 }));
      const cache = new SeriesCache();
      await time('readDeliverySeries, finished hours cached', () => readDeliverySeries(runtime.workerSql, { hours: 24, cache }));
      await time('overviewPage (HTML only)', async () => overviewPage(report, series, 'x', 5));
      for (const [label, q] of [
        [
          'attempts last hour',
          owner`EXPLAIN (ANALYZE, BUFFERS) SELECT org_id, account_key, count(*) FROM sms_attempts WHERE started_at >= now() - interval '1 hour' GROUP BY GROUPING SETS ((org_id, account_key), (org_id))`,
        ],
        [
          'outbox',
          owner`EXPLAIN (ANALYZE, BUFFERS) SELECT org_id, count(*) FROM sms_outbox WHERE status IN ('pending', 'sending') GROUP BY org_id`,
        ],
        ['dead letters', owner`EXPLAIN (ANALYZE, BUFFERS) SELECT org_id, count(*) FROM sms_outbox WHERE status = 'failed' GROUP BY org_id`],
        [
          'series',
          owner`EXPLAIN (ANALYZE, BUFFERS) SELECT org_id, floor(EXTRACT(EPOCH FROM started_at) / 3600)::int, count(*) FROM sms_attempts WHERE started_at >= now() - interval '24 hours' AND delivery_state IS NOT NULL GROUP BY 1, 2`,
        ],
      ] as const) {
        const plan = await q;
        console.log(
          `  ${label}: ${(plan as unknown as Array<Record<string, string>>)
            .map((r) => String(Object.values(r)[0]))
            .filter((l) => /Execution Time|Scan|Aggregate/.test(l))
            .join(' | ')}`,
        );
      }
    }
    for (const fragment of [false, true]) {
      const times: number[] = [];
      for (let i = 0; i < RENDERS; i++) times.push((await render(fragment)).ms);
      times.sort((a, b) => a - b);
      const p99 = pct(times, 99);
      console.log(
        `${fragment ? 'GET /ops (htmx fragment)' : 'GET /ops (full page)    '} n=${RENDERS}: p50 ${pct(times, 50).toFixed(1)} ms, p95 ${pct(times, 95).toFixed(1)} ms, ` +
          `p99 ${p99.toFixed(1)} ms, max ${times[times.length - 1]!.toFixed(1)} ms  ${p99 <= TARGET_MS ? 'PASS' : 'FAIL'} (target p99 <= ${TARGET_MS} ms)`,
      );
    }
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  } finally {
    await runtime.close();
    await owner.end();
  }
} finally {
  await twilio.close();
  await telnyx.close();
  await db.stop();
  await fs.rm(dir, { recursive: true, force: true });
}
