/**
 * The real server (src/main.ts) on its embedded PostgreSQL, as an operator
 * runs it: first run, a second instance, a crash mid-traffic, an orphaned
 * postmaster, a busy port, a stale lock file. One DATA_DIR goes through the
 * whole story, so the cluster is created once.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DateTime } from 'luxon';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { freePort } from '../src/net.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** src/main.ts, compiled once for the run by the global setup. */
const SERVER = path.join(inject('serverDir'), 'src', 'main.js');
const DEMO_ORG = '5eed0000-0000-4000-8000-000000000001';
const ZONE = 'America/New_York';

interface Launched {
  proc: ChildProcess;
  pid: number;
  base: string;
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const launched: Launched[] = [];
let dataDir: string;
const pgDir = () => path.join(dataDir, 'pg');

function launch(port: number, env: Record<string, string> = {}): Launched {
  const proc = spawn(process.execPath, [SERVER], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: os.tmpdir(),
      LOG_LEVEL: 'info',
      HOST: '127.0.0.1',
      PORT: String(port),
      DATA_DIR: dataDir,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const l: Launched = { proc, pid: proc.pid!, base: `http://127.0.0.1:${port}`, stdout: () => out, stderr: () => err, exited };
  launched.push(l);
  return l;
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function listening(l: Launched): Promise<void> {
  let gone = false;
  void l.exited.then(() => (gone = true));
  await until(
    '"listening"',
    () => {
      if (gone) throw new Error(`server exited during start-up:\n${l.stdout()}\n${l.stderr()}`);
      return l.stdout().includes('"msg":"listening"');
    },
    60_000,
  );
}

async function exitWithin(l: Launched, ms: number) {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still running after ${ms} ms:\n${l.stdout()}\n${l.stderr()}`)), ms);
  });
  try {
    return await Promise.race([l.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Every process's pid and command line (NUL-separated): /proc on Linux, ps elsewhere. */
function processes(): Array<{ pid: number; cmdline: string }> {
  if (existsSync('/proc/self/cmdline')) {
    return readdirSync('/proc')
      .filter((e) => /^\d+$/.test(e))
      .flatMap((e) => {
        try {
          return [{ pid: Number(e), cmdline: readFileSync(`/proc/${e}/cmdline`, 'utf8') }];
        } catch {
          return [];
        }
      });
  }
  return execFileSync('ps', ['-axo', 'pid=,args='], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
    .map((l) => /^\s*(\d+)\s+(.*)$/.exec(l)!)
    .map((m) => ({ pid: Number(m[1]), cmdline: m[2]!.split(/\s+/).join('\0') }));
}

/** Pids of postgres processes serving this data directory, by their command line. */
function postgresOn(dir: string): number[] {
  return processes()
    .filter(({ cmdline }) => {
      const argv = cmdline.split('\0');
      return path.basename(argv[0] ?? '') === 'postgres' && argv.includes(dir);
    })
    .map((p) => p.pid);
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    // A zombie (exited, not yet reaped) is not alive.
    return !(existsSync('/proc/self/stat') && readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z '));
  } catch {
    return false;
  }
};

function sh(script: string, env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      'sh',
      ['-c', script],
      { cwd: ROOT, env: { PATH: process.env.PATH ?? '', HOME: os.tmpdir(), ...env }, timeout: 60_000 },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

async function token(base: string, id: string, secret: string): Promise<string> {
  const res = await fetch(`${base}/oauth/token`, {
    method: 'POST',
    headers: {
      Authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`,
      'Content-Type': 'application/x-www-form-urlencoded',
    },
    body: 'grant_type=client_credentials',
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { access_token: string }).access_token;
}

async function tool(base: string, tok: string, id: string, name: string, args: Record<string, unknown>) {
  const res = await fetch(`${base}/api/vapi/tools`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${tok}`, 'Content-Type': 'application/json', 'x-dry-run': '1' },
    body: JSON.stringify({
      message: { type: 'tool-calls', toolCallList: [{ id, type: 'function', function: { name, arguments: args } }] },
    }),
    signal: AbortSignal.timeout(10_000),
  });
  const body = (await res.json()) as { results: Array<{ result: string }> };
  return JSON.parse(body.results[0]!.result) as { success: boolean; appointmentId?: string; slots?: unknown[] };
}

/** The owner connection, from what the embedded cluster keeps in DATA_DIR. */
async function ownerSql() {
  const { password } = JSON.parse(await fs.readFile(path.join(dataDir, 'embedded-pg.json'), 'utf8'));
  const { pgPort } = JSON.parse(await fs.readFile(path.join(dataDir, 'instance.json'), 'utf8'));
  return postgres(`postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${pgPort}/clinic`, { max: 1, onnotice: () => {} });
}

// A day the demo clinic is open, far enough ahead to be in the future in its zone.
let day = DateTime.now().setZone(ZONE).plus({ days: 2 });
while (day.weekday > 5) day = day.plus({ days: 1 });
const DAY = day.toISODate()!;
const TIMES = [8, 9, 10, 11, 13, 14, 15, 16].flatMap((h) =>
  [0, 15, 30, 45].map((m) => `${String(h).padStart(2, '0')}:${String(m).padStart(2, '0')}`),
);

let first: Launched;
let clientId: string;
let clientSecret: string;
const booked: string[] = [];
const bookedAt = new Map<string, string>(); // appointment id -> time

beforeAll(async () => {
  dataDir = path.join(await fs.mkdtemp(path.join(os.tmpdir(), 'clinic-restart-')), '.data');
});
afterAll(async () => {
  for (const l of launched) l.proc.kill('SIGKILL');
  await Promise.all(launched.map((l) => l.exited));
  // Nothing of ours may outlive the suite: stop any postgres left on the directory.
  for (const pid of postgresOn(pgDir())) process.kill(pid, 'SIGQUIT');
  await fs.rm(path.dirname(dataDir), { recursive: true, force: true });
});

describe('one DATA_DIR through first run, crashes and restarts', () => {
  it('first run: prints the generated client secret exactly once, and a ready line', async () => {
    first = launch(await freePort());
    await listening(first);
    const m = /export CLIENT_ID=(\S+) CLIENT_SECRET=(\S+)/.exec(first.stdout());
    expect(m, first.stdout()).not.toBeNull();
    [, clientId, clientSecret] = m as unknown as [string, string, string];
    const all = first.stdout() + first.stderr();
    expect(all.split(clientSecret).length - 1).toBe(1);
    expect(all).toMatch(
      new RegExp(
        `^ready: http://localhost:\\d+ \\| demo org ${DEMO_ORG} \\| .*curl -s -X POST .*/api/admin/orgs/${DEMO_ORG}/clients$`,
        'm',
      ),
    );
    expect(all).not.toContain('date -d');
    await token(first.base, clientId, clientSecret);
  });

  it("the banner's by-hand commands work in a plain POSIX shell: token, openings, and a booking", async () => {
    const banner = first.stdout();
    const exportLine = /^ {4}export CLIENT_ID=.*$/m.exec(banner)![0];
    const byHand = banner.slice(banner.indexOf('Or by hand')).split('\n').slice(1);
    const commands = byHand.slice(
      0,
      byHand.findIndex((l) => l.trim() === ''),
    );
    const r = await sh([exportLine, ...commands].join('\n'));
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^checkAvailability: \{"success":true,.*"slots":\[\{/m);
    expect(r.stdout).toMatch(/^bookClinicAppointment: \{"success":true,"appointmentId":"[0-9a-f-]{36}"/m);
  });

  it('the ready line mints a new OAuth client with the admin token from DATA_DIR, printing no secret itself', async () => {
    const ready = /^ready: .*$/m.exec(first.stdout())![0];
    const admin = JSON.parse(await fs.readFile(path.join(dataDir, 'secrets.json'), 'utf8')).adminToken as string;
    expect(ready).not.toContain(admin);
    const r = await sh(ready.slice(ready.indexOf('curl ')).replace('http://localhost:', 'http://127.0.0.1:'));
    const minted = JSON.parse(r.stdout) as { clientId: string; clientSecret: string };
    await token(first.base, minted.clientId, minted.clientSecret);
  });

  it('VERIFY_SMS_BRIDGE.sh passes against it, and reports the sandbox as not checked rather than answering', async () => {
    const r = await sh(`./VERIFY_SMS_BRIDGE.sh ${first.base}`, { CLIENT_ID: clientId, CLIENT_SECRET: clientSecret });
    expect(r.stdout).toContain('All checks passed.');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^INFO {2}sms reachability {3}not checked/m);
    expect(r.stdout).not.toMatch(/^PASS {2}sms reachability/m);
    expect(r.stdout).not.toContain('reachable=null');
  });

  it('a second instance on the same DATA_DIR exits non-zero naming the first one; the first keeps serving', async () => {
    const second = launch(await freePort());
    const { code } = await exitWithin(second, 15_000);
    expect(code).not.toBe(0);
    expect(second.stderr().trim()).toBe(
      `another instance (pid ${first.pid}) is using DATA_DIR ${dataDir}; stop it first, or give this one its own DATA_DIR`,
    );
    const tok = await token(first.base, clientId, clientSecret);
    expect((await tool(first.base, tok, 'after-second', 'checkAvailability', { date: DAY })).success).toBe(true);
  });

  it('SIGKILL mid-traffic: the database stops by itself within seconds, with every acknowledged booking kept', async () => {
    const tok = await token(first.base, clientId, clientSecret);
    const { postmasterPid } = JSON.parse(await fs.readFile(path.join(dataDir, 'instance.json'), 'utf8'));
    expect(alive(postmasterPid)).toBe(true);
    let next = 0;
    let stop = false;
    const client = async (n: number) => {
      while (!stop && next < TIMES.length) {
        const time = TIMES[next++]!;
        try {
          await tool(first.base, tok, `chk-${n}-${time}`, 'checkAvailability', { date: DAY });
          const r = await tool(first.base, tok, `book-${time}`, 'bookClinicAppointment', {
            patientName: `Crash Test ${time}`,
            patientPhone: '+14155552671',
            appointmentDate: DAY,
            appointmentTime: time,
          });
          if (r.success) {
            booked.push(r.appointmentId!);
            bookedAt.set(r.appointmentId!, time);
          }
        } catch {
          return; // the server is gone
        }
      }
    };
    const clients = [client(1), client(2), client(3)];
    await until('a few bookings', () => booked.length >= 6);
    first.proc.kill('SIGKILL');
    const t0 = Date.now();
    expect((await first.exited).signal).toBe('SIGKILL');
    stop = true;
    await Promise.all(clients);
    await until('the orphaned postmaster to stop', () => !alive(postmasterPid), 10_000);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(postgresOn(pgDir())).toEqual([]);
  });

  it('a busy port: exits non-zero at once with one line, leaving no PostgreSQL behind', async () => {
    const blocker = net.createServer();
    const port = await new Promise<number>((resolve) =>
      blocker.listen(0, '127.0.0.1', () => resolve((blocker.address() as net.AddressInfo).port)),
    );
    try {
      const l = launch(port);
      const { code } = await exitWithin(l, 20_000);
      expect(code).not.toBe(0);
      expect(l.stdout()).not.toContain('"msg":"listening"');
      expect(l.stdout()).not.toMatch(/^ready:/m);
      expect(l.stderr().trim()).toBe(
        `cannot listen on 127.0.0.1:${port}: the port is already in use (set PORT to a free port, or stop what holds it)`,
      );
      expect(postgresOn(pgDir())).toEqual([]);
      expect(existsSync(path.join(dataDir, 'instance.json'))).toBe(false);
    } finally {
      blocker.close();
    }
  });

  it('restarts after the crash with no hand work: bookings there, a ready line and no secret', async () => {
    const again = launch(await freePort());
    await listening(again);
    const out = again.stdout() + again.stderr();
    expect(out).not.toContain(clientSecret);
    expect(out).not.toContain(JSON.parse(await fs.readFile(path.join(dataDir, 'secrets.json'), 'utf8')).adminToken);
    expect(out).not.toContain('Demo clinic ready');
    expect(out).toMatch(new RegExp(`^ready: http://localhost:\\d+ \\| demo org ${DEMO_ORG} \\| `, 'm'));
    const sql = await ownerSql();
    try {
      const rows = await sql`SELECT id FROM appointments WHERE id = ANY(${booked}::uuid[]) AND status = 'booked'`;
      expect(rows.length).toBe(booked.length);
    } finally {
      await sql.end();
    }

    // A postmaster whose server died with no watchdog (an older release, or the watchdog killed too): an orphan.
    const { postmasterPid } = JSON.parse(await fs.readFile(path.join(dataDir, 'instance.json'), 'utf8'));
    const watchdog = processes().find((p) => p.cmdline.includes(`clinic-voice-tools-pg-watchdog\0${postmasterPid}\0`));
    expect(watchdog).toBeDefined();
    process.kill(watchdog!.pid, 'SIGKILL');
    again.proc.kill('SIGKILL');
    await again.exited;
    expect(alive(postmasterPid)).toBe(true);

    const third = launch(await freePort());
    await listening(third);
    expect(third.stdout()).toContain(
      `stopping PostgreSQL (pid ${postmasterPid}) left running on ${pgDir()} by an earlier instance that died`,
    );
    expect(alive(postmasterPid)).toBe(false);
    const tok = await token(third.base, clientId, clientSecret);
    // The same tool call again: its booking, made before both crashes, is replayed, not made twice.
    const time = bookedAt.get(booked[0]!)!;
    const replay = await tool(third.base, tok, `book-${time}`, 'bookClinicAppointment', {
      patientName: `Crash Test ${time}`,
      patientPhone: '+14155552671',
      appointmentDate: DAY,
      appointmentTime: time,
    });
    expect(replay.appointmentId).toBe(booked[0]);

    third.proc.kill('SIGTERM');
    expect((await exitWithin(third, 20_000)).code).toBe(0);
    expect(postgresOn(pgDir())).toEqual([]);
    expect(existsSync(path.join(dataDir, 'instance.json'))).toBe(false);
  });

  // Linux only, as the code: elsewhere there is no /proc to prove that no backend still runs in the directory.
  it.runIf(process.platform === 'linux')(
    'a stale postmaster.pid whose pid now belongs to another process does not block the start',
    async () => {
      // As root PostgreSQL runs as the postgres user, and only a process of that user blocks it.
      const asPostgres =
        process.getuid?.() === 0
          ? { uid: Number((await sh('id -u postgres')).stdout), gid: Number((await sh('id -g postgres')).stdout) }
          : {};
      const squatter = spawn('sleep', ['60'], { stdio: 'ignore', ...asPostgres });
      try {
        const pidFile = path.join(pgDir(), 'postmaster.pid');
        await fs.writeFile(
          pidFile,
          `${squatter.pid}\n${pgDir()}\n${Math.floor(Date.now() / 1000) - 3600}\n5432\n\n127.0.0.1\n  5432001    65536\nready   \n`,
          { mode: 0o600 },
        );
        if ('uid' in asPostgres) await fs.chown(pidFile, asPostgres.uid!, asPostgres.gid!);
        const l = launch(await freePort());
        await listening(l);
        expect(l.stdout()).toContain(`removed a stale ${pidFile}: its pid ${squatter.pid} now belongs to another process (sleep)`);
        l.proc.kill('SIGTERM');
        expect((await exitWithin(l, 20_000)).code).toBe(0);
      } finally {
        squatter.kill('SIGKILL');
      }
    },
  );
});

describe('VERIFY_SMS_BRIDGE.sh without a server', () => {
  it('says it cannot connect and exits non-zero', async () => {
    const port = await freePort(); // free: nothing listens there
    const r = await sh(`./VERIFY_SMS_BRIDGE.sh http://127.0.0.1:${port}`, { CLIENT_ID: 'x', CLIENT_SECRET: 'y' });
    expect(r.code).not.toBe(0);
    expect(r.stdout).toContain(`FAIL  connect            cannot connect to http://127.0.0.1:${port} (is the server running?)`);
    expect(r.stdout).not.toContain('000');
  });

  it('--help prints a usage text, not the script', async () => {
    const r = await sh('./VERIFY_SMS_BRIDGE.sh --help');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: \.\/VERIFY_SMS_BRIDGE\.sh \[BASE_URL\] \[--live\] \[--platform vapi\|retell\|elevenlabs\]$/m);
    expect(r.stdout).toContain('CLIENT_SECRET');
    expect(r.stdout).not.toMatch(/^#/m);
    expect(r.stdout).not.toContain('set -uo pipefail');
  });
});

describe('start-up failures: one line on stderr, no stack, nothing left running', () => {
  const run = (env: Record<string, string>) =>
    new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const proc = spawn(process.execPath, [SERVER], {
        cwd: ROOT,
        env: { PATH: process.env.PATH ?? '', HOME: os.tmpdir(), LOG_LEVEL: 'warn', HOST: '127.0.0.1', ...env },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      proc.stderr!.on('data', (d) => (stderr += d));
      proc.once('exit', (code) => resolve({ code, stderr }));
    });

  it('production without its secrets', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'clinic-prod-'));
    try {
      const r = await run({ NODE_ENV: 'production', DATA_DIR: dir, PORT: String(await freePort()) });
      expect(r.code).toBe(1);
      expect(r.stderr).toBe('Invalid configuration: JWT_SECRET must be set in production\n');
      expect(existsSync(path.join(dir, 'instance.json'))).toBe(false);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('a DATABASE_URL nothing answers', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'clinic-nodb-'));
    try {
      const dead = await freePort();
      const r = await run({ DATABASE_URL: `postgres://u:p@127.0.0.1:${dead}/db`, DATA_DIR: dir, PORT: String(await freePort()) });
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(`cannot connect to the database (DATABASE_URL): connect ECONNREFUSED 127.0.0.1:${dead}\n`);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
