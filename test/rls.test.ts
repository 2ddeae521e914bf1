import postgres, { type Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withOrg } from '../src/db/pool.js';
import { callTools, createOrg, localDate, resultOf, startHarness, vapiMessage, type Harness, type TestOrg } from './helpers/harness.js';

let h: Harness;
let A: TestOrg;
let B: TestOrg;
const apptsA: string[] = [];
const apptsB: string[] = [];

const TENANT_TABLES = ['appointments', 'orgs', 'services', 'practitioners', 'oauth_clients', 'idempotency_keys'] as const;

function appUrl(): string {
  const u = new URL(h.ownerUrl);
  u.username = 'clinic_app';
  u.password = 'app-password-for-tests';
  return u.toString();
}

async function book(org: TestOrg, time: string, phone: string): Promise<string> {
  const res = await callTools(
    h,
    org.token,
    vapiMessage([
      {
        name: 'bookClinicAppointment',
        args: {
          patientName: 'Rls Patient',
          patientPhone: phone,
          appointmentDate: localDate(9),
          appointmentTime: time,
          serviceType: 'standard',
        },
      },
    ]),
  );
  const r = resultOf(res);
  if (!r.success) throw new Error(`booking failed: ${JSON.stringify(r)}`);
  return r.appointmentId as string;
}

const ownerCount = async (table: string, orgId?: string): Promise<number> => {
  const col = table === 'orgs' ? 'id' : 'org_id';
  const rows = orgId
    ? await h.owner.unsafe(`SELECT count(*)::int AS n FROM ${table} WHERE ${col} = $1`, [orgId])
    : await h.owner.unsafe(`SELECT count(*)::int AS n FROM ${table}`);
  return (rows[0] as unknown as { n: number }).n;
};

beforeAll(async () => {
  h = await startHarness();
  [A, B] = await Promise.all([createOrg(h), createOrg(h)]);
  apptsA.push(await book(A, '09:00', '+14155550101'), await book(A, '10:00', '+14155550102'));
  apptsB.push(await book(B, '09:00', '+14155550201'), await book(B, '11:00', '+14155550202'));
});
afterAll(async () => h?.close());

describe('database roles', () => {
  const facts = async (sql: Sql) => {
    const [row] = await sql<{ current_user: string; rolsuper: boolean; rolbypassrls: boolean; owned: number }[]>`
      SELECT current_user, r.rolsuper, r.rolbypassrls,
             (SELECT count(*)::int FROM pg_class c WHERE c.relowner = r.oid) AS owned
        FROM pg_roles r WHERE r.rolname = current_user`;
    return row!;
  };

  it('the request pool is clinic_app: not superuser, not BYPASSRLS, owns no relation', async () => {
    const f = await facts(h.runtime.sql);
    expect(f).toEqual({ current_user: 'clinic_app', rolsuper: false, rolbypassrls: false, owned: 0 });
  });

  it('the worker pool is clinic_worker: not superuser, not BYPASSRLS, owns no relation', async () => {
    const f = await facts(h.runtime.workerSql);
    expect(f).toEqual({ current_user: 'clinic_worker', rolsuper: false, rolbypassrls: false, owned: 0 });
  });

  it('every tenant table has RLS enabled and forced', async () => {
    const rows = await h.owner<{ relname: string; relrowsecurity: boolean; relforcerowsecurity: boolean }[]>`
      SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class
       WHERE relnamespace = 'public'::regnamespace AND relname = ANY(${[...TENANT_TABLES]})`;
    expect(rows).toHaveLength(TENANT_TABLES.length);
    for (const r of rows)
      expect({ t: r.relname, on: r.relrowsecurity, forced: r.relforcerowsecurity }).toEqual({ t: r.relname, on: true, forced: true });
  });

  it('clinic_app cannot switch row security off or disable it on a table', async () => {
    await expect(
      h.runtime.sql.begin(async (tx) => {
        await tx`SET LOCAL row_security = off`;
        return tx`SELECT count(*) FROM appointments`;
      }),
    ).rejects.toMatchObject({ code: '42501' });
    await expect(h.runtime.sql`ALTER TABLE appointments DISABLE ROW LEVEL SECURITY`).rejects.toMatchObject({ code: '42501' });
    await expect(h.runtime.sql`ALTER TABLE appointments NO FORCE ROW LEVEL SECURITY`).rejects.toMatchObject({ code: '42501' });
  });

  it('no function in the public schema runs as its owner (SECURITY DEFINER)', async () => {
    const rows = await h.owner<{ proname: string }[]>`
      SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace AND prosecdef`;
    expect(rows.map((r) => r.proname)).toEqual([]);
  });
});

describe('no org set: nothing is visible', () => {
  it('the owner sees rows in every tenant table (control)', async () => {
    for (const t of TENANT_TABLES) expect(await ownerCount(t), t).toBeGreaterThan(0);
    expect(await ownerCount('idempotency_keys', B.id)).toBeGreaterThan(0);
  });

  for (const t of TENANT_TABLES) {
    it(`clinic_app sees 0 rows of ${t}`, async () => {
      const rows = await h.runtime.sql.unsafe(`SELECT count(*)::int AS n FROM ${t}`);
      expect((rows[0] as unknown as { n: number }).n).toBe(0);
    });
  }

  it('clinic_worker sees 0 appointments, orgs, services and practitioners', async () => {
    for (const t of ['appointments', 'orgs', 'services', 'practitioners']) {
      const rows = await h.runtime.workerSql.unsafe(`SELECT count(*)::int AS n FROM ${t}`);
      expect((rows[0] as unknown as { n: number }).n, t).toBe(0);
    }
  });

  it('a direct lookup by a known id finds nothing either', async () => {
    const rows = await h.runtime.sql`SELECT id FROM appointments WHERE id = ${apptsB[0]!}`;
    expect(rows).toHaveLength(0);
    const updated = await h.runtime.sql`UPDATE appointments SET patient_name = 'x' WHERE id = ${apptsB[0]!}`;
    expect(updated.count).toBe(0);
  });
});

describe('inside a transaction scoped to org A', () => {
  it("sees only A's rows, in every tenant table", async () => {
    await withOrg(h.runtime.sql, A.id, async (tx) => {
      const appts = await tx<{ id: string; org_id: string }[]>`SELECT id, org_id FROM appointments`;
      expect(appts.map((r) => r.id).sort()).toEqual([...apptsA].sort());
      expect(new Set(appts.map((r) => r.org_id))).toEqual(new Set([A.id]));
      const orgs = await tx<{ id: string }[]>`SELECT id FROM orgs`;
      expect(orgs.map((o) => o.id)).toEqual([A.id]);
      for (const t of ['services', 'practitioners', 'oauth_clients', 'idempotency_keys']) {
        const rows = (await tx.unsafe(`SELECT DISTINCT org_id FROM ${t}`)) as unknown as Array<{ org_id: string }>;
        expect(
          rows.map((r) => r.org_id),
          t,
        ).toEqual([A.id]);
      }
    });
    // And A's counts match the owner's view of A.
    await withOrg(h.runtime.sql, A.id, async (tx) => {
      const [r] = await tx<{ n: number }[]>`SELECT count(*)::int AS n FROM services`;
      expect(r!.n).toBe(await ownerCount('services', A.id));
    });
  });

  it("UPDATE and DELETE of B's appointment by id affect 0 rows", async () => {
    const before = await h.owner`SELECT * FROM appointments WHERE id = ${apptsB[0]!}`;
    await withOrg(h.runtime.sql, A.id, async (tx) => {
      const upd = await tx`UPDATE appointments SET status = 'cancelled', patient_name = 'Hijacked' WHERE id = ${apptsB[0]!}`;
      expect(upd.count).toBe(0);
      const sel = await tx`SELECT id FROM appointments WHERE id = ${apptsB[0]!} FOR UPDATE`;
      expect(sel).toHaveLength(0);
    });
    const after = await h.owner`SELECT * FROM appointments WHERE id = ${apptsB[0]!}`;
    expect(after).toEqual(before);
    expect(after[0]!.status).toBe('booked');
  });

  it('INSERT of an appointment row for B is refused with 42501', async () => {
    const [bRow] = await h.owner<{ practitioner_id: string; service_id: string }[]>`
      SELECT practitioner_id, service_id FROM appointments WHERE id = ${apptsB[0]!}`;
    const bCountBefore = await ownerCount('appointments', B.id);
    const starts = new Date(Date.now() + 40 * 86_400_000);
    const ends = new Date(starts.getTime() + 30 * 60_000);
    await expect(
      withOrg(
        h.runtime.sql,
        A.id,
        (tx) => tx`
        INSERT INTO appointments (org_id, practitioner_id, service_id, patient_name, patient_phone, starts_at, ends_at)
        VALUES (${B.id}, ${bRow!.practitioner_id}, ${bRow!.service_id}, 'Injected', '+14155550999', ${starts}, ${ends})`,
      ),
    ).rejects.toMatchObject({ code: '42501' });
    expect(await ownerCount('appointments', B.id)).toBe(bCountBefore);
    const [unchanged] = await h.owner`SELECT status, patient_name FROM appointments WHERE id = ${apptsB[0]!}`;
    expect(unchanged).toMatchObject({ status: 'booked', patient_name: 'Rls Patient' });
  });

  it("moving one of A's own rows to B is refused with 42501", async () => {
    await expect(
      withOrg(h.runtime.sql, A.id, (tx) => tx`UPDATE appointments SET org_id = ${B.id} WHERE id = ${apptsA[0]!}`),
    ).rejects.toMatchObject({ code: '42501' });
    const [row] = await h.owner`SELECT org_id FROM appointments WHERE id = ${apptsA[0]!}`;
    expect(row!.org_id).toBe(A.id);
  });

  it('cannot create an org or a client for another tenant', async () => {
    await expect(
      withOrg(
        h.runtime.sql,
        A.id,
        (tx) => tx`
        INSERT INTO oauth_clients (client_id, org_id, name, secret_hash) VALUES ('cli_injected', ${B.id}, 'x', 'x')`,
      ),
    ).rejects.toMatchObject({ code: '42501' });
    const [r] = await h.owner`SELECT count(*)::int AS n FROM oauth_clients WHERE client_id = 'cli_injected'`;
    expect(r!.n).toBe(0);
  });
});

describe('pooled connections do not leak the org', () => {
  let one: Sql;
  beforeAll(() => {
    one = postgres(appUrl(), { max: 1, onnotice: () => {} });
  });
  afterAll(async () => one?.end({ timeout: 5 }));

  it('set_config(..., true) ends with its transaction; the next autocommit query sees nothing and does not error', async () => {
    const inside = await one.begin(async (tx) => {
      await tx`SELECT set_config('app.org_id', ${A.id}, true)`;
      const [pid] = await tx<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
      const rows = await tx`SELECT id FROM appointments`;
      return { pid: pid!.pid, n: rows.length };
    });
    expect(inside.n).toBe(apptsA.length);

    const [after] = await one<{ pid: number; setting: string | null; who: string }[]>`
      SELECT pg_backend_pid() AS pid, current_setting('app.org_id', true) AS setting, current_user AS who`;
    expect(after!.who).toBe('clinic_app');
    // Same physical connection, so this really is the pooled-reuse case.
    expect(after!.pid).toBe(inside.pid);
    expect(after!.setting === null || after!.setting === '').toBe(true);
    expect(after!.setting).not.toBe(A.id);

    const rows = await one`SELECT id FROM appointments`;
    expect(rows).toHaveLength(0);
    const [org] = await one<{ org: string | null }[]>`SELECT current_org() AS org`;
    expect(org!.org).toBeNull();
  });

  it('a rolled-back transaction does not leak the org either', async () => {
    await expect(
      one.begin(async (tx) => {
        await tx`SELECT set_config('app.org_id', ${B.id}, true)`;
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    const rows = await one`SELECT id FROM appointments`;
    expect(rows).toHaveLength(0);
  });

  it('the token lookup setting (app.client_id) only reveals the named client', async () => {
    const rows = await one.begin(async (tx) => {
      await tx`SELECT set_config('app.client_id', ${A.clientId}, true)`;
      return tx<{ client_id: string; org_id: string }[]>`SELECT client_id, org_id FROM oauth_clients`;
    });
    expect(rows.map((r) => r.client_id)).toEqual([A.clientId]);
    const later = await one`SELECT client_id FROM oauth_clients`;
    expect(later).toHaveLength(0);
    // It is read-only: the lookup policy is FOR SELECT.
    const upd = await one.begin(async (tx) => {
      await tx`SELECT set_config('app.client_id', ${A.clientId}, true)`;
      return tx`UPDATE oauth_clients SET revoked_at = now() WHERE client_id = ${A.clientId}`;
    });
    expect(upd.count).toBe(0);
    const [row] = await h.owner`SELECT revoked_at FROM oauth_clients WHERE client_id = ${A.clientId}`;
    expect(row!.revoked_at).toBeNull();
  });
});

describe("through the API, org A cannot touch org B's appointments", () => {
  it("cancelAppointment with B's id is a speakable not-found and B stays booked", async () => {
    const res = await callTools(h, A.token, vapiMessage([{ name: 'cancelAppointment', args: { appointmentId: apptsB[0]! } }]));
    expect(res.status).toBe(200);
    expect(res.body.results[0].result).toBeUndefined();
    expect(res.body.results[0].error).toMatch(/couldn't find an appointment/i);
    const [row] = await h.owner`SELECT status, cancelled_at FROM appointments WHERE id = ${apptsB[0]!}`;
    expect(row).toMatchObject({ status: 'booked', cancelled_at: null });
  });

  it("rescheduleAppointment with B's id is a speakable not-found and B's time is unchanged", async () => {
    const [before] = await h.owner`SELECT starts_at, ends_at, practitioner_id FROM appointments WHERE id = ${apptsB[1]!}`;
    const res = await callTools(
      h,
      A.token,
      vapiMessage([{ name: 'rescheduleAppointment', args: { appointmentId: apptsB[1]!, newDate: localDate(11), newTime: '14:00' } }]),
    );
    expect(res.status).toBe(200);
    expect(res.body.results[0].error).toMatch(/couldn't find an appointment/i);
    const [after] = await h.owner`SELECT starts_at, ends_at, practitioner_id, status FROM appointments WHERE id = ${apptsB[1]!}`;
    expect(after).toMatchObject({ ...before, status: 'booked' });
    const [n] = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM appointments WHERE org_id = ${A.id}`;
    expect(n!.n).toBe(apptsA.length);
  });

  it("cancel by B's patient phone and date finds nothing for A", async () => {
    const res = await callTools(
      h,
      A.token,
      vapiMessage([{ name: 'cancelAppointment', args: { patientPhone: '+14155550201', appointmentDate: localDate(9) } }]),
    );
    expect(res.body.results[0].error).toMatch(/couldn't find an appointment for that number/);
    const [row] = await h.owner`SELECT status FROM appointments WHERE id = ${apptsB[0]!}`;
    expect(row!.status).toBe('booked');
  });

  it("B's own token can cancel it (control)", async () => {
    const res = await callTools(h, B.token, vapiMessage([{ name: 'cancelAppointment', args: { appointmentId: apptsB[0]! } }]));
    const r = resultOf(res);
    expect(r.success).toBe(true);
    expect(r.appointmentId).toBe(apptsB[0]);
    const [row] = await h.owner`SELECT status FROM appointments WHERE id = ${apptsB[0]!}`;
    expect(row!.status).toBe('cancelled');
  });
});
