import { Router } from 'express';
import type { AppDeps } from '../app.js';
import { migrationsApplied } from '../db/migrate.js';
import { registry } from '../metrics.js';
import { safeEqual } from '../auth/tokens.js';

export function healthRouter(deps: AppDeps): Router {
  const router = Router();
  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  // Ready means a tool call could succeed: the database answers and the schema is current.
  router.get('/readyz', async (req, res) => {
    try {
      const ok = await migrationsApplied(deps.sql);
      res.status(ok ? 200 : 503).json({ status: ok ? 'ready' : 'migrations_pending', database: 'ok' });
    } catch (err) {
      req.log.warn({ err }, 'readiness check failed');
      res.status(503).json({ status: 'unavailable', database: 'unreachable' });
    }
  });
  router.get('/metrics', async (req, res) => {
    const token = deps.cfg.METRICS_TOKEN;
    if (token) {
      const given = /^Bearer\s+(\S+)$/i.exec(req.get('authorization') ?? '')?.[1];
      if (!given || !safeEqual(given, token)) {
        res.set('WWW-Authenticate', 'Bearer realm="metrics"').status(401).json({ error: 'unauthorized', message: 'Metrics token required.' });
        return;
      }
    }
    res.set('Content-Type', registry.contentType).send(await registry.metrics());
  });
  return router;
}
