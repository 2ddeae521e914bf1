import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Retell's request signature, as retell-sdk v5 computes and checks it:
 *
 *   X-Retell-Signature: v=<unix ms>,d=<hex HMAC-SHA256(key = the Retell API key, rawBody + <unix ms>)>
 *
 * valid for five minutes either side of now. Ours is synchronous and works on
 * the raw bytes; a test holds it against the SDK's own `Retell.verify` (which
 * in v5 returns a Promise: `if (!Retell.verify(...))` never refuses anything).
 */
export const RETELL_SIGNATURE_WINDOW_MS = 5 * 60 * 1000;

const HEADER = /^v=(\d{1,16}),d=([0-9a-f]{64})$/i;

export type RetellSignatureCheck = { ok: true } | { ok: false; reason: 'missing' | 'malformed' | 'stale' | 'mismatch' };

export function checkRetellSignature(
  rawBody: Buffer | undefined,
  apiKey: string,
  header: string | undefined,
  nowMs: number,
): RetellSignatureCheck {
  if (!header || rawBody === undefined) return { ok: false, reason: 'missing' };
  const m = HEADER.exec(header);
  if (!m) return { ok: false, reason: 'malformed' };
  const ts = Number(m[1]);
  if (!Number.isSafeInteger(ts)) return { ok: false, reason: 'malformed' };
  if (Math.abs(nowMs - ts) > RETELL_SIGNATURE_WINDOW_MS) return { ok: false, reason: 'stale' };
  // The SDK signs the number, not the digits as sent: "v=0017…" means 17….
  const expected = createHmac('sha256', apiKey).update(rawBody).update(String(ts)).digest();
  const given = Buffer.from(m[2]!, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected) ? { ok: true } : { ok: false, reason: 'mismatch' };
}

/** Signs a body the way Retell does (for the verification script, the benchmark and tests). */
export function signRetell(rawBody: string | Buffer, apiKey: string, timestampMs: number = Date.now()): string {
  const ts = String(Math.trunc(timestampMs));
  return `v=${ts},d=${createHmac('sha256', apiKey).update(rawBody).update(ts).digest('hex')}`;
}
