import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import { describe, expect, it } from 'vitest';
import { loadMigrations, migrate, migrationsApplied } from '../src/db/migrate.js';
import { freshDatabase } from './helpers/harness.js';

describe('migrations', () => {
  it('apply in order, are recorded, and a second run applies nothing', async () => {
    const sql = postgres(await freshDatabase(), { max: 2, onnotice: () => {} });
    try {
      const files = await loadMigrations();
      expect(files.map((m) => m.version)).toEqual([...files.map((m) => m.version)].sort((a, b) => a - b));
      const first = await migrate(sql);
      expect(first.applied).toEqual(files.map((m) => m.name));
      const second = await migrate(sql);
      expect(second.applied).toEqual([]);
      expect(await migrationsApplied(sql)).toBe(true);
      const rows = await sql<{ version: number }[]>`SELECT version FROM schema_migrations ORDER BY version`;
      expect(rows.map((r) => r.version)).toEqual(files.map((m) => m.version));
    } finally {
      await sql.end();
    }
  });

  it('two processes migrating one empty database at once both succeed, each migration applied once', async () => {
    const url = await freshDatabase();
    const a = postgres(url, { max: 2, onnotice: () => {} });
    const b = postgres(url, { max: 2, onnotice: () => {} });
    try {
      const [ra, rb] = await Promise.all([migrate(a), migrate(b)]);
      const total = await loadMigrations();
      expect(ra.applied.length + rb.applied.length).toBe(total.length);
      expect([...ra.applied, ...rb.applied].sort()).toEqual(total.map((m) => m.name).sort());
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
  });

  it('refuses to run when an applied migration file was changed', async () => {
    const sql = postgres(await freshDatabase(), { max: 2, onnotice: () => {} });
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'migrations-'));
    try {
      await fs.writeFile(path.join(dir, '001_schema.sql'), 'CREATE TABLE t1 (id int);');
      await migrate(sql, dir);
      await fs.writeFile(path.join(dir, '001_schema.sql'), 'CREATE TABLE t1 (id bigint);');
      await expect(migrate(sql, dir)).rejects.toThrow(/changed after it was applied/);
    } finally {
      await sql.end();
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('a failing migration leaves nothing half-applied', async () => {
    const sql = postgres(await freshDatabase(), { max: 2, onnotice: () => {} });
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'migrations-'));
    try {
      await fs.writeFile(path.join(dir, '001_schema.sql'), 'CREATE TABLE ok_table (id int);');
      await fs.writeFile(path.join(dir, '002_broken.sql'), 'CREATE TABLE half (id int); SELECT no_such_function();');
      await expect(migrate(sql, dir)).rejects.toThrow(/002_broken.sql failed/);
      const [half] = await sql`SELECT to_regclass('public.half') AS t`;
      expect(half!.t).toBeNull();
      const rows = await sql`SELECT name FROM schema_migrations`;
      expect(rows.map((r) => r.name)).toEqual(['001_schema.sql']);
    } finally {
      await sql.end();
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
