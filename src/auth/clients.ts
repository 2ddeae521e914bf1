import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import type { Sql } from 'postgres';
import { withOrg } from '../db/pool.js';
import { AppError } from '../errors.js';

/**
 * OAuth clients of a clinic: created and revoked by operators, authenticated
 * by the token endpoint. The secret is shown once and stored as a scrypt hash.
 */

const scryptAsync = promisify(scrypt) as (pw: string, salt: Buffer, len: number, opts: object) => Promise<Buffer>;
/** scrypt's cost N for new hashes (CLIENT_SECRET_SCRYPT_N); a stored hash carries its own, so any N verifies. */
export const DEFAULT_SCRYPT_N = 16384;
const SCRYPT = { r: 8, p: 1 };

export function newClientId(): string {
  return `cli_${randomBytes(12).toString('base64url')}`;
}

export function newClientSecret(): string {
  return `cs_${randomBytes(32).toString('base64url')}`;
}

export async function hashSecret(secret: string, N = DEFAULT_SCRYPT_N): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scryptAsync(secret, salt, 32, { N, ...SCRYPT });
  return `scrypt$${N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

export async function verifySecret(secret: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [, n, r, p, saltB64, hashB64] = parts as [string, string, string, string, string, string];
  const expected = Buffer.from(hashB64, 'base64');
  const actual = await scryptAsync(secret, Buffer.from(saltB64, 'base64'), expected.length, {
    N: Number(n),
    r: Number(r),
    p: Number(p),
  });
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

export interface ClientRecord {
  clientId: string;
  orgId: string;
  secretHash: string;
  revoked: boolean;
  /** The clinic exists and is active: a deactivated clinic gets no new tokens. */
  orgActive: boolean;
}

/**
 * The one client row a token request names, and whether its clinic is
 * active, in one round trip (sql/005_admin.sql: RLS lets the lookup see that
 * single client row, then the org it belongs to).
 */
export async function findClient(sql: Sql, clientId: string): Promise<ClientRecord | null> {
  const [row] = await sql<{ c: ClientRecord | null }[]>`SELECT oauth_client_lookup(${clientId}) AS c`;
  return row?.c ?? null;
}

export interface IssuedClient {
  clientId: string;
  clientSecret: string;
  name: string;
}

/** The secret is returned here once and stored only as a scrypt hash. null: no such org. */
export async function createClient(
  sql: Sql,
  orgId: string,
  opts: { name?: string | undefined; clientId?: string; clientSecret?: string; scryptN?: number } = {},
): Promise<IssuedClient | null> {
  const clientId = opts.clientId ?? newClientId();
  const clientSecret = opts.clientSecret ?? newClientSecret();
  const name = opts.name ?? 'default';
  const hash = await hashSecret(clientSecret, opts.scryptN);
  return withOrg(sql, orgId, async (tx) => {
    const [org] = await tx`SELECT id FROM orgs WHERE id = ${orgId}`;
    if (!org) return null;
    await tx
      .savepoint(async (sp) => {
        await sp`INSERT INTO oauth_clients (client_id, org_id, name, secret_hash) VALUES (${clientId}, ${orgId}, ${name}, ${hash})`;
      })
      .catch((err: { code?: string }) => {
        if (err.code === '23505') throw new AppError(409, 'client_exists', 'That client id is taken.');
        throw err;
      });
    return { clientId, clientSecret, name };
  });
}

export interface ClientView {
  clientId: string;
  name: string;
  createdAt: Date;
  revokedAt: Date | null;
}

/** null when the org does not exist (or is not visible). */
export async function listClients(sql: Sql, orgId: string): Promise<ClientView[] | null> {
  return withOrg(sql, orgId, async (tx) => {
    const [org] = await tx`SELECT id FROM orgs WHERE id = ${orgId}`;
    if (!org) return null;
    return tx<ClientView[]>`
      SELECT client_id AS "clientId", name, created_at AS "createdAt", revoked_at AS "revokedAt"
        FROM oauth_clients ORDER BY created_at`;
  });
}

/** Revoking also invalidates tokens already issued: every tool statement re-checks the client. */
export async function revokeClient(sql: Sql, orgId: string, clientId: string): Promise<boolean> {
  return withOrg(sql, orgId, async (tx) => {
    const rows = await tx`
      UPDATE oauth_clients SET revoked_at = COALESCE(revoked_at, now()) WHERE client_id = ${clientId} RETURNING client_id`;
    return rows.length > 0;
  });
}

/** Pins a client's id and secret (the demo clinic's DEMO_CLIENT_ID / DEMO_CLIENT_SECRET), un-revoking it. */
export async function pinClient(
  sql: Sql,
  orgId: string,
  clientId: string,
  clientSecret: string,
  name: string,
  scryptN?: number,
): Promise<void> {
  const hash = await hashSecret(clientSecret, scryptN);
  await withOrg(
    sql,
    orgId,
    (tx) => tx`
    INSERT INTO oauth_clients (client_id, org_id, name, secret_hash) VALUES (${clientId}, ${orgId}, ${name}, ${hash})
    ON CONFLICT (client_id) DO UPDATE SET secret_hash = EXCLUDED.secret_hash, revoked_at = NULL
    WHERE oauth_clients.org_id = ${orgId}`,
  );
}
