import type { Request, Response } from 'express';
import { requestHash } from '../booking/book.js';
import type { AppDeps } from '../deps.js';
import { isTenantRejection } from '../errors.js';
import type { ClinicScope } from '../http/auth.js';
import { safeId } from '../http/envelope.js';
import { executeTool, type Execution } from '../tools/execute.js';
import type { ToolContext, ToolInvocation } from '../tools/types.js';

/**
 * What every platform adapter shares. An adapter (src/http/vapi.ts,
 * src/platforms/retell.ts, src/platforms/elevenlabs.ts) turns its platform's
 * request into one ToolInvocation and the Execution back into its platform's
 * shape; everything in between (src/tools, src/booking) is the same code for
 * all three, and never learns which platform called.
 */

/** An invocation as an adapter builds it; the request itself adds dry-run and arrival time. */
export type Invocation = Omit<ToolInvocation, 'dryRun' | 'receivedAt'>;

/** x-dry-run: 1 keeps everything real except the SMS, which only the sandbox provider "sends". */
export const isDryRun = (req: Request) => /^(1|true|yes)$/i.test(req.get('x-dry-run') ?? '');

/** Notes when the request arrived: the SMS response budget counts from here. */
export const stamp = (_req: Request, res: Response, next: () => void) => {
  res.locals.receivedAt = Date.now();
  next();
};

/**
 * Runs one call for a verified org. A refusal from the database means the
 * cached settings are stale: they are dropped and the whole request refused.
 */
export function runInvocation(deps: AppDeps, req: Request, res: Response, scope: ClinicScope, inv: Invocation): Promise<Execution> {
  const ctx: ToolContext = {
    sql: deps.sql,
    sms: deps.sms.notifier,
    now: deps.now,
    org: scope.org,
    tenant: scope.tenant,
    log: req.log.child({ tool: inv.name, platform: inv.platform, invocationId: inv.invocationId }),
    call: { ...inv, dryRun: isDryRun(req), receivedAt: res.locals.receivedAt as number | undefined },
  };
  return executeTool(ctx).catch((err: unknown) => {
    if (isTenantRejection(err)) deps.orgCache.invalidate(scope.org.id);
    throw err;
  });
}

/** Call and conversation ids short enough to go into an idempotency key (at most 300 characters). */
export const platformCallId = (v: unknown): string | undefined => {
  const id = safeId(v);
  return id !== undefined && id.length <= 128 ? id : undefined;
};

/**
 * For platforms that send no id per tool call (Retell, ElevenLabs): the call,
 * the function and the canonical arguments. A platform retry carries the same
 * three and so replays the first answer; the model asking again with other
 * arguments is a new invocation.
 */
export function derivedInvocationId(callId: string, name: string, args: Record<string, unknown>): string {
  return `${callId}:${name.slice(0, 64)}:${requestHash(args).slice(0, 32)}`;
}

/**
 * The small JSON body Retell and ElevenLabs hand to their model: the result
 * as the tool returned it (with its `message` sentence), or for a refusal
 * `{success: false, error, message}` and the refusal's details. Always 200:
 * a tool-level outcome is something for the agent to say, not a failure.
 */
export function flatBody(out: Execution): Record<string, unknown> {
  return out.ok ? out.result : { ...out.details, success: false, error: out.code, message: out.message };
}

/** Non-empty strings only: platforms send "" for an unset variable. */
export const presentString = (v: unknown): string | undefined => (typeof v === 'string' && v.trim() !== '' ? v.trim() : undefined);
