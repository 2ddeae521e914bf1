/**
 * The one error type whose status, code and message are safe to show the
 * caller. Routes, domain modules and the database layer all throw it; one
 * handler (src/http/errors.ts) turns it into a response.
 *
 * `tenant` marks the database refusing the org or client behind a token
 * (org gone or inactive: 403, client revoked: 401). Such a refusal means the
 * cached clinic settings are stale and the whole request is refused, so the
 * tool runner rethrows it instead of turning it into a spoken sentence.
 */
export class AppError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
    readonly tenant = false,
  ) {
    super(message);
    this.name = 'AppError';
  }
}

const BEARER_CHALLENGE = 'Bearer realm="voice-tools", error="invalid_token"';

export const orgInactive = () =>
  new AppError(403, 'org_inactive', 'The clinic for these credentials does not exist or is not active.', {}, true);

export const clientRevoked = () =>
  new AppError(401, 'invalid_token', 'The client behind this token has been revoked.', { 'WWW-Authenticate': BEARER_CHALLENGE }, true);

export const notFound = (what: string) => new AppError(404, 'not_found', `No such ${what}.`);

export const isTenantRejection = (err: unknown): err is AppError => err instanceof AppError && err.tenant;
