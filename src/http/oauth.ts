import { Router, type Request, type Response } from 'express';
import { z } from 'zod';
import type { AppDeps } from '../deps.js';
import { authFailures } from '../metrics.js';
import type { RouteRegistry } from './registry.js';

function oauthError(res: Response, status: number, error: string, description: string, extra: Record<string, string> = {}) {
  res.set({ 'Cache-Control': 'no-store', Pragma: 'no-cache', ...extra });
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

export const tokenRequestSchema = z.object({
  grant_type: z.literal('client_credentials'),
  client_id: z.string().max(200).optional().describe('With client_secret_post; or use HTTP Basic.'),
  client_secret: z.string().max(500).optional(),
  scope: z.string().max(200).optional(),
});

const tokenResponse = z.object({
  access_token: z.string(),
  token_type: z.literal('Bearer'),
  expires_in: z.number().int(),
  scope: z.string(),
});

/**
 * RFC 6749 client_credentials token endpoint: the one Vapi's OAuth2 credential
 * and ElevenLabs' OAuth2 auth connection call. Client authentication by HTTP
 * Basic or by form or JSON body fields (ElevenLabs sends them in the body); the
 * token is a short-lived JWT naming the client's org.
 */
export function oauthRouter(deps: AppDeps, registry: RouteRegistry): Router {
  const router = Router();
  registry.mount(
    router,
    {
      method: 'post',
      path: '/oauth/token',
      access: 'public',
      tags: ['auth'],
      summary: 'Exchange client credentials for an access token',
      description:
        'RFC 6749 client_credentials. Client authentication by HTTP Basic (client_secret_basic) or body fields ' +
        '(client_secret_post), form-encoded or JSON. Failed attempts are throttled per source address and per client id (429 with Retry-After).',
      body: tokenRequestSchema,
      bodyType: 'form-or-json',
      bodyValidatedByHandler: true,
      responses: {
        200: { description: 'A Bearer token.', schema: tokenResponse },
        400: { description: 'invalid_request, unsupported_grant_type, or unauthorized_client (the clinic is not active).' },
        401: { description: 'invalid_client.' },
        429: { description: 'Too many failed attempts from this address or for this client id.' },
      },
      example: { body: { grant_type: 'client_credentials', client_id: 'cli_demo', client_secret: 'cs_…' } },
    },
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
      const challenge: Record<string, string> = basic ? { 'WWW-Authenticate': 'Basic realm="oauth"' } : {};
      // Postgres text cannot hold NUL; no real client id contains a control character.
      if (!id || !secret || id.length > 200 || secret.length > 500 || /[\u0000-\u001f]/.test(id)) {
        authFailures.inc({ layer: 'oauth', reason: 'missing_client' });
        return oauthError(res, 401, 'invalid_client', 'Client authentication failed.', { 'WWW-Authenticate': 'Basic realm="oauth"' });
      }
      const verdict = await deps.clientAuth.authenticate(id, secret, req.ip ?? req.socket.remoteAddress ?? 'unknown');
      if (!verdict.ok) {
        authFailures.inc({ layer: 'oauth', reason: verdict.reason });
        if (verdict.reason === 'throttled') {
          return oauthError(res, 429, 'invalid_client', 'Too many failed attempts; try again later.', {
            'Retry-After': String(verdict.retryAfterSeconds),
          });
        }
        if (verdict.reason === 'org_inactive') {
          return oauthError(res, 400, 'unauthorized_client', 'The clinic for this client is not active.');
        }
        return oauthError(res, 401, 'invalid_client', 'Client authentication failed.', challenge);
      }
      const { token, expiresIn } = await deps.tokens.mint(verdict.client.orgId, verdict.client.clientId);
      res.set({ 'Cache-Control': 'no-store', Pragma: 'no-cache' });
      res.json({ access_token: token, token_type: 'Bearer', expires_in: expiresIn, scope: 'tools:invoke' });
    },
  );
  return router;
}
