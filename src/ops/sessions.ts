/**
 * Operator console sessions (ops_sessions, sql/012_console.sql). The browser
 * holds a random session id in an HttpOnly cookie; the database holds only its
 * SHA-256, and the SHA-256 of the session's CSRF token. The CSRF token is
 * derived from the session id (an HMAC keyed by it), so every page can carry it
 * without the server storing it in the clear, and it is worth nothing without
 * the cookie it belongs to.
 *
 * Expiry slides: each request moves expires_at to now + the idle timeout, but
 * never past created_at + the absolute cap, so a console left open (it polls)
 * still signs in again at least once per cap.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import type { Sql } from 'postgres';
import { safeEqual } from '../auth/tokens.js';

export interface SessionSettings {
  idleMinutes: number;
  maxHours: number;
}

export interface OpsSession {
  /** The CSRF token for forms on this session's pages. */
  csrf: string;
  idHash: string;
  expiresAt: Date;
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
export const csrfFor = (sessionId: string) => createHmac('sha256', sessionId).update('ops-csrf').digest('base64url');

/** A session id looks like what createSession hands out, or it is not looked up at all. */
const SESSION_ID = /^[A-Za-z0-9_-]{43}$/;

export async function createSession(workerSql: Sql, s: SessionSettings): Promise<{ id: string; session: OpsSession }> {
  const id = randomBytes(32).toString('base64url');
  const csrf = csrfFor(id);
  const [row] = await workerSql<{ expires_at: Date }[]>`
    INSERT INTO ops_sessions (id_hash, csrf_hash, expires_at)
    VALUES (${sha256(id)}, ${sha256(csrf)}, now() + make_interval(mins => ${Math.min(s.idleMinutes, s.maxHours * 60)}))
    RETURNING expires_at`;
  // Housekeeping on the rare path: sessions that ended long ago.
  await workerSql`DELETE FROM ops_sessions WHERE expires_at < now() - interval '1 day'`;
  return { id, session: { csrf, idHash: sha256(id), expiresAt: row!.expires_at } };
}

/** The live session for this id, its expiry moved on; null when there is none (unknown, ended or expired). */
export async function touchSession(workerSql: Sql, id: string, s: SessionSettings): Promise<OpsSession | null> {
  if (!SESSION_ID.test(id)) return null;
  const idHash = sha256(id);
  const [row] = await workerSql<{ csrf_hash: string; expires_at: Date }[]>`
    UPDATE ops_sessions
       SET last_seen_at = now(),
           expires_at = LEAST(now() + make_interval(mins => ${s.idleMinutes}), created_at + make_interval(hours => ${s.maxHours}))
     WHERE id_hash = ${idHash} AND expires_at > now()
    RETURNING csrf_hash, expires_at`;
  if (!row) return null;
  const csrf = csrfFor(id);
  // The stored hash is what binds the token to this session row.
  if (!safeEqual(sha256(csrf), row.csrf_hash)) return null;
  return { csrf, idHash, expiresAt: row.expires_at };
}

/** True when the token given with a form is this session's. Constant time. */
export function csrfMatches(session: OpsSession, given: unknown): boolean {
  return typeof given === 'string' && given.length > 0 && given.length < 200 && safeEqual(given, session.csrf);
}

export async function endSession(workerSql: Sql, idHash: string): Promise<void> {
  await workerSql`DELETE FROM ops_sessions WHERE id_hash = ${idHash}`;
}
