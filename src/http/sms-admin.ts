import { Router, type Request } from 'express';
import { z } from 'zod';
import { isUuid } from '../booking/appointments.js';
import type { AppDeps } from '../deps.js';
import { AppError, notFound } from '../errors.js';
import {
  getSmsConfig,
  putSmsConfig,
  setFailoverEnabled,
  smsConfigProblem,
  smsConfigSchema,
  type ChainLink,
  type SmsConfigView,
} from '../sms/config.js';
import { deleteDeadLetter, listDeadLetters, retryDeadLetter } from '../sms/dead-letters.js';
import { getOrg } from '../orgs/orgs.js';
import { listOptOuts } from '../sms/opt-outs.js';
import { WEBHOOK_PATHS, publicBase, webhookUrls } from '../sms/webhooks.js';
import { orgIdParam, pageQuery } from './admin.js';
import { scopeOf } from './auth.js';
import type { RouteRegistry } from './registry.js';
import { PROBE_HEADER } from './webhooks.js';

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

  /**
   * The stored chain, plus what to paste into each provider's console: the
   * webhook URLs on PUBLIC_URL (or, without it, on this request's own URL,
   * which is only right if providers reach the service at the same address).
   */
  const withWebhooks = (req: Request, orgId: string, view: SmsConfigView) => ({
    ...view,
    webhooks: {
      publicUrl: cfg.PUBLIC_URL ?? null,
      // Without PUBLIC_URL no send names a status callback: receipts come only if the console names one.
      statusCallbackOnSend: cfg.PUBLIC_URL !== undefined,
      ...webhookUrls(
        publicBase(req, cfg.PUBLIC_URL),
        orgId,
        view.providers.map((p) => p.kind),
      ),
    },
  });

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
        'them. Every link takes an optional `attemptTimeoutMs` (100-60000; default SMS_ATTEMPT_TIMEOUT_MS). `contactPhone` is the ' +
        "number every text tells patients to call (else the clinic's `frontDeskPhone`); reminders are only scheduled when one is " +
        'known. Reminders: `reminderOffsetsMinutes` (minutes before the appointment, at most 3, default `[1440]`, `[]` for none), ' +
        '`sendingWindow` (`{"start":"08:00","end":"21:00"}` by default: wall-clock start <= t < end), `quietHoursZone` (`patient`, ' +
        "the default: the patient's zone when their number tells it, else the clinic's; or `clinic`) and `cancelByReply` (default " +
        'false: patients may cancel by replying X). Each omitted: unchanged (the default for a first configuration).',
      body: smsConfigSchema,
      responses: {
        200: { description: 'The chain as stored, credentials masked.' },
        400: { description: 'invalid_request' },
        404: { description: 'not_found' },
      },
      example: {
        params: { id: EXAMPLE_ID },
        body: {
          enabled: true,
          rateLimitPerHour: 5,
          failoverEnabled: true,
          contactPhone: '+14155550100',
          reminderOffsetsMinutes: [1440, 120],
          sendingWindow: { start: '08:00', end: '21:00' },
          quietHoursZone: 'patient',
          cancelByReply: false,
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
      res.json(withWebhooks(req, orgId, (await getSmsConfig(deps.sql, keyring, orgId))!));
    },
  );

  registry.mount(
    router,
    {
      method: 'get',
      path: '/api/admin/orgs/:id/sms',
      access: 'admin',
      tags,
      summary: "Read a clinic's SMS provider chain (no credentials) and the webhook URLs to paste into each provider's console",
      responses: {
        200: {
          description: 'The chain, credentials masked; `webhooks`: the Twilio inbound and status-callback URLs and the Telnyx webhook URL.',
        },
        404: { description: 'SMS is not configured for this org.' },
      },
      example: { params: { id: EXAMPLE_ID } },
    },
    async (req, res) => {
      const orgId = orgIdParam(req);
      const view = await getSmsConfig(deps.sql, keyring, orgId);
      if (!view) throw new AppError(404, 'not_found', 'SMS is not configured for this org.');
      res.json(withWebhooks(req, orgId, view));
    },
  );

  registry.mount(
    router,
    {
      method: 'get',
      path: '/api/admin/orgs/:id/opt-outs',
      access: 'admin',
      tags,
      summary: "The clinic's opt-out registry: phones that get no texts on any provider, newest first",
      description:
        'Written by STOP (and its synonyms) on any provider, by a provider refusing a send to a phone that opted out there (21610, ' +
        '40300), and removed by START. Phones masked unless `unmask=true`.',
      query: z.object({
        ...pageQuery,
        unmask: z
          .enum(['true', 'false'])
          .transform((v) => v === 'true')
          .optional(),
      }),
      responses: {
        200: { description: '`{items:[{id, phone, source, optedOutAt, previousOptOuts}], next}`' },
        404: { description: 'not_found' },
      },
      example: { params: { id: EXAMPLE_ID }, query: { limit: '50' } },
    },
    async (req, res, { query }) => {
      const orgId = orgIdParam(req);
      if (!(await getOrg(deps.sql, orgId))) throw notFound('org');
      const page = await listOptOuts(deps.sql, orgId, query);
      res.set(NO_STORE).json(page);
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
      responses: {
        200: { description: 'The chain as stored, credentials masked.' },
        400: { description: 'invalid_request' },
        404: { description: 'SMS is not configured for this org.' },
      },
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
      responses: {
        202: { description: '`{id, status, provider, run}`' },
        404: { description: 'not_found' },
        409: { description: 'already_delivered or not_failed' },
      },
      example: { params: { id: '0b8f7e0e-2f6a-4d59-9a57-3f1f2c7a9e11' } },
    },
    async (req, res) => {
      const id = String(req.params.id);
      if (!isUuid(id)) throw notFound('message');
      const r = await retryDeadLetter(workerSql, worker, id, cfg.SMS_RESPONSE_BUDGET_MS);
      if (r.result === 'not_found') throw notFound('message');
      if (r.result === 'already_delivered')
        throw new AppError(409, 'already_delivered', 'The patient already has a confirmation for this appointment.');
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
      summary: "The token's clinic: do its SMS credentials decrypt, do its providers answer, do its webhook URLs work",
      description:
        '`probe=webhooks` also POSTs to each provider webhook URL of the clinic (on PUBLIC_URL): an unsigned request must be refused ' +
        "with 403, and for Twilio a request signed with the clinic's own auth token, as Twilio would sign it, must be accepted (200). " +
        'Telnyx requests cannot be signed here (only Telnyx holds its private key), so for Telnyx only reachability and the refusal are checked.',
      query: z.object({ probe: z.enum(['webhooks']).optional() }),
      responses: {
        200: {
          description:
            '`{configured, enabled, providers:[{position, kind, decrypts, senders, reachable}], webhooks?:[{position, kind, url, reachable, unsignedRefused, signedAccepted}]}`',
        },
      },
    },
    async (req, res, { query }) => {
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
      const webhooks = query.probe === 'webhooks' ? await probeWebhooks(publicBase(req, cfg.PUBLIC_URL), org.id, chain.links) : undefined;
      req.log.info({ orgId: org.id }, 'sms diagnostics');
      res.json({ configured: true, enabled: chain.enabled, providers, ...(webhooks ? { webhooks } : {}) });
    },
  );

  return router;
}

/** One POST to a webhook URL of ours; 0 when nothing answered. */
async function post(url: string, headers: Record<string, string>, body: string): Promise<number> {
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { ...headers, [PROBE_HEADER]: '1' },
      body,
      signal: AbortSignal.timeout(5_000),
    });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

/**
 * Our own webhook URLs, called the way providers call them: reachable at all,
 * refusing an unsigned request, and (where we can sign as the provider does)
 * accepting a signed one. A signed probe that is refused means the URL the
 * provider signs is not the URL this service checks: PUBLIC_URL or TRUST_PROXY.
 */
async function probeWebhooks(base: string, orgId: string, links: ChainLink[]) {
  const out = [];
  for (const l of links) {
    if (l.kind !== 'twilio' && l.kind !== 'telnyx') continue;
    const url = `${base}${l.kind === 'twilio' ? WEBHOOK_PATHS.twilioStatus(orgId) : WEBHOOK_PATHS.telnyx(orgId)}`;
    const unsigned = await post(
      url,
      { 'content-type': l.kind === 'twilio' ? 'application/x-www-form-urlencoded' : 'application/json' },
      l.kind === 'twilio' ? 'MessageSid=SMprobe' : '{}',
    );
    const signed = l.provider.webhooks?.probeRequest?.(url);
    const signedStatus = signed ? await post(url, signed.headers, signed.body) : null;
    out.push({
      position: l.position,
      kind: l.kind,
      url,
      reachable: unsigned !== 0,
      unsignedRefused: unsigned === 403,
      signedAccepted: signedStatus === null ? null : signedStatus === 200,
    });
  }
  return out;
}
