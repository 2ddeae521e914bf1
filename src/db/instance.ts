import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { StartupError } from '../startup.js';

/**
 * Who owns a data directory. One service process at a time may run the
 * embedded PostgreSQL in DATA_DIR; it says so in DATA_DIR/instance.json:
 *
 *   { "pid": 4242, "startTime": "1234567", "startedAt": "...", "postmasterPid": 4250, "pgPort": 41234 }
 *
 * `startTime` is the kernel's start time of that pid (/proc/<pid>/stat field
 * 22 on Linux, `ps -o lstart` elsewhere), so a pid reused by an unrelated
 * process after a crash or reboot is not mistaken for the owner.
 */
export interface OwnerRecord {
  pid: number;
  startTime: string | null;
  startedAt: string;
  postmasterPid?: number | null;
  pgPort?: number | null;
}

export interface DataDirLock {
  readonly dataDir: string;
  readonly file: string;
  /** Adds facts about what this owner started (the postmaster's pid and port). */
  update(extra: Pick<OwnerRecord, 'postmasterPid' | 'pgPort'>): Promise<void>;
  /** Gives the directory up; only removes the file while it is still ours. */
  release(): Promise<void>;
}

export class AnotherInstanceError extends StartupError {
  override name = 'AnotherInstanceError';
  constructor(
    readonly pid: number,
    dataDir: string,
  ) {
    super(`another instance (pid ${pid}) is using DATA_DIR ${dataDir}; stop it first, or give this one its own DATA_DIR`);
  }
}

/** What the OS says about a live process; null when there is none (or only a zombie). */
export interface ProcessFacts {
  pid: number;
  ppid: number;
  /** Opaque start-time token, null when the OS does not tell. */
  startTime: string | null;
  /** Executable name (Linux comm, or the command's basename). */
  name: string;
  /** Working directory, when readable: a postmaster's is its data directory. */
  cwd: string | null;
  argv: string[];
}

const procfs = process.platform === 'linux' && existsSync('/proc/self/stat');

export function processFacts(pid: number): ProcessFacts | null {
  if (!Number.isInteger(pid) || pid <= 0) return null;
  const attempt = <T>(f: () => T): T | null => {
    try {
      return f();
    } catch {
      return null;
    }
  };
  if (procfs) {
    const stat = attempt(() => readFileSync(`/proc/${pid}/stat`, 'utf8'));
    if (stat === null) return null;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    const close = stat.lastIndexOf(')');
    const fields = stat.slice(close + 2).split(' '); // fields[0] is field 3
    if (fields[0] === 'Z' || fields[0] === 'X') return null;
    return {
      pid,
      ppid: Number(fields[1]),
      startTime: fields[19] ?? null,
      name: stat.slice(stat.indexOf('(') + 1, close),
      cwd: attempt(() => readlinkSync(`/proc/${pid}/cwd`)),
      argv: attempt(() => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean)) ?? [],
    };
  }
  const ps = attempt(() =>
    execFileSync('ps', ['-o', 'ppid=', '-o', 'stat=', '-o', 'lstart=', '-o', 'command=', '-p', String(pid)], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim(),
  );
  const m = ps ? /^(\d+)\s+(\S+)\s+(\S+\s+\S+\s+\d+\s+[\d:]+\s+\d+)\s+(.*)$/.exec(ps) : null;
  if (m) {
    if (m[2]!.startsWith('Z')) return null;
    const argv = m[4]!.split(/\s+/);
    return { pid, ppid: Number(m[1]), startTime: m[3]!, name: path.basename(argv[0] ?? ''), cwd: null, argv };
  }
  if (ps !== null) return null; // ps answered: no such process
  // No ps either: a signal-0 probe says only whether the pid exists.
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return null;
  }
  return { pid, ppid: 0, startTime: null, name: '', cwd: null, argv: [] };
}

/** True when the record's process is alive and is the same process (not a reused pid). */
export function ownerAlive(rec: OwnerRecord): boolean {
  if (rec.pid === process.pid) return false; // written by an earlier life of this pid (container restart)
  const p = processFacts(rec.pid);
  if (!p) return false;
  return rec.startTime === null || p.startTime === null || p.startTime === rec.startTime;
}

const FILE = 'instance.json';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Takes DATA_DIR for this process, or refuses with AnotherInstanceError naming
 * the live owner. A record whose process is gone (a crash, kill -9, an OOM
 * kill) is stale and taken over. Creation is O_EXCL; a stale record is moved
 * aside and compared before it is dropped, so two starters that both found the
 * same stale record cannot both take the directory.
 */
export async function lockDataDir(dir: string): Promise<DataDirLock> {
  const dataDir = path.resolve(dir);
  const file = path.join(dataDir, FILE);
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });
  const me: OwnerRecord = {
    pid: process.pid,
    startTime: processFacts(process.pid)?.startTime ?? null,
    startedAt: new Date().toISOString(),
  };
  let record = me;
  const write = async (rec: OwnerRecord) => {
    // Whole-file replace: readers see the old record or the new one, never half.
    const tmp = `${file}.${process.pid}.tmp`;
    await fs.writeFile(tmp, JSON.stringify(rec) + '\n', { mode: 0o644 });
    await fs.rename(tmp, file);
  };

  for (let tries = 0; tries < 50; tries++) {
    try {
      const fh = await fs.open(file, 'wx', 0o644);
      try {
        await fh.writeFile(JSON.stringify(me) + '\n');
      } finally {
        await fh.close();
      }
      return {
        dataDir,
        file,
        async update(extra) {
          record = { ...record, ...extra };
          await write(record);
        },
        async release() {
          const now = await readRecord(file);
          if (now?.pid === me.pid && now.startedAt === me.startedAt) await fs.rm(file, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const raw = await fs.readFile(file, 'utf8').catch(() => null);
    if (raw === null) continue; // just removed: try again
    const rec = parseRecord(raw);
    if (!rec) {
      // Being written by another starter right now, or left half-written by a crash.
      const age =
        Date.now() -
        (await fs.stat(file).then(
          (s) => s.mtimeMs,
          () => 0,
        ));
      if (age < 2000) {
        await sleep(50);
        continue;
      }
    } else if (ownerAlive(rec)) {
      throw new AnotherInstanceError(rec.pid, dataDir);
    }
    // Stale. Move it aside, and drop it only if what we moved is what we judged.
    const aside = `${file}.stale.${process.pid}`;
    try {
      await fs.rename(file, aside);
    } catch {
      continue;
    }
    const moved = await fs.readFile(aside, 'utf8').catch(() => null);
    if (moved !== raw) await fs.link(aside, file).catch(() => {}); // someone else's fresh record: put it back
    await fs.rm(aside, { force: true });
  }
  throw new StartupError(`could not take ${file}: other processes keep changing it`);
}

async function readRecord(file: string): Promise<OwnerRecord | null> {
  return parseRecord(await fs.readFile(file, 'utf8').catch(() => ''));
}

function parseRecord(raw: string): OwnerRecord | null {
  try {
    const rec = JSON.parse(raw) as OwnerRecord;
    return Number.isInteger(rec.pid) && rec.pid > 0 ? { ...rec, startTime: rec.startTime ?? null } : null;
  } catch {
    return null;
  }
}
