/**
 * The generic half of error classification: HTTP statuses, network errors and
 * the safe default. Each provider's own codes live in its adapter
 * (providers/twilio.ts, providers/telnyx.ts), which passes its table in here.
 *
 * The class decides whether a patient may get two confirmation texts (retrying an
 * attempt that was in fact accepted) or none (giving up on one that was not), so
 * every rule here errs towards "ambiguous" when we cannot prove nothing was sent.
 */
import pTimeout, { TimeoutError } from 'p-timeout';
import { scrubPhones } from '../log.js';
import {
  ProviderSendError,
  type CodeRule,
  type CodeTable,
  type ErrorClass,
  type ProbeOptions,
  type ProbeResult,
  type ProviderKind,
  type SendAccepted,
} from './types.js';

/** Socket-level error codes, shared by every SDK (undici, axios, node:http). */
export const NETWORK_CODES: CodeTable = {
  // The connection never got as far as sending the request.
  ECONNREFUSED: { errorClass: 'transient', meaning: 'connection refused' },
  ENOTFOUND: { errorClass: 'transient', meaning: 'DNS name not found' },
  EAI_AGAIN: { errorClass: 'transient', meaning: 'DNS lookup failed for now' },
  EHOSTUNREACH: { errorClass: 'transient', meaning: 'host unreachable' },
  ENETUNREACH: { errorClass: 'transient', meaning: 'network unreachable' },
  UND_ERR_CONNECT_TIMEOUT: { errorClass: 'transient', meaning: 'connect timed out' },

  // The request may have reached the provider before the connection died or we stopped waiting.
  TIMEOUT: { errorClass: 'ambiguous', meaning: 'no answer in time after the request was sent' },
  ECONNRESET: { errorClass: 'ambiguous', meaning: 'connection reset mid-request' },
  EPIPE: { errorClass: 'ambiguous', meaning: 'connection closed while sending' },
  UND_ERR_SOCKET: { errorClass: 'ambiguous', meaning: 'socket closed mid-request' },
};

/** Codes that mean "we gave up waiting"; reported uniformly as TIMEOUT. */
const TIMEOUT_CODES = new Set(['ECONNABORTED', 'ETIMEDOUT', 'ESOCKETTIMEDOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

export function ruleFor(table: CodeTable, code: string | number | undefined): CodeRule | undefined {
  if (code === undefined) return undefined;
  const key = String(code);
  return Object.hasOwn(table, key) ? table[key] : undefined;
}

/**
 * HTTP answers: a known provider code wins over the status, because providers reuse
 * 400 for both "fix your sender" and "this patient cannot be texted".
 *
 * Safe defaults for codes not in the table:
 * - 429 and 5xx → transient (the provider says it did not take the message).
 * - any other 4xx (incl. 401/403) → provider: the request was rejected, so nothing was
 *   sent, and a different provider may well accept it.
 * - anything else (e.g. an unexpected 3xx) → ambiguous: we cannot prove it was not sent.
 */
export function classifyHttp(
  kind: ProviderKind,
  codes: CodeTable,
  status: number,
  code: string | undefined,
  detail: string,
  cause: unknown,
  optOut = false,
): ProviderSendError {
  const rule = ruleFor(codes, code);
  let errorClass: ErrorClass;
  if (rule) errorClass = rule.errorClass;
  else if (status === 429 || status >= 500) errorClass = 'transient';
  else if (status >= 400) errorClass = 'provider';
  else errorClass = 'ambiguous';
  return new ProviderSendError({
    // The provider's own words can quote the patient's number.
    message: `${kind} HTTP ${status}${code ? ` code ${code}` : ''}: ${scrubPhones(detail)}`,
    errorClass,
    provider: kind,
    code,
    httpStatus: status,
    optOut: optOut || rule?.optOut === true,
    cause,
  });
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null;
}

/** Errno-style codes anywhere in the cause chain (undici nests them two levels deep, sometimes in an AggregateError). */
function networkCodes(err: unknown): string[] {
  const out: string[] = [];
  const seen = new Set<unknown>();
  const visit = (e: unknown, depth: number) => {
    if (!isObject(e) || depth > 5 || seen.has(e)) return;
    seen.add(e);
    if (typeof e.code === 'string' && /^(E[A-Z0-9_]+|UND_ERR_[A-Z_]+)$/.test(e.code)) out.push(e.code);
    visit(e.cause, depth + 1);
    if (Array.isArray(e.errors)) for (const inner of e.errors) visit(inner, depth + 1);
  };
  visit(err, 0);
  return out;
}

function isAbortOrTimeout(err: unknown): boolean {
  return isObject(err) && (err.name === 'AbortError' || err.name === 'TimeoutError');
}

/**
 * An axios error carries the request config, including the Basic auth header, so it
 * must not travel onwards as `cause` where a logger could serialise it.
 */
function safeCause(err: unknown): unknown {
  if (isObject(err) && err.isAxiosError === true) {
    const clean = new Error(typeof err.message === 'string' ? err.message : 'network error');
    if (typeof err.code === 'string') Object.assign(clean, { code: err.code });
    return clean;
  }
  return err;
}

/** Failures with no HTTP answer. Unknown ones are ambiguous: we cannot prove they were not sent. */
export function classifyNetwork(kind: ProviderKind, err: unknown): ProviderSendError {
  const cause = safeCause(err);
  const detail = isObject(err) && typeof err.message === 'string' && err.message ? err.message : String(err);
  if (isAbortOrTimeout(err)) {
    return new ProviderSendError({
      message: `${kind}: request timed out or was aborted after sending`,
      errorClass: 'ambiguous',
      provider: kind,
      code: 'TIMEOUT',
      cause,
    });
  }
  const codes = networkCodes(err).map((c) => (TIMEOUT_CODES.has(c) ? 'TIMEOUT' : c));
  const known = codes.find((c) => ruleFor(NETWORK_CODES, c));
  const code = known ?? codes[0];
  const rule = ruleFor(NETWORK_CODES, code);
  return new ProviderSendError({
    message: `${kind}: ${code ?? 'network error'}: ${scrubPhones(detail)}`,
    errorClass: rule?.errorClass ?? 'ambiguous',
    provider: kind,
    code,
    cause,
  });
}

/** For errors from anywhere else (sandbox, our own code, a foreign SDK version). */
export function classifyUnknown(kind: ProviderKind, err: unknown, codes: CodeTable = {}): ProviderSendError {
  if (err instanceof ProviderSendError) return err;
  if (isObject(err) && typeof err.status === 'number' && err.isAxiosError !== true) {
    const code = typeof err.code === 'number' || typeof err.code === 'string' ? String(err.code) : undefined;
    return classifyHttp(kind, codes, err.status, code, typeof err.message === 'string' ? err.message : 'request failed', err);
  }
  return classifyNetwork(kind, err);
}

/** The signal was already aborted, so the SDK was never called: provably nothing sent. */
export function abortedBeforeSend(kind: ProviderKind, signal: AbortSignal): ProviderSendError {
  return new ProviderSendError({
    message: `${kind}: attempt aborted before sending`,
    errorClass: 'transient',
    provider: kind,
    code: 'ABORTED',
    cause: signal.reason,
  });
}

/**
 * Our signal fired while the request was in flight: the provider may already have it.
 * `lateAnswer` is how the request (which the SDK could not cancel) ends after all.
 */
export function abortedInFlight(
  kind: ProviderKind,
  reason: unknown,
  lateAnswer?: Promise<SendAccepted | ProviderSendError>,
): ProviderSendError {
  return new ProviderSendError({
    message: `${kind}: attempt aborted after sending`,
    errorClass: 'ambiguous',
    provider: kind,
    code: 'TIMEOUT',
    cause: reason,
    ...(lateAnswer ? { lateAnswer } : {}),
  });
}

/** Any HTTP answer from the provider's API host within 2 s counts as reachable. */
export async function probeHost(url: string): Promise<{ reachable: boolean }> {
  try {
    await fetch(url, { method: 'GET', signal: AbortSignal.timeout(2000) });
    return { reachable: true };
  } catch {
    return { reachable: false };
  }
}

export const PROBE_TIMEOUT_MS = 2000;

/**
 * Runs an adapter's authenticated probe call under a timeout. `call` resolves
 * to null when the account can send, or to why it cannot (a suspended account,
 * a disabled profile); whatever it throws goes through the adapter's own
 * `classify`, so a refused key is `provider` and a 5xx or refused connection
 * `transient`. A probe sends nothing, so its timeout is only "no answer in
 * time", reported like a send's: ambiguous, TIMEOUT.
 */
export async function runProbe(
  kind: ProviderKind,
  classify: (err: unknown) => ProviderSendError,
  opts: ProbeOptions | undefined,
  call: (signal: AbortSignal) => Promise<ProviderSendError | null>,
): Promise<ProbeResult> {
  const timeoutMs = opts?.timeoutMs ?? PROBE_TIMEOUT_MS;
  const abort = new AbortController();
  const started = performance.now();
  const latencyMs = () => Math.round(performance.now() - started);
  try {
    const refused = await pTimeout(call(abort.signal), { milliseconds: timeoutMs });
    return refused
      ? { reachable: true, ok: false, latencyMs: latencyMs(), error: refused }
      : { reachable: true, ok: true, latencyMs: latencyMs() };
  } catch (err) {
    abort.abort();
    const error =
      err instanceof TimeoutError
        ? new ProviderSendError({
            message: `${kind}: probe got no answer within ${timeoutMs} ms`,
            errorClass: 'ambiguous',
            provider: kind,
            code: 'TIMEOUT',
          })
        : classify(err);
    return { reachable: error.httpStatus !== undefined, ok: false, latencyMs: latencyMs(), error };
  }
}
