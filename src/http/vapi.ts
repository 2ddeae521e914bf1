import express, { type Request, type Response, Router } from 'express';
import type { AppDeps } from '../app.js';
import { TenantRejected, type Tenant } from '../db/pool.js';
import { executeTool } from '../tools/execute.js';
import type { ToolContext, ToolInvocation } from '../tools/types.js';
import { identityOf, loadVerifiedOrg, requireToken } from './auth.js';
import {
  assertSameOrg,
  callContext,
  extractToolCalls,
  isObj,
  orgsNamedInMessage,
  namesOrg,
  parseArguments,
  requireMessage,
  safeId,
} from './envelope.js';
import { HttpError } from './errors.js';

/** x-dry-run: 1 keeps everything real except the SMS, which only the sandbox provider "sends". */
const isDryRun = (req: Request) => /^(1|true|yes)$/i.test(req.get('x-dry-run') ?? '');

/** A refusal from the database means the cached settings are stale: drop them, then refuse. */
const evictOnReject = (deps: AppDeps, orgId: string) => (err: unknown): never => {
  if (err instanceof TenantRejected) deps.orgCache.invalidate(orgId);
  throw err;
};

/** Notes when the request arrived: the SMS response budget counts from here. */
const stamp = (_req: Request, res: Response, next: () => void) => {
  res.locals.receivedAt = Date.now();
  next();
};

/** Results must be single-line strings (Vapi fails to parse line breaks). */
const oneLine = (s: string) => s.replace(/[\r\n]+/g, ' ');

/**
 * Vapi tool-call webhooks. Order matters: the token is checked before the body
 * is even parsed (layer 1), every org the request names is compared with the
 * token's before any tool runs (layer 2), and the org is loaded from the
 * database under RLS (layer 3) before any tool touches it.
 */
export function vapiRouter(deps: AppDeps): Router {
  const router = Router();
  const json = express.json({
    limit: deps.cfg.BODY_LIMIT_BYTES,
    type: () => true,
    verify: (req, _res, buf) => {
      (req as Request).rawBody = buf;
    },
  });

  router.post('/api/vapi/tools', stamp, requireToken(deps), json, async (req: Request, res: Response) => {
    const identity = identityOf(res);
    const receivedAt = res.locals.receivedAt as number;
    const message = requireMessage(req.body);
    const type = typeof message.type === 'string' ? message.type : undefined;
    if (type !== 'tool-calls') {
      // status-update, transcript, end-of-call-report...: acknowledged, not acted on.
      res.json({});
      return;
    }
    const calls = extractToolCalls(message);
    assertSameOrg(identity.orgId, [
      ...orgsNamedInMessage(message),
      ...calls.map((c) => c.args?.organizationId).filter(namesOrg),
    ]);
    const org = await loadVerifiedOrg(deps, req, identity);
    const tenant: Tenant = { orgId: org.id, clientId: identity.clientId };
    const context = callContext(message);

    const results = [];
    // In order, one at a time: a later call may depend on an earlier one
    // (check availability, then book).
    for (const c of calls) {
      const name = c.name ?? 'unknown';
      const toolCallId = c.id ?? '';
      if (!c.args) {
        results.push({ toolCallId, name, error: oneLine(c.argsError ?? 'The tool arguments could not be read.') });
        continue;
      }
      const call: ToolInvocation = { name, args: c.args, toolCallId: c.id, platform: 'vapi', dryRun: isDryRun(req), receivedAt, ...context };
      const ctx: ToolContext = { ...deps, log: req.log.child({ tool: name, toolCallId }), org, tenant, call };
      const out = await executeTool(ctx).catch(evictOnReject(deps, org.id));
      results.push(
        out.ok
          ? { toolCallId, name, result: oneLine(JSON.stringify(out.result)) }
          : { toolCallId, name, error: oneLine(out.message) },
      );
    }
    res.json({ results });
  });

  // The legacy single-call shape used by the clinic verification script.
  router.post('/api/vapi/tools/:toolName', stamp, requireToken(deps), json, async (req: Request, res: Response) => {
    const identity = identityOf(res);
    const body: unknown = req.body;
    if (!isObj(body)) throw new HttpError(400, 'invalid_envelope', 'Expected a JSON object.');
    const toolName = String(req.params.toolName);
    if (body.toolCallId !== undefined && body.toolCallId !== null && safeId(body.toolCallId) === undefined) {
      throw new HttpError(400, 'invalid_envelope', 'toolCallId must be a short printable string.');
    }
    const toolCallId = safeId(body.toolCallId);
    const message = isObj(body.message) ? body.message : {};
    const tool = isObj(body.tool) ? body.tool : {};
    const parsed = parseArguments(tool.arguments ?? body.arguments);
    assertSameOrg(identity.orgId, [
      ...orgsNamedInMessage(message),
      ...[parsed.args?.organizationId].filter(namesOrg),
    ]);
    const org = await loadVerifiedOrg(deps, req, identity);
    if (!parsed.args) {
      throw new HttpError(400, 'invalid_arguments', parsed.error ?? 'The tool arguments could not be read.');
    }
    const call: ToolInvocation = {
      name: toolName,
      args: parsed.args,
      toolCallId,
      platform: 'legacy',
      dryRun: isDryRun(req),
      receivedAt: res.locals.receivedAt as number,
      ...callContext(message),
    };
    const tenant: Tenant = { orgId: org.id, clientId: identity.clientId };
    const out = await executeTool({ ...deps, log: req.log.child({ tool: toolName, toolCallId }), org, tenant, call }).catch(
      evictOnReject(deps, org.id),
    );
    if (!out.ok && out.code === 'unknown_tool') throw new HttpError(404, 'unknown_tool', out.message);
    res.json({
      toolCallId: toolCallId ?? null,
      result: out.ok ? out.result : { success: false, error: out.code, message: out.message, ...out.details },
    });
  });

  return router;
}
