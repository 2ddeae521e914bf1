import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { checkRetellSignature } from '../auth/retell-signature.js';
import { TokenError, safeEqual, type TokenIdentity } from '../auth/tokens.js';
import { isUuid } from '../booking/appointments.js';
import { loadOrgContext, type OrgContext } from '../booking/org.js';
import { decryptSecret } from '../crypto.js';
import type { Tenant } from '../db/pool.js';
import { rethrowTenant } from '../db/pool.js';
import type { AppDeps } from '../deps.js';
import { AppError, clientRevoked, isTenantRejection, orgInactive } from '../errors.js';
import { authFailures } from '../metrics.js';
import { retellKeyAad } from '../orgs/orgs.js';
import type { Guard, RouteSpec, TenantCheck } from './registry.js';

/**
 * The one path for a clinic's credentials, in order:
 *   1. who is calling: the Bearer JWT (ours or the configured identity
 *      provider's), checked before the body is even read; or, for Retell,
 *      which sends no token, the clinic named in the path proven by
 *      X-Retell-Signature under that clinic's own Retell API key (over the
 *      raw body, so just after it is read). The route's `clinicIdentity`
 *      picks one; either yields the same identity for the layers below;
 *   2. every org the request names must be the token's, checked before
 *      anything runs;
 *   3. the database: the org exists and is active and the OAuth client is not
 *      revoked (read under RLS with the org set), plus the clinic's optional
 *      Vapi HMAC and shared-secret layers.
 * Routes get it by declaring `access: 'clinic'` in the registry; none builds
 * its own.
 */

export interface ClinicScope {
  identity: TokenIdentity;
  org: OrgContext;
  tenant: Tenant;
}

const BEARER = 'Bearer realm="voice-tools"';

const bearer = (req: Request): string | undefined => {
  const h = req.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m?.[1];
};

/** Layer 1 (bearer): a valid JWT or nothing happens. */
export function requireToken(deps: AppDeps): RequestHandler {
  return async (req: Request, res: Response, next: NextFunction) => {
    const token = bearer(req);
    if (!token) {
      authFailures.inc({ layer: 'jwt', reason: 'missing' });
      return next(new AppError(401, 'unauthorized', 'A Bearer token is required.', { 'WWW-Authenticate': BEARER }));
    }
    try {
      res.locals.identity = await deps.tokens.verify(token);
      next();
    } catch (err) {
      const reason = err instanceof TokenError ? err.reason : 'token rejected';
      authFailures.inc({ layer: 'jwt', reason });
      next(
        new AppError(401, 'invalid_token', `The token was rejected: ${reason}.`, {
          'WWW-Authenticate': `${BEARER}, error="invalid_token"`,
        }),
      );
    }
  };
}

/**
 * The request layer: anything the request names must be the token's org. Runs
 * before any tool executes, so a mismatch anywhere means nothing at all is done.
 */
export function assertSameOrg(tokenOrg: string, named: unknown[]): void {
  for (const v of named) {
    if (typeof v !== 'string' || v.trim().toLowerCase() !== tokenOrg) {
      authFailures.inc({ layer: 'request', reason: 'org_mismatch' });
      throw new AppError(403, 'org_mismatch', 'The request names a different clinic than the credentials.');
    }
  }
}

/** Settings layer 1 already read (a signature route needs the clinic's key first). */
export interface PreloadedOrg {
  org: OrgContext | null;
  /** True when it came from the settings cache, i.e. the active/revoked flags may be stale. */
  cached: boolean;
}

/**
 * Layer 3, plus the optional per-org Vapi layers. On a settings-cache hit the
 * active/revoked check is not skipped: for tool calls it moves into the first
 * statement each tool runs (tenant_scope, same round trip); for every other
 * route it runs here, uncached.
 */
export async function loadVerifiedOrg(
  deps: AppDeps,
  req: Request,
  identity: TokenIdentity,
  check: TenantCheck,
  opts: { preloaded?: PreloadedOrg | undefined; vapiLayers?: boolean } = {},
): Promise<OrgContext> {
  const pre = opts.preloaded;
  const cached = pre ? (pre.cached ? (pre.org ?? undefined) : undefined) : deps.orgCache.get(identity.orgId);
  const org = pre ? pre.org : (cached ?? (await loadOrgContext(deps.sql, identity.orgId, identity.clientId)));
  if (!org || !org.active) {
    authFailures.inc({ layer: 'database', reason: org ? 'inactive' : 'unknown_org' });
    throw orgInactive();
  }
  if (!org.clientActive) {
    authFailures.inc({ layer: 'database', reason: 'client_revoked' });
    throw clientRevoked();
  }
  if (cached && check === 'upfront') {
    try {
      await deps.sql`SELECT tenant_scope(${org.id}::uuid, ${identity.clientId})`.catch(rethrowTenant);
    } catch (err) {
      if (isTenantRejection(err)) {
        deps.orgCache.invalidate(org.id);
        authFailures.inc({ layer: 'database', reason: err.status === 401 ? 'client_revoked' : 'inactive' });
      }
      throw err;
    }
  }
  if (!cached) deps.orgCache.set(org);
  if (opts.vapiLayers === false) return org;
  if (org.vapiSecretSha256) {
    const given = req.get('x-vapi-secret') ?? req.get('x-vapi-signature');
    const digest = given ? createHash('sha256').update(given).digest('hex') : '';
    if (!given || !safeEqual(digest, org.vapiSecretSha256)) {
      authFailures.inc({ layer: 'signature', reason: 'vapi_secret' });
      throw new AppError(401, 'invalid_signature', 'The x-vapi-secret header is missing or wrong.');
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
    return new AppError(401, 'invalid_signature', 'The request signature is missing, stale or wrong.');
  };
  if (!sig || !ts || !/^\d{1,16}$/.test(ts) || !req.rawBody) throw fail('hmac_missing');
  const n = Number(ts);
  const tsMs = n > 1e12 ? n : n * 1000;
  if (Math.abs(nowMs - tsMs) > toleranceSeconds * 1000) throw fail('hmac_stale');
  const expected = createHmac('sha256', secret).update(`${ts}.`).update(req.rawBody).digest();
  const given = Buffer.from(sig, 'hex');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw fail('hmac_mismatch');
}

/**
 * Decrypted Retell keys, one per cached settings object: decrypting on every
 * call was a measurable share of a Retell booking's CPU. A settings change or
 * expiry makes a new settings object, so a rotated key is decrypted afresh.
 */
const retellKeys = new WeakMap<OrgContext, string>();

const badRetellSignature = () =>
  new AppError(401, 'invalid_signature', 'The X-Retell-Signature header is missing, stale or wrong for this clinic.');

/**
 * Layer 1 (retell-signature). The path names the clinic (a non-UUID is no
 * clinic at all: 404 before the body is read); its settings give the Retell
 * API key, and the signature over the raw body must verify under it. An
 * unknown clinic, one without a Retell key and a bad signature all look the
 * same from outside: 401, nothing done. Whether the clinic is active is
 * layer 3's question, so a deactivated clinic with a good signature gets 403.
 */
function retellSignatureIdentity(deps: AppDeps): Guard {
  const pathOrg: RequestHandler = (req, _res, next) => {
    const id = String(req.params.orgId ?? '').toLowerCase();
    next(isUuid(id) ? undefined : new AppError(404, 'not_found', 'No such clinic.'));
  };
  const verify: RequestHandler = async (req, res, next) => {
    try {
      const orgId = String(req.params.orgId).toLowerCase();
      const cached = deps.orgCache.get(orgId);
      const org = cached ?? (await loadOrgContext(deps.sql, orgId, null));
      if (!org?.retellApiKeyEnc) {
        authFailures.inc({ layer: 'signature', reason: org ? 'retell_no_key' : 'retell_unknown_org' });
        throw badRetellSignature();
      }
      let key = retellKeys.get(org);
      if (key === undefined) {
        try {
          key = decryptSecret(deps.keyring, org.retellApiKeyEnc, retellKeyAad(org.id));
        } catch (err) {
          req.log.error({ err, orgId }, 'retell api key could not be decrypted');
          authFailures.inc({ layer: 'signature', reason: 'retell_key_unreadable' });
          throw badRetellSignature();
        }
        retellKeys.set(org, key);
      }
      const verdict = checkRetellSignature(req.rawBody, key, req.get('x-retell-signature'), deps.now().toMillis());
      if (!verdict.ok) {
        authFailures.inc({ layer: 'signature', reason: `retell_${verdict.reason}` });
        throw badRetellSignature();
      }
      const identity: TokenIdentity = { orgId: org.id, clientId: null, issuer: 'retell-signature' };
      res.locals.identity = identity;
      res.locals.preloadedOrg = { org, cached: cached !== undefined } satisfies PreloadedOrg;
      next();
    } catch (err) {
      next(err);
    }
  };
  return { beforeBody: [pathOrg], afterBody: [verify] };
}

/**
 * The guard every `access: 'clinic'` route gets: the layer-1 identity its spec
 * asks for, then the very same layers 2 and 3.
 */
export function clinicGuard(deps: AppDeps) {
  return (spec: RouteSpec): Guard => {
    const signed = spec.clinicIdentity === 'retell-signature';
    const layer1: Guard = signed ? retellSignatureIdentity(deps) : { beforeBody: [requireToken(deps)], afterBody: [] };
    const vapiLayers = spec.vapiLayers ?? !signed;
    const layers23: RequestHandler = async (req, res, next) => {
      try {
        const identity = res.locals.identity as TokenIdentity;
        assertSameOrg(identity.orgId, spec.orgsNamed?.(req, res) ?? []);
        const check = typeof spec.tenantCheck === 'function' ? spec.tenantCheck(req, res) : (spec.tenantCheck ?? 'upfront');
        const preloaded = res.locals.preloadedOrg as PreloadedOrg | undefined;
        const org = await loadVerifiedOrg(deps, req, identity, check, { preloaded, vapiLayers });
        const scope: ClinicScope = { identity, org, tenant: { orgId: org.id, clientId: identity.clientId } };
        res.locals.scope = scope;
        next();
      } catch (err) {
        next(err);
      }
    };
    return { beforeBody: layer1.beforeBody, afterBody: [...layer1.afterBody, layers23] };
  };
}

export function scopeOf(res: Response): ClinicScope {
  const scope = res.locals.scope as ClinicScope | undefined;
  if (!scope) throw new AppError(401, 'unauthorized', 'A Bearer token is required.');
  return scope;
}

/** Admin API: a single operator token, compared in constant time. */
export function requireAdmin(deps: AppDeps): RequestHandler {
  return (req, _res, next) => {
    const token = bearer(req);
    if (!token || !safeEqual(token, deps.adminToken)) {
      authFailures.inc({ layer: 'admin', reason: token ? 'wrong' : 'missing' });
      return next(new AppError(401, 'unauthorized', 'Admin token required.', { 'WWW-Authenticate': 'Bearer realm="admin"' }));
    }
    next();
  };
}

/** GET /metrics: METRICS_TOKEN when one is set, open otherwise (for a private network). */
export function requireMetricsToken(deps: AppDeps): RequestHandler {
  return (req, _res, next) => {
    const token = deps.cfg.METRICS_TOKEN;
    if (!token) return next();
    const given = bearer(req);
    if (!given || !safeEqual(given, token)) {
      return next(new AppError(401, 'unauthorized', 'Metrics token required.', { 'WWW-Authenticate': 'Bearer realm="metrics"' }));
    }
    next();
  };
}
