/**
 * The `session` access kind: the operator console's cookie, checked the same
 * way for every console route the registry mounts.
 *
 *   - GET: a live session, or the browser is sent to the sign-in page (303;
 *     htmx's own requests get 401 with HX-Redirect, anything else a plain 401).
 *   - every other method: the request must come from this origin
 *     (Sec-Fetch-Site and Origin, where the browser sends them), a live session
 *     (401) and that session's CSRF token in the form field `csrf` or the
 *     X-CSRF-Token header (403).
 */
import type { Request, RequestHandler, Response } from 'express';
import type { Config } from '../../config.js';
import type { AppDeps } from '../../deps.js';
import { AppError } from '../../errors.js';
import { authFailures } from '../../metrics.js';
import { csrfMatches, touchSession, type OpsSession, type SessionSettings } from '../../ops/sessions.js';
import type { Guard, RouteSpec } from '../registry.js';

export const SESSION_COOKIE = 'ops_session';
export const LOGIN_COOKIE = 'ops_login';
export const COOKIE_PATH = '/ops';

export const sessionSettings = (cfg: Config): SessionSettings => ({
  idleMinutes: cfg.OPS_SESSION_TTL_MINUTES,
  maxHours: cfg.OPS_SESSION_MAX_HOURS,
});

export function parseCookies(req: Request): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i < 1) continue;
    const k = part.slice(0, i).trim();
    if (!(k in out)) out[k] = part.slice(i + 1).trim();
  }
  return out;
}

/** Secure when this request came over https (TRUST_PROXY decides whether X-Forwarded-Proto counts) or the service says it is public on https. */
export function secureCookies(req: Request, cfg: Config): boolean {
  return req.secure || (cfg.PUBLIC_URL?.startsWith('https://') ?? false);
}

export function setCookie(res: Response, req: Request, cfg: Config, name: string, value: string, maxAgeSeconds: number): void {
  const attrs = [`${name}=${value}`, `Path=${COOKIE_PATH}`, `Max-Age=${maxAgeSeconds}`, 'HttpOnly', 'SameSite=Strict'];
  if (secureCookies(req, cfg)) attrs.push('Secure');
  res.append('Set-Cookie', attrs.join('; '));
}

export const clearCookie = (res: Response, req: Request, cfg: Config, name: string) => setCookie(res, req, cfg, name, '', 0);

/**
 * Why a state-changing request is refused as cross-site, or null. Current
 * browsers send Sec-Fetch-Site on every request, older ones at least Origin on
 * a POST; a client that sends neither (curl) is judged by its CSRF token alone.
 */
export function crossSiteProblem(req: Request, cfg: Config): string | null {
  // The browser's own word, where it gives one, decides: it also covers `Origin: null`, which a
  // same-origin form sends under some referrer policies.
  const site = req.get('sec-fetch-site');
  if (site !== undefined) return site === 'same-origin' || site === 'none' ? null : `Sec-Fetch-Site: ${site}`;
  const origin = req.get('origin');
  if (origin === undefined) return null;
  const allowed = new Set([`${req.protocol}://${req.get('host') ?? ''}`]);
  if (cfg.PUBLIC_URL) {
    try {
      allowed.add(new URL(cfg.PUBLIC_URL).origin);
    } catch {
      /* validated elsewhere */
    }
  }
  return allowed.has(origin) ? null : `Origin: ${origin.slice(0, 100)}`;
}

export function opsSession(res: Response): OpsSession {
  const s = res.locals.opsSession as OpsSession | undefined;
  if (!s) throw new AppError(401, 'unauthorized', 'Sign in to the console first.');
  return s;
}

const wantsPage = (req: Request) => req.method === 'GET' && !req.get('hx-request') && req.accepts(['html', 'json']) === 'html';

export function sessionGuard(deps: AppDeps) {
  const settings = sessionSettings(deps.cfg);
  const load: RequestHandler = async (req, res, next) => {
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        const problem = crossSiteProblem(req, deps.cfg);
        if (problem) {
          authFailures.inc({ layer: 'console', reason: 'cross_site' });
          throw new AppError(403, 'cross_site', 'Refused: this request did not come from the console itself.');
        }
      }
      const id = parseCookies(req)[SESSION_COOKIE];
      const session = id ? await touchSession(deps.workerSql, id, settings) : null;
      if (!session) {
        authFailures.inc({ layer: 'console', reason: id ? 'stale_session' : 'no_session' });
        if (id) clearCookie(res, req, deps.cfg, SESSION_COOKIE);
        res.set('Cache-Control', 'no-store');
        if (wantsPage(req)) return res.redirect(303, '/ops/login');
        if (req.get('hx-request')) res.set('HX-Redirect', '/ops/login');
        throw new AppError(401, 'unauthorized', 'Sign in to the console first.');
      }
      res.locals.opsSession = session;
      next();
    } catch (err) {
      next(err);
    }
  };
  const csrf: RequestHandler = (req, res, next) => {
    const given = (req.body as Record<string, unknown> | undefined)?.csrf ?? req.get('x-csrf-token');
    if (!csrfMatches(opsSession(res), given)) {
      authFailures.inc({ layer: 'console', reason: given ? 'csrf_mismatch' : 'csrf_missing' });
      return next(
        new AppError(403, 'csrf', 'Refused: the form is missing its CSRF token or it belongs to another session. Reload the page.'),
      );
    }
    next();
  };
  return (spec: RouteSpec): Guard =>
    spec.method === 'get' ? { beforeBody: [load], afterBody: [] } : { beforeBody: [load], afterBody: [csrf] };
}
