import { Router } from 'express';
import { z } from 'zod';
import { isUuid } from '../booking/appointments.js';
import type { AppDeps } from '../deps.js';
import { AppError, notFound } from '../errors.js';
import { getSmsConfig, putSmsConfig, setFailoverEnabled, smsConfigProblem, smsConfigSchema } from '../sms/config.js';
import { deleteDeadLetter, listDeadLetters, retryDeadLetter } from '../sms/dead-letters.js';
import { orgIdParam, pageQuery } from './admin.js';
import { scopeOf } from './auth.js';
import type { RouteRegistry } from './registry.js';

const NO_STORE = { 'Cache-Control': 'no-store' };
const EXAMPLE_ID = '5eed0000-0000-4000-8000-000000000001';

/**
 * SMS operator API: the per-clinic provider chain, the dead-letter list, and
 * a clinic's own diagnostics. Dead letters are read through the worker role,
 * which alone sees the outbox across clinics.
 */
export function smsAdminRouter(deps: AppDeps, registry: RouteRegistry): Router {
  const router = Router();
  const { workerSql, keyring, cfg } = deps;
  const { chains, worker } = deps.sms;
  const tags = ['sms'];

  registry.mount(
    router,
    {
      method: 'put',
      path: '/api/admin/orgs/:id/sms',
      access: 'admin',
      tags,
      summary: "Replace a clinic's SMS provider chain",
      description:
        'Position 0 is the primary; later links are failovers, used only while `failoverEnabled` is true (omitted: unchanged; ' +
        'a clinic configured for the first time starts with it off). Credentials go in and never come out (encrypted with ' +
        'CREDENTIALS_KEY, bound to the clinic, position and kind). Kinds: `twilio`, `telnyx`, `sns` (Amazon SNS), `relay` ' +
        '(an HTTPS endpoint the clinic runs, https only in production) and `sandbox`, which records messages without sending ' +
        'them. Every link takes an optional `attemptTimeoutMs` (100-60000; default SMS_ATTEMPT_TIMEOUT_MS).',
      body: smsConfigSchema,
      responses: { 200: { description: 'The chain as stored, credentials masked.' }, 400: { description: 'invalid_request' }, 404: { description: 'not_found' } },
      example: {
        params: { id: EXAMPLE_ID },
        body: {
          enabled: true,
          rateLimitPerHour: 5,
          failoverEnabled: true,
          providers: [
            { kind: 'twilio', accountSid: `AC${'0'.repeat(32)}`, authToken: 'your-twilio-auth-token', senderNumbers: ['+14155550101'] },
            { kind: 'telnyx', apiKey: 'KEY0123456789', messagingProfileId: 'profile-id', senderNumbers: ['+14155550102'] },
          ],
        },
      },
    },
    async (req, res, { body }) => {
      const orgId = orgIdParam(req);
      const problem = smsConfigProblem(body, cfg.NODE_ENV === 'production');
      if (problem) throw new AppError(400, 'invalid_request', problem);
      const ok = await putSmsConfig(deps.sql, keyring, orgId, body, cfg.SMS_RATE_LIMIT_PER_HOUR);
      if (!ok) throw notFound('org');
      chains.invalidate(orgId);
      deps.orgCache.invalidate(orgId);
      req.log.info({ orgId, providers: body.providers.map((p) => p.kind) }, 'sms configuration replaced');
      res.json(await getSmsConfig(deps.sql, keyring, orgId));
    },
  );

  registry.mount(
    router,
    {
      method: 'get',
      path: '/api/admin/orgs/:id/sms',
      access: 'admin',
      tags,
      summary: "Read a clinic's SMS provider chain (no credentials)",
      responses: { 200: { description: 'The chain, credentials masked.' }, 404: { description: 'SMS is not configured for this org.' } },
      example: { params: { id: EXAMPLE_ID } },
    },
    async (req, res) => {
      const view = await getSmsConfig(deps.sql, keyring, orgIdParam(req));
      if (!view) throw new AppError(404, 'not_found', 'SMS is not configured for this org.');
      res.json(view);
    },
  );

  registry.mount(
    router,
    {
      method: 'patch',
      path: '/api/admin/orgs/:id/sms',
      access: 'admin',
      tags,
      summary: "Switch a clinic's SMS failover on or off",
      description:
        'Off: only position 0 of the chain sends; its messages fail or retry on the primary alone. Takes effect at once in ' +
        'this process and within ORG_CACHE_TTL_MS in the others; every change is recorded (who, when, from, to).',
      body: z.object({ failoverEnabled: z.boolean() }).strict(),
      responses: { 200: { description: 'The chain as stored, credentials masked.' }, 400: { description: 'invalid_request' }, 404: { description: 'SMS is not configured for this org.' } },
      example: { params: { id: EXAMPLE_ID }, body: { failoverEnabled: false } },
    },
    async (req, res, { body }) => {
      const orgId = orgIdParam(req);
      const changed = await setFailoverEnabled(deps.sql, orgId, body.failoverEnabled, 'admin');
      if (!changed) throw new AppError(404, 'not_found', 'SMS is not configured for this org.');
      chains.invalidate(orgId);
      deps.orgCache.invalidate(orgId);
      req.log.info({ orgId, failoverFrom: changed.from, failoverTo: changed.to }, 'sms failover switch set');
      res.json(await getSmsConfig(deps.sql, keyring, orgId));
    },
  );

  registry.mount(
    router,
    {
      method: 'get',
      path: '/api/admin/failed-sms',
      access: 'admin',
      tags,
      summary: 'Dead letters: messages that were not sent',
      description: 'Full phones and texts, for an operator; the response is never cached.',
      query: z.object({ ...pageQuery, orgId: z.uuid().optional() }),
      responses: { 200: { description: '`{items:[...], next}`' }, 400: { description: 'invalid_request (e.g. a bad cursor)' } },
      example: { query: { limit: '50' } },
    },
    async (_req, res, { query }) => {
      const page = await listDeadLetters(workerSql, query);
      if (page === 'bad_cursor') throw new AppError(400, 'invalid_request', 'Bad cursor.');
      res.set(NO_STORE).json(page);
    },
  );

  registry.mount(
    router,
    {
      method: 'post',
      path: '/api/admin/failed-sms/:id/retry',
      access: 'admin',
      tags,
      summary: 'Re-queue a dead letter (rate limit bypassed); refused once the patient has the confirmation',
      responses: { 202: { description: '`{id, status, provider, run}`' }, 404: { description: 'not_found' }, 409: { description: 'already_delivered or not_failed' } },
      example: { params: { id: '0b8f7e0e-2f6a-4d59-9a57-3f1f2c7a9e11' } },
    },
    async (req, res) => {
      const id = String(req.params.id);
      if (!isUuid(id)) throw notFound('message');
      const r = await retryDeadLetter(workerSql, worker, id, cfg.SMS_RESPONSE_BUDGET_MS);
      if (r.result === 'not_found') throw notFound('message');
      if (r.result === 'already_delivered') throw new AppError(409, 'already_delivered', 'The patient already has a confirmation for this appointment.');
      if (r.result !== 'requeued') throw new AppError(409, 'not_failed', `The message is ${r.status}, not failed.`);
      req.log.info({ outboxId: id }, 'dead letter re-queued by admin');
      res.status(202).json({ id, status: r.status, provider: r.provider, run: r.run });
    },
  );

  registry.mount(
    router,
    {
      method: 'delete',
      path: '/api/admin/failed-sms/:id',
      access: 'admin',
      tags,
      summary: 'Delete a dead letter',
      responses: { 204: { description: 'Deleted.' }, 404: { description: 'not_found' } },
      example: { params: { id: '0b8f7e0e-2f6a-4d59-9a57-3f1f2c7a9e11' } },
    },
    async (req, res) => {
      const id = String(req.params.id);
      if (!isUuid(id)) throw notFound('message');
      if (!(await deleteDeadLetter(workerSql, id))) throw new AppError(404, 'not_found', 'No failed message with that id.');
      res.status(204).end();
    },
  );

  // For the token's own clinic: do its SMS credentials decrypt and do its
  // providers answer? Nothing secret is returned.
  registry.mount(
    router,
    {
      method: 'get',
      path: '/api/sms/diagnostics',
      access: 'clinic',
      tags,
      summary: "The token's clinic: do its SMS credentials decrypt, do its providers answer",
      responses: { 200: { description: '`{configured, enabled, providers:[{position, kind, decrypts, senders, reachable}]}`' } },
    },
    async (req, res) => {
      const { org } = scopeOf(res);
      chains.invalidate(org.id);
      const chain = await chains.load(org.id);
      if (!chain) {
        res.json({ configured: false, providers: [] });
        return;
      }
      const providers = await Promise.all([
        ...chain.links.map(async (l) => ({
          position: l.position,
          kind: l.kind,
          decrypts: true,
          senders: l.pool.length,
          reachable: l.provider.probe ? (await l.provider.probe()).reachable : null,
        })),
        ...chain.broken.map(async (b) => ({ position: b.position, kind: b.kind, decrypts: false, senders: 0, reachable: null })),
      ]);
      providers.sort((a, b) => a.position - b.position);
      req.log.info({ orgId: org.id }, 'sms diagnostics');
      res.json({ configured: true, enabled: chain.enabled, providers });
    },
  );

  return router;
}
