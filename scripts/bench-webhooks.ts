/**
 * Provider webhooks against a running server (built with tsc and started with
 * node, as production runs it), with the fake providers in their own process:
 *
 *   1. signed receipt ingestion: N distinct status callbacks, signed as Twilio
 *      signs them (and N Telnyx message.finalized events, Ed25519-signed), for
 *      messages the clinic really has, fired by autocannon. Target >= 1,000
 *      receipts/s, p99 <= 50 ms, 0 lost: counted afterwards in the database
 *      (every event stored and processed, every attempt delivered);
 *   2. from a failure receipt (Twilio 30007) to the resend accepted at the
 *      failover provider (Telnyx), for confirmations the server really sent:
 *      one at a time, then in a burst. Target p99 <= 1 s.
 *
 *   npm run bench:webhooks
 *   BENCH_RECEIPTS=10000 BENCH_CONNECTIONS=16,32 BENCH_FAILURES=200 npm run bench:webhooks
 *   BENCH_CPU_PROF=/tmp/prof npm run bench:webhooks   the server's CPU profile (node --cpu-prof)
 *   BENCH_PG_DIAG=1 npm run bench:webhooks   PostgreSQL time per SQL function after each ingestion phase
 */
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { DateTime } from 'luxon';
import postgres from 'postgres';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import { freePort } from '../src/net.js';
import { telnyxSignature } from '../test/fakes/fake-telnyx.js';
import { DEFAULT_TWILIO_ACCOUNT as TWILIO, signedTwilioPost } from '../test/fakes/fake-twilio.js';
import { DEFAULT_TELNYX_API_KEY } from '../test/fakes/fake-telnyx.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const RECEIPTS = Number(process.env.BENCH_RECEIPTS ?? 10_000);
const CONNECTIONS = (process.env.BENCH_CONNECTIONS ?? '16,32').split(',').map(Number);
const FAILURES = Number(process.env.BENCH_FAILURES ?? 200);
const BURST = Number(process.env.BENCH_BURST ?? 50);
const ADMIN = `bench-admin-${randomUUID()}`;

/** CPU seconds (user + system) of the given processes so far, from /proc; Linux only (0 elsewhere). */
async function cpuSeconds(pids: number[]): Promise<number> {
  let total = 0;
  for (const pid of pids) {
    try {
      const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      total += (Number(fields[11]) + Number(fields[12])) / 100;
    } catch {
      /* exited, or no /proc */
    }
  }
  return total;
}

/** The PostgreSQL server processes of the cluster in dataDir. */
async function postgresPids(dataDir: string): Promise<number[]> {
  const out: number[] = [];
  try {
    for (const d of await fs.readdir('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      try {
        const exe = await fs.readlink(`/proc/${d}/exe`);
        const cwd = await fs.readlink(`/proc/${d}/cwd`);
        if (exe.endsWith('/postgres') && cwd.startsWith(dataDir)) out.push(Number(d));
      } catch {
        /* not ours, or gone */
      }
    }
  } catch {
    /* no /proc */
  }
  return out;
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
};
const fmt = (xs: number[]) =>
  `p50 ${pct(xs, 50).toFixed(0)} ms, p99 ${pct(xs, 99).toFixed(0)} ms, max ${Math.max(...xs).toFixed(0)} ms (n=${xs.length})`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bench-webhooks-'));
  const db = await startEmbeddedPostgres({ dataDir: tmp, settings: process.env.BENCH_PG_DIAG ? { track_functions: 'all' } : {} });
  const owner = postgres(db.ownerUrl, { max: 4, onnotice: () => {} });

  const fakes = fork(path.join(ROOT, 'scripts/fake-providers.ts'), [], { execArgv: ['--import', 'tsx'], stdio: 'inherit' });
  let seq = 0;
  const ask = <T>(msg: Record<string, unknown>) =>
    new Promise<T>((resolve) => {
      const id = ++seq;
      const onMsg = (m: any) => {
        if (m.id === id) {
          fakes.off('message', onMsg);
          resolve(m as T);
        }
      };
      fakes.on('message', onMsg);
      fakes.send({ ...msg, id });
    });
  const urls = await new Promise<{ twilioUrl: string; telnyxUrl: string }>((resolve) => fakes.once('message', (m: any) => resolve(m)));
  // Receipts in this bench are the ones it sends itself.
  await ask({ type: 'receipts', provider: 'twilio', plan: { steps: [] } });
  await ask({ type: 'receipts', provider: 'telnyx', plan: { steps: [] } });

  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  execFileSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], {
    cwd: ROOT,
    stdio: 'inherit',
  });
  const server: ChildProcess = spawn(
    process.execPath,
    [...(process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : []), 'dist/src/main.js'],
    {
      cwd: ROOT,
      env: {
        ...process.env,
        DATABASE_URL: db.ownerUrl,
        PORT: String(port),
        HOST: '127.0.0.1',
        PUBLIC_URL: base,
        DATA_DIR: tmp,
        ADMIN_TOKEN: ADMIN,
        APP_DB_PASSWORD: `bench-app-${randomUUID()}`,
        WORKER_DB_PASSWORD: `bench-worker-${randomUUID()}`,
        SEED_DEMO: 'false',
        LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'info',
        NODE_ENV: 'production',
        JWT_SECRET: `bench-jwt-${randomUUID()}`,
        CREDENTIALS_KEY: `k1:${Buffer.alloc(32, 7).toString('base64')}`,
        TWILIO_API_BASE_URL: urls.twilioUrl,
        TELNYX_API_BASE_URL: `${urls.telnyxUrl}/v2`,
        SMS_WORKER_POLL_MS: '50',
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
  const lines: string[] = [];
  const say = (s: string) => {
    lines.push(s);
    process.stderr.write(`${s}\n`);
  };

  try {
    for (let i = 0; ; i++) {
      try {
        if ((await fetch(`${base}/readyz`)).ok) break;
      } catch {
        /* not yet */
      }
      if (i > 300) throw new Error('server did not become ready');
      await sleep(100);
    }
    const api = async (method: string, p: string, body?: unknown) => {
      const res = await fetch(`${base}${p}`, {
        method,
        headers: { Authorization: `Bearer ${ADMIN}`, 'Content-Type': 'application/json' },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
      if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${await res.text()}`);
      return (await res.json()) as any;
    };
    const telnyxKeys = generateKeyPairSync('ed25519');
    const telnyxPublicKey = Buffer.from((telnyxKeys.publicKey.export({ format: 'jwk' }) as { x: string }).x, 'base64url').toString(
      'base64',
    );
    const twilioLink = { kind: 'twilio', accountSid: TWILIO.sid, authToken: TWILIO.token, senderNumbers: ['+14155550101', '+14155550102'] };
    const telnyxLink = {
      kind: 'telnyx',
      apiKey: DEFAULT_TELNYX_API_KEY,
      senderNumbers: ['+13125550101', '+13125550102'],
      webhookPublicKey: telnyxPublicKey,
    };
    let dayOffset = 0;
    const newClinic = async () => {
      const org = await api('POST', '/api/admin/orgs', {
        name: `Bench Webhooks ${randomUUID().slice(0, 6)}`,
        timeZone: 'America/New_York',
        openingHours: Object.fromEntries(['1', '2', '3', '4', '5', '6', '7'].map((d) => [d, [['00:00', '24:00']]])),
        services: [{ code: 'visit', name: 'Visit', durationMinutes: 15 }],
        practitioners: [{ name: 'Dr. Bench' }],
      });
      await api('PUT', `/api/admin/orgs/${org.id}/sms`, { rateLimitPerHour: 1000, providers: [twilioLink, telnyxLink] });
      return org as { id: string; services: Array<{ id: string }>; practitioners: Array<{ id: string }> };
    };
    /** Appointments and their confirmations, as the booking would write them. */
    const enqueue = async (org: Awaited<ReturnType<typeof newClinic>>, n: number, prefix: string) => {
      const start = DateTime.now()
        .plus({ days: 30 + dayOffset })
        .startOf('day');
      dayOffset += Math.ceil(n / 96) + 1;
      return owner<Array<{ id: string; to_phone: string }>>`
        WITH a AS (
          INSERT INTO appointments (org_id, practitioner_id, service_id, patient_name, patient_phone, starts_at, ends_at)
          SELECT ${org.id}, ${org.practitioners[0]!.id}, ${org.services[0]!.id}, 'Bench Patient ' || i,
                 ${prefix} || lpad(i::text, 7, '0'),
                 ${start.toJSDate()}::timestamptz + (i * interval '15 minutes'),
                 ${start.toJSDate()}::timestamptz + ((i + 1) * interval '15 minutes')
            FROM generate_series(0, ${n - 1}) i
          RETURNING id, patient_phone, starts_at)
        INSERT INTO sms_outbox (org_id, appointment_id, kind, to_phone, body, expires_at)
        SELECT ${org.id}, a.id, 'booked', a.patient_phone, 'Hi Bench, your appointment is confirmed. Reply STOP to opt out.', a.starts_at FROM a
        RETURNING id, to_phone`;
    };

    // 1. Signed receipt ingestion, for messages the clinic has (accepted attempts seeded directly).
    for (const [provider, connections] of CONNECTIONS.flatMap((c) => (['twilio', 'telnyx'] as const).map((p) => [p, c] as const))) {
      const org = await newClinic();
      const rows = await enqueue(org, RECEIPTS, provider === 'twilio' ? '+1415' : '+1312');
      // As the adapters name their accounts (providers/twilio.ts, providers/telnyx.ts).
      const account =
        provider === 'twilio'
          ? `twilio:${TWILIO.sid}`
          : `telnyx:${createHash('sha256').update(DEFAULT_TELNYX_API_KEY).digest('hex').slice(0, 8)}`;
      const ids = rows.map((r) => r.id);
      const pmids = rows.map((_, i) => (provider === 'twilio' ? `SM${String(i).padStart(32, '0')}` : randomUUID()));
      await owner`UPDATE sms_outbox SET status = 'sent', sent_at = now(), provider = ${provider} WHERE id = ANY(${ids}::uuid[])`;
      await owner`
        INSERT INTO sms_attempts (outbox_id, org_id, provider, account_key, from_number, outcome, provider_message_id, finished_at)
        SELECT o, ${org.id}, ${provider}, ${account}, '+14155550101', 'accepted', p, now()
          FROM unnest(${ids}::uuid[], ${pmids}::text[]) AS t(o, p)`;
      const path = provider === 'twilio' ? `/webhooks/twilio/${org.id}/status` : `/webhooks/telnyx/${org.id}`;
      const requests = rows.map((r, i) => {
        const url = `${base}${path}?m=${r.id}`;
        if (provider === 'twilio') {
          const { headers, body } = signedTwilioPost(
            url,
            {
              ApiVersion: '2010-04-01',
              AccountSid: TWILIO.sid,
              MessageSid: pmids[i]!,
              SmsSid: pmids[i]!,
              MessageStatus: 'delivered',
              SmsStatus: 'delivered',
              From: '+14155550101',
              To: r.to_phone,
            },
            TWILIO.token,
          );
          return { path: `${path}?m=${r.id}`, headers, body };
        }
        const body = JSON.stringify({
          data: {
            record_type: 'event',
            id: randomUUID(),
            event_type: 'message.finalized',
            occurred_at: new Date().toISOString(),
            payload: { id: pmids[i], to: [{ phone_number: r.to_phone, status: 'delivered' }], errors: [], webhook_url: url },
          },
          meta: { attempt: 1, delivered_to: url },
        });
        return {
          path: `${path}?m=${r.id}`,
          headers: { 'content-type': 'application/json', ...telnyxSignature(body, Math.floor(Date.now() / 1000), telnyxKeys.privateKey) },
          body,
        };
      });
      let next = 0;
      let lastAnswer = 0;
      if (process.env.BENCH_PG_DIAG) await owner`SELECT pg_stat_reset()`;
      const pgPids = await postgresPids(tmp);
      const cpu0 = { self: process.cpuUsage(), server: await cpuSeconds([server.pid!]), pg: await cpuSeconds(pgPids) };
      const t0 = performance.now();
      const result = await autocannon({
        url: base,
        connections,
        amount: RECEIPTS,
        requests: [
          {
            method: 'POST',
            setupRequest: (req: any) => {
              const r = requests[next++ % requests.length]!;
              return { ...req, path: r.path, headers: r.headers, body: r.body };
            },
            onResponse: () => {
              lastAnswer = performance.now();
            },
          },
        ],
      });
      // Up to the last answer: autocannon itself returns only at its next one-second sampling tick.
      const secs = ((lastAnswer || performance.now()) - t0) / 1000;
      const selfCpu = process.cpuUsage(cpu0.self);
      const cpu = {
        load: (selfCpu.user + selfCpu.system) / 1e6,
        server: (await cpuSeconds([server.pid!])) - cpu0.server,
        pg: (await cpuSeconds(pgPids)) - cpu0.pg,
      };
      // Then everything must be in the database: stored, processed, applied.
      const count = async () =>
        (
          await owner<Array<{ stored: number; processed: number; delivered: number }>>`
          SELECT (SELECT count(*)::int FROM sms_webhook_events WHERE org_id = ${org.id}) AS stored,
                 (SELECT count(*)::int FROM sms_webhook_events WHERE org_id = ${org.id} AND processed_at IS NOT NULL) AS processed,
                 (SELECT count(*)::int FROM sms_attempts WHERE org_id = ${org.id} AND delivery_state = 'delivered') AS delivered`
        )[0]!;
      let c = await count();
      const deadline = Date.now() + 60_000;
      while ((c.processed < c.stored || c.delivered < RECEIPTS) && Date.now() < deadline) {
        await sleep(100);
        c = await count();
      }
      const applySecs = (performance.now() - t0) / 1000;
      const ok2xx = result['2xx'];
      const lost = RECEIPTS - c.delivered;
      const rate = ok2xx / secs;
      say(
        `${provider} receipts: ${ok2xx}/${RECEIPTS} answered 2xx in ${secs.toFixed(2)} s = ${rate.toFixed(0)} receipts/s (c=${connections}), ` +
          `latency p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms, max ${result.latency.max} ms; non-2xx ${result.non2xx}, errors ${result.errors}, timeouts ${result.timeouts}; ` +
          `in the database: ${c.stored} stored, ${c.processed} processed, ${c.delivered} delivered after ${applySecs.toFixed(2)} s, lost ${lost} ` +
          `[target >= 1000/s, p99 <= 50 ms, 0 lost: ${rate >= 1000 && result.latency.p99 <= 50 && lost === 0 && ok2xx === RECEIPTS ? 'MET' : 'NOT MET'}]`,
      );
      if (process.env.BENCH_PG_DIAG) {
        process.stderr.write(
          execFileSync(process.execPath, ['--import', 'tsx', 'scripts/pg-function-stats.ts', db.ownerUrl], { cwd: ROOT }).toString(),
        );
      }
      const per = (x: number) => ((x / RECEIPTS) * 1000).toFixed(2);
      say(
        `${provider} receipts, CPU while firing (${secs.toFixed(2)} s on ${os.cpus().length} cpus, load average ${os.loadavg()[0]!.toFixed(1)}): ` +
          `server ${cpu.server.toFixed(2)} s (${per(cpu.server)} ms/receipt), PostgreSQL ${cpu.pg.toFixed(2)} s (${per(cpu.pg)} ms), load generator ${cpu.load.toFixed(2)} s (${per(cpu.load)} ms)`,
      );
    }

    // 2. From a failure receipt to the resend accepted at the failover provider.
    {
      const org = await newClinic();
      const rows = await enqueue(org, FAILURES + BURST, '+1646');
      for (;;) {
        const [r] = await owner<
          { n: number }[]
        >`SELECT count(*)::int AS n FROM sms_outbox WHERE org_id = ${org.id} AND status = 'sent' AND kind = 'booked'`;
        if (r!.n === rows.length) break;
        await sleep(100);
      }
      const sent = await owner<Array<{ id: string; to_phone: string; provider_message_id: string; from_number: string }>>`
        SELECT id, to_phone, provider_message_id, from_number FROM sms_outbox WHERE org_id = ${org.id} AND kind = 'booked' ORDER BY to_phone`;
      const fire = async (m: (typeof sent)[number]) => {
        const url = `${base}/webhooks/twilio/${org.id}/status?m=${m.id}`;
        const { headers, body } = signedTwilioPost(
          url,
          {
            ApiVersion: '2010-04-01',
            AccountSid: TWILIO.sid,
            MessageSid: m.provider_message_id,
            MessageStatus: 'undelivered',
            ErrorCode: '30007',
            From: m.from_number,
            To: m.to_phone,
          },
          TWILIO.token,
        );
        const t0 = Date.now();
        const res = await fetch(url, { method: 'POST', headers, body });
        await res.text();
        return { t0, ack: Date.now() - t0, status: res.status, to: m.to_phone };
      };
      const accepted = async (fired: Array<{ t0: number; to: string }>) => {
        const deadline = Date.now() + 30_000;
        for (;;) {
          const { messages } = await ask<{ messages: Array<{ to: string; at: number }> }>({ type: 'messages', provider: 'telnyx' });
          const at = new Map(messages.map((m) => [m.to, m.at]));
          if (fired.every((f) => at.has(f.to)) || Date.now() > deadline)
            return fired.map((f) => (at.has(f.to) ? at.get(f.to)! - f.t0 : Number.NaN));
          await sleep(50);
        }
      };
      const one: number[] = [];
      const acks: number[] = [];
      for (const m of sent.slice(0, FAILURES)) {
        const f = await fire(m);
        acks.push(f.ack);
        const [ms] = await accepted([f]);
        one.push(ms!);
      }
      const burstFired = await Promise.all(sent.slice(FAILURES).map(fire));
      const burst = await accepted(burstFired);
      const missing = [...one, ...burst].filter((x) => Number.isNaN(x)).length;
      const [resends] = await owner<
        { n: number }[]
      >`SELECT count(*)::int AS n FROM sms_outbox WHERE org_id = ${org.id} AND kind = 'booked:resend'`;
      say(`failure receipt (30007) answered: ${fmt(acks)}`);
      say(
        `failure receipt -> resend accepted at Telnyx, one at a time: ${fmt(one.filter((x) => !Number.isNaN(x)))} [target p99 <= 1000 ms: ${pct(one, 99) <= 1000 && missing === 0 ? 'MET' : 'NOT MET'}]`,
      );
      say(
        `failure receipt -> resend accepted at Telnyx, ${BURST} at once: ${fmt(burst.filter((x) => !Number.isNaN(x)))} [target p99 <= 1000 ms: ${pct(burst, 99) <= 1000 && missing === 0 ? 'MET' : 'NOT MET'}]`,
      );
      say(`resend rows ${resends!.n} for ${sent.length} failure receipts; missing resends ${missing}`);
    }
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
    await owner.end();
    fakes.disconnect();
    await db.stop();
    await fs.rm(tmp, { recursive: true, force: true });
  }
  process.stdout.write(
    [`bench:webhooks  ${new Date().toISOString()}  node ${process.version}  ${os.cpus().length} cpu`, ...lines].join('\n') + '\n',
  );
}

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
