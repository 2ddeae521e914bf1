import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { SignJWT, jwtVerify, createRemoteJWKSet, decodeProtectedHeader, errors as joseErrors } from 'jose';
import type { Config } from '../config.js';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Constant-time comparison of two strings via their SHA-256 digests. */
export function safeEqual(a: string, b: string): boolean {
  const da = createHash('sha256').update(a).digest();
  const db = createHash('sha256').update(b).digest();
  return timingSafeEqual(da, db);
}

export interface TokenIdentity {
  orgId: string;
  clientId: string | null;
  /** Who vouched for it: our JWT, the external IdP's, or a platform signature under the clinic's own key. */
  issuer: 'local' | 'jwks' | 'retell-signature';
}

export class TokenError extends Error {
  constructor(readonly reason: string) {
    super(reason);
  }
}

export interface TokenService {
  mint(orgId: string, clientId: string): Promise<{ token: string; expiresIn: number }>;
  verify(token: string): Promise<TokenIdentity>;
}

const LOCAL_ALG = 'HS256';

/**
 * Verified tokens are remembered until their own expiry. Vapi reuses one access
 * token for every call until it expires, and re-verifying it each time was a
 * measurable share of a booking's CPU. Keyed by the exact token string, so a
 * changed byte is a miss; bounded, so a flood of distinct tokens cannot grow it.
 * Revocation is not cached: the database re-checks the client on every call.
 */
function verifiedTokenCache() {
  const cache = new LRUCache<string, TokenIdentity>({ max: 10_000 });
  return {
    get: (token: string) => cache.get(token),
    set(token: string, identity: TokenIdentity, expSeconds: number | undefined) {
      const ttl = expSeconds === undefined ? 0 : expSeconds * 1000 - Date.now();
      if (ttl > 0) cache.set(token, identity, { ttl });
    },
  };
}

export function createTokenService(cfg: Config, jwtSecret: string): TokenService {
  const raw = new TextEncoder().encode(jwtSecret);
  // Imported once: jose would otherwise import the raw secret on every verify.
  const keyPromise = crypto.subtle.importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
  const cache = verifiedTokenCache();
  const jwks = cfg.JWT_JWKS_URL ? createRemoteJWKSet(new URL(cfg.JWT_JWKS_URL)) : null;
  const jwksAlgs = cfg.JWT_JWKS_ALGORITHMS.split(',')
    .map((a) => a.trim())
    .filter((a) => a && !a.startsWith('HS'));

  return {
    async mint(orgId, clientId) {
      const token = await new SignJWT({ org_id: orgId, scope: 'tools:invoke' })
        .setProtectedHeader({ alg: LOCAL_ALG, typ: 'JWT' })
        .setIssuer(cfg.JWT_ISSUER)
        .setAudience(cfg.JWT_AUDIENCE)
        .setSubject(clientId)
        .setIssuedAt()
        .setJti(randomUUID())
        .setExpirationTime(`${cfg.TOKEN_TTL_SECONDS}s`)
        .sign(await keyPromise);
      return { token, expiresIn: cfg.TOKEN_TTL_SECONDS };
    },

    async verify(token) {
      const cached = cache.get(token);
      if (cached) return cached;
      let alg: string | undefined;
      try {
        alg = decodeProtectedHeader(token).alg;
      } catch {
        throw new TokenError('malformed token');
      }
      try {
        // The algorithm decides the key, and each key accepts only its own
        // pinned algorithms: an HS256 token can never be checked against a
        // public key, nor "none" against anything.
        if (alg === LOCAL_ALG) {
          const { payload } = await jwtVerify(token, await keyPromise, {
            issuer: cfg.JWT_ISSUER,
            audience: cfg.JWT_AUDIENCE,
            algorithms: [LOCAL_ALG],
            clockTolerance: 5,
            requiredClaims: ['exp', 'sub'],
          });
          const identity: TokenIdentity = { orgId: orgClaim(payload.org_id), clientId: String(payload.sub), issuer: 'local' };
          cache.set(token, identity, payload.exp);
          return identity;
        }
        if (jwks && alg && jwksAlgs.includes(alg)) {
          const { payload } = await jwtVerify(token, jwks, {
            issuer: cfg.JWT_JWKS_ISSUER ?? cfg.JWT_ISSUER,
            audience: cfg.JWT_JWKS_AUDIENCE ?? cfg.JWT_AUDIENCE,
            algorithms: jwksAlgs,
            clockTolerance: 5,
            requiredClaims: ['exp'],
          });
          const identity: TokenIdentity = { orgId: orgClaim(payload[cfg.JWT_ORG_CLAIM]), clientId: null, issuer: 'jwks' };
          cache.set(token, identity, payload.exp);
          return identity;
        }
      } catch (err) {
        if (err instanceof TokenError) throw err;
        if (err instanceof joseErrors.JWTExpired) throw new TokenError('token expired');
        if (err instanceof joseErrors.JOSEError) throw new TokenError('token rejected');
        throw new TokenError('token could not be verified');
      }
      throw new TokenError('unsupported token algorithm');
    },
  };
}

function orgClaim(v: unknown): string {
  if (typeof v !== 'string' || !UUID_RE.test(v)) throw new TokenError('token names no valid org');
  return v.toLowerCase();
}
