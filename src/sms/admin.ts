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
import type { OutboxWorker } from './worker.js';

interface FailedRow {
  id: string;
  org_id: string;
  appointment_id: string;
  kind: string;
  to_phone: string;
  body: string;
  attempts: number;
  provider: string | null;
  last_error: string | null;
  last_error_class: string | null;
  last_error_code: string | null;
  failure_reason: string | null;
  created_at: Date;
  failed_at: Date;
  /** failed_at in microseconds since the epoch, as text: a Date would drop the microseconds the ORDER BY uses. */
  failed_us: string;
  provider_attempts: number;
}

const view = (r: FailedRow) => ({
  id: r.id,
  orgId: r.org_id,
  appointmentId: r.appointment_id,
  kind: r.kind,
  to: r.to_phone,
  body: r.body,
  provider: r.provider,
  reason: r.failure_reason,
  error: r.last_error,
  errorClass: r.last_error_class,
  errorCode: r.last_error_code,
  runs: r.attempts,
  providerAttempts: Number(r.provider_attempts),
  createdAt: r.created_at.toISOString(),
  failedAt: r.failed_at.toISOString(),
});

/**
 * SMS operator API: the per-clinic provider chain, and the dead-letter list of
 * messages that were not sent (exhausted, rate limited, invalid recipient...).
 * Dead letters are read through the worker role, which alone sees the outbox
 * across clinics.
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
    // Keyset pagination on (failed_at, id): stable while new failures arrive.
    // The cursor keeps failed_at to the microsecond: rounded to milliseconds,
    // rows failing within the same millisecond as a page's last row would be
    // skipped or repeated.
    let cursor: { us: string; id: string } | null = null;
    if (q.before) {
      const [us, id] = Buffer.from(q.before, 'base64url').toString('utf8').split('|');
      if (!us || !/^\d{1,18}$/.test(us) || !id || !isUuid(id)) throw new HttpError(400, 'invalid_request', 'Bad cursor.');
      cursor = { us, id };
    }
    const rows = await sms.workerSql<FailedRow[]>`
      SELECT o.id, o.org_id, o.appointment_id, o.kind, o.to_phone, o.body, o.attempts, o.provider, o.last_error,
             o.last_error_class, o.last_error_code, o.failure_reason, o.created_at, o.failed_at,
             (extract(epoch FROM o.failed_at) * 1000000)::bigint::text AS failed_us,
             (SELECT count(*) FROM sms_attempts a WHERE a.outbox_id = o.id AND a.outcome <> 'skipped') AS provider_attempts
        FROM sms_outbox o
       WHERE o.status = 'failed'
         ${q.orgId ? sms.workerSql`AND o.org_id = ${q.orgId}` : sms.workerSql``}
         ${cursor ? sms.workerSql`AND (o.failed_at, o.id) < (timestamptz 'epoch' + ${cursor.us}::bigint * interval '1 microsecond', ${cursor.id}::uuid)` : sms.workerSql``}
       ORDER BY o.failed_at DESC, o.id DESC
       LIMIT ${q.limit + 1}`;
    const page = rows.slice(0, q.limit);
    const last = page[page.length - 1];
    res.json({
      items: page.map(view),
      next: rows.length > q.limit && last ? Buffer.from(`${last.failed_us}|${last.id}`).toString('base64url') : null,
    });
  });

  router.post('/api/admin/failed-sms/:id/retry', ...admin, async (req, res) => {
    const id = String(req.params.id);
    if (!isUuid(id)) throw new HttpError(404, 'not_found', 'No such message.');
    // Re-queued only if the patient does not already have a confirmation for
    // this appointment: not from this row (an accepted or reconciled attempt),
    // and not from a later one (a reschedule's text supersedes this one).
    const delivered = sms.workerSql`
      EXISTS (SELECT 1 FROM sms_attempts a WHERE a.outbox_id = o.id AND a.outcome IN ('accepted', 'reconciled'))
      OR EXISTS (SELECT 1 FROM sms_outbox n WHERE n.org_id = o.org_id AND n.appointment_id = o.appointment_id
                    AND n.id <> o.id AND n.status = 'sent' AND n.created_at > o.created_at)`;
    const [row] = await sms.workerSql<{ id: string }[]>`
      UPDATE sms_outbox o
         SET status = 'pending', next_attempt_at = now(), attempts = 0, bypass_rate_limit = true,
             failed_at = NULL, failure_reason = NULL, locked_until = NULL, locked_by = NULL, updated_at = now()
       WHERE o.id = ${id} AND o.status = 'failed' AND NOT (${delivered})
      RETURNING o.id`;
    if (!row) {
      const [cur] = await sms.workerSql<{ status: string; delivered: boolean }[]>`
        SELECT o.status, (${delivered}) AS delivered FROM sms_outbox o WHERE o.id = ${id}`;
      if (!cur) throw new HttpError(404, 'not_found', 'No such message.');
      if (cur.delivered || cur.status === 'sent') {
        throw new HttpError(409, 'already_delivered', 'The patient already has a confirmation for this appointment.');
      }
      throw new HttpError(409, 'not_failed', `The message is ${cur.status}, not failed.`);
    }
    req.log.info({ outboxId: id }, 'dead letter re-queued by admin');
    const run = sms.worker.processNow(id).catch(() => null);
    const outcome = await Promise.race([run, new Promise<null>((r) => setTimeout(() => r(null), sms.cfg.SMS_RESPONSE_BUDGET_MS).unref())]);
    const [now] = await sms.workerSql<{ status: string; provider: string | null; last_error: string | null }[]>`
      SELECT status, provider, last_error FROM sms_outbox WHERE id = ${id}`;
    res.status(202).json({ id, status: now?.status ?? 'pending', provider: now?.provider ?? null, run: outcome });
  });

  router.delete('/api/admin/failed-sms/:id', ...admin, async (req, res) => {
    const id = String(req.params.id);
    if (!isUuid(id)) throw new HttpError(404, 'not_found', 'No such message.');
    const rows = await sms.workerSql`DELETE FROM sms_outbox WHERE id = ${id} AND status = 'failed' RETURNING id`;
    if (rows.length === 0) throw new HttpError(404, 'not_found', 'No failed message with that id.');
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
