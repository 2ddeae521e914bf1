import type { Sql } from 'postgres';

export const APP_ROLE = 'clinic_app';
export const WORKER_ROLE = 'clinic_worker';

/**
 * Gives the roles created by the migrations a login and password, so the
 * service can connect as them instead of as the owner. Needs an owner
 * connection with CREATEROLE (the embedded superuser has it).
 */
export async function enableRoleLogin(owner: Sql, role: string, password: string): Promise<void> {
  if (role !== APP_ROLE && role !== WORKER_ROLE) throw new Error(`unexpected role ${role}`);
  // ALTER ROLE cannot take a bind parameter; quote the literal ourselves.
  const literal = `'${password.replace(/'/g, "''")}'`;
  // Two processes starting at once on one database would update the same
  // pg_authid row concurrently, and one would fail its start-up with "tuple
  // concurrently updated": one at a time.
  await owner.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${ROLE_LOGIN_LOCK})`;
    await tx.unsafe(`ALTER ROLE ${role} LOGIN PASSWORD ${literal}`);
  });
}

// Arbitrary constant: serialises the password updates of concurrent starts (see enableRoleLogin).
const ROLE_LOGIN_LOCK = 7_240_513_002;

/** Builds a connection URL for `role` on the same server and database as `ownerUrl`. */
export function urlForRole(ownerUrl: string, role: string, password: string): string {
  const u = new URL(ownerUrl);
  u.username = role;
  u.password = password;
  return u.toString();
}

export interface RoleFacts {
  rolname: string;
  rolsuper: boolean;
  rolbypassrls: boolean;
  owns_tables: boolean;
}

/**
 * Refuses to run request handlers on a connection that would silently bypass
 * row-level security: superusers, BYPASSRLS roles and table owners all do.
 */
export async function assertRlsEnforced(sql: Sql, label: string): Promise<RoleFacts> {
  const [facts] = await sql<RoleFacts[]>`
    SELECT r.rolname, r.rolsuper, r.rolbypassrls,
           EXISTS (SELECT 1 FROM pg_class c
                    WHERE c.relowner = r.oid AND c.relnamespace = 'public'::regnamespace
                      AND c.relkind = 'r') AS owns_tables
      FROM pg_roles r WHERE r.rolname = current_user`;
  if (!facts) throw new Error(`${label}: cannot read the current role`);
  if (facts.rolsuper || facts.rolbypassrls || facts.owns_tables) {
    throw new Error(
      `${label} connects as "${facts.rolname}", which bypasses row-level security ` +
        `(superuser=${facts.rolsuper}, bypassrls=${facts.rolbypassrls}, owns tables=${facts.owns_tables}). ` +
        'Use a role that is none of these.',
    );
  }
  return facts;
}
