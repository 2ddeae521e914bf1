/**
 * Booking throughput and latency, over HTTP against a running server, next to
 * the ceiling: the identical booking SQL (book_appointment) driven directly
 * through postgres.js as the same database role, in the same run.
 *
 *   npm run bench:booking                 # embedded PostgreSQL in a temp dir
 *   DATABASE_URL=postgres://... npm run bench:booking
 *   BENCH_SECONDS=10 BENCH_CONCURRENCY=1,16,64 npm run bench:booking
 *   npm run bench:booking -- --platform retell            # vapi (default) | retell | elevenlabs
 *   npm run bench:booking -- --platform vapi,retell,elevenlabs
 *
 * --platform picks the door the HTTP phases book through: Vapi's tool-calls
 * envelope with a Bearer token, Retell's {name, call, args} signed with the
 * clinic's Retell key (X-Retell-Signature, computed per request), or
 * ElevenLabs' flat body with a Bearer token. Several platforms run one after
 * another at each level, against the same server, each with its ratio to Vapi.
 * BENCH_ROUNDS=3 repeats them in rotated order (vapi, retell, elevenlabs; then
 * retell, elevenlabs, vapi; ...) so that drift during the run (a growing
 * table, other load on the cores) falls on every platform alike; each
 * platform's figure is then its bookings over its time across the rounds.
 *
 * Bookings/s counts rows that actually appeared in the table, not HTTP 200s.
 *
 * BENCH_SMS=sandbox gives the clinic SMS through the sandbox provider (each
 * booking writes and sends its confirmation) with a contact number, and
 * BENCH_REMINDER_OFFSETS=1440,120 its reminder schedule (empty: none).
 *
 * --reminders 1440,120 measures what scheduling reminders adds to a booking
 * in one run: a second clinic, identical (sandbox SMS, the same contact
 * number) but for that reminder schedule, is booked through Vapi as the door
 * "vapi+reminders", rotated with the others by BENCH_ROUNDS like a platform,
 * and its throughput is printed as a ratio to plain Vapi's.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, createHmac, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { DateTime } from 'luxon';
import postgres, { type Sql } from 'postgres';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import { freePort } from '../src/net.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const LEVELS = (process.env.BENCH_CONCURRENCY ?? '1,16,64').split(',').map(Number);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 1));
const PRACTITIONERS = 20;
const ADMIN = `bench-admin-${randomUUID()}`;
const APP_PW = `bench-app-${randomUUID()}`;
const ZONE = 'America/New_York';

/** A flag's value, as `--name value` or `--name=value`; undefined when it is absent. */
const flag = (name: string) => {
  const i = process.argv.findIndex((a) => a === name || a.startsWith(`${name}=`));
  if (i < 0) return undefined;
  return process.argv[i]!.includes('=') ? process.argv[i]!.split('=')[1]! : (process.argv[i + 1] ?? '');
};

/** Minutes before the appointment for the "vapi+reminders" door; undefined: no such door. */
const REMINDERS: number[] | undefined = (() => {
  const raw = flag('--reminders');
  if (raw === undefined) return undefined;
  const list = raw.split(',').filter(Boolean).map(Number);
  if (list.length === 0 || list.some((m) => !Number.isInteger(m) || m <= 0)) {
    process.stderr.write(`--reminders takes minutes before the appointment, comma-separated (e.g. 1440,120), not "${raw}"\n`);
    process.exit(2);
  }
  return list;
})();

type Platform = 'vapi' | 'retell' | 'elevenlabs' | 'vapi+reminders';
const PLATFORMS: Platform[] = (() => {
  const raw = flag('--platform') ?? 'vapi';
  const list = raw
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  const bad = list.filter((p) => !['vapi', 'retell', 'elevenlabs'].includes(p));
  if (list.length === 0 || bad.length) {
    process.stderr.write(`--platform takes vapi, retell or elevenlabs (comma-separated for several), not "${raw}"\n`);
    process.exit(2);
  }
  const doors = list as Platform[];
  if (REMINDERS) {
    if (!doors.includes('vapi')) doors.unshift('vapi');
    doors.splice(doors.indexOf('vapi') + 1, 0, 'vapi+reminders');
  }
  return doors;
})();

interface Result {
  label: string;
  concurrency: number;
  /** Set on one round of several; the combined row has none. */
  round?: number;
  booked?: number;
  seconds?: number;
  bookingsPerSec: number;
  p50: number;
  p99: number;
  /** CPU time the server process used in the phase (Linux): per booking, it does not move with other load on the machine. */
  serverCpuMs?: number;
  errors: number;
}

/** Hands out distinct (practitioner, slot) pairs: 15-minute slots, round-robin over practitioners. */
function slotSource(firstDay: DateTime) {
  let i = 0;
  return () => {
    const n = i++;
    const practitioner = n % PRACTITIONERS;
    const slot = Math.floor(n / PRACTITIONERS);
    const start = firstDay.plus({ minutes: 15 * slot });
    return { practitioner, start, n };
  };
}

async function main() {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bench-booking-'));
  let ownerUrl = process.env.DATABASE_URL;
  const embedded = ownerUrl ? undefined : await startEmbeddedPostgres({ dataDir: tmp });
  ownerUrl ??= embedded!.ownerUrl;
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  // The server runs as production does: compiled by tsc, started with node.
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
        DATABASE_URL: ownerUrl,
        PORT: String(port),
        DATA_DIR: tmp,
        ADMIN_TOKEN: ADMIN,
        APP_DB_PASSWORD: APP_PW,
        SEED_DEMO: 'false',
        LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'info',
        NODE_ENV: 'production',
        JWT_SECRET: `bench-jwt-${randomUUID()}`,
        CREDENTIALS_KEY: `k1:${Buffer.alloc(32, 7).toString('base64')}`,
        WORKER_DB_PASSWORD: `bench-worker-${randomUUID()}`,
      },
      // Server logs go nowhere, but they are still produced and serialised.
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
  const owner = postgres(ownerUrl, { max: 2, onnotice: () => {} });
  let direct: Sql | undefined;
  try {
    await waitFor(`${base}/readyz`);
    const admin = { Authorization: `Bearer ${ADMIN}`, 'Content-Type': 'application/json' };
    const orgBody = {
      name: 'Bench Clinic',
      timeZone: ZONE,
      openingHours: Object.fromEntries(['1', '2', '3', '4', '5', '6', '7'].map((d) => [d, [['00:00', '24:00']]])),
      services: [{ code: 'visit', name: 'Visit', durationMinutes: 15 }],
      practitioners: Array.from({ length: PRACTITIONERS }, (_, i) => ({ name: `Dr. Bench ${String(i).padStart(2, '0')}` })),
    };
    const org = await post(`${base}/api/admin/orgs`, admin, orgBody);
    const tokenFor = async (c: { clientId: string; clientSecret: string }) => {
      const res = await fetch(`${base}/oauth/token`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: c.clientSecret }),
      });
      return ((await res.json()) as { access_token: string }).access_token;
    };
    const client = await post(`${base}/api/admin/orgs/${org.id}/clients`, admin, {});
    const sandboxSms = async (orgId: string, offsets: number[]) => {
      const sms = await fetch(`${base}/api/admin/orgs/${orgId}/sms`, {
        method: 'PUT',
        headers: admin,
        body: JSON.stringify({
          rateLimitPerHour: 1000,
          contactPhone: '+14155550100',
          reminderOffsetsMinutes: offsets,
          providers: [{ kind: 'sandbox' }],
        }),
      });
      if (!sms.ok) throw new Error(`configuring SMS: ${sms.status} ${await sms.text()}`);
    };
    // With --reminders both clinics text through the sandbox, so that the reminder rows are the only difference.
    if (process.env.BENCH_SMS === 'sandbox' || REMINDERS) {
      const offsets = REMINDERS ? [] : (process.env.BENCH_REMINDER_OFFSETS ?? '').split(',').filter(Boolean).map(Number);
      await sandboxSms(org.id, offsets);
      process.stderr.write(`SMS: sandbox, reminders ${offsets.length ? offsets.join(', ') + ' minutes before' : 'none'}\n`);
    }
    const reminderClinic = REMINDERS
      ? await (async () => {
          const o = await post(`${base}/api/admin/orgs`, admin, { ...orgBody, name: 'Bench Clinic (reminders)' });
          const c = await post(`${base}/api/admin/orgs/${o.id}/clients`, admin, {});
          await sandboxSms(o.id, REMINDERS);
          process.stderr.write(`vapi+reminders: a second clinic, reminders ${REMINDERS.join(', ')} minutes before\n`);
          return { org: o, token: await tokenFor(c) };
        })()
      : undefined;
    const retellKey = `key_bench_${randomUUID().replace(/-/g, '')}`;
    const patched = await fetch(`${base}/api/admin/orgs/${org.id}`, {
      method: 'PATCH',
      headers: admin,
      body: JSON.stringify({ retellApiKey: retellKey }),
    });
    if (!patched.ok) throw new Error(`setting the Retell key: ${patched.status}`);
    const token = await tokenFor(client);
    const practitioners: Array<{ id: string; name: string }> = org.practitioners;
    const serviceId: string = org.services[0].id;

    const orgOf = (platform: Platform): string => (platform === 'vapi+reminders' ? reminderClinic!.org.id : org.id);
    const count = async (orgId: string = org.id) =>
      (await owner<{ n: number }[]>`SELECT count(*)::int AS n FROM appointments WHERE org_id = ${orgId}`)[0]!.n;
    const start0 = DateTime.now().setZone(ZONE).startOf('day').plus({ days: 2 });
    const results: Result[] = [];

    // HTTP: the full path a tool call takes through the chosen door (credential, envelope, org check, zod, booking).
    let day = 0;
    const bookingArgs = (s: ReturnType<ReturnType<typeof slotSource>>) => ({
      patientName: `Patient ${s.n}`,
      patientPhone: `+1415555${String(1000 + (s.n % 9000)).padStart(4, '0')}`,
      appointmentDate: s.start.toISODate(),
      appointmentTime: s.start.toFormat('HH:mm'),
      serviceType: 'visit',
      practitioner: practitioners[s.practitioner]!.name,
    });
    /** One request as the platform sends it: path, headers, raw body. */
    const requestFor = (platform: Platform, s: ReturnType<ReturnType<typeof slotSource>>) => {
      if (platform === 'retell') {
        const body = JSON.stringify({
          name: 'bookClinicAppointment',
          call: { call_id: `bench-call-${s.n}`, call_type: 'phone_call', direction: 'inbound', from_number: '+14155550100', metadata: {} },
          args: bookingArgs(s),
        });
        const ts = String(Date.now());
        const sig = `v=${ts},d=${createHmac('sha256', retellKey).update(body).update(ts).digest('hex')}`;
        return { path: `/api/retell/${org.id}/tools`, headers: { 'X-Retell-Signature': sig, 'Content-Type': 'application/json' }, body };
      }
      const bearer = {
        Authorization: `Bearer ${platform === 'vapi+reminders' ? reminderClinic!.token : token}`,
        'Content-Type': 'application/json',
      };
      if (platform === 'elevenlabs') {
        return {
          path: '/api/elevenlabs/tools/bookClinicAppointment',
          headers: bearer,
          body: JSON.stringify({ ...bookingArgs(s), conversationId: `bench-call-${s.n}`, callerNumber: '+14155550100' }),
        };
      }
      const body = {
        message: {
          type: 'tool-calls',
          call: { id: `bench-call-${s.n}` },
          toolCallList: [
            {
              id: `call_${randomUUID()}`,
              type: 'function',
              function: { name: 'bookClinicAppointment', arguments: JSON.stringify(bookingArgs(s)) },
            },
          ],
        },
      };
      return { path: '/api/vapi/tools', headers: bearer, body: JSON.stringify(body) };
    };
    const httpPhase = async (platform: Platform, concurrency: number, seconds: number, measure: boolean, round = 0) => {
      const next = slotSource(start0.plus({ days: day }));
      day += 40;
      const before = await count(orgOf(platform));
      const cpu0 = serverCpuMs(server.pid);
      const t0 = performance.now();
      const first = requestFor(platform, next());
      const r = await autocannon({
        url: `${base}${first.path}`,
        connections: concurrency,
        duration: seconds,
        requests: [
          {
            method: 'POST',
            setupRequest: (req: autocannon.Request) => {
              const one = requestFor(platform, next());
              return { ...req, path: one.path, headers: one.headers, body: one.body };
            },
          },
        ],
      });
      const elapsed = (performance.now() - t0) / 1000;
      const cpu1 = serverCpuMs(server.pid);
      const booked = (await count(orgOf(platform))) - before;
      if (measure) {
        results.push({
          label: `HTTP ${platform}`,
          concurrency,
          round,
          booked,
          seconds: elapsed,
          ...(cpu0 !== null && cpu1 !== null ? { serverCpuMs: cpu1 - cpu0 } : {}),
          bookingsPerSec: booked / elapsed,
          p50: r.latency.p50,
          p99: r.latency.p99,
          errors: r.errors + r.non2xx + Math.max(0, r.requests.total - booked),
        });
      }
    };

    // Ceiling: the same function call, same role, no HTTP, no JSON envelope, no org lookup.
    direct = postgres(
      new URL(ownerUrl).protocol + '//' + `clinic_app:${encodeURIComponent(APP_PW)}@` + new URL(ownerUrl).host + new URL(ownerUrl).pathname,
      {
        max: Math.max(...LEVELS),
        onnotice: () => {},
      },
    );
    const ids = practitioners.map((p) => p.id);
    const sqlPhase = async (concurrency: number, seconds: number) => {
      const next = slotSource(start0.plus({ days: day }));
      day += 40;
      const before = await count();
      const latencies: number[] = [];
      const deadline = performance.now() + seconds * 1000;
      const t0 = performance.now();
      let errors = 0;
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (performance.now() < deadline) {
            const s = next();
            const t = performance.now();
            try {
              await direct!`
                SELECT book_appointment(${org.id}::uuid, ${client.clientId}, ${`vapi:call_${randomUUID()}`}, 'bookClinicAppointment',
                  ${createHash('sha256').update(String(s.n)).digest('hex')}, ${[ids[s.practitioner]!]}::uuid[],
                  ${serviceId}::uuid, ${s.start.toJSDate()}, ${s.start.plus({ minutes: 15 }).toJSDate()},
                  ${`Patient ${s.n}`}, ${`+1415555${String(1000 + (s.n % 9000)).padStart(4, '0')}`}, ${null}, ${`bench-call-${s.n}`},
                  ${null}::uuid, ${null}, ${null}, ${false}, '[]'::jsonb) AS r`;
            } catch (err) {
              if (errors++ === 0) process.stderr.write(`ceiling error: ${(err as Error).message}\n`);
            }
            latencies.push(performance.now() - t);
          }
        }),
      );
      const elapsed = (performance.now() - t0) / 1000;
      const booked = (await count()) - before;
      latencies.sort((a, b) => a - b);
      const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? 0;
      results.push({ label: 'SQL ceiling', concurrency, bookingsPerSec: booked / elapsed, p50: pct(50), p99: pct(99), errors });
    };

    process.stderr.write(`warming up (${Math.min(3, SECONDS)} s)...\n`);
    for (const p of PLATFORMS) await httpPhase(p, 16, Math.min(3, SECONDS), false);
    for (const c of LEVELS) {
      for (let round = 0; round < ROUNDS; round++) {
        for (const p of PLATFORMS.map((_, i) => PLATFORMS[(i + round) % PLATFORMS.length]!)) {
          process.stderr.write(`HTTP ${p} c=${c} round ${round + 1}/${ROUNDS} for ${SECONDS} s...\n`);
          await httpPhase(p, c, SECONDS, true, round);
        }
      }
      if (ROUNDS > 1) {
        for (const p of PLATFORMS) {
          const rounds = results.filter((r) => r.label === `HTTP ${p}` && r.concurrency === c);
          const sum = (f: (r: Result) => number) => rounds.reduce((t, r) => t + f(r), 0);
          results.push({
            label: `HTTP ${p}`,
            concurrency: c,
            bookingsPerSec: sum((r) => r.booked ?? 0) / sum((r) => r.seconds ?? 0),
            p50: sum((r) => r.p50) / rounds.length,
            p99: Math.max(...rounds.map((r) => r.p99)),
            errors: sum((r) => r.errors),
            ...(rounds.every((r) => r.serverCpuMs !== undefined)
              ? { booked: sum((r) => r.booked ?? 0), serverCpuMs: sum((r) => r.serverCpuMs ?? 0) }
              : {}),
          });
        }
      }
      process.stderr.write(`SQL  c=${c} for ${SECONDS} s...\n`);
      await sqlPhase(c, SECONDS);
    }

    const [overlaps] = await owner<{ n: number }[]>`
      SELECT count(*)::int AS n FROM appointments a JOIN appointments b
        ON a.org_id = b.org_id AND a.practitioner_id = b.practitioner_id AND a.id < b.id
       AND a.starts_at < b.ends_at AND b.starts_at < a.ends_at`;
    if (reminderClinic) {
      // Proof that the door did what it is named for: every booking there scheduled its reminders.
      const [r] = await owner<{ booked: number; reminders: number }[]>`
        SELECT (SELECT count(*)::int FROM appointments WHERE org_id = ${reminderClinic.org.id}) AS booked,
               (SELECT count(*)::int FROM sms_outbox WHERE org_id = ${reminderClinic.org.id} AND kind LIKE 'reminder:%') AS reminders`;
      process.stdout.write(`vapi+reminders clinic: ${r!.booked} bookings, ${r!.reminders} reminder rows scheduled\n`);
    }
    report(results, overlaps!.n);
  } finally {
    await direct?.end();
    await owner.end();
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
    await embedded?.stop();
    await fs.rm(tmp, { recursive: true, force: true });
  }
}

function report(results: Result[], overlaps: number) {
  // With several rounds, the row without a round number is the platform's figure over all of them.
  const combined = (label: string, c: number) =>
    results.find((r) => r.label === label && r.concurrency === c && (ROUNDS === 1 || r.round === undefined));
  const rows = results.map(
    (r) =>
      `| ${(r.round === undefined || ROUNDS === 1 ? r.label : `${r.label} #${r.round + 1}`).padEnd(18)} | ${String(r.concurrency).padStart(3)} | ${r.bookingsPerSec.toFixed(0).padStart(6)} | ${r.p50.toFixed(1).padStart(6)} | ${r.p99.toFixed(1).padStart(6)} | ${String(r.errors).padStart(5)} | ${r.serverCpuMs !== undefined && r.booked ? (r.serverCpuMs / r.booked).toFixed(2).padStart(9) : '        -'} |`,
  );
  const lines = [
    `bench:booking  ${new Date().toISOString()}  node ${process.version}  ${os.cpus().length} cpu  ${SECONDS}s per phase  platforms ${PLATFORMS.join(',')}  rounds ${ROUNDS}`,
    '| path               |   c | book/s |  p50ms |  p99ms |  errs | cpu ms/bk |',
    '|--------------------|-----|--------|--------|--------|-------|-----------|',
    ...rows,
  ];
  for (const c of LEVELS) {
    const s = results.find((r) => r.label === 'SQL ceiling' && r.concurrency === c);
    const vapi = combined('HTTP vapi', c);
    for (const p of PLATFORMS) {
      const h = combined(`HTTP ${p}`, c);
      if (h && s) lines.push(`ratio HTTP ${p}/ceiling at c=${c}: ${(h.bookingsPerSec / s.bookingsPerSec).toFixed(2)}`);
      if (h && vapi && p !== 'vapi') {
        lines.push(
          `ratio ${p}/vapi at c=${c}: ${(h.bookingsPerSec / vapi.bookingsPerSec).toFixed(2)}${p === 'vapi+reminders' ? '' : ' (target >= 0.90)'}`,
        );
        if (p === 'vapi+reminders') {
          lines.push(
            `cost of scheduling reminders at c=${c}: ${((1 - h.bookingsPerSec / vapi.bookingsPerSec) * 100).toFixed(1)} % of throughput (target <= 10 %)`,
          );
        }
        const per = (r: Result) => (r.serverCpuMs !== undefined && r.booked ? r.serverCpuMs / r.booked : undefined);
        const [ph, pv] = [per(h), per(vapi)];
        if (ph !== undefined && pv !== undefined) lines.push(`server CPU per booking ${p}/vapi at c=${c}: ${(ph / pv).toFixed(2)}`);
      }
    }
  }
  const t = combined('HTTP vapi', 16);
  const s16 = results.find((r) => r.label === 'SQL ceiling' && r.concurrency === 16);
  if (t && s16) {
    const ok = t.bookingsPerSec >= 1000 && t.p99 <= 25 && t.bookingsPerSec / s16.bookingsPerSec >= 0.6;
    lines.push(`target at c=16 (>=1000 book/s, p99 <= 25 ms, ratio >= 0.6): ${ok ? 'MET' : 'NOT MET'}`);
  }
  lines.push(`overlapping appointments in the table after the run: ${overlaps}`);
  process.stdout.write(lines.join('\n') + '\n');
}

async function post(url: string, headers: Record<string, string>, body: unknown) {
  const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`${url}: ${res.status} ${await res.text()}`);
  return (await res.json()) as any;
}

async function waitFor(url: string) {
  for (let i = 0; i < 300; i++) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url} never became ready`);
}

/** User + system CPU of a process so far, from /proc (Linux); null elsewhere. */
function serverCpuMs(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14 and 15 of stat(5), counted after the command name: utime and stime, in clock ticks (100 per second on Linux).
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return null;
  }
}

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
