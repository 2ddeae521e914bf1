import { randomBytes, randomUUID, scrypt, timingSafeEqual, createHash } from 'node:crypto';
import { promisify } from 'node:util';
import { SignJWT, jwtVerify, createRemoteJWKSet, decodeProtectedHeader, errors as joseErrors } from 'jose';
import type { Config } from '../config.js';

const scryptAsync = promisify(scrypt) as (pw: string, salt: Buffer, len: number, opts: object) => Promise<Buffer>;
const SCRYPT = { N: 16384, r: 8, p: 1 };
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function newClientId(): string {
  return `cli_${randomBytes(12).toString('base64url')}`;
}

export function newClientSecret(): string {
  return `cs_${randomBytes(32).toString('base64url')}`;
}

/** Client secrets are stored as scrypt hashes: shown once, never recoverable. */
export async function hashSecret(secret: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scryptAsync(secret, salt, 32, SCRYPT);
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64')}$${hash.toString('base64')}`;
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

/** Constant-time comparison of two strings via their SHA-256 digests. */
export function safeEqual(a: string, b: string): boolean {
  const da = createHash('sha256').update(a).digest();
  const db = createHash('sha256').update(b).digest();
  return timingSafeEqual(da, db);
}

export interface TokenIdentity {
  orgId: string;
  clientId: string | null;
  issuer: 'local' | 'jwks';
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
 * Verified tokens, remembered until their own expiry. Vapi reuses one access
 * token for every call until it expires, and re-verifying it each time was a
 * measurable share of a booking's CPU. Keyed by the exact token string, so a
 * changed byte is a miss; bounded, so a flood of distinct tokens cannot grow it.
 */
class VerifiedTokenCache {
  private readonly map = new Map<string, { identity: TokenIdentity; expiresAt: number }>();
  constructor(private readonly max = 10_000) {}

  get(token: string): TokenIdentity | undefined {
    const hit = this.map.get(token);
    if (!hit) return undefined;
    if (hit.expiresAt <= Date.now()) {
      this.map.delete(token);
      return undefined;
    }
    return hit.identity;
  }

  set(token: string, identity: TokenIdentity, expSeconds: number | undefined): void {
    if (expSeconds === undefined) return;
    if (this.map.size >= this.max) this.map.delete(this.map.keys().next().value as string);
    this.map.set(token, { identity, expiresAt: expSeconds * 1000 });
  }
}

export function createTokenService(cfg: Config, jwtSecret: string): TokenService {
  const raw = new TextEncoder().encode(jwtSecret);
  // Imported once: jose would otherwise import the raw secret on every verify.
  const keyPromise = crypto.subtle.importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
  const cache = new VerifiedTokenCache();
  const jwks = cfg.JWT_JWKS_URL ? createRemoteJWKSet(new URL(cfg.JWT_JWKS_URL)) : null;
  const jwksAlgs = cfg.JWT_JWKS_ALGORITHMS.split(',').map((a) => a.trim()).filter((a) => a && !a.startsWith('HS'));

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
