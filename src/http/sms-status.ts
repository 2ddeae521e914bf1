import { Router } from 'express';
import { z } from 'zod';
import type { AppDeps } from '../deps.js';
import { healthSettings } from '../sms/health.js';
import { readStatus, type StatusDeps } from '../sms/status.js';
import { scopeOf } from './auth.js';
import type { RouteRegistry } from './registry.js';

const DESCRIPTION =
  'Per clinic: the failover switch, the outbox (depth, how long the oldest due message has waited), dead letters, opt-outs, ' +
  "bookings made today in the clinic's zone, and the last hour's sends. Per provider link: its account's shared health (last " +
  'probe, latency, ok or error class and code), the breaker as every process acts on it (`shared`) and as this process holds it ' +
  '(`here`), and the last hour: attempts, accepted, delivered, undelivered, awaiting a receipt, refused, the delivery rate ' +
  '(delivered ÷ (delivered + undelivered), null without a final receipt), p50/p99 send latency, failovers and async failovers ' +
  '(resent elsewhere after a failure receipt). No phone, text or credential.';

/** The SMS status figures (src/sms/status.ts): every clinic for the operator, one clinic for its own token. */
export function smsStatusRouter(deps: AppDeps, registry: RouteRegistry): Router {
  const router = Router();
  const statusDeps: StatusDeps = {
    workerSql: deps.workerSql,
    sql: deps.sql,
    chains: deps.sms.chains,
    engine: deps.sms.engine,
    staleMs: healthSettings(deps.cfg).staleMs,
  };

  registry.mount(
    router,
    {
      method: 'get',
      path: '/api/admin/sms/status',
      access: 'admin',
      tags: ['sms'],
      summary: 'SMS status of every clinic (or one, `orgId`): health, breakers, the last hour, outbox, dead letters, opt-outs',
      description: DESCRIPTION,
      query: z.object({ orgId: z.uuid().optional().describe('Only this clinic.') }),
      responses: {
        200: {
          description:
            '`{generatedAt, since, clinics:[{orgId, name, sms, providers:[...], lastHour, outbox, deadLetters, optOuts, bookingsToday}], totals}`',
        },
        400: { description: 'invalid_request' },
      },
      example: { query: { orgId: '5eed0000-0000-4000-8000-000000000001' } },
    },
    async (_req, res, { query }) => {
      res.set('Cache-Control', 'no-store').json(await readStatus(statusDeps, query.orgId ? { orgId: query.orgId } : {}));
    },
  );

  registry.mount(
    router,
    {
      method: 'get',
      path: '/api/sms/status',
      access: 'clinic',
      tags: ['sms'],
      summary: "The token's clinic: its SMS status (the same figures as the admin view, for this clinic only)",
      description: DESCRIPTION,
      responses: {
        200: {
          description: '`{orgId, name, sms, providers:[...], lastHour, outbox, deadLetters, optOuts, bookingsToday, generatedAt, since}`',
        },
      },
    },
    async (_req, res) => {
      const { org } = scopeOf(res);
      const report = await readStatus(statusDeps, { orgId: org.id });
      res.set('Cache-Control', 'no-store').json({ generatedAt: report.generatedAt, since: report.since, ...report.clinics[0] });
    },
  );

  return router;
}
