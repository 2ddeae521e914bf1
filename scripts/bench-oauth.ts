/**
 * The token endpoint under a guessing storm: a legitimate client's token
 * latency while 400 wrong guesses are in flight at all times.
 *
 *   npm run bench:oauth
 *   BENCH_SERVER_DIR=../other-checkout npm run bench:oauth   # the same load against another build
 *
 * The server runs as production does (tsc, then node), with TRUST_PROXY=loopback
 * so each simulated client has its own address (X-Forwarded-For). Guessers come
 * from 20 addresses; half guess unknown client ids, half wrong secrets of real
 * clients. Measured: a legitimate client that fetched a token before (Vapi
 * refreshing mid-call), and fresh clients fetching their first token.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEmbeddedPostgres } from '../src/db/embedded.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SERVER_DIR = path.resolve(process.env.BENCH_SERVER_DIR ?? ROOT);
const GUESSERS = Number(process.env.BENCH_GUESSERS ?? 400);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const ADMIN = `bench-admin-${randomUUID()}`;

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
};

async function main() {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bench-oauth-'));
  const db = await startEmbeddedPostgres({ dataDir: tmp });
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  execFileSync(process.execPath, [path.join(SERVER_DIR, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], {
    cwd: SERVER_DIR,
    stdio: 'inherit',
  });
  const server = spawn(process.execPath, ['dist/src/main.js'], {
    cwd: SERVER_DIR,
    env: {
      ...process.env,
      DATABASE_URL: db.ownerUrl,
      PORT: String(port),
      DATA_DIR: tmp,
      ADMIN_TOKEN: ADMIN,
      SEED_DEMO: 'false',
      LOG_LEVEL: 'warn',
      NODE_ENV: 'production',
      TRUST_PROXY: 'loopback',
      JWT_SECRET: `bench-jwt-${randomUUID()}`,
      CREDENTIALS_KEY: `k1:${Buffer.alloc(32, 7).toString('base64')}`,
      APP_DB_PASSWORD: `bench-app-${randomUUID()}`,
      WORKER_DB_PASSWORD: `bench-worker-${randomUUID()}`,
      SMS_WORKER_ENABLED: 'false',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  try {
    for (let i = 0; ; i++) {
      if ((await fetch(`${base}/readyz`).catch(() => null))?.ok) break;
      if (i > 300) throw new Error('server did not become ready');
      await new Promise((r) => setTimeout(r, 100));
    }
    const admin = { Authorization: `Bearer ${ADMIN}`, 'Content-Type': 'application/json' };
    const post = async (p: string, body: unknown) =>
      (await fetch(`${base}${p}`, { method: 'POST', headers: admin, body: JSON.stringify(body) })).json() as Promise<any>;
    const org = await post('/api/admin/orgs', {
      name: 'Bench Clinic',
      timeZone: 'America/New_York',
      openingHours: { '1': [['08:00', '17:00']] },
      services: [{ name: 'Visit', durationMinutes: 15 }],
      practitioners: [{ name: 'Dr. Bench' }],
    });
    const clients: Array<{ clientId: string; clientSecret: string }> = [];
    for (let i = 0; i < 60; i++) clients.push(await post(`/api/admin/orgs/${org.id}/clients`, { name: `c${i}` }));
    const [legit, ...rest] = clients as [{ clientId: string; clientSecret: string }, ...Array<{ clientId: string; clientSecret: string }>];
    const fresh = rest.slice(0, 40);
    const victims = rest.slice(40);

    const token = async (id: string, secret: string, source: string) => {
      const t = performance.now();
      const res = await fetch(`${base}/oauth/token`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'X-Forwarded-For': source },
        body: new URLSearchParams({ grant_type: 'client_credentials', client_id: id, client_secret: secret }),
      });
      await res.arrayBuffer();
      return { status: res.status, ms: performance.now() - t };
    };

    if ((await token(legit.clientId, legit.clientSecret, '192.0.2.1')).status !== 200)
      throw new Error('legit client refused before the storm');

    // The storm runs in its own process, so the measured client's timings are not its event loop's.
    const storm = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'scripts/bench-oauth-storm.ts')], {
      env: { ...process.env, STORM_BASE: base, STORM_GUESSERS: String(GUESSERS), STORM_VICTIMS: victims.map((v) => v.clientId).join(',') },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let stormOut = '';
    storm.stdout!.on('data', (d: Buffer) => (stormOut += d.toString()));
    const stormDone = new Promise<void>((r) => storm.once('exit', () => r()));
    await new Promise((r) => setTimeout(r, 1500));

    const warm: number[] = [];
    const cold: number[] = [];
    const refused: string[] = [];
    const deadline = Date.now() + SECONDS * 1000;
    let k = 0;
    while (Date.now() < deadline) {
      const w = await token(legit.clientId, legit.clientSecret, '192.0.2.1');
      if (w.status !== 200) refused.push(`warm ${w.status}`);
      warm.push(w.ms);
      const c = fresh[k % fresh.length]!;
      if (k < fresh.length) {
        const r = await token(c.clientId, c.clientSecret, `192.0.2.${10 + k}`);
        if (r.status !== 200) refused.push(`cold ${r.status}`);
        cold.push(r.ms);
      }
      k += 1;
      await new Promise((r) => setTimeout(r, 50));
    }
    storm.kill('SIGTERM');
    await stormDone;

    const line = (label: string, xs: number[]) =>
      `${label.padEnd(34)} n=${String(xs.length).padStart(4)}  p50 ${pct(xs, 50).toFixed(1).padStart(7)} ms  p99 ${pct(xs, 99).toFixed(1).padStart(7)} ms  max ${Math.max(
        ...xs,
      )
        .toFixed(1)
        .padStart(7)} ms`;
    console.log(`\nserver: ${path.relative(process.cwd(), SERVER_DIR) || '.'}   guessers in flight: ${GUESSERS}   ${SECONDS} s`);
    console.log(line('legit client, fetched before', warm));
    console.log(line('legit clients, first token', cold));
    console.log(`guesses answered: ${stormOut.trim()}`);
    console.log(`legit requests refused: ${refused.length ? refused.join(', ') : 'none'}`);
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
    await db.stop();
    await fs.rm(tmp, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
