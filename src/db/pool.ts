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
