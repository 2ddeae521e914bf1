/**
 * Booking throughput and latency, over HTTP against a running server, next to
 * the ceiling: the identical booking SQL (book_appointment) driven directly
 * through postgres.js as the same database role, in the same run.
 *
 *   npm run bench:booking                 # embedded PostgreSQL in a temp dir
 *   DATABASE_URL=postgres://... npm run bench:booking
 *   BENCH_SECONDS=10 BENCH_CONCURRENCY=1,16,64 npm run bench:booking
 *
 * Bookings/s counts rows that actually appeared in the table, not HTTP 200s.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
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
const PRACTITIONERS = 20;
const ADMIN = `bench-admin-${randomUUID()}`;
const APP_PW = `bench-app-${randomUUID()}`;
const ZONE = 'America/New_York';

interface Result {
  label: string;
  concurrency: number;
  bookingsPerSec: number;
  p50: number;
  p99: number;
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
  execFileSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
  const server: ChildProcess = spawn(process.execPath, [...(process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : []), 'dist/src/main.js'], {
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
  });
  const owner = postgres(ownerUrl, { max: 2, onnotice: () => {} });
  let direct: Sql | undefined;
  try {
    await waitFor(`${base}/readyz`);
    const admin = { Authorization: `Bearer ${ADMIN}`, 'Content-Type': 'application/json' };
    const org = await post(`${base}/api/admin/orgs`, admin, {
      name: 'Bench Clinic',
      timeZone: ZONE,
      openingHours: Object.fromEntries(['1', '2', '3', '4', '5', '6', '7'].map((d) => [d, [['00:00', '24:00']]])),
      services: [{ code: 'visit', name: 'Visit', durationMinutes: 15 }],
      practitioners: Array.from({ length: PRACTITIONERS }, (_, i) => ({ name: `Dr. Bench ${String(i).padStart(2, '0')}` })),
    });
    const client = await post(`${base}/api/admin/orgs/${org.id}/clients`, admin, {});
    const tokenRes = await fetch(`${base}/oauth/token`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: client.clientId, client_secret: client.clientSecret }),
    });
    const token = ((await tokenRes.json()) as { access_token: string }).access_token;
    const practitioners: Array<{ id: string; name: string }> = org.practitioners;
    const serviceId: string = org.services[0].id;

    const count = async () => (await owner<{ n: number }[]>`SELECT count(*)::int AS n FROM appointments WHERE org_id = ${org.id}`)[0]!.n;
    const start0 = DateTime.now().setZone(ZONE).startOf('day').plus({ days: 2 });
    const results: Result[] = [];

    // HTTP: the full path a Vapi tool call takes (JWT, envelope, org check, zod, booking).
    let day = 0;
    const httpPhase = async (concurrency: number, seconds: number, measure: boolean) => {
      const next = slotSource(start0.plus({ days: day }));
      day += 40;
      const before = await count();
      const t0 = performance.now();
      const r = await autocannon({
        url: `${base}/api/vapi/tools`,
        connections: concurrency,
        duration: seconds,
        requests: [
          {
            method: 'POST',
            headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
            setupRequest: (req: autocannon.Request) => {
              const s = next();
              const body = {
                message: {
                  type: 'tool-calls',
                  call: { id: `bench-call-${s.n}` },
                  toolCallList: [
                    {
                      id: `call_${randomUUID()}`,
                      type: 'function',
                      function: {
                        name: 'bookClinicAppointment',
                        arguments: JSON.stringify({
                          patientName: `Patient ${s.n}`,
                          patientPhone: `+1415555${String(1000 + (s.n % 9000)).padStart(4, '0')}`,
                          appointmentDate: s.start.toISODate(),
                          appointmentTime: s.start.toFormat('HH:mm'),
                          serviceType: 'visit',
                          practitioner: practitioners[s.practitioner]!.name,
                        }),
                      },
                    },
                  ],
                },
              };
              return { ...req, body: JSON.stringify(body) };
            },
          },
        ],
      });
      const elapsed = (performance.now() - t0) / 1000;
      const booked = (await count()) - before;
      if (measure) {
        results.push({
          label: 'HTTP',
          concurrency,
          bookingsPerSec: booked / elapsed,
          p50: r.latency.p50,
          p99: r.latency.p99,
          errors: r.errors + r.non2xx + Math.max(0, r.requests.total - booked),
        });
      }
    };

    // Ceiling: the same function call, same role, no HTTP, no JSON envelope, no org lookup.
    direct = postgres(new URL(ownerUrl).protocol + '//' + `clinic_app:${encodeURIComponent(APP_PW)}@` + new URL(ownerUrl).host + new URL(ownerUrl).pathname, {
      max: Math.max(...LEVELS),
      onnotice: () => {},
    });
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
                  ${null}::uuid, ${null}, ${null}, ${false}) AS r`;
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
    await httpPhase(16, Math.min(3, SECONDS), false);
    for (const c of LEVELS) {
      process.stderr.write(`HTTP c=${c} for ${SECONDS} s...\n`);
      await httpPhase(c, SECONDS, true);
      process.stderr.write(`SQL  c=${c} for ${SECONDS} s...\n`);
      await sqlPhase(c, SECONDS);
    }

    const [overlaps] = await owner<{ n: number }[]>`
      SELECT count(*)::int AS n FROM appointments a JOIN appointments b
        ON a.org_id = b.org_id AND a.practitioner_id = b.practitioner_id AND a.id < b.id
       AND a.starts_at < b.ends_at AND b.starts_at < a.ends_at WHERE a.org_id = ${org.id}`;
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
  const rows = results.map(
    (r) =>
      `| ${r.label.padEnd(11)} | ${String(r.concurrency).padStart(3)} | ${r.bookingsPerSec.toFixed(0).padStart(6)} | ${r.p50.toFixed(1).padStart(6)} | ${r.p99.toFixed(1).padStart(6)} | ${String(r.errors).padStart(5)} |`,
  );
  const lines = [
    `bench:booking  ${new Date().toISOString()}  node ${process.version}  ${os.cpus().length} cpu  ${SECONDS}s per phase`,
    '| path        |   c | book/s |  p50ms |  p99ms |  errs |',
    '|-------------|-----|--------|--------|--------|-------|',
    ...rows,
  ];
  for (const c of LEVELS) {
    const h = results.find((r) => r.label === 'HTTP' && r.concurrency === c);
    const s = results.find((r) => r.label === 'SQL ceiling' && r.concurrency === c);
    if (h && s) lines.push(`ratio HTTP/ceiling at c=${c}: ${(h.bookingsPerSec / s.bookingsPerSec).toFixed(2)}`);
  }
  const t = results.find((r) => r.label === 'HTTP' && r.concurrency === 16);
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

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
