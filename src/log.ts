import { createHash } from 'node:crypto';
import pino, { type Logger } from 'pino';

/**
 * Paths pino blanks out wherever they appear in a logged object. Request bodies
 * are never logged whole, but Vapi echoes secrets inside its payloads
 * (a tool's server.secret, a Twilio number's auth token), so they are listed
 * here as a second line of defence.
 */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers["x-vapi-secret"]',
  'req.headers["x-vapi-signature"]',
  'req.headers["x-signature"]',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
  '*.client_secret',
  '*.clientSecret',
  '*.authToken',
  '*.apiKey',
  '*.twilioAuthToken',
  'message.phoneNumber.twilioAuthToken',
  'message.toolWithToolCallList[*].server.secret',
  'message.toolWithToolCallList[*].server.headers',
];

/**
 * Keys whose values never reach a log line, at any depth (pino's redact paths
 * only match the levels they name: `*.authToken` misses
 * `providers[0].authToken`). Compared without case, `_` or `-`.
 */
const SECRET_KEYS = new Set(
  [
    'authToken',
    'apiKey',
    'clientSecret',
    'secret',
    'password',
    'accessToken',
    'refreshToken',
    'token',
    'authorization',
    'cookie',
    'setCookie',
    'twilioAuthToken',
    'signingSecret',
    'secretAccessKey',
    'retellApiKey',
    'vapiSecret',
    'vapiHmacSecret',
    'credentials',
    'credentialsEnc',
    'privateKey',
    'xVapiSecret',
    'xSignature',
    'xVapiSignature',
    'xTwilioSignature',
    'telnyxSignatureEd25519',
    'xRetellSignature',
    'xRelaySignature',
    'csrf',
  ].map((k) => k.toLowerCase()),
);
const normKey = (k: string) => k.replace(/[-_]/g, '').toLowerCase();
const MAX_DEPTH = 8;

/** A copy of `value` with every secret-named key blanked, however deep. Shared subtrees and cycles are safe. */
export function redactDeep(value: unknown, depth = 0, seen = new WeakSet<object>()): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (seen.has(value) || depth > MAX_DEPTH) return '[…]';
  seen.add(value);
  // A copy that is still an error (pino serialises it as one), with its fields
  // walked like any object: an SDK error can carry its request config,
  // Authorization header included.
  if (value instanceof Error) {
    const copy = Object.create(Object.getPrototypeOf(value) as object) as Error & Record<string, unknown>;
    for (const k of ['message', 'stack', 'cause'] as const) {
      if (value[k] !== undefined)
        Object.defineProperty(copy, k, { value: k === 'cause' ? redactDeep(value.cause, depth + 1, seen) : value[k], writable: true });
    }
    for (const [k, v] of Object.entries(value)) copy[k] = SECRET_KEYS.has(normKey(k)) ? '[redacted]' : redactDeep(v, depth + 1, seen);
    return copy;
  }
  if (Array.isArray(value)) return value.map((v) => redactDeep(v, depth + 1, seen));
  // Class instances (requests, responses, dates) are left to their serializers:
  // walking a socket graph on every line would cost more than the line.
  const proto = Object.getPrototypeOf(value) as object | null;
  if (proto !== Object.prototype && proto !== null) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = SECRET_KEYS.has(normKey(k)) ? '[redacted]' : redactDeep(v, depth + 1, seen);
  }
  return out;
}

/** The options every logger of the service is built with (tests use them too). */
export function loggerOptions(level: string): pino.LoggerOptions {
  return {
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: { service: 'clinic-voice-tools' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { log: (obj) => redactDeep(obj) as Record<string, unknown> },
  };
}

/** Longest a log line waits in the buffer before it is written. */
export const LOG_FLUSH_MS = 200;

export function createLogger(level: string): Logger {
  // Asynchronous, buffered writes: a write syscall per line was, after the
  // response itself, the largest single cost of a tool call (8 % of the
  // server's CPU at 16 callers). Lines are gathered up to 4 KiB and written
  // together; a timer writes whatever is waiting every LOG_FLUSH_MS, so under
  // light traffic a line is at most that late. Fatal paths call flush().
  const dest = pino.destination({ dest: 1, sync: false, minLength: 4096 });
  setInterval(() => dest.flush(), LOG_FLUSH_MS).unref();
  return pino(loggerOptions(level), dest);
}

/**
 * How a patient phone number appears in logs: the last four digits, for a human
 * matching a complaint, plus a short hash, for joining log lines. Never the number.
 */
export function phoneForLog(e164: string | undefined | null): string | undefined {
  if (!e164) return undefined;
  const digits = e164.replace(/\D/g, '');
  const hash = createHash('sha256').update(e164).digest('hex').slice(0, 10);
  return `…${digits.slice(-4)}#${hash}`;
}

// Phone-like runs in free text: E.164 or a bare run of 7-15 digits, or a
// formatted North American number. Not inside words, ids or UUIDs (a hex id or
// the last group of a UUID can hold a long digit run), and not dates.
const PHONE_IN_TEXT =
  /(?<![\p{L}\p{N}_-])(?:\+\d(?:[ .-]?\d){6,14}|\d{7,15}|(?:\+?1[ .-]?)?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4})(?![\p{L}\p{N}_-])/gu;

/**
 * Provider error texts can quote the patient's number ("Unable to list
 * messages To=+14155550177"). Every phone-like run becomes what phoneForLog
 * shows (last four digits, plus the hash when the run is a full E.164 number),
 * so such text can go to a log line or an admin list.
 */
export function scrubPhones(text: string): string;
export function scrubPhones(text: string | undefined): string | undefined;
export function scrubPhones(text: string | undefined): string | undefined {
  if (!text) return text;
  return text.replace(PHONE_IN_TEXT, (run) => {
    if (/^\+\d{7,15}$/.test(run)) return phoneForLog(run)!;
    return `…${run.replace(/\D/g, '').slice(-4)}`;
  });
}
