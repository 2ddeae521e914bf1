import express, { type Request, type Response, Router } from 'express';
import type { AppDeps } from '../app.js';
import { TenantRejected, type Tenant } from '../db/pool.js';
import { executeTool } from '../tools/execute.js';
import type { ToolContext, ToolInvocation } from '../tools/types.js';
import { identityOf, loadVerifiedOrg, requireToken } from './auth.js';
import type { OrgContext } from '../booking/org.js';
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

interface Scope {
  org: OrgContext;
  tenant: Tenant;
}

/** Layers 2 and 3 (layer 1 ran as middleware): the orgs the request names, then the database. */
async function authorise(deps: AppDeps, req: Request, res: Response, named: unknown[]): Promise<Scope> {
  const identity = identityOf(res);
  assertSameOrg(identity.orgId, named);
  const org = await loadVerifiedOrg(deps, req, identity);
  return { org, tenant: { orgId: org.id, clientId: identity.clientId } };
}

/**
 * Runs one call for a verified org. A refusal from the database means the
 * cached settings are stale: they are dropped and the whole request refused.
 */
function run(deps: AppDeps, req: Request, res: Response, scope: Scope, call: Omit<ToolInvocation, 'dryRun' | 'receivedAt'>) {
  const ctx: ToolContext = {
    ...deps,
    ...scope,
    log: req.log.child({ tool: call.name, toolCallId: call.toolCallId }),
    call: { ...call, dryRun: isDryRun(req), receivedAt: res.locals.receivedAt as number },
  };
  return executeTool(ctx).catch((err: unknown) => {
    if (err instanceof TenantRejected) deps.orgCache.invalidate(scope.org.id);
    throw err;
  });
}

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
    const message = requireMessage(req.body);
    const type = typeof message.type === 'string' ? message.type : undefined;
    if (type !== 'tool-calls') {
      // status-update, transcript, end-of-call-report...: acknowledged, not acted on.
      res.json({});
      return;
    }
    const calls = extractToolCalls(message);
    const scope = await authorise(deps, req, res, [
      ...orgsNamedInMessage(message),
      ...calls.map((c) => c.args?.organizationId).filter(namesOrg),
    ]);
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
      const out = await run(deps, req, res, scope, { name, args: c.args, toolCallId: c.id, platform: 'vapi', ...context });
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
    const scope = await authorise(deps, req, res, [...orgsNamedInMessage(message), ...[parsed.args?.organizationId].filter(namesOrg)]);
    if (!parsed.args) {
      throw new HttpError(400, 'invalid_arguments', parsed.error ?? 'The tool arguments could not be read.');
    }
    const out = await run(deps, req, res, scope, {
      name: toolName,
      args: parsed.args,
      toolCallId,
      platform: 'legacy',
      ...callContext(message),
    });
    if (!out.ok && out.code === 'unknown_tool') throw new HttpError(404, 'unknown_tool', out.message);
    res.json({
      toolCallId: toolCallId ?? null,
      result: out.ok ? out.result : { success: false, error: out.code, message: out.message, ...out.details },
    });
  });

  return router;
}
