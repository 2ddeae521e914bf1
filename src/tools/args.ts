import { z } from 'zod';
import { ToolError } from '../booking/errors.js';
import { toE164 } from '../booking/phone.js';
import { spokenList } from '../booking/time.js';
import type { ToolContext } from './types.js';

/** Strings the model sends: trimmed, bounded, and free of control characters. */
export const text = (max: number) =>
  z
    .string()
    .max(max * 4)
    .transform((s) =>
      s
        .replace(/[\u0000-\u001f\u007f]+/g, ' ')
        .replace(/\s+/g, ' ')
        .trim(),
    )
    .pipe(z.string().max(max));

export const requiredText = (max: number) => text(max).pipe(z.string().min(1));
export const optionalText = (max: number) =>
  z
    .union([text(max), z.null()])
    .optional()
    .transform((v) => (v === null || v === '' ? undefined : v));

export const orgArg = { organizationId: optionalText(100) };

/**
 * Validates tool arguments and turns zod's issues into one sentence an agent can
 * act on, naming each field in words ("the patient's phone number").
 */
export function parseArgs<S extends z.ZodType>(schema: S, args: unknown, names: Record<string, string>): z.infer<S> {
  const parsed = schema.safeParse(args);
  if (parsed.success) return parsed.data;
  const missing = new Set<string>();
  const invalid = new Set<string>();
  for (const issue of parsed.error.issues) {
    const field = String(issue.path[0] ?? '');
    const label = names[field] ?? field;
    const given = args !== null && typeof args === 'object' ? (args as Record<string, unknown>)[field] : undefined;
    const isMissing = given === undefined || given === null || (typeof given === 'string' && given.trim() === '');
    (isMissing ? missing : invalid).add(label);
  }
  const parts: string[] = [];
  if (missing.size) parts.push(`I still need ${spokenList([...missing])}`);
  if (invalid.size) parts.push(`I couldn't use ${spokenList([...invalid])}`);
  throw new ToolError('invalid_arguments', `${parts.join(', and ')}.`, {
    missing: [...missing],
    invalid: [...invalid],
  });
}

/**
 * The patient's phone in E.164: the one the caller gave, else the caller id.
 * Neither: the agent is told to ask `question`.
 */
export function patientPhoneOf(ctx: ToolContext, given: string | undefined, question: string): string {
  const phoneInput = given ?? ctx.call.callerNumber;
  if (!phoneInput) throw new ToolError('missing_phone', question);
  return toE164(phoneInput, ctx.org.defaultRegion);
}
