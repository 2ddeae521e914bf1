import { Router, type Request, type Response } from 'express';
import { z } from 'zod';
import type { AppDeps } from '../deps.js';
import { AppError } from '../errors.js';
import { scopeOf } from '../http/auth.js';
import { isObj, namesOrg, orgsFrom, parseArguments, safeId, type Obj } from '../http/envelope.js';
import type { RouteRegistry } from '../http/registry.js';
import { derivedInvocationId, flatBody, platformCallId, presentString, runInvocation, stamp, type Invocation } from './invocation.js';

/**
 * Retell custom functions. Retell sends no token: the clinic is the path's
 * `:orgId`, proven by X-Retell-Signature under that clinic's Retell API key
 * (clinicGuard's 'retell-signature' layer 1); layers 2 and 3 are the same as
 * for every clinic route. Two body shapes:
 *
 *   POST /api/retell/:orgId/tools            {name, call:{call_id, from_number, metadata, ...}, args}
 *   POST /api/retell/:orgId/tools/:toolName  the args alone ("args_at_root"); Retell then sends no
 *                                            call object, so the call id (and caller) come from
 *                                            headers the function sets from Retell's variables.
 *
 * The answer is the tool's small JSON result with its spoken `message`,
 * always 200 for a tool-level outcome.
 */

interface ParsedRetell {
  name: string;
  callId: string;
  callerNumber: string | undefined;
  args: Record<string, unknown>;
  call: Obj;
}

const callIdMissing = () =>
  new AppError(
    400,
    'invalid_envelope',
    'A Retell request needs its call id: call.call_id, or for args_at_root functions the X-Retell-Call-Id header set to {{call_id}}.',
  );

/**
 * The caller is whoever is not the clinic: the from number of an inbound call,
 * the to number of an outbound one. Never from the arguments.
 */
function callerOf(call: Obj): string | undefined {
  return presentString(call.direction === 'outbound' ? call.to_number : call.from_number);
}

function parseNested(body: Obj): ParsedRetell {
  const name = safeId(body.name);
  if (!name) throw new AppError(400, 'invalid_envelope', 'A Retell custom function request needs "name".');
  const call = isObj(body.call) ? body.call : {};
  const callId = platformCallId(call.call_id);
  if (!callId) throw callIdMissing();
  const parsed = parseArguments(body.args);
  if (!parsed.args) throw new AppError(400, 'invalid_arguments', parsed.error ?? 'The function arguments are not a JSON object.');
  return { name, callId, callerNumber: callerOf(call), args: parsed.args, call };
}

function parseAtRoot(req: Request, body: Obj): ParsedRetell {
  // Should Retell ever add its envelope to a root-args body, its call object
  // wins and neither key is taken for an argument (the transcript inside
  // `call` changes on every retry and would defeat the idempotency hash).
  const { call: rawCall, name: _name, ...args } = body;
  const call = isObj(rawCall) ? rawCall : {};
  const callId = platformCallId(call.call_id) ?? platformCallId(req.get('x-retell-call-id'));
  if (!callId) throw callIdMissing();
  return {
    name: String(req.params.toolName),
    callId,
    callerNumber: callerOf(call) ?? presentString(req.get('x-retell-caller-number')),
    args,
    call,
  };
}

function parseRetell(req: Request, res: Response): ParsedRetell {
  const cached = res.locals.retell as ParsedRetell | undefined;
  if (cached) return cached;
  const body: unknown = req.body;
  if (!isObj(body)) throw new AppError(400, 'invalid_envelope', 'Expected a JSON object.');
  const parsed = req.params.toolName === undefined ? parseNested(body) : parseAtRoot(req, body);
  res.locals.retell = parsed;
  return parsed;
}

/** Layer 2: every org the call's metadata, dynamic variables or arguments name. */
function orgsNamed(req: Request, res: Response): unknown[] {
  const { call, args } = parseRetell(req, res);
  return [
    ...orgsFrom(call.metadata),
    ...orgsFrom(call.retell_llm_dynamic_variables),
    ...orgsFrom(call.collected_dynamic_variables),
    ...[args.organizationId].filter(namesOrg),
  ];
}

const retellCall = z
  .object({
    call_id: z.string(),
    from_number: z.string().optional(),
    to_number: z.string().optional(),
    direction: z.enum(['inbound', 'outbound']).optional(),
    metadata: z.record(z.string(), z.unknown()).optional(),
    retell_llm_dynamic_variables: z.record(z.string(), z.string()).optional(),
  })
  .loose();

const retellEnvelope = z.object({ name: z.string(), call: retellCall, args: z.record(z.string(), z.unknown()) }).loose();

const toolResult = z
  .object({ success: z.boolean(), message: z.string().describe('The sentence to say.'), error: z.string().optional() })
  .loose();

const RESPONSES = {
  200: { description: 'The tool result `{success, message, ...}`; a refusal is `{success:false, error, message}`.', schema: toolResult },
  400: { description: 'invalid_envelope (no name or call id) or invalid_arguments' },
  401: { description: 'invalid_signature: X-Retell-Signature missing, stale or wrong, or the clinic has no Retell key' },
  403: { description: 'org_mismatch (metadata or arguments name another clinic) or org_inactive' },
  404: { description: 'The path names no clinic (not a UUID).' },
};

export function retellRouter(deps: AppDeps, registry: RouteRegistry): Router {
  const router = Router();
  router.use('/api/retell', stamp);

  const handler = async (req: Request, res: Response) => {
    const p = parseRetell(req, res);
    const inv: Invocation = {
      platform: 'retell',
      invocationId: derivedInvocationId(p.callId, p.name, p.args),
      callId: p.callId,
      name: p.name,
      args: p.args,
      callerNumber: p.callerNumber,
      tenantHint: String(req.params.orgId).toLowerCase(),
    };
    const out = await runInvocation(deps, req, res, scopeOf(res), inv);
    res.json(flatBody(out));
  };

  registry.mount(
    router,
    {
      method: 'post',
      path: '/api/retell/:orgId/tools',
      access: 'clinic',
      clinicIdentity: 'retell-signature',
      tags: ['voice'],
      summary: 'Retell custom function',
      description:
        "Retell's default payload `{name, call, args}`. Signed with the clinic's Retell API key (`X-Retell-Signature`, five-minute window). " +
        'The caller id is `call.from_number` (`to_number` on outbound calls); the idempotency key is `call.call_id` + name + a hash of the arguments.',
      body: retellEnvelope,
      bodyType: 'any-json',
      bodyValidatedByHandler: true,
      orgsNamed,
      tenantCheck: 'in-statement',
      responses: RESPONSES,
    },
    handler,
  );

  registry.mount(
    router,
    {
      method: 'post',
      path: '/api/retell/:orgId/tools/:toolName',
      access: 'clinic',
      clinicIdentity: 'retell-signature',
      tags: ['voice'],
      summary: 'Retell custom function with args_at_root',
      description:
        "The body is the arguments alone. Retell then sends no call object: set the function's headers `X-Retell-Call-Id: {{call_id}}` " +
        '(required: it keys idempotency) and `X-Retell-Caller-Number: {{user_number}}` (the caller id).',
      body: z.record(z.string(), z.unknown()),
      bodyType: 'any-json',
      bodyValidatedByHandler: true,
      orgsNamed,
      tenantCheck: 'in-statement',
      responses: RESPONSES,
    },
    handler,
  );

  return router;
}
