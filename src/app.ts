import { randomUUID } from 'node:crypto';
import express, { type Express, type RequestHandler } from 'express';
import helmet from 'helmet';
import { pinoHttp } from 'pino-http';
import type { AppDeps } from './deps.js';
import { AppError } from './errors.js';
import { adminRouter } from './http/admin.js';
import { consoleRouter } from './http/console/routes.js';
import { sessionGuard } from './http/console/session.js';
import { clinicGuard, requireAdmin, requireMetricsToken } from './http/auth.js';
import { errorHandler } from './http/errors.js';
import { healthRouter } from './http/health.js';
import { oauthRouter } from './http/oauth.js';
import { openApiRouter } from './http/openapi.js';
import { RouteRegistry, type Access, type GuardFactory } from './http/registry.js';
import { smsAdminRouter } from './http/sms-admin.js';
import { smsStatusRouter } from './http/sms-status.js';
import { vapiRouter } from './http/vapi.js';
import { elevenLabsRouter } from './platforms/elevenlabs.js';
import { retellRouter } from './platforms/retell.js';
import { webhooksRouter } from './http/webhooks.js';
import { httpDuration } from './metrics.js';
import { VERSION } from './version.js';

export type App = Express & { registry: RouteRegistry };

/** The access check each kind of route gets; see RouteRegistry. */
function guards(deps: AppDeps): Record<Access, GuardFactory> {
  const none: GuardFactory = () => ({ beforeBody: [], afterBody: [] });
  const before =
    (h: RequestHandler): GuardFactory =>
    () => ({ beforeBody: [h], afterBody: [] });
  return {
    public: none,
    // Provider webhooks verify their signature in their own first handler.
    provider: none,
    admin: before(requireAdmin(deps)),
    metrics: before(requireMetricsToken(deps)),
    clinic: clinicGuard(deps),
    session: sessionGuard(deps),
  };
}

export function buildApp(deps: AppDeps): App {
  const app = express() as App;
  const registry = new RouteRegistry(guards(deps), deps.cfg.BODY_LIMIT_BYTES);
  app.registry = registry;
  app.disable('x-powered-by');
  // Every response is a fresh answer to one request; hashing each body for an ETag buys nothing.
  app.set('etag', false);
  app.set('trust proxy', deps.cfg.TRUST_PROXY);
  app.use(helmet());
  app.use(
    pinoHttp({
      logger: deps.log,
      genReqId: (req, res) => {
        const given = req.headers['x-request-id'];
        const id = typeof given === 'string' && /^[\w.-]{1,100}$/.test(given) ? given : randomUUID();
        res.setHeader('x-request-id', id);
        return id;
      },
      customLogLevel: (_req, res, err) => (err || res.statusCode >= 500 ? 'error' : res.statusCode >= 400 ? 'warn' : 'info'),
      autoLogging: { ignore: (req) => req.url === '/healthz' || req.url === '/metrics' },
      serializers: {
        req: (req: { id: unknown; method: string; url: string }) => ({ id: req.id, method: req.method, url: req.url }),
        res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
      },
    }),
  );
  app.use((req, res, next) => {
    const end = httpDuration.startTimer({ method: req.method });
    res.on('finish', () => end({ route: req.route?.path ?? 'unmatched', status: String(res.statusCode) }));
    next();
  });
  // Every admin path, existing or not, needs the token: a guess at an admin
  // URL learns nothing. Each admin route checks it again through the registry.
  app.use('/api/admin', requireAdmin(deps));

  app.use(healthRouter(deps, registry));
  app.use(oauthRouter(deps, registry));
  app.use(vapiRouter(deps, registry));
  app.use(retellRouter(deps, registry));
  app.use(elevenLabsRouter(deps, registry));
  app.use(adminRouter(deps, registry));
  app.use(smsAdminRouter(deps, registry));
  app.use(webhooksRouter(deps, registry));
  app.use(smsStatusRouter(deps, registry));
  app.use(consoleRouter(deps, registry));
  app.use(openApiRouter(registry, VERSION));
  app.use((_req, _res, next) => next(new AppError(404, 'not_found', 'No such endpoint.')));
  app.use(errorHandler);
  return app;
}
