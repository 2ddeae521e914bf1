import postgres, { type Sql, type TransactionSql } from 'postgres';
import { clientRevoked, orgInactive } from '../errors.js';

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

/**
 * Runs `fn` in a worker-role transaction allowed to read across clinics
 * (operator views): app.operator is transaction-local like app.org_id, and
 * the policies that honour it only let the worker role read.
 */
export async function withOperator<T>(workerSql: Sql, fn: (tx: Tx) => Promise<T>): Promise<T> {
  return workerSql.begin(async (tx) => {
    await tx`SELECT set_config('app.operator', 'on', true)`;
    return fn(tx);
  }) as Promise<T>;
}

/** Who a tool call acts for: the org, and the OAuth client behind its token (null for IdP tokens). */
export interface Tenant {
  orgId: string;
  clientId: string | null;
}

/** Maps tenant_scope()'s SQLSTATEs to the tenant refusals (403 org_inactive, 401 revoked client); anything else is rethrown unchanged. */
export function rethrowTenant(err: unknown): never {
  const code = (err as { code?: string }).code;
  if (code === 'CV403') throw orgInactive();
  if (code === 'CV401') throw clientRevoked();
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
