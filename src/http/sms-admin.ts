import { Router } from 'express';
import { z } from 'zod';
import { isUuid } from '../booking/appointments.js';
import type { Config } from '../config.js';
import type { AppDeps } from '../deps.js';
import { AppError, notFound } from '../errors.js';
import { getSmsConfig, putSmsConfig, smsConfigSchema } from '../sms/config.js';
import { orgIdParam, pageQuery } from './admin.js';
import { scopeOf } from './auth.js';
import type { RouteRegistry } from './registry.js';

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
        'Position 0 is the primary; later links are failovers. Credentials go in and never come out (encrypted with ' +
        'CREDENTIALS_KEY, bound to the clinic and position). `kind: "sandbox"` records messages without sending them; it still ' +
        'needs `senderNumbers`.',
      body: smsConfigSchema,
      responses: { 200: { description: 'The chain as stored, credentials masked.' }, 400: { description: 'invalid_request' }, 404: { description: 'not_found' } },
      example: {
        params: { id: EXAMPLE_ID },
        body: {
          enabled: true,
          rateLimitPerHour: 5,
          providers: [
            { kind: 'twilio', accountSid: `AC${'0'.repeat(32)}`, authToken: 'your-twilio-auth-token', senderNumbers: ['+14155550101'] },
            { kind: 'telnyx', apiKey: 'KEY0123456789', messagingProfileId: 'profile-id', senderNumbers: ['+14155550102'] },
          ],
        },
      },
    },
    async (req, res, { body }) => {
      const orgId = orgIdParam(req);
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
    async (_req, res, { query: q }) => {
      let cursor: { us: string; id: string } | null = null;
      if (q.before) {
        const [us, id] = Buffer.from(q.before, 'base64url').toString('utf8').split('|');
        if (!us || !/^\d{1,18}$/.test(us) || !id || !isUuid(id)) throw new AppError(400, 'invalid_request', 'Bad cursor.');
        cursor = { us, id };
      }
      const rows = await workerSql<FailedRow[]>`
        SELECT o.id, o.org_id, o.appointment_id, o.kind, o.to_phone, o.body, o.attempts, o.provider, o.last_error,
               o.last_error_class, o.last_error_code, o.failure_reason, o.created_at, o.failed_at,
               (extract(epoch FROM o.failed_at) * 1000000)::bigint::text AS failed_us,
               (SELECT count(*) FROM sms_attempts a WHERE a.outbox_id = o.id AND a.outcome <> 'skipped') AS provider_attempts
          FROM sms_outbox o
         WHERE o.status = 'failed'
           ${q.orgId ? workerSql`AND o.org_id = ${q.orgId}` : workerSql``}
           ${cursor ? workerSql`AND (o.failed_at, o.id) < (timestamptz 'epoch' + ${cursor.us}::bigint * interval '1 microsecond', ${cursor.id}::uuid)` : workerSql``}
         ORDER BY o.failed_at DESC, o.id DESC
         LIMIT ${q.limit + 1}`;
      const items = rows.slice(0, q.limit);
      const last = items[items.length - 1];
      res.set(NO_STORE).json({
        items: items.map(view),
        next: rows.length > q.limit && last ? Buffer.from(`${last.failed_us}|${last.id}`).toString('base64url') : null,
      });
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
      const delivered = workerSql`
        EXISTS (SELECT 1 FROM sms_attempts a WHERE a.outbox_id = o.id AND a.outcome IN ('accepted', 'reconciled'))
        OR EXISTS (SELECT 1 FROM sms_outbox n WHERE n.org_id = o.org_id AND n.appointment_id = o.appointment_id
                      AND n.id <> o.id AND n.status = 'sent' AND n.created_at > o.created_at)`;
      const [row] = await workerSql<{ id: string }[]>`
        UPDATE sms_outbox o
           SET status = 'pending', next_attempt_at = now(), attempts = 0, bypass_rate_limit = true,
               failed_at = NULL, failure_reason = NULL, locked_until = NULL, locked_by = NULL, updated_at = now()
         WHERE o.id = ${id} AND o.status = 'failed' AND NOT (${delivered})
        RETURNING o.id`;
      if (!row) {
        const [cur] = await workerSql<{ status: string; delivered: boolean }[]>`
          SELECT o.status, (${delivered}) AS delivered FROM sms_outbox o WHERE o.id = ${id}`;
        if (!cur) throw notFound('message');
        if (cur.delivered || cur.status === 'sent') {
          throw new AppError(409, 'already_delivered', 'The patient already has a confirmation for this appointment.');
        }
        throw new AppError(409, 'not_failed', `The message is ${cur.status}, not failed.`);
      }
      req.log.info({ outboxId: id }, 'dead letter re-queued by admin');
      const run = worker.processNow(id).catch(() => null);
      const outcome = await Promise.race([run, new Promise<null>((r) => setTimeout(() => r(null), cfg.SMS_RESPONSE_BUDGET_MS).unref())]);
      const [now] = await workerSql<{ status: string; provider: string | null; last_error: string | null }[]>`
        SELECT status, provider, last_error FROM sms_outbox WHERE id = ${id}`;
      res.status(202).json({ id, status: now?.status ?? 'pending', provider: now?.provider ?? null, run: outcome });
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
      const rows = await workerSql`DELETE FROM sms_outbox WHERE id = ${id} AND status = 'failed' RETURNING id`;
      if (rows.length === 0) throw new AppError(404, 'not_found', 'No failed message with that id.');
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
          reachable: await reachable(l.kind, cfg),
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

/** Any HTTP answer from the provider's API host within 2 s counts as reachable. */
async function reachable(kind: string, cfg: Config): Promise<boolean | null> {
  const base =
    kind === 'twilio'
      ? (cfg.TWILIO_API_BASE_URL ?? 'https://api.twilio.com')
      : kind === 'telnyx'
        ? (cfg.TELNYX_API_BASE_URL ?? 'https://api.telnyx.com/v2')
        : null;
  if (!base) return null;
  try {
    await fetch(base, { method: 'GET', signal: AbortSignal.timeout(2000) });
    return true;
  } catch {
    return false;
  }
}
