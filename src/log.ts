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

export function createLogger(level: string): Logger {
  return pino(
    {
      level,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      base: { service: 'clinic-voice-tools' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    // Asynchronous writes: a synchronous write per line cost ~9% of CPU under
    // load. No minimum length, so a line is never held back waiting for more.
    pino.destination({ dest: 1, sync: false }),
  );
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
