/**
 * The operator console at /ops: server-rendered pages over the same domain
 * functions as the admin API (readStatus, listMessages, listInbox,
 * listDeadLetters, retryDeadLetter, setFailoverEnabled, ...), each page a
 * registry route with `access: 'session'`, every state change a plain form
 * with its CSRF token, answered with a redirect back (or the page again with
 * the refusal).
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Router, type ErrorRequestHandler, type Request, type Response } from 'express';
import helmet from 'helmet';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import { z } from 'zod';
import { safeEqual } from '../../auth/tokens.js';
import { isUuid } from '../../booking/appointments.js';
import { loadMigrations, migrationsApplied } from '../../db/migrate.js';
import type { AppDeps } from '../../deps.js';
import { AppError, notFound } from '../../errors.js';
import { listInbox } from '../../inbox/inbox.js';
import { phoneForLog } from '../../log.js';
import { authFailures } from '../../metrics.js';
import { listProcesses } from '../../ops/processes.js';
import { createSession, csrfFor, endSession, touchSession } from '../../ops/sessions.js';
import { listOrgs } from '../../orgs/orgs.js';
import { setFailoverEnabled } from '../../sms/config.js';
import { deleteDeadLetter, listDeadLetters, retryDeadLetter, type DeadLetter } from '../../sms/dead-letters.js';
import { healthSettings } from '../../sms/health.js';
import { listMessages } from '../../sms/history.js';
import { listOptOuts } from '../../sms/opt-outs.js';
import { SeriesCache, lastAcceptedSends, readDeliverySeries, readStatus, type StatusDeps } from '../../sms/status.js';
import { STARTED_AT, VERSION } from '../../version.js';
import type { RouteRegistry } from '../registry.js';
import { randomBytes } from 'node:crypto';
import type { Html } from './html.js';
import {
  AGE_FILTERS,
  DEAD_LETTER_REASONS,
  clinicPage,
  deadLettersPage,
  errorPage,
  layout,
  loginPage,
  overviewPage,
  serverPage,
  type Notice,
  type PageContext,
  type ServerFacts,
} from './views.js';
import {
  LOGIN_COOKIE,
  SESSION_COOKIE,
  clearCookie,
  crossSiteProblem,
  opsSession,
  parseCookies,
  sessionSettings,
  setCookie,
} from './session.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
// Compiled to dist/src/http/console, the stylesheet and script stay in src/.
const ASSET_DIRS = [path.join(HERE, 'assets'), path.resolve(HERE, '../../../../src/http/console/assets')];
const require = createRequire(import.meta.url);

/** Every file the console serves, by name: nothing else under /ops/assets exists. */
const ASSETS: Record<string, { type: string; file: () => string[] }> = {
  'console.css': { type: 'text/css; charset=utf-8', file: () => ASSET_DIRS.map((d) => path.join(d, 'console.css')) },
  // Served from the package itself: no CDN, no copy in the repository to keep up to date.
  'htmx.min.js': { type: 'text/javascript; charset=utf-8', file: () => [require.resolve('htmx.org/dist/htmx.min.js')] },
};

const assetCache = new Map<string, Promise<Buffer>>();
function asset(name: string): Promise<Buffer> | undefined {
  const a = ASSETS[name];
  if (!a) return undefined;
  let p = assetCache.get(name);
  if (!p) {
    p = (async () => {
      for (const f of a.file()) {
        try {
          return await readFile(f);
        } catch {
          /* the next layout */
        }
      }
      throw new Error(`console asset ${name} not found`);
    })();
    p.catch(() => assetCache.delete(name));
    assetCache.set(name, p);
  }
  return p;
}

/** No inline script or style anywhere: everything is a served file, so the policy can forbid them. */
const CSP = helmet.contentSecurityPolicy({
  useDefaults: false,
  directives: {
    defaultSrc: ["'none'"],
    scriptSrc: ["'self'"],
    styleSrc: ["'self'"],
    imgSrc: ["'self'"],
    connectSrc: ["'self'"],
    formAction: ["'self'"],
    frameAncestors: ["'none'"],
    baseUri: ["'none'"],
  },
});

// helmet's default (no-referrer) makes a browser send `Origin: null` with the console's own forms.
const REFERRER = helmet.referrerPolicy({ policy: 'same-origin' });

const NO_STORE = { 'Cache-Control': 'no-store' };
const csrfField = { csrf: z.string().max(200).describe("The session's CSRF token (a hidden field of every console form).") };
const back = z
  .string()
  .max(200)
  .regex(/^\/ops(\/[A-Za-z0-9/_-]*)?$/)
  .optional()
  .describe('Where to return to (a console path).');

const NOTICES: Record<string, Notice> = {
  retried: { kind: 'ok', text: 'Retried: the message was queued again and given one run at once.' },
  deleted: { kind: 'ok', text: 'The dead letter was deleted.' },
  failover_on: { kind: 'ok', text: 'Failover switched on. It applies from the next message.' },
  failover_off: { kind: 'ok', text: 'Failover switched off. It applies from the next message.' },
};

function send(res: Response, status: number, page: Html): void {
  res.status(status).set(NO_STORE).type('html').send(page.value);
}

export function consoleRouter(deps: AppDeps, registry: RouteRegistry): Router {
  const router = Router();
  const { cfg, workerSql } = deps;
  const tags = ['console'];
  const refresh = cfg.OPS_REFRESH_SECONDS;
  const settings = sessionSettings(cfg);
  const statusDeps: StatusDeps = {
    workerSql,
    sql: deps.sql,
    chains: deps.sms.chains,
    engine: deps.sms.engine,
    staleMs: healthSettings(cfg).staleMs,
  };
  const seriesCache = new SeriesCache();
  const failedLogins = new RateLimiterMemory({
    keyPrefix: 'ops-login',
    points: cfg.OPS_LOGIN_FAILURES_PER_SOURCE,
    duration: cfg.OPS_LOGIN_WINDOW_SECONDS,
  });

  router.use('/ops', CSP, REFERRER);

  const migrationFiles = loadMigrations().then((ms) => ({ files: ms.length, latest: ms[ms.length - 1]?.name ?? '–' }));
  const readiness = async (): Promise<ServerFacts['ready'] & { applied: boolean | null }> => {
    try {
      const ok = await migrationsApplied(deps.sql);
      return ok
        ? { state: 'ready', text: 'ready', applied: true }
        : { state: 'migrations_pending', text: 'not ready: migrations pending', applied: false };
    } catch {
      return { state: 'unreachable', text: 'not ready: database unreachable', applied: null };
    }
  };
  const ctx = async (res: Response, title: string, nav: PageContext['nav']): Promise<PageContext> => {
    const r = await readiness();
    return { title, nav, csrf: opsSession(res).csrf, refreshSeconds: refresh, server: { ready: r.text, version: VERSION } };
  };
  const page = async (req: Request, res: Response, title: string, nav: PageContext['nav'], body: Html, status = 200) => {
    // htmx asks for the whole page and keeps the part it swaps (hx-select); the frame around it costs nothing to skip.
    send(res, status, req.get('hx-request') ? body : layout(await ctx(res, title, nav), body));
  };
  const notice = (req: Request) => {
    const n = typeof req.query.notice === 'string' ? NOTICES[req.query.notice] : undefined;
    return n;
  };

  // ---------- signing in and out ----------

  const loginForm = (req: Request, res: Response) => {
    // Pre-session CSRF: the sign-in form carries a token bound to a cookie of its own.
    const nonce = randomBytes(32).toString('base64url');
    setCookie(res, req, cfg, LOGIN_COOKIE, nonce, 3600);
    return csrfFor(nonce);
  };
  const loginPageCtx: PageContext = { title: 'Sign in', refreshSeconds: refresh };

  registry.mount(
    router,
    {
      method: 'get',
      path: '/ops/login',
      access: 'public',
      tags,
      summary: "The console's sign-in page",
      responses: {
        200: { description: 'HTML: a form posting `token` to /ops/login.', contentType: 'text/html' },
        303: { description: 'Already signed in: to /ops.' },
      },
    },
    async (req, res) => {
      const id = parseCookies(req)[SESSION_COOKIE];
      if (id && (await touchSession(workerSql, id, settings))) return res.redirect(303, '/ops');
      send(res, 200, layout(loginPageCtx, loginPage({ csrf: loginForm(req, res) })));
    },
  );

  registry.mount(
    router,
    {
      method: 'post',
      path: '/ops/login',
      access: 'public',
      tags,
      summary: 'Sign in to the console with the admin token',
      description:
        'The form field `token` is compared with ADMIN_TOKEN in constant time; on success the answer sets the session cookie ' +
        '(HttpOnly, SameSite=Strict, Path=/ops, Secure over https) and redirects to /ops. The form carries a CSRF token bound to ' +
        "the sign-in page's own cookie, and a request from another origin is refused. Failed attempts are throttled per source " +
        'address (OPS_LOGIN_FAILURES_PER_SOURCE per OPS_LOGIN_WINDOW_SECONDS: 429 with Retry-After).',
      body: z.object({ token: z.string().max(1000), csrf: csrfField.csrf.optional() }),
      bodyType: 'form',
      responses: {
        303: { description: 'Signed in: the session cookie is set, on to /ops.' },
        401: { description: 'HTML: the token is wrong.', contentType: 'text/html' },
        403: { description: 'HTML: cross-site request, or the form expired (no or wrong CSRF token).', contentType: 'text/html' },
        429: { description: 'HTML: too many failed sign-ins from this address.', contentType: 'text/html' },
      },
    },
    async (req, res, { body }) => {
      const again = (status: number, error: string) =>
        send(res, status, layout(loginPageCtx, loginPage({ csrf: loginForm(req, res), error })));
      if (crossSiteProblem(req, cfg)) {
        authFailures.inc({ layer: 'console', reason: 'cross_site' });
        return again(403, 'Refused: this sign-in did not come from the console itself.');
      }
      const source = req.ip ?? 'unknown';
      const seen = await failedLogins.get(source);
      if (seen && seen.consumedPoints >= cfg.OPS_LOGIN_FAILURES_PER_SOURCE) {
        res.set('Retry-After', String(Math.max(1, Math.ceil(seen.msBeforeNext / 1000))));
        authFailures.inc({ layer: 'console', reason: 'throttled' });
        return again(429, 'Too many failed sign-ins from this address. Wait a few minutes and try again.');
      }
      const nonce = parseCookies(req)[LOGIN_COOKIE];
      if (!nonce || !body.csrf || !safeEqual(body.csrf, csrfFor(nonce))) {
        authFailures.inc({ layer: 'console', reason: 'login_csrf' });
        return again(403, 'The sign-in form expired. It has been reloaded: sign in again.');
      }
      if (!safeEqual(body.token, deps.adminToken)) {
        await failedLogins.consume(source, 1).catch(() => {});
        authFailures.inc({ layer: 'console', reason: 'wrong_token' });
        req.log.warn('console sign-in refused: wrong token');
        return again(401, 'That is not the admin token.');
      }
      const { id } = await createSession(workerSql, settings);
      clearCookie(res, req, cfg, LOGIN_COOKIE);
      setCookie(res, req, cfg, SESSION_COOKIE, id, cfg.OPS_SESSION_MAX_HOURS * 3600);
      req.log.info('console sign-in');
      res.set(NO_STORE).redirect(303, '/ops');
    },
  );

  registry.mount(
    router,
    {
      method: 'post',
      path: '/ops/logout',
      access: 'session',
      tags,
      summary: 'Sign out: the session ends at once, in every process',
      body: z.object(csrfField),
      bodyType: 'form',
      responses: {
        303: { description: 'Signed out, on to the sign-in page.' },
        401: { description: 'No live session.' },
        403: { description: 'Cross-site, or no or wrong CSRF token.' },
      },
    },
    async (req, res) => {
      await endSession(workerSql, opsSession(res).idHash);
      clearCookie(res, req, cfg, SESSION_COOKIE);
      req.log.info('console sign-out');
      res.set(NO_STORE).redirect(303, '/ops/login');
    },
  );

  registry.mount(
    router,
    {
      method: 'get',
      path: '/ops/assets/:name',
      access: 'public',
      tags,
      summary: "The console's stylesheet and htmx, served by the service itself",
      responses: { 200: { description: 'The file.', contentType: 'text/css' }, 404: { description: 'not_found' } },
    },
    async (req, res) => {
      const name = String(req.params.name);
      const file = asset(name);
      if (!file) throw notFound('asset');
      res.set({ 'Content-Type': ASSETS[name]!.type, 'Cache-Control': 'public, max-age=300' }).send(await file);
    },
  );

  // ---------- pages ----------

  registry.mount(
    router,
    {
      method: 'get',
      path: '/ops',
      access: 'session',
      tags,
      summary: 'The overview: every clinic, its provider chain, failover switch and the last hour',
      responses: { 200: { description: 'HTML.', contentType: 'text/html' }, 303: { description: 'Not signed in: to /ops/login.' } },
    },
    async (req, res) => {
      const [report, series] = await Promise.all([
        readStatus(statusDeps),
        readDeliverySeries(workerSql, { hours: 24, cache: seriesCache }),
      ]);
      await page(req, res, 'Overview', 'overview', overviewPage(report, series, opsSession(res).csrf, refresh, notice(req)));
    },
  );

  registry.mount(
    router,
    {
      method: 'get',
      path: '/ops/clinics/:id',
      access: 'session',
      tags,
      summary: "A clinic: its chain's health and figures, recent messages as the patient gets them, opt-outs, inbox, failover switch",
      responses: {
        200: { description: 'HTML.', contentType: 'text/html' },
        303: { description: 'Not signed in: to /ops/login.' },
        404: { description: 'No such clinic.' },
      },
    },
    async (req, res) => {
      const orgId = String(req.params.id).toLowerCase();
      if (!isUuid(orgId)) throw notFound('clinic');
      const [report, lastSends, messages, inbox, optOuts] = await Promise.all([
        readStatus(statusDeps, { orgId }),
        lastAcceptedSends(workerSql, orgId),
        listMessages(deps.sql, orgId, { limit: 25 }),
        listInbox(deps.sql, orgId, { limit: 20 }),
        listClinicOptOuts(deps, orgId),
      ]);
      const status = report.clinics[0];
      if (!status) throw notFound('clinic');
      await page(
        req,
        res,
        status.name,
        'clinic',
        clinicPage(
          { status, lastSends, messages: messages.items, inbox: inbox.items, optOuts },
          opsSession(res).csrf,
          refresh,
          notice(req),
        ),
      );
    },
  );

  registry.mount(
    router,
    {
      method: 'post',
      path: '/ops/clinics/:id/failover',
      access: 'session',
      tags,
      summary: "Switch a clinic's SMS failover on or off (as PATCH /api/admin/orgs/:id/sms)",
      body: z.object({ ...csrfField, enabled: z.enum(['true', 'false']), back }),
      bodyType: 'form',
      responses: {
        303: { description: 'Switched; back to the page the form was on.' },
        401: { description: 'No live session.' },
        403: { description: 'Cross-site, or no or wrong CSRF token.' },
        404: { description: 'SMS is not configured for this clinic.' },
      },
    },
    async (req, res, { body }) => {
      const orgId = String(req.params.id).toLowerCase();
      if (!isUuid(orgId)) throw notFound('clinic');
      const enabled = body.enabled === 'true';
      const changed = await setFailoverEnabled(deps.sql, orgId, enabled, 'console');
      if (!changed) throw new AppError(404, 'not_found', 'SMS is not configured for this clinic.');
      deps.sms.chains.invalidate(orgId);
      deps.orgCache.invalidate(orgId);
      req.log.info({ orgId, failoverFrom: changed.from, failoverTo: changed.to }, 'sms failover switch set from the console');
      res.redirect(303, `${body.back ?? `/ops/clinics/${orgId}`}?notice=failover_${enabled ? 'on' : 'off'}`);
    },
  );

  const deadLetterQuery = z.object({
    org: z.union([z.uuid(), z.literal('')]).optional(),
    reason: z.union([z.enum(DEAD_LETTER_REASONS as [string, ...string[]]), z.literal('')]).optional(),
    age: z.enum(Object.keys(AGE_FILTERS) as [string, ...string[]]).optional(),
    notice: z.string().max(40).optional(),
  });

  const deadLetterPage = async (req: Request, res: Response, filters: z.infer<typeof deadLetterQuery>, status = 200, override?: Notice) => {
    const [clinics, found] = await Promise.all([allClinics(deps), filteredDeadLetters(deps, filters)]);
    const names = new Map(clinics.map((c) => [c.id, c.name]));
    const items = found.items.map((d) => ({ ...d, to: phoneForLog(d.to) ?? '', clinic: names.get(d.orgId) ?? d.orgId }));
    const body = deadLettersPage({
      items,
      clinics,
      filters,
      truncated: found.truncated,
      csrf: opsSession(res).csrf,
      notice: override ?? notice(req),
    });
    await page(req, res, 'Dead letters', 'dead-letters', body, status);
  };

  registry.mount(
    router,
    {
      method: 'get',
      path: '/ops/dead-letters',
      access: 'session',
      tags,
      summary: 'Dead letters, filtered by clinic, reason and age, with retry and delete',
      query: deadLetterQuery,
      responses: { 200: { description: 'HTML.', contentType: 'text/html' }, 303: { description: 'Not signed in: to /ops/login.' } },
    },
    async (req, res, { query }) => deadLetterPage(req, res, query),
  );

  registry.mount(
    router,
    {
      method: 'post',
      path: '/ops/dead-letters/:id/retry',
      access: 'session',
      tags,
      summary: 'Retry a dead letter (as POST /api/admin/failed-sms/:id/retry); refused once the patient has the confirmation',
      body: z.object(csrfField),
      bodyType: 'form',
      responses: {
        303: { description: 'Re-queued and given one run; back to the list.' },
        401: { description: 'No live session.' },
        403: { description: 'Cross-site, or no or wrong CSRF token.' },
        404: { description: 'No such message.' },
        409: { description: 'HTML: refused, already delivered or not a dead letter.', contentType: 'text/html' },
      },
    },
    async (req, res) => {
      const id = String(req.params.id);
      if (!isUuid(id)) throw notFound('message');
      const r = await retryDeadLetter(workerSql, deps.sms.worker, id, cfg.SMS_RESPONSE_BUDGET_MS);
      if (r.result === 'not_found') throw notFound('message');
      if (r.result === 'already_delivered')
        return deadLetterPage(req, res, {}, 409, {
          kind: 'bad',
          text: 'Refused: the patient already has a confirmation for this appointment. Nothing was sent.',
        });
      if (r.result !== 'requeued')
        return deadLetterPage(req, res, {}, 409, { kind: 'bad', text: `Refused: the message is ${r.status}, not a dead letter.` });
      req.log.info({ outboxId: id }, 'dead letter re-queued from the console');
      res.redirect(303, '/ops/dead-letters?notice=retried');
    },
  );

  registry.mount(
    router,
    {
      method: 'post',
      path: '/ops/dead-letters/:id/delete',
      access: 'session',
      tags,
      summary: 'Delete a dead letter (as DELETE /api/admin/failed-sms/:id)',
      body: z.object(csrfField),
      bodyType: 'form',
      responses: {
        303: { description: 'Deleted; back to the list.' },
        401: { description: 'No live session.' },
        403: { description: 'Cross-site, or no or wrong CSRF token.' },
        404: { description: 'No failed message with that id.' },
      },
    },
    async (req, res) => {
      const id = String(req.params.id);
      if (!isUuid(id) || !(await deleteDeadLetter(workerSql, id))) throw new AppError(404, 'not_found', 'No failed message with that id.');
      req.log.info({ outboxId: id }, 'dead letter deleted from the console');
      res.redirect(303, '/ops/dead-letters?notice=deleted');
    },
  );

  registry.mount(
    router,
    {
      method: 'get',
      path: '/ops/server',
      access: 'session',
      tags,
      summary: 'What the server knows: readiness, migrations, version, uptime, and the processes with their workers',
      responses: { 200: { description: 'HTML.', contentType: 'text/html' }, 303: { description: 'Not signed in: to /ops/login.' } },
    },
    async (req, res) => {
      const [ready, files, processes] = await Promise.all([
        readiness(),
        migrationFiles,
        listProcesses(workerSql, cfg.OPS_HEARTBEAT_MS).catch(() => []),
      ]);
      const facts: ServerFacts = {
        ready,
        migrations: { ...files, applied: ready.applied },
        version: VERSION,
        node: process.versions.node,
        startedAt: STARTED_AT.toISOString(),
        uptimeSeconds: (Date.now() - STARTED_AT.getTime()) / 1000,
        thisProcess: deps.processId,
        processes,
        heartbeatSeconds: cfg.OPS_HEARTBEAT_MS / 1000,
      };
      await page(req, res, 'Server', 'server', serverPage(facts, refresh));
    },
  );

  // Errors on console pages are pages too (a browser shows them); anything else keeps the API's JSON.
  const pages: ErrorRequestHandler = (err, req, res, next) => {
    if (!(err instanceof AppError) || !req.path.startsWith('/ops') || req.accepts(['json', 'html']) !== 'html' || res.headersSent)
      return next(err);
    const signedIn = res.locals.opsSession !== undefined;
    const frame: PageContext = signedIn
      ? { title: 'Refused', csrf: opsSession(res).csrf, refreshSeconds: refresh }
      : { title: err.status === 401 ? 'Not signed in' : 'Refused', refreshSeconds: refresh };
    res.set(err.headers);
    send(res, err.status, layout(frame, errorPage(err.status, err.message)));
  };
  router.use(pages);
  return router;
}

async function allClinics(deps: AppDeps): Promise<Array<{ id: string; name: string }>> {
  const out: Array<{ id: string; name: string }> = [];
  let before: string | undefined;
  for (;;) {
    const page = await listOrgs(deps.workerSql, { limit: 1000, ...(before ? { before } : {}) });
    out.push(...page.items.map((o) => ({ id: o.id, name: o.name })));
    if (!page.next) break;
    before = page.next;
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

const PAGE = 200;
const MAX_SHOWN = 100;
const MAX_PAGES = 10;

/** listDeadLetters' pages, newest failure first, filtered by reason and age, up to MAX_SHOWN. */
async function filteredDeadLetters(deps: AppDeps, f: { org?: string | undefined; reason?: string | undefined; age?: string | undefined }) {
  const age: { newer?: number; older?: number } = AGE_FILTERS[f.age ?? ''] ?? {};
  const now = Date.now();
  const items: DeadLetter[] = [];
  let before: string | undefined;
  let truncated = false;
  for (let i = 0; i < MAX_PAGES; i++) {
    const page = await listDeadLetters(deps.workerSql, { limit: PAGE, ...(before ? { before } : {}), ...(f.org ? { orgId: f.org } : {}) });
    if (page === 'bad_cursor') break;
    let older = false;
    for (const d of page.items) {
      const seconds = (now - Date.parse(d.failedAt)) / 1000;
      if (age.newer !== undefined && seconds > age.newer) {
        older = true;
        break;
      }
      if (age.older !== undefined && seconds <= age.older) continue;
      if (f.reason && d.reason !== f.reason) continue;
      items.push(d);
      if (items.length > MAX_SHOWN) break;
    }
    if (items.length > MAX_SHOWN) {
      truncated = true;
      items.length = MAX_SHOWN;
      break;
    }
    if (older || !page.next) break;
    before = page.next;
    if (i === MAX_PAGES - 1) truncated = true;
  }
  return { items, truncated };
}

/** The clinic's opt-out registry, newest first, phones masked. */
async function listClinicOptOuts(deps: AppDeps, orgId: string) {
  return (await listOptOuts(deps.sql, orgId, { limit: 20 })).items;
}
