import express, { type Request, type Response, Router } from 'express';
import { randomBytes } from 'node:crypto';
import { hashSecret, verifySecret } from '../auth/tokens.js';
import { authFailures } from '../metrics.js';
import type { AppDeps } from '../app.js';

interface ClientRow {
  client_id: string;
  org_id: string;
  secret_hash: string;
  revoked_at: Date | null;
}

// A real hash of a random secret, verified when the client id is unknown, so a
// wrong id costs as long as a wrong secret and ids cannot be probed by timing.
let dummyHash: Promise<string> | undefined;
const unknownClientHash = () => (dummyHash ??= hashSecret(randomBytes(24).toString('base64url')));

function oauthError(res: Response, status: number, error: string, description: string, basic = false) {
  res.set({ 'Cache-Control': 'no-store', Pragma: 'no-cache' });
  if (status === 401 && basic) res.set('WWW-Authenticate', 'Basic realm="oauth"');
  res.status(status).json({ error, error_description: description });
}

function basicCredentials(req: Request): { id: string; secret: string } | null {
  const h = req.headers.authorization;
  const m = h ? /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(h) : null;
  if (!m?.[1]) return null;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i < 0) return null;
  // RFC 6749 2.3.1: both parts are form-urlencoded before being joined.
  try {
    return { id: decodeURIComponent(decoded.slice(0, i)), secret: decodeURIComponent(decoded.slice(i + 1)) };
  } catch {
    return null;
  }
}

/**
 * RFC 6749 client_credentials token endpoint (the one Vapi's OAuth2 credential
 * calls). Client authentication by HTTP Basic or by form fields; the token is a
 * short-lived JWT naming the client's org.
 */
export function oauthRouter(deps: AppDeps): Router {
  const router = Router();
  const limit = deps.cfg.BODY_LIMIT_BYTES;
  router.post(
    '/oauth/token',
    express.urlencoded({ extended: false, limit, parameterLimit: 20 }),
    express.json({ limit }),
    async (req, res) => {
      const body = (typeof req.body === 'object' && req.body !== null ? req.body : {}) as Record<string, unknown>;
      if (body.grant_type !== 'client_credentials') {
        return body.grant_type === undefined
          ? oauthError(res, 400, 'invalid_request', 'grant_type is required.')
          : oauthError(res, 400, 'unsupported_grant_type', 'Only client_credentials is supported.');
      }
      const basic = basicCredentials(req);
      const formId = typeof body.client_id === 'string' ? body.client_id : undefined;
      const formSecret = typeof body.client_secret === 'string' ? body.client_secret : undefined;
      if (basic && (formId !== undefined || formSecret !== undefined) && formId !== basic.id) {
        return oauthError(res, 400, 'invalid_request', 'Use one client authentication method, not two.');
      }
      const id = basic?.id ?? formId;
      const secret = basic?.secret ?? formSecret;
      // Postgres text cannot hold NUL; no real client id contains a control character.
      if (!id || !secret || id.length > 200 || secret.length > 500 || /[\u0000-\u001f]/.test(id)) {
        authFailures.inc({ layer: 'oauth', reason: 'missing_client' });
        return oauthError(res, 401, 'invalid_client', 'Client authentication failed.', true);
      }
      // RLS lets this transaction see exactly the one client row it names.
      const [row] = await deps.sql.begin(async (tx) => {
        await tx`SELECT set_config('app.client_id', ${id}, true)`;
        return tx<ClientRow[]>`SELECT client_id, org_id, secret_hash, revoked_at FROM oauth_clients WHERE client_id = ${id}`;
      });
      const ok = await verifySecret(secret, row?.secret_hash ?? (await unknownClientHash()));
      if (!row || !ok || row.revoked_at) {
        authFailures.inc({ layer: 'oauth', reason: row ? (ok ? 'revoked' : 'bad_secret') : 'unknown_client' });
        return oauthError(res, 401, 'invalid_client', 'Client authentication failed.', basic !== null);
      }
      const { token, expiresIn } = await deps.tokens.mint(row.org_id, row.client_id);
      res.set({ 'Cache-Control': 'no-store', Pragma: 'no-cache' });
      res.json({ access_token: token, token_type: 'Bearer', expires_in: expiresIn, scope: 'tools:invoke' });
    },
  );
  return router;
}
