import { ToolError } from '../booking/errors.js';
import { isTenantRejection } from '../errors.js';
import { toolCalls, toolDuration } from '../metrics.js';
import { TOOLS } from './index.js';
import type { ToolContext, ToolResult } from './types.js';

export type Execution = { ok: true; result: ToolResult } | { ok: false; code: string; message: string; details?: Record<string, unknown> };

/**
 * Runs one tool call and never throws (except a tenant refusal from the database, which refuses the whole request): a ToolError becomes its speakable
 * message; anything unexpected is logged in full and becomes a generic sentence
 * (the caller is on the line, a stack trace helps nobody there).
 */
export async function executeTool(ctx: ToolContext): Promise<Execution> {
  const tool = TOOLS.get(ctx.call.name);
  if (!tool) {
    toolCalls.inc({ tool: 'unknown', result: 'refused' });
    return { ok: false, code: 'unknown_tool', message: `I don't have a tool called ${ctx.call.name.slice(0, 60)}.` };
  }
  const stop = toolDuration.startTimer({ tool: tool.name });
  try {
    const result = await tool.run(ctx, ctx.call.args);
    toolCalls.inc({ tool: tool.name, result: result.success ? 'ok' : 'refused' });
    return { ok: true, result };
  } catch (err) {
    // The database refused the org or client: the whole request is refused (403/401).
    if (isTenantRejection(err)) throw err;
    if (err instanceof ToolError) {
      toolCalls.inc({ tool: tool.name, result: 'refused' });
      ctx.log.info({ tool: tool.name, code: err.code }, 'tool call refused');
      return { ok: false, code: err.code, message: err.message, details: err.details };
    }
    toolCalls.inc({ tool: tool.name, result: 'crash' });
    ctx.log.error({ err, tool: tool.name }, 'tool call failed');
    return {
      ok: false,
      code: 'internal_error',
      message: 'Sorry, something went wrong on our side. Please try again in a moment.',
    };
  } finally {
    stop();
  }
}
