import { z } from 'zod';

/**
 * Every environment variable the service reads, with its default. The README's
 * configuration table mirrors this schema; keep the two in step.
 */
const intFrom = (def: number, min = 0, max = Number.MAX_SAFE_INTEGER) => z.coerce.number().int().min(min).max(max).default(def);
const optionalString = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v.trim() === '' ? undefined : v.trim()));
const bool = (def: boolean) =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no'])
    .optional()
    .transform((v) => (v === undefined ? def : ['true', '1', 'yes'].includes(v)));

const schema = z.object({
  NODE_ENV: z.string().default('development'),
  PORT: intFrom(3000, 0, 65535),
  HOST: z.string().default('0.0.0.0'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /**
   * The service's public base URL (scheme, host, optional path prefix): the
   * status-callback URL named on every send and the webhook URLs shown to
   * clinics are built on it, and a Twilio signature is checked against it plus
   * the request's path and query. Unset: no callback URL is named, and the URL
   * is taken from the request (req.protocol and host, which honour TRUST_PROXY).
   */
  PUBLIC_URL: optionalString.refine((v) => v === undefined || /^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/.test(v), {
    message: 'must be an http(s) URL without query or fragment, e.g. https://tools.example.com',
  }),

  /** Owner/migration connection. Unset: an embedded PostgreSQL is started. */
  DATABASE_URL: optionalString,
  /** Connection used by request handlers (role clinic_app). Derived from DATABASE_URL when unset. */
  APP_DATABASE_URL: optionalString,
  /** Connection used by the SMS outbox worker (role clinic_worker). Derived when unset. */
  WORKER_DATABASE_URL: optionalString,
  /** Passwords given to clinic_app / clinic_worker when the URLs above are derived. */
  APP_DB_PASSWORD: optionalString,
  WORKER_DB_PASSWORD: optionalString,
  DB_POOL_MAX: intFrom(20, 1, 500),
  WORKER_DB_POOL_MAX: intFrom(10, 1, 100),
  DATA_DIR: z.string().default('./.data'),
  /** Port of the embedded PostgreSQL; 0 picks a free one at each start. */
  EMBEDDED_PG_PORT: intFrom(0, 0, 65535),

  /** Signing key for the JWTs /oauth/token issues (HS256, >= 32 chars). Generated into DATA_DIR when unset. */
  JWT_SECRET: optionalString,
  JWT_ISSUER: z.string().default('clinic-voice-tools'),
  JWT_AUDIENCE: z.string().default('voice-tools'),
  TOKEN_TTL_SECONDS: intFrom(900, 60, 86_400),
  /** Optional external identity provider. Its tokens must carry the org in JWT_ORG_CLAIM. */
  JWT_JWKS_URL: optionalString,
  JWT_JWKS_ISSUER: optionalString,
  JWT_JWKS_AUDIENCE: optionalString,
  JWT_JWKS_ALGORITHMS: z.string().default('RS256,ES256'),
  JWT_ORG_CLAIM: z.string().default('org_id'),
  /**
   * Which proxies' X-Forwarded-For / X-Forwarded-Proto to believe (Express
   * "trust proxy"): false (default: none, the socket address is the client),
   * a hop count ("1" behind one load balancer), or addresses/subnets
   * ("loopback", "10.0.0.0/8"). Believing everyone lets any client pick the
   * address the token endpoint throttles.
   */
  TRUST_PROXY: z
    .string()
    .default('false')
    .transform((v): boolean | number | string => {
      const t = v.trim();
      if (t === '' || t === 'false' || t === '0') return false;
      if (t === 'true') return true;
      return /^\d+$/.test(t) ? Number(t) : t;
    }),
  /**
   * scrypt's cost N for new client secret hashes (a power of two). Stored hashes keep their own N, so a
   * change applies to clients created afterwards. Only the test suite lowers it, to save CPU.
   */
  CLIENT_SECRET_SCRYPT_N: intFrom(16384, 1024, 1_048_576).refine((n) => (n & (n - 1)) === 0, 'must be a power of two'),
  /** Token endpoint throttles: failed attempts per source address / per client id per window. */
  OAUTH_FAILURES_PER_SOURCE: intFrom(20, 1, 100_000),
  OAUTH_FAILURES_PER_CLIENT: intFrom(10, 1, 100_000),
  OAUTH_THROTTLE_WINDOW_SECONDS: intFrom(60, 1, 86_400),
  /** A throttled token request is answered after this pause, so a guesser's own requests slow it down. */
  OAUTH_THROTTLE_PAUSE_MS: intFrom(1000, 0, 10_000),
  /** Bearer token required for GET /metrics; unset leaves /metrics open (for a private network). */
  METRICS_TOKEN: optionalString,
  /** Bearer token for /api/admin. Generated into DATA_DIR when unset. */
  ADMIN_TOKEN: optionalString,
  /** AES-256-GCM keyring for clinic credentials: "k2:base64,k1:base64" (first encrypts). Generated when unset. */
  CREDENTIALS_KEY: optionalString,
  /** How long a clinic's settings are reused between tool calls; 0 re-reads them every call. */
  ORG_CACHE_TTL_MS: intFrom(5000, 0, 300_000),
  /** Largest request body accepted, in bytes. */
  BODY_LIMIT_BYTES: intFrom(100_000, 1_000, 10_000_000),
  /** Allowed clock skew for Vapi HMAC timestamps. */
  VAPI_HMAC_TOLERANCE_SECONDS: intFrom(300, 1, 3600),

  /** Demo clinic's OAuth client, pinned so scripts and CI need not read the first-run output. */
  DEMO_CLIENT_ID: optionalString,
  DEMO_CLIENT_SECRET: optionalString,
  /** Seed the demo clinic when the database has no clinics. Default: on with the embedded database, off with DATABASE_URL. */
  SEED_DEMO: z
    .enum(['true', 'false', '1', '0'])
    .optional()
    .transform((v) => (v === undefined ? undefined : v === 'true' || v === '1')),

  /** How long a booking waits for the first SMS attempt before answering `queued`. */
  SMS_RESPONSE_BUDGET_MS: intFrom(1500, 0, 20_000),
  SMS_ATTEMPT_TIMEOUT_MS: intFrom(2000, 100, 60_000),
  SMS_MAX_ATTEMPTS: intFrom(6, 1, 50),
  SMS_RETRY_BASE_MS: intFrom(1000, 10, 600_000),
  SMS_RETRY_MAX_MS: intFrom(300_000, 100, 86_400_000),
  SMS_BREAKER_THRESHOLD: intFrom(3, 1, 100),
  SMS_BREAKER_COOLDOWN_MS: intFrom(60_000, 100, 3_600_000),
  /**
   * The SDKs' own request timeout is SMS_ATTEMPT_TIMEOUT_MS plus this, and a
   * request the engine stopped waiting for is given this long (plus 250 ms) to
   * answer late before it counts as ambiguous.
   */
  SMS_SDK_TIMEOUT_MARGIN_MS: intFrom(1000, 0, 60_000),
  /**
   * How long an ambiguous attempt (the provider may have it and cannot say)
   * waits for evidence, a receipt or a lookup that answers, before the message
   * fails over once to the next provider. See docs/sms.md for the choice of 2 minutes.
   */
  SMS_AMBIGUOUS_MAX_MS: intFrom(120_000, 100, 86_400_000),
  /** An accepted message with no final receipt after this long is looked up at the provider, once. */
  SMS_RECEIPT_TIMEOUT_MS: intFrom(600_000, 100, 86_400_000),
  /**
   * How far a Telnyx webhook's telnyx-timestamp may be from now. At most 300:
   * the Telnyx SDK's own verification refuses anything older.
   */
  TELNYX_WEBHOOK_TOLERANCE_SECONDS: intFrom(300, 1, 300),
  SMS_LEASE_MS: intFrom(30_000, 200, 3_600_000),
  SMS_WORKER_POLL_MS: intFrom(500, 10, 60_000),
  SMS_WORKER_BATCH: intFrom(20, 1, 500),
  SMS_WORKER_CONCURRENCY: intFrom(16, 1, 256),
  SMS_WORKER_ENABLED: bool(true),
  /**
   * Probe provider accounts from this process (default: wherever the outbox
   * worker runs). Every process reads the shared results either way.
   */
  SMS_HEALTH_ENABLED: z
    .enum(['true', 'false', '1', '0', 'yes', 'no'])
    .optional()
    .transform((v) => (v === undefined ? undefined : ['true', '1', 'yes'].includes(v))),
  /** How often each provider account is probed, across all processes (jittered). */
  SMS_HEALTH_INTERVAL_MS: intFrom(30_000, 50, 3_600_000),
  /** Unset: 2000, or half the interval when that is shorter. */
  SMS_HEALTH_PROBE_TIMEOUT_MS: z.coerce.number().int().min(10).max(60_000).optional(),
  /** A probe result older than this is ignored (probing stopped); unset: three intervals. */
  SMS_HEALTH_STALE_MS: z.coerce.number().int().min(100).max(86_400_000).optional(),
  /** Operator console: a session ends after this long without a request (sliding), and at the latest after OPS_SESSION_MAX_HOURS. */
  OPS_SESSION_TTL_MINUTES: intFrom(30, 1, 24 * 60),
  OPS_SESSION_MAX_HOURS: intFrom(12, 1, 24 * 7),
  /** Failed console sign-ins one source address may make per window before 429. */
  OPS_LOGIN_FAILURES_PER_SOURCE: intFrom(10, 1, 100_000),
  OPS_LOGIN_WINDOW_SECONDS: intFrom(900, 1, 86_400),
  /** How often the console's pages refresh their figures. */
  OPS_REFRESH_SECONDS: intFrom(5, 1, 3600),
  /** How often each process writes its heartbeat into ops_processes; a row three beats old is shown as gone. */
  OPS_HEARTBEAT_MS: intFrom(5000, 50, 600_000),
  /** Rate limit when a clinic has not set its own. */
  SMS_RATE_LIMIT_PER_HOUR: intFrom(5, 1, 1000),
  /** Test/local overrides for the provider SDKs' API base URLs. */
  TWILIO_API_BASE_URL: optionalString,
  TELNYX_API_BASE_URL: optionalString,
  /**
   * Endpoint for SNS links (a local server in tests). The AWS SDK also reads
   * this variable from the process environment itself; here it reaches the SDK
   * through the configuration, so a test can set it per runtime.
   */
  AWS_ENDPOINT_URL_SNS: optionalString,
});

export type Config = z.infer<typeof schema>;

export class ConfigError extends Error {}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`);
  }
  const cfg = parsed.data;
  if (cfg.JWT_SECRET !== undefined && cfg.JWT_SECRET.length < 32) {
    throw new ConfigError('Invalid configuration:\n  JWT_SECRET: must be at least 32 characters');
  }
  if (cfg.ADMIN_TOKEN !== undefined && cfg.ADMIN_TOKEN.length < 24) {
    throw new ConfigError('Invalid configuration:\n  ADMIN_TOKEN: must be at least 24 characters');
  }
  if (cfg.SMS_HEALTH_PROBE_TIMEOUT_MS !== undefined && cfg.SMS_HEALTH_PROBE_TIMEOUT_MS >= cfg.SMS_HEALTH_INTERVAL_MS) {
    throw new ConfigError('Invalid configuration:\n  SMS_HEALTH_PROBE_TIMEOUT_MS: must be shorter than SMS_HEALTH_INTERVAL_MS');
  }
  if (cfg.SMS_HEALTH_STALE_MS !== undefined && cfg.SMS_HEALTH_STALE_MS <= cfg.SMS_HEALTH_INTERVAL_MS * 1.5) {
    // Ticks are jittered: a record must survive a late probe without going stale.
    throw new ConfigError('Invalid configuration:\n  SMS_HEALTH_STALE_MS: must be more than 1.5 × SMS_HEALTH_INTERVAL_MS');
  }
  return cfg;
}
