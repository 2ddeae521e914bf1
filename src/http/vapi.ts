import { Router, type Request, type Response } from 'express';
import { z } from 'zod';
import { recordCall, type CallReport } from '../calls/calls.js';
import { frontDeskHandoff } from '../calls/handoff.js';
import type { AppDeps } from '../deps.js';
import { AppError } from '../errors.js';
import { runInvocation, stamp } from '../platforms/invocation.js';
import type { Execution } from '../tools/execute.js';
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
import type { RouteRegistry, TenantCheck } from './registry.js';

/** Results must be single-line strings (Vapi fails to parse line breaks). */
const oneLine = (s: string) => s.replace(/[\r\n]+/g, ' ');

/**
 * What we answer Vapi, spelled out here because @vapi-ai/server-sdk is only a
 * dev dependency: test/platforms-vapi-sdk.test.ts fails to compile if these
 * stop being assignable to the SDK's ToolCallResult,
 * ServerMessageResponseToolCalls and ServerMessageResponseTransferDestinationRequest.
 */
export interface VapiSpokenMessage {
  type: 'request-complete' | 'request-failed';
  content: string;
}
export type VapiToolCallResult =
  | { toolCallId: string; name: string; result: string; message?: VapiSpokenMessage & { type: 'request-complete' } }
  | { toolCallId: string; name: string; error: string; message?: VapiSpokenMessage & { type: 'request-failed' } };
export interface VapiToolCallsResponse {
  results: VapiToolCallResult[];
}
export type VapiTransferResponse = { destination: { type: 'number'; number: string; message: string } } | { error: string };

/**
 * One result in Vapi's shape: `result` is the compact JSON for the model's
 * context; with spoken results on, `message` is the sentence the agent says at
 * once instead of waiting for the model to phrase it.
 */
export function vapiResult(toolCallId: string, name: string, out: Execution, spoken: boolean): VapiToolCallResult {
  if (out.ok) {
    const r: VapiToolCallResult = { toolCallId, name, result: oneLine(JSON.stringify(out.result)) };
    return spoken ? { ...r, message: { type: 'request-complete', content: oneLine(out.result.message) } } : r;
  }
  const e: VapiToolCallResult = { toolCallId, name, error: oneLine(out.message) };
  return spoken ? { ...e, message: { type: 'request-failed', content: oneLine(out.message) } } : e;
}

const failed = (code: string, message: string): Execution => ({ ok: false, code, message });

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

const E164 = /^\+[1-9]\d{6,14}$/;
const shortText = (v: unknown, max: number) => (typeof v === 'string' && v.length > 0 ? v.slice(0, max) : null);
const instant = (v: unknown): Date | null => {
  if (typeof v !== 'string' && typeof v !== 'number') return null;
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? null : d;
};

/** The tool names the call used, in order, once each, from the report's message log. */
function toolsUsed(message: Obj): string[] {
  const artifact = isObj(message.artifact) ? message.artifact : {};
  const log = Array.isArray(artifact.messages) ? artifact.messages : Array.isArray(message.messages) ? message.messages : [];
  const names = new Set<string>();
  for (const m of log) {
    if (!isObj(m) || !Array.isArray(m.toolCalls)) continue;
    for (const t of m.toolCalls) {
      const name = isObj(t) && isObj(t.function) ? safeId(t.function.name) : undefined;
      if (name && name.length <= 64 && names.size < 50) names.add(name);
    }
  }
  return [...names];
}

/**
 * An end-of-call report as the call log stores it. Vapi puts the timings and
 * ended reason on the message (older payloads only on `call`); the duration
 * is Vapi's own when given, else computed from the two instants.
 */
function callReport(message: Obj, callId: string, keepTranscript: boolean): CallReport {
  const call = isObj(message.call) ? message.call : {};
  const artifact = isObj(message.artifact) ? message.artifact : {};
  const startedAt = instant(message.startedAt ?? call.startedAt);
  const endedAt = instant(message.endedAt ?? call.endedAt);
  const given = typeof message.durationSeconds === 'number' ? message.durationSeconds : null;
  const computed = startedAt && endedAt ? (endedAt.getTime() - startedAt.getTime()) / 1000 : null;
  const duration = given ?? computed;
  const caller = callContext(message).callerNumber;
  const transcript = keepTranscript ? shortText(artifact.transcript ?? message.transcript, 200_000) : null;
  return {
    platform: 'vapi',
    callId,
    callerPhone: caller && E164.test(caller) ? caller : null,
    startedAt,
    endedAt,
    durationSeconds:
      duration !== null && Number.isFinite(duration) && duration >= 0 && duration < 1e8 ? Math.round(duration * 10) / 10 : null,
    endedReason: shortText(message.endedReason ?? call.endedReason, 200),
    toolsUsed: toolsUsed(message),
    transcript,
  };
}

/** Which database check a message needs: statements that re-verify the org themselves, or one up front. */
const TENANT_CHECK = new Map<string | undefined, TenantCheck>([
  ['tool-calls', 'in-statement'],
  ['end-of-call-report', 'in-statement'],
]);

const vapiEnvelope = z
  .object({
    message: z
      .object({
        type: z
          .string()
          .describe(
            'tool-calls, transfer-destination-request, end-of-call-report; other types (status-update, ...) are acknowledged with {}',
          ),
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
        assistant: z
          .object({ metadata: z.record(z.string(), z.unknown()).optional() })
          .loose()
          .optional(),
      })
      .loose(),
  })
  .loose();

const legacyEnvelope = z
  .object({
    toolCallId: z.string().optional(),
    message: z
      .object({
        call: z
          .object({ metadata: z.object({ org_id: z.string() }).loose().optional() })
          .loose()
          .optional(),
      })
      .loose()
      .optional(),
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

  async function toolCalls(req: Request, res: Response, message: Obj, calls: RawToolCall[]): Promise<VapiToolCallsResponse> {
    const scope: ClinicScope = scopeOf(res);
    const spoken = scope.org.spokenResults !== false;
    const context = callContext(message);
    const results: VapiToolCallResult[] = [];
    // In order, one at a time: a later call may depend on an earlier one
    // (check availability, then book).
    for (const c of calls) {
      const name = c.name ?? 'unknown';
      const toolCallId = c.id ?? '';
      const out = c.args
        ? await runInvocation(deps, req, res, scope, { platform: 'vapi', invocationId: c.id, name, args: c.args, ...context })
        : failed('invalid_arguments', c.argsError ?? 'The tool arguments could not be read.');
      results.push(vapiResult(toolCallId, name, out, spoken));
    }
    return { results };
  }

  registry.mount(
    router,
    {
      method: 'post',
      path: '/api/vapi/tools',
      access: 'clinic',
      tags: ['voice'],
      summary: 'Vapi server message (tool-calls, transfer-destination-request, end-of-call-report)',
      description:
        '`tool-calls` runs each call in order and answers `{results:[{toolCallId, name, result|error, message}]}`, `result` being one-line JSON ' +
        'and `message` the sentence to say at once (`request-complete` / `request-failed`; off when the clinic sets `spokenResults: false`). ' +
        '`transfer-destination-request` answers the front desk (`{destination:{type:"number", number, message}}`) during opening hours, ' +
        'else `{error}` with a sentence offering to take a message. `end-of-call-report` is stored in the call log once per call and ' +
        'acknowledged with `{}`. Other message types are authenticated the same way and acknowledged with `{}`.',
      body: vapiEnvelope,
      bodyType: 'any-json',
      bodyValidatedByHandler: true,
      orgsNamed: (req, res) => {
        const { message, calls } = parseVapi(req, res);
        return [...orgsNamedInMessage(message), ...calls.map((c) => c.args?.organizationId).filter(namesOrg)];
      },
      tenantCheck: (req, res) => TENANT_CHECK.get(parseVapi(req, res).type) ?? 'upfront',
      responses: {
        200: { description: 'Tool results, or `{}` for other message types.' },
        400: { description: 'invalid_envelope' },
        401: { description: 'Token missing or rejected.' },
        403: { description: 'org_mismatch or org_inactive' },
      },
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
      if (type === 'tool-calls') {
        res.json(await toolCalls(req, res, message, calls));
        return;
      }
      if (type === 'transfer-destination-request') {
        const handoff = frontDeskHandoff(scopeOf(res).org, deps.now());
        const answer: VapiTransferResponse = handoff.transfer
          ? { destination: { type: 'number', number: handoff.number, message: handoff.sentence } }
          : { error: handoff.sentence };
        req.log.info({ transfer: handoff.transfer, reason: handoff.transfer ? undefined : handoff.reason }, 'transfer destination');
        res.json(answer);
        return;
      }
      if (type === 'end-of-call-report') {
        const scope = scopeOf(res);
        const callId = callContext(message).callId;
        if (callId) {
          const first = await recordCall(deps.sql, scope.tenant, callReport(message, callId, scope.org.storeTranscripts === true));
          req.log.info({ callId, first }, 'end-of-call report');
        } else {
          req.log.warn('end-of-call report without a call id: not stored');
        }
      }
      res.json({});
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
      responses: {
        200: { description: '`{toolCallId, result:{success, message, ...}}`' },
        400: { description: 'invalid_envelope or invalid_arguments' },
        404: { description: 'unknown_tool' },
      },
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
      const out = await runInvocation(deps, req, res, scopeOf(res), {
        name: String(req.params.toolName),
        args: parsed.args,
        invocationId: toolCallId,
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
