import { Router, type Request, type Response } from 'express';
import { z } from 'zod';
import type { AppDeps } from '../deps.js';
import { AppError } from '../errors.js';
import { scopeOf } from '../http/auth.js';
import { isObj, namesOrg } from '../http/envelope.js';
import type { RouteRegistry } from '../http/registry.js';
import { derivedInvocationId, flatBody, platformCallId, presentString, runInvocation, stamp, type Invocation } from './invocation.js';

/**
 * ElevenLabs Agents server ("webhook") tools. The agent's OAuth2
 * client-credentials auth connection fetches a token from /oauth/token, so
 * this is an ordinary Bearer clinic route (same three layers; the Vapi-only
 * secret and HMAC layers do not apply). The body is the flat arguments plus
 * what the tool maps from system variables: `callerNumber` from
 * system__caller_id and `conversationId` from system__conversation_id (see
 * docs/platforms.md for the tool JSON). Those two are signalling, not model
 * arguments, so they are taken out before the tool sees the arguments.
 */

interface ParsedElevenLabs {
  conversationId: string;
  callerNumber: string | undefined;
  args: Record<string, unknown>;
}

function parseElevenLabs(req: Request, res: Response): ParsedElevenLabs {
  const cached = res.locals.elevenlabs as ParsedElevenLabs | undefined;
  if (cached) return cached;
  const body: unknown = req.body ?? {};
  if (!isObj(body)) throw new AppError(400, 'invalid_envelope', 'Expected a JSON object of tool arguments.');
  const { callerNumber, conversationId, ...args } = body;
  const id = platformCallId(conversationId);
  if (!id) {
    throw new AppError(400, 'invalid_envelope', 'conversationId is required: map it from system__conversation_id in the tool.');
  }
  const parsed = { conversationId: id, callerNumber: presentString(callerNumber), args };
  res.locals.elevenlabs = parsed;
  return parsed;
}

const elevenLabsBody = z
  .object({
    conversationId: z.string().describe('Mapped from system__conversation_id.'),
    callerNumber: z.string().optional().describe('Mapped from system__caller_id; absent on web calls.'),
  })
  .catchall(z.unknown())
  .describe('The tool arguments, flat, plus the two mapped system variables.');

export function elevenLabsRouter(deps: AppDeps, registry: RouteRegistry): Router {
  const router = Router();
  router.use('/api/elevenlabs', stamp);

  registry.mount(
    router,
    {
      method: 'post',
      path: '/api/elevenlabs/tools/:toolName',
      access: 'clinic',
      vapiLayers: false,
      tags: ['voice'],
      summary: 'ElevenLabs server tool',
      description:
        "Authenticated by the agent's OAuth2 client-credentials connection (a token from `/oauth/token`). The idempotency key is the " +
        'conversation id + tool name + a hash of the arguments. Answers the tool result `{success, message, ...}` (200 for every tool-level outcome).',
      body: elevenLabsBody,
      bodyType: 'form-or-json',
      bodyValidatedByHandler: true,
      orgsNamed: (req, res) => [parseElevenLabs(req, res).args.organizationId].filter(namesOrg),
      tenantCheck: 'in-statement',
      responses: {
        200: { description: 'The tool result `{success, message, ...}`; a refusal is `{success:false, error, message}`.' },
        400: { description: 'invalid_envelope (no conversationId)' },
        401: { description: 'Token missing or rejected.' },
        403: { description: 'org_mismatch or org_inactive' },
      },
    },
    async (req, res) => {
      const p = parseElevenLabs(req, res);
      const name = String(req.params.toolName);
      const scope = scopeOf(res);
      const inv: Invocation = {
        platform: 'elevenlabs',
        invocationId: derivedInvocationId(p.conversationId, name, p.args),
        callId: p.conversationId,
        name,
        args: p.args,
        callerNumber: p.callerNumber,
        tenantHint: scope.identity.orgId,
      };
      res.json(flatBody(await runInvocation(deps, req, res, scope, inv)));
    },
  );

  return router;
}
