import { AppError } from '../errors.js';

/**
 * Normalises the Vapi server-message envelope. Vapi has sent `arguments` both as
 * an object and as a JSON string, `toolCallList` under the older name
 * `toolCalls`, and docs show a flattened `{id, name, arguments}` item; all are
 * accepted. Nothing here trusts the content: it only finds the pieces.
 */

export interface RawToolCall {
  id: string | undefined;
  name: string | undefined;
  args: Record<string, unknown> | null;
  /** Set when the arguments could not be read; the call then fails on its own. */
  argsError?: string;
}

export const MAX_CALLS_PER_MESSAGE = 20;

export type Obj = Record<string, unknown>;
export const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown): string | undefined => (typeof v === 'string' && v.length > 0 ? v : undefined);

/**
 * Ids we store (idempotency keys, call ids) must be short printable strings;
 * anything else cannot have come from a real platform and is not trusted.
 */
export const safeId = (v: unknown): string | undefined =>
  typeof v === 'string' && v.length > 0 && v.length <= 200 && !/[\u0000-\u001f\u007f]/.test(v) ? v : undefined;

export function requireMessage(body: unknown): Obj {
  if (!isObj(body) || !isObj(body.message)) {
    throw new AppError(400, 'invalid_envelope', 'Expected a JSON object with a "message" object.');
  }
  return body.message;
}

export function parseArguments(raw: unknown): { args: Record<string, unknown> | null; error?: string } {
  if (raw === undefined || raw === null || raw === '') return { args: {} };
  if (isObj(raw)) return { args: raw };
  if (typeof raw === 'string') {
    try {
      const parsed: unknown = JSON.parse(raw);
      if (isObj(parsed)) return { args: parsed };
    } catch {
      /* reported below */
    }
    return { args: null, error: 'The tool arguments are not a JSON object.' };
  }
  return { args: null, error: 'The tool arguments are not a JSON object.' };
}

export function extractToolCalls(message: Obj): RawToolCall[] {
  const list = message.toolCallList ?? message.toolCalls;
  if (!Array.isArray(list) || list.length === 0) {
    throw new AppError(400, 'invalid_envelope', 'A tool-calls message needs a non-empty toolCallList.');
  }
  if (list.length > MAX_CALLS_PER_MESSAGE) {
    throw new AppError(400, 'invalid_envelope', `At most ${MAX_CALLS_PER_MESSAGE} tool calls per message.`);
  }
  return list.map((item): RawToolCall => {
    if (!isObj(item)) return { id: undefined, name: undefined, args: null, argsError: 'The tool call is not an object.' };
    const fn = isObj(item.function) ? item.function : undefined;
    const name = str(fn?.name) ?? str(item.name);
    const parsed = parseArguments(fn ? (fn.arguments ?? fn.parameters) : (item.arguments ?? item.parameters));
    const rawId = item.id;
    const id = safeId(rawId);
    if (rawId !== undefined && id === undefined) {
      return { id: undefined, name, args: null, argsError: 'The tool call id is not usable.' };
    }
    return { id, name, args: parsed.args, ...(parsed.error ? { argsError: parsed.error } : {}) };
  });
}

/** Every org id a metadata object names, under any of the keys clients use. */
export const orgsFrom = (meta: unknown): unknown[] => (isObj(meta) ? [meta.org_id, meta.orgId, meta.organizationId].filter(namesOrg) : []);

/** null, undefined and "" name no org; anything else must match the token's. */
export const namesOrg = (v: unknown): boolean => v !== undefined && v !== null && v !== '';

/**
 * Every org the request names outside the tool arguments: assistant metadata,
 * per-call assistant overrides, and the legacy call.metadata.
 */
export function orgsNamedInMessage(message: Obj): unknown[] {
  const call = isObj(message.call) ? message.call : {};
  const overrides = isObj(call.assistantOverrides) ? call.assistantOverrides : {};
  const callAssistant = isObj(call.assistant) ? call.assistant : {};
  const assistant = isObj(message.assistant) ? message.assistant : {};
  return [
    ...orgsFrom(assistant.metadata),
    ...orgsFrom(overrides.metadata),
    ...orgsFrom(call.metadata),
    ...orgsFrom(callAssistant.metadata),
  ];
}

export function callContext(message: Obj): { callId?: string; callerNumber?: string } {
  const call = isObj(message.call) ? message.call : {};
  const customer = isObj(message.customer) ? message.customer : isObj(call.customer) ? call.customer : {};
  const out: { callId?: string; callerNumber?: string } = {};
  const callId = safeId(call.id);
  const number = str(customer.number);
  if (callId) out.callId = callId;
  if (number) out.callerNumber = number;
  return out;
}
