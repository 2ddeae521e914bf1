import { Router } from 'express';
import { migrationsApplied } from '../db/migrate.js';
import type { AppDeps } from '../deps.js';
import { registry as metricsRegistry } from '../metrics.js';
import type { RouteRegistry } from './registry.js';

export function healthRouter(deps: AppDeps, registry: RouteRegistry): Router {
  const router = Router();
  const tags = ['operations'];
  registry.mount(
    router,
    {
      method: 'get',
      path: '/healthz',
      access: 'public',
      tags,
      summary: 'The process is up (no database access)',
      responses: { 200: { description: '`{status:"ok"}`' } },
    },
    (_req, res) => {
      res.json({ status: 'ok' });
    },
  );
  // Ready means a tool call could succeed: the database answers and the schema is current.
  registry.mount(
    router,
    {
      method: 'get',
      path: '/readyz',
      access: 'public',
      tags,
      summary: 'The database answers and every migration is applied',
      responses: { 200: { description: '`{status:"ready"}`' }, 503: { description: '`migrations_pending` or `unavailable`' } },
    },
    async (req, res) => {
      try {
        const ok = await migrationsApplied(deps.sql);
        res.status(ok ? 200 : 503).json({ status: ok ? 'ready' : 'migrations_pending', database: 'ok' });
      } catch (err) {
        req.log.warn({ err }, 'readiness check failed');
        res.status(503).json({ status: 'unavailable', database: 'unreachable' });
      }
    },
  );
  registry.mount(
    router,
    {
      method: 'get',
      path: '/metrics',
      access: 'metrics',
      tags,
      summary: 'Prometheus metrics (no patient data in any label)',
      responses: {
        200: { description: 'Prometheus text format.', contentType: 'text/plain' },
        401: { description: 'METRICS_TOKEN is set and was not given.' },
      },
    },
    async (_req, res) => {
      res.set('Content-Type', metricsRegistry.contentType).send(await metricsRegistry.metrics());
    },
  );
  return router;
}
