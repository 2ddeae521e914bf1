import postgres, { type Sql, type TransactionSql } from 'postgres';

export type Db = Sql;
export type Tx = TransactionSql;

export function connect(url: string, max: number, applicationName: string): Sql {
  return postgres(url, {
    max,
    idle_timeout: 30,
    connect_timeout: 10,
    onnotice: () => {},
    connection: { application_name: applicationName },
  });
}

/**
 * Runs `fn` in a transaction scoped to one clinic. set_config(..., true) is
 * transaction-local, so the setting can never leak to the next request that
 * borrows this pooled connection; RLS policies read it through current_org().
 */
export async function withOrg<T>(sql: Sql, orgId: string, fn: (tx: Tx) => Promise<T>): Promise<T> {
  return sql.begin(async (tx) => {
    await tx`SELECT set_config('app.org_id', ${orgId}, true)`;
    return fn(tx);
  }) as Promise<T>;
}

/** Who a tool call acts for: the org, and the OAuth client behind its token (null for IdP tokens). */
export interface Tenant {
  orgId: string;
  clientId: string | null;
}

/**
 * The database refused the tenant: the org is gone or inactive (403), or the
 * OAuth client was revoked (401). Raised by tenant_scope() / book_appointment().
 */
export class TenantRejected extends Error {
  constructor(
    readonly status: 401 | 403,
    readonly code: 'org_inactive' | 'invalid_token',
  ) {
    super(status === 403 ? 'The clinic for these credentials does not exist or is not active.' : 'The client behind this token has been revoked.');
    this.name = 'TenantRejected';
  }
}

/** Maps tenant_scope()'s SQLSTATEs to TenantRejected; anything else is rethrown unchanged. */
export function rethrowTenant(err: unknown): never {
  const code = (err as { code?: string }).code;
  if (code === 'CV403') throw new TenantRejected(403, 'org_inactive');
  if (code === 'CV401') throw new TenantRejected(401, 'invalid_token');
  throw err;
}

/**
 * Like withOrg, and in the same single statement also has the database verify
 * the org is active and the client not revoked. Tool calls use this, so the
 * database layer of the org check runs inside the transaction doing the work.
 */
export async function withTenant<T>(sql: Sql, tenant: Tenant, fn: (tx: Tx) => Promise<T>): Promise<T> {
  try {
    return (await sql.begin(async (tx) => {
      await tx`SELECT tenant_scope(${tenant.orgId}::uuid, ${tenant.clientId})`;
      return fn(tx);
    })) as T;
  } catch (err) {
    return rethrowTenant(err);
  }
}
