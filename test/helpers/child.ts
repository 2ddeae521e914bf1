/**
 * The real server (src/main.ts) as a child process, so a test can SIGKILL it at
 * an exact moment and start another one on the same database.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { inject } from 'vitest';
import { freePort } from '../../src/net.js';
import { ADMIN_TOKEN, JWT_SECRET, type Harness } from './harness.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface Child {
  readonly pid: number;
  readonly url: string;
  /** Last lines of the child's stdout/stderr, for failure messages. */
  output(): string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts the server (src/main.ts, compiled once for the run) against the harness's database and waits until it answers /healthz. */
export async function startChild(h: Harness, env: Record<string, string>): Promise<Child> {
  const port = await freePort();
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'clinic-tools-child-'));
  const proc: ChildProcess = spawn(process.execPath, [path.join(inject('serverDir'), 'src', 'main.js')], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? os.tmpdir(),
      NODE_ENV: 'test',
      LOG_LEVEL: 'warn',
      HOST: '127.0.0.1',
      PORT: String(port),
      DATA_DIR: dataDir,
      SEED_DEMO: 'false',
      DATABASE_URL: h.ownerUrl,
      JWT_SECRET,
      ADMIN_TOKEN,
      CREDENTIALS_KEY: h.secrets.credentialsKey,
      // The roles are cluster-wide: the same passwords as every in-process harness.
      APP_DB_PASSWORD: h.secrets.appDbPassword,
      WORKER_DB_PASSWORD: h.secrets.workerDbPassword,
      // As in the in-process harness: no background probes unless a test asks for them.
      SMS_HEALTH_ENABLED: 'false',
      // As in the in-process harness (see there).
      CLIENT_SECRET_SCRYPT_N: '1024',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const keep = (chunk: Buffer) => {
    lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
    if (lines.length > 200) lines.splice(0, lines.length - 200);
  };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  let dead = false;
  void exited.then(() => {
    dead = true;
  });

  const child: Child = {
    pid: proc.pid!,
    url: `http://127.0.0.1:${port}`,
    output: () => lines.join('\n'),
    async kill(signal = 'SIGKILL') {
      if (!dead) {
        proc.kill(signal);
        await exited;
      }
      await fs.rm(dataDir, { recursive: true, force: true });
    },
  };

  const deadline = Date.now() + 30_000;
  for (;;) {
    if (dead) throw new Error(`child server exited during startup:\n${child.output()}`);
    try {
      const res = await fetch(`${child.url}/healthz`, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return child;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) {
      await child.kill();
      throw new Error(`child server did not become healthy:\n${child.output()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
