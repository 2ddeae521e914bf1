import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Sql } from 'postgres';

/** Numbered SQL migrations in sql/, applied in order and recorded with a checksum. */
export const MIGRATIONS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../sql');
// dist/src/db -> ../../sql does not exist; fall back to the repo layout.
const candidates = [MIGRATIONS_DIR, path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../sql')];

// Arbitrary constant: serialises concurrent migrators on one database.
const MIGRATION_LOCK = 7_240_513_001;

export interface Migration {
  version: number;
  name: string;
  sql: string;
  checksum: string;
}

export async function loadMigrations(dir?: string): Promise<Migration[]> {
  let chosen = dir;
  if (!chosen) {
    for (const c of candidates) {
      try {
        await fs.access(path.join(c, '001_schema.sql'));
        chosen = c;
        break;
      } catch {
        /* try the next layout */
      }
    }
  }
  if (!chosen) throw new Error('sql/ migrations directory not found');
  const files = (await fs.readdir(chosen)).filter((f) => /^\d{3}_[a-z0-9_]+\.sql$/.test(f)).sort();
  const out: Migration[] = [];
  for (const f of files) {
    const sql = await fs.readFile(path.join(chosen, f), 'utf8');
    out.push({
      version: Number(f.slice(0, 3)),
      name: f,
      sql,
      checksum: createHash('sha256').update(sql).digest('hex'),
    });
  }
  return out;
}

/**
 * Applies pending migrations. A session advisory lock makes two processes
 * starting at once take turns; the second finds everything applied. An applied
 * migration whose file changed is an error, not something to silently re-run.
 */
export async function migrate(owner: Sql, dir?: string): Promise<{ applied: string[] }> {
  const migrations = await loadMigrations(dir);
  const reserved = await owner.reserve();
  const applied: string[] = [];
  try {
    await reserved`SELECT pg_advisory_lock(${MIGRATION_LOCK})`;
    await reserved`
      CREATE TABLE IF NOT EXISTS schema_migrations (
        version    integer PRIMARY KEY,
        name       text NOT NULL,
        checksum   text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`;
    const done = new Map(
      (
        await reserved<{ version: number; checksum: string; name: string }[]>`
        SELECT version, checksum, name FROM schema_migrations`
      ).map((r) => [r.version, r]),
    );
    for (const m of migrations) {
      const prior = done.get(m.version);
      if (prior) {
        if (prior.checksum !== m.checksum) {
          throw new Error(`migration ${m.name} was changed after it was applied (as ${prior.name})`);
        }
        continue;
      }
      // A reserved connection has no begin(); the transaction is spelled out.
      await reserved`BEGIN`;
      try {
        await reserved.unsafe(m.sql);
        await reserved`INSERT INTO schema_migrations (version, name, checksum) VALUES (${m.version}, ${m.name}, ${m.checksum})`;
        await reserved`COMMIT`;
      } catch (err) {
        await reserved`ROLLBACK`.catch(() => {});
        throw new Error(`migration ${m.name} failed: ${(err as Error).message}`, { cause: err });
      }
      applied.push(m.name);
    }
  } finally {
    await reserved`SELECT pg_advisory_unlock(${MIGRATION_LOCK})`.catch(() => {});
    reserved.release();
  }
  return { applied };
}

let expectedVersions: Promise<number[]> | undefined;

/**
 * True when every migration file is recorded as applied. The files cannot
 * change under a running process, so they are read once, not on every probe.
 */
export async function migrationsApplied(sql: Sql): Promise<boolean> {
  expectedVersions ??= loadMigrations().then((ms) => ms.map((m) => m.version));
  const expected = await expectedVersions;
  const rows = await sql<{ version: number }[]>`SELECT version FROM schema_migrations`;
  const have = new Set(rows.map((r) => r.version));
  return expected.every((v) => have.has(v));
}
