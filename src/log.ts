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
