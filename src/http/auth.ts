import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { loadOrgContext, type OrgContext } from '../booking/org.js';
import { TokenError, safeEqual, type TokenIdentity } from '../auth/tokens.js';
import { decryptSecret } from '../sms/crypto.js';
import { authFailures } from '../metrics.js';
import type { AppDeps } from '../app.js';
import { HttpError } from './errors.js';

declare module 'express-serve-static-core' {
  interface Request {
    rawBody?: Buffer;
  }
}

const bearer = (req: Request): string | undefined => {
  const h = req.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m?.[1];
};

/** Layer 1: a valid JWT (ours or the configured identity provider's) or nothing happens. */
export function requireToken(deps: AppDeps): RequestHandler {
  return async (req: Request, res: Response, next: NextFunction) => {
    const token = bearer(req);
    if (!token) {
      authFailures.inc({ layer: 'jwt', reason: 'missing' });
      return next(
        new HttpError(401, 'unauthorized', 'A Bearer token is required.', { 'WWW-Authenticate': 'Bearer realm="voice-tools"' }),
      );
    }
    try {
      res.locals.identity = await deps.tokens.verify(token);
      next();
    } catch (err) {
      const reason = err instanceof TokenError ? err.reason : 'token rejected';
      authFailures.inc({ layer: 'jwt', reason });
      next(
        new HttpError(401, 'invalid_token', `The token was rejected: ${reason}.`, {
          'WWW-Authenticate': 'Bearer realm="voice-tools", error="invalid_token"',
        }),
      );
    }
  };
}

export function identityOf(res: Response): TokenIdentity {
  const id = res.locals.identity as TokenIdentity | undefined;
  if (!id) throw new HttpError(401, 'unauthorized', 'A Bearer token is required.');
  return id;
}

/**
 * Layer 3, plus the optional per-org Vapi layers: the org exists and is active
 * in the database (read under RLS with the org set for the statement), the
 * OAuth client behind the token has not been revoked, and, when the clinic has
 * configured them, the Vapi HMAC signature and legacy shared secret match.
 * On a settings-cache hit the active/revoked check is not skipped: it moves
 * into the first statement each tool runs (tenant_scope), in the same round trip.
 */
export async function loadVerifiedOrg(deps: AppDeps, req: Request, identity: TokenIdentity): Promise<OrgContext> {
  const cached = deps.orgCache.get(identity.orgId);
  const org = cached ?? (await loadOrgContext(deps.sql, identity.orgId, identity.clientId));
  if (!org || !org.active) {
    authFailures.inc({ layer: 'database', reason: org ? 'inactive' : 'unknown_org' });
    throw new HttpError(403, 'org_inactive', 'The clinic for these credentials does not exist or is not active.');
  }
  if (!org.clientActive) {
    authFailures.inc({ layer: 'database', reason: 'client_revoked' });
    throw new HttpError(401, 'invalid_token', 'The client behind this token has been revoked.');
  }
  if (!cached) deps.orgCache.set(org);
  if (org.vapiSecretSha256) {
    const given = req.get('x-vapi-secret') ?? req.get('x-vapi-signature');
    const digest = given ? createHash('sha256').update(given).digest('hex') : '';
    if (!given || !safeEqual(digest, org.vapiSecretSha256)) {
      authFailures.inc({ layer: 'signature', reason: 'vapi_secret' });
      throw new HttpError(401, 'invalid_signature', 'The x-vapi-secret header is missing or wrong.');
    }
  }
  if (org.vapiHmacSecretEnc) {
    const secret = decryptSecret(deps.keyring, org.vapiHmacSecretEnc, `org:${org.id}:vapi-hmac`);
    verifyVapiHmac(req, secret, deps.cfg.VAPI_HMAC_TOLERANCE_SECONDS, deps.now().toMillis());
  }
  return org;
}

/**
 * Vapi's HMAC credential: x-signature = hex(HMAC-SHA256(secret, `${x-timestamp}.${rawBody}`)).
 * The timestamp unit is undocumented, so both seconds and milliseconds are
 * accepted for the freshness check; the MAC covers the header exactly as sent.
 */
export function verifyVapiHmac(req: Request, secret: string, toleranceSeconds: number, nowMs: number): void {
  const sig = req.get('x-signature')?.replace(/^sha256=/i, '');
  const ts = req.get('x-timestamp');
  const fail = (reason: string) => {
    authFailures.inc({ layer: 'signature', reason });
    return new HttpError(401, 'invalid_signature', 'The request signature is missing, stale or wrong.');
  };
  if (!sig || !ts || !/^\d{1,16}$/.test(ts) || !req.rawBody) throw fail('hmac_missing');
  const n = Number(ts);
  const tsMs = n > 1e12 ? n : n * 1000;
  if (Math.abs(nowMs - tsMs) > toleranceSeconds * 1000) throw fail('hmac_stale');
  const expected = createHmac('sha256', secret).update(`${ts}.`).update(req.rawBody).digest();
  const given = Buffer.from(sig, 'hex');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw fail('hmac_mismatch');
}

/** Admin API: a single operator token, compared in constant time. */
export function requireAdmin(deps: AppDeps): RequestHandler {
  return (req, _res, next) => {
    const token = bearer(req);
    if (!token || !safeEqual(token, deps.adminToken)) {
      authFailures.inc({ layer: 'admin', reason: token ? 'wrong' : 'missing' });
      return next(new HttpError(401, 'unauthorized', 'Admin token required.', { 'WWW-Authenticate': 'Bearer realm="admin"' }));
    }
    next();
  };
}
