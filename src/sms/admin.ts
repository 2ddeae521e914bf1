import express, { Router } from 'express';
import type { Sql } from 'postgres';
import { z } from 'zod';
import type { Config } from '../config.js';
import { isUuid } from '../booking/appointments.js';
import { domain, orgIdParam, parseBody } from '../http/admin.js';
import { requireAdmin, requireToken, identityOf } from '../http/auth.js';
import { HttpError } from '../http/errors.js';
import type { AppDeps } from '../app.js';
import type { Keyring } from './crypto.js';
import { getSmsConfig, putSmsConfig, smsConfigSchema, type ChainLoader } from './config.js';
import { deleteDeadLetter, listDeadLetters, retryDeadLetter } from './dead-letters.js';
import type { OutboxWorker } from './worker.js';

/**
 * SMS operator API: the per-clinic provider chain, and the dead-letter list of
 * messages that were not sent (exhausted, rate limited, invalid recipient...),
 * as thin handlers over dead-letters.ts.
 */
export function smsAdminRouter(
  deps: AppDeps,
  sms: { workerSql: Sql; keyring: Keyring; chains: ChainLoader; worker: OutboxWorker; cfg: Config },
): Router {
  const router = Router();
  const admin = [requireAdmin(deps), express.json({ limit: deps.cfg.BODY_LIMIT_BYTES })];

  router.put('/api/admin/orgs/:id/sms', ...admin, async (req, res) => {
    const orgId = orgIdParam(req);
    const input = parseBody(smsConfigSchema, req.body);
    const ok = await domain(() => putSmsConfig(deps.sql, sms.keyring, orgId, input, sms.cfg.SMS_RATE_LIMIT_PER_HOUR));
    if (!ok) throw new HttpError(404, 'not_found', 'No such org.');
    sms.chains.invalidate(orgId);
    deps.orgCache.invalidate(orgId);
    req.log.info({ orgId, providers: input.providers.map((p) => p.kind) }, 'sms configuration replaced');
    res.json(await getSmsConfig(deps.sql, sms.keyring, orgId));
  });

  router.get('/api/admin/orgs/:id/sms', ...admin, async (req, res) => {
    const cfg = await getSmsConfig(deps.sql, sms.keyring, orgIdParam(req));
    if (!cfg) throw new HttpError(404, 'not_found', 'SMS is not configured for this org.');
    res.json(cfg);
  });

  router.get('/api/admin/failed-sms', ...admin, async (req, res) => {
    const q = parseBody(
      z.object({
        limit: z.coerce.number().int().min(1).max(200).default(50),
        before: z.string().max(200).optional(),
        orgId: z.uuid().optional(),
      }),
      req.query,
    );
    const page = await listDeadLetters(sms.workerSql, q);
    if (page === 'bad_cursor') throw new HttpError(400, 'invalid_request', 'Bad cursor.');
    res.json(page);
  });

  router.post('/api/admin/failed-sms/:id/retry', ...admin, async (req, res) => {
    const id = String(req.params.id);
    if (!isUuid(id)) throw new HttpError(404, 'not_found', 'No such message.');
    const r = await retryDeadLetter(sms.workerSql, sms.worker, id, sms.cfg.SMS_RESPONSE_BUDGET_MS);
    if (r.result === 'not_found') throw new HttpError(404, 'not_found', 'No such message.');
    if (r.result === 'already_delivered') throw new HttpError(409, 'already_delivered', 'The patient already has a confirmation for this appointment.');
    if (r.result !== 'requeued') throw new HttpError(409, 'not_failed', `The message is ${r.status}, not failed.`);
    req.log.info({ outboxId: id }, 'dead letter re-queued by admin');
    res.status(202).json({ id, status: r.status, provider: r.provider, run: r.run });
  });

  router.delete('/api/admin/failed-sms/:id', ...admin, async (req, res) => {
    const id = String(req.params.id);
    if (!isUuid(id)) throw new HttpError(404, 'not_found', 'No such message.');
    if (!(await deleteDeadLetter(sms.workerSql, id))) throw new HttpError(404, 'not_found', 'No failed message with that id.');
    res.status(204).end();
  });

  // For the token's own clinic: do its SMS credentials decrypt and do its
  // providers answer? Nothing secret is returned.
  router.get('/api/sms/diagnostics', requireToken(deps), async (req, res) => {
    const { orgId } = identityOf(res);
    sms.chains.invalidate(orgId);
    const chain = await sms.chains.load(orgId);
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
    req.log.info({ orgId }, 'sms diagnostics');
    res.json({ configured: true, enabled: chain.enabled, providers });
  });

  return router;
}
