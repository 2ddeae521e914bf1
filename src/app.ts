import { randomUUID } from 'node:crypto';
import express, { type Express } from 'express';
import helmet from 'helmet';
import type { DateTime } from 'luxon';
import type { Logger } from 'pino';
import { pinoHttp } from 'pino-http';
import type { Sql } from 'postgres';
import type { TokenService } from './auth/tokens.js';
import type { Config } from './config.js';
import { adminRouter } from './http/admin.js';
import { errorHandler, HttpError } from './http/errors.js';
import { healthRouter } from './http/health.js';
import { oauthRouter } from './http/oauth.js';
import { vapiRouter } from './http/vapi.js';
import { httpDuration } from './metrics.js';
import type { Keyring } from './sms/crypto.js';
import type { OrgContextCache } from './booking/org.js';
import type { ConfirmationNotifier } from './tools/types.js';

export interface AppDeps {
  cfg: Config;
  /** Request-path pool, connected as clinic_app (RLS enforced). */
  sql: Sql;
  tokens: TokenService;
  keyring: Keyring;
  adminToken: string;
  sms: ConfirmationNotifier;
  /** Clinic settings reused between tool calls (see OrgContextCache). */
  orgCache: OrgContextCache;
  /** Extra admin routes (the SMS engine's), mounted behind the admin token. */
  extraRouters?: express.Router[];
  log: Logger;
  now: () => DateTime;
}

export function buildApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', true);
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

  app.use(healthRouter(deps));
  app.use(oauthRouter(deps));
  app.use(vapiRouter(deps));
  app.use(adminRouter(deps));
  for (const r of deps.extraRouters ?? []) app.use(r);
  app.use((_req, _res, next) => next(new HttpError(404, 'not_found', 'No such endpoint.')));
  app.use(errorHandler);
  return app;
}
