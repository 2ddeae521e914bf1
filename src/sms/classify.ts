/**
 * Turns whatever an SDK throws into a ProviderSendError with one ErrorClass.
 *
 * The class decides whether a patient may get two confirmation texts (retrying an
 * attempt that was in fact accepted) or none (giving up on one that was not), so
 * every rule here errs towards "ambiguous" when we cannot prove nothing was sent.
 */
import { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError } from 'telnyx';
import { ProviderSendError, type ErrorClass, type ProviderKind, type SendAccepted } from './types.js';

interface Rule {
  errorClass: ErrorClass;
  optOut?: true;
}

const transient: Rule = { errorClass: 'transient' };
const provider: Rule = { errorClass: 'provider' };
const recipient: Rule = { errorClass: 'recipient' };
const optedOut: Rule = { errorClass: 'recipient', optOut: true };
const ambiguous: Rule = { errorClass: 'ambiguous' };

/**
 * The one code table. Keys are namespaced because Twilio and Telnyx number spaces
 * are unrelated; `net:` holds socket-level error codes shared by both SDKs.
 */
export const CODE_TABLE: Readonly<Record<string, Rule>> = {
  // Rate limits: the provider refused before processing, so the same provider may take it later.
  'twilio:20429': transient,
  'telnyx:10011': transient,

  // Credentials: this account cannot send at all; another provider can.
  'twilio:20003': provider,
  'telnyx:10009': provider,

  // Sender configuration (bad/unregistered/unhealthy numbers, disabled profiles).
  'twilio:21212': provider,
  'twilio:21606': provider,
  'twilio:21611': provider,
  'twilio:30032': provider,
  'twilio:30034': provider,
  'telnyx:40305': provider,
  'telnyx:40010': provider,
  'telnyx:40013': provider,
  'telnyx:40306': provider,
  'telnyx:40312': provider,
  'telnyx:40314': provider,
  'telnyx:40315': provider,
  'telnyx:40321': provider,
  'telnyx:40329': provider,

  // Geo permissions are per account; another provider may be allowed to reach the region.
  'twilio:21408': provider,
  'telnyx:40309': provider,
  // Not reachable with this To/From pairing: a routing/sender restriction, not a dead number.
  'twilio:21612': provider,

  // The number itself cannot receive SMS: no provider will do better.
  'twilio:21211': recipient,
  'twilio:21614': recipient,
  'telnyx:40310': recipient,
  'telnyx:40012': recipient,
  'telnyx:40001': recipient,

  // STOP is a compliance block: failing over to another carrier would violate the opt-out.
  'twilio:21610': optedOut,
  'telnyx:40300': optedOut,

  // The connection never got as far as sending the request.
  'net:ECONNREFUSED': transient,
  'net:ENOTFOUND': transient,
  'net:EAI_AGAIN': transient,
  'net:EHOSTUNREACH': transient,
  'net:ENETUNREACH': transient,
  'net:UND_ERR_CONNECT_TIMEOUT': transient,

  // The request may have reached the provider before the connection died or we stopped waiting.
  'net:TIMEOUT': ambiguous,
  'net:ECONNRESET': ambiguous,
  'net:EPIPE': ambiguous,
  'net:UND_ERR_SOCKET': ambiguous,
};

/** Codes that mean "we gave up waiting"; reported uniformly as TIMEOUT. */
const TIMEOUT_CODES = new Set(['ECONNABORTED', 'ETIMEDOUT', 'ESOCKETTIMEDOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

export function ruleFor(kind: ProviderKind | 'net', code: string | number | undefined): Rule | undefined {
  return code === undefined ? undefined : CODE_TABLE[`${kind}:${String(code)}`];
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
function fromHttp(
  kind: ProviderKind,
  status: number,
  code: string | undefined,
  detail: string,
  cause: unknown,
  optOut = false,
): ProviderSendError {
  const rule = ruleFor(kind, code);
  let errorClass: ErrorClass;
  if (rule) errorClass = rule.errorClass;
  else if (status === 429 || status >= 500) errorClass = 'transient';
  else if (status >= 400) errorClass = 'provider';
  else errorClass = 'ambiguous';
  return new ProviderSendError({
    message: `${kind} HTTP ${status}${code ? ` code ${code}` : ''}: ${detail}`,
    errorClass,
    provider: kind,
    code,
    httpStatus: status,
    optOut: optOut || rule?.optOut === true,
    cause,
  });
}

function isObject(v: unknown): v is Record<string, unknown> {
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
function fromNetwork(kind: ProviderKind, err: unknown): ProviderSendError {
  const cause = safeCause(err);
  const detail = isObject(err) && typeof err.message === 'string' && err.message ? err.message : String(err);
  if (isAbortOrTimeout(err)) {
    return new ProviderSendError({ message: `${kind}: request timed out or was aborted after sending`, errorClass: 'ambiguous', provider: kind, code: 'TIMEOUT', cause });
  }
  const codes = networkCodes(err).map((c) => (TIMEOUT_CODES.has(c) ? 'TIMEOUT' : c));
  const known = codes.find((c) => ruleFor('net', c));
  const code = known ?? codes[0];
  const rule = ruleFor('net', code);
  return new ProviderSendError({
    message: `${kind}: ${code ?? 'network error'}: ${detail}`,
    errorClass: rule?.errorClass ?? 'ambiguous',
    provider: kind,
    code,
    cause,
  });
}

export function classifyTwilioError(err: unknown): ProviderSendError {
  if (err instanceof ProviderSendError) return err;
  // Axios (network) errors never carry a Twilio code: validateStatus accepts every HTTP status.
  if (isObject(err) && err.isAxiosError !== true && typeof err.status === 'number') {
    // RestException (legacy body) or TwilioServiceException (RFC 9457); both expose status + code.
    const code = typeof err.code === 'number' || typeof err.code === 'string' ? String(err.code) : undefined;
    const detail = typeof err.message === 'string' && err.message ? err.message : 'request failed';
    return fromHttp('twilio', err.status, code, detail, err);
  }
  return fromNetwork('twilio', err);
}

interface TelnyxErrorItem {
  code?: unknown;
  title?: unknown;
  detail?: unknown;
}

export function classifyTelnyxError(err: unknown): ProviderSendError {
  if (err instanceof ProviderSendError) return err;
  // The SDK raises this when our AbortSignal fired mid-request (the per-attempt timeout).
  if (err instanceof APIUserAbortError || err instanceof APIConnectionTimeoutError) {
    return new ProviderSendError({ message: 'telnyx: request timed out or was aborted after sending', errorClass: 'ambiguous', provider: 'telnyx', code: 'TIMEOUT', cause: err });
  }
  if (err instanceof APIConnectionError) return fromNetwork('telnyx', err);
  if (err instanceof APIError && typeof err.status === 'number') {
    const body: unknown = err.error;
    const items: TelnyxErrorItem[] = isObject(body) && Array.isArray(body.errors) ? (body.errors as TelnyxErrorItem[]) : [];
    const codes = items.map((e) => (e.code === undefined || e.code === null ? undefined : String(e.code)));
    // Several errors can come back; the one we have a rule for tells us the most.
    const code = codes.find((c) => ruleFor('telnyx', c)) ?? codes.find((c) => c !== undefined);
    const first = items.find((e) => (e.code === undefined ? undefined : String(e.code)) === code) ?? items[0];
    const detail = [first?.title, first?.detail].filter((s): s is string => typeof s === 'string').join(' - ') || 'request failed';
    const optOut = codes.some((c) => ruleFor('telnyx', c)?.optOut === true);
    return fromHttp('telnyx', err.status, code, detail, err, optOut);
  }
  return classifyUnknown('telnyx', err);
}

/** For errors from anywhere else (sandbox, our own code, a foreign SDK version). */
export function classifyUnknown(kind: ProviderKind, err: unknown): ProviderSendError {
  if (err instanceof ProviderSendError) return err;
  if (isObject(err) && typeof err.status === 'number' && err.isAxiosError !== true) {
    const code = typeof err.code === 'number' || typeof err.code === 'string' ? String(err.code) : undefined;
    return fromHttp(kind, err.status, code, typeof err.message === 'string' ? err.message : 'request failed', err);
  }
  return fromNetwork(kind, err);
}

/** The signal was already aborted, so the SDK was never called: provably nothing sent. */
export function abortedBeforeSend(kind: ProviderKind, signal: AbortSignal): ProviderSendError {
  return new ProviderSendError({ message: `${kind}: attempt aborted before sending`, errorClass: 'transient', provider: kind, code: 'ABORTED', cause: signal.reason });
}

/**
 * Our signal fired while the request was in flight: the provider may already have it.
 * `lateAnswer` is how the request (which the SDK could not cancel) ends after all.
 */
export function abortedInFlight(kind: ProviderKind, reason: unknown, lateAnswer?: Promise<SendAccepted | ProviderSendError>): ProviderSendError {
  return new ProviderSendError({
    message: `${kind}: attempt aborted after sending`,
    errorClass: 'ambiguous',
    provider: kind,
    code: 'TIMEOUT',
    cause: reason,
    ...(lateAnswer ? { lateAnswer } : {}),
  });
}
