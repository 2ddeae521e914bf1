import { Router, type Request, type Response } from 'express';
import { z } from 'zod';
import type { AppDeps } from '../deps.js';
import { AppError, isTenantRejection } from '../errors.js';
import { executeTool } from '../tools/execute.js';
import type { ToolContext, ToolInvocation } from '../tools/types.js';
import { scopeOf, type ClinicScope } from './auth.js';
import {
  callContext,
  extractToolCalls,
  isObj,
  namesOrg,
  orgsNamedInMessage,
  parseArguments,
  requireMessage,
  safeId,
  type Obj,
  type RawToolCall,
} from './envelope.js';
import type { RouteRegistry } from './registry.js';

/** x-dry-run: 1 keeps everything real except the SMS, which only the sandbox provider "sends". */
const isDryRun = (req: Request) => /^(1|true|yes)$/i.test(req.get('x-dry-run') ?? '');

/**
 * Runs one call for a verified org. A refusal from the database means the
 * cached settings are stale: they are dropped and the whole request refused.
 */
function run(deps: AppDeps, req: Request, res: Response, scope: ClinicScope, call: Omit<ToolInvocation, 'dryRun' | 'receivedAt'>) {
  const ctx: ToolContext = {
    sql: deps.sql,
    sms: deps.sms.notifier,
    now: deps.now,
    org: scope.org,
    tenant: scope.tenant,
    log: req.log.child({ tool: call.name, toolCallId: call.toolCallId }),
    call: { ...call, dryRun: isDryRun(req), receivedAt: res.locals.receivedAt as number },
  };
  return executeTool(ctx).catch((err: unknown) => {
    if (isTenantRejection(err)) deps.orgCache.invalidate(scope.org.id);
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

/** What the request layer needs from a Vapi envelope, parsed once and kept for the handler. */
interface ParsedVapi {
  message: Obj;
  type: string | undefined;
  calls: RawToolCall[];
}

function parseVapi(req: Request, res: Response): ParsedVapi {
  const cached = res.locals.vapi as ParsedVapi | undefined;
  if (cached) return cached;
  const message = requireMessage(req.body);
  const type = typeof message.type === 'string' ? message.type : undefined;
  const parsed: ParsedVapi = { message, type, calls: type === 'tool-calls' ? extractToolCalls(message) : [] };
  res.locals.vapi = parsed;
  return parsed;
}

const vapiEnvelope = z
  .object({
    message: z
      .object({
        type: z.string().describe('tool-calls; other types (status-update, end-of-call-report, ...) are acknowledged with {}'),
        toolCallList: z
          .array(
            z.object({
              id: z.string(),
              type: z.literal('function').optional(),
              function: z.object({ name: z.string(), arguments: z.union([z.string(), z.record(z.string(), z.unknown())]) }),
            }),
          )
          .optional(),
        call: z.object({ id: z.string().optional() }).loose().optional(),
        customer: z.object({ number: z.string().optional() }).loose().optional(),
        assistant: z.object({ metadata: z.record(z.string(), z.unknown()).optional() }).loose().optional(),
      })
      .loose(),
  })
  .loose();

const legacyEnvelope = z
  .object({
    toolCallId: z.string().optional(),
    message: z.object({ call: z.object({ metadata: z.object({ org_id: z.string() }).loose().optional() }).loose().optional() }).loose().optional(),
    tool: z.object({ arguments: z.union([z.string(), z.record(z.string(), z.unknown())]) }).optional(),
    arguments: z.union([z.string(), z.record(z.string(), z.unknown())]).optional(),
  })
  .loose();

/**
 * Vapi server messages. Every message type goes through the clinic check: the
 * token before the body is read, every org the envelope names, then the
 * database; only then does anything run.
 */
export function vapiRouter(deps: AppDeps, registry: RouteRegistry): Router {
  const router = Router();
  router.use('/api/vapi/tools', stamp);

  registry.mount(
    router,
    {
      method: 'post',
      path: '/api/vapi/tools',
      access: 'clinic',
      tags: ['voice'],
      summary: 'Vapi server message (tool-calls)',
      description:
        '`tool-calls` runs each call in order and answers `{results:[{toolCallId, name, result|error}]}`, `result` being one-line JSON. ' +
        'Other message types are authenticated the same way and acknowledged with `{}`.',
      body: vapiEnvelope,
      bodyType: 'any-json',
      bodyValidatedByHandler: true,
      orgsNamed: (req, res) => {
        const { message, calls } = parseVapi(req, res);
        return [...orgsNamedInMessage(message), ...calls.map((c) => c.args?.organizationId).filter(namesOrg)];
      },
      tenantCheck: (req, res) => (parseVapi(req, res).type === 'tool-calls' ? 'in-statement' : 'upfront'),
      responses: { 200: { description: 'Tool results, or `{}` for other message types.' }, 400: { description: 'invalid_envelope' }, 401: { description: 'Token missing or rejected.' }, 403: { description: 'org_mismatch or org_inactive' } },
      example: {
        body: {
          message: {
            type: 'tool-calls',
            call: { id: 'call-0001', customer: { number: '+14155552671' } },
            toolCallList: [{ id: 'call_1', type: 'function', function: { name: 'checkAvailability', arguments: { date: '2027-03-04' } } }],
          },
        },
      },
    },
    async (req, res) => {
      const { message, type, calls } = parseVapi(req, res);
      if (type !== 'tool-calls') {
        res.json({});
        return;
      }
      const scope = scopeOf(res);
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
          out.ok ? { toolCallId, name, result: oneLine(JSON.stringify(out.result)) } : { toolCallId, name, error: oneLine(out.message) },
        );
      }
      res.json({ results });
    },
  );

  // The legacy single-call shape used by the clinic verification script.
  registry.mount(
    router,
    {
      method: 'post',
      path: '/api/vapi/tools/:toolName',
      access: 'clinic',
      tags: ['voice'],
      summary: 'Legacy single tool call',
      body: legacyEnvelope,
      bodyType: 'any-json',
      bodyValidatedByHandler: true,
      orgsNamed: (req) => {
        const body: unknown = req.body;
        if (!isObj(body)) throw new AppError(400, 'invalid_envelope', 'Expected a JSON object.');
        const message = isObj(body.message) ? body.message : {};
        const tool = isObj(body.tool) ? body.tool : {};
        const args = parseArguments(tool.arguments ?? body.arguments).args;
        return [...orgsNamedInMessage(message), ...[args?.organizationId].filter(namesOrg)];
      },
      tenantCheck: 'in-statement',
      responses: { 200: { description: '`{toolCallId, result:{success, message, ...}}`' }, 400: { description: 'invalid_envelope or invalid_arguments' }, 404: { description: 'unknown_tool' } },
    },
    async (req, res) => {
      const body = req.body as Obj;
      if (body.toolCallId !== undefined && body.toolCallId !== null && safeId(body.toolCallId) === undefined) {
        throw new AppError(400, 'invalid_envelope', 'toolCallId must be a short printable string.');
      }
      const toolCallId = safeId(body.toolCallId);
      const message = isObj(body.message) ? body.message : {};
      const tool = isObj(body.tool) ? body.tool : {};
      const parsed = parseArguments(tool.arguments ?? body.arguments);
      if (!parsed.args) {
        throw new AppError(400, 'invalid_arguments', parsed.error ?? 'The tool arguments could not be read.');
      }
      const out = await run(deps, req, res, scopeOf(res), {
        name: String(req.params.toolName),
        args: parsed.args,
        toolCallId,
        platform: 'legacy',
        ...callContext(message),
      });
      if (!out.ok && out.code === 'unknown_tool') throw new AppError(404, 'unknown_tool', out.message);
      res.json({
        toolCallId: toolCallId ?? null,
        result: out.ok ? out.result : { success: false, error: out.code, message: out.message, ...out.details },
      });
    },
  );

  return router;
}
