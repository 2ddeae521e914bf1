import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { DateTime } from 'luxon';
import pino from 'pino';
import postgres, { type Sql } from 'postgres';
import supertest from 'supertest';
import { inject } from 'vitest';
import { loadConfig, type Config } from '../../src/config.js';
import { APP_ROLE, WORKER_ROLE, urlForRole } from '../../src/db/roles.js';
import { loggerOptions } from '../../src/log.js';
import { createRuntime, type Runtime } from '../../src/runtime.js';
import type { Secrets } from '../../src/secrets.js';
import { generateKeySpec } from '../../src/crypto.js';

export const ADMIN_TOKEN = 'test-admin-token-0123456789abcdef';
export const JWT_SECRET = 'test-jwt-secret-0123456789abcdefghijklmnop';
/** Set once on the cluster-wide app roles by the global setup. */
export const APP_DB_PASSWORD = 'app-password-for-tests';
export const WORKER_DB_PASSWORD = 'worker-password-for-tests';

/** A new, empty database on the suite's cluster, so test files never share rows or workers. */
export async function freshDatabase(opts: { migrated?: boolean } = {}): Promise<string> {
  const cluster = inject('clusterUrl');
  const name = `t_${randomBytes(6).toString('hex')}`;
  const admin = postgres(cluster, { max: 1, onnotice: () => {} });
  try {
    // A copy of the suite's migrated template is much cheaper than migrating again.
    await admin.unsafe(opts.migrated ? `CREATE DATABASE ${name} TEMPLATE ${inject('templateDatabase')}` : `CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const u = new URL(cluster);
  u.pathname = `/${name}`;
  return u.toString();
}

export interface Harness {
  runtime: Runtime;
  cfg: Config;
  ownerUrl: string;
  /** Superuser connection for assertions that must see every row. */
  owner: Sql;
  http: ReturnType<typeof supertest>;
  secrets: Secrets;
  close(): Promise<void>;
}

export async function startHarness(
  env: Record<string, string> = {},
  opts: { ownerUrl?: string; now?: () => DateTime; log?: pino.Logger } = {},
): Promise<Harness> {
  const ownerUrl = opts.ownerUrl ?? (await freshDatabase({ migrated: true }));
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'clinic-tools-data-'));
  const cfg = loadConfig({
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    DATA_DIR: dataDir,
    SEED_DEMO: 'false',
    SMS_WORKER_ENABLED: 'false',
    // The health monitor probes the fakes in the background, where it would
    // consume faults other suites inject for sends; test/sms-health.test.ts turns it on.
    SMS_HEALTH_ENABLED: 'false',
    DB_POOL_MAX: '20',
    // Suites make many failed token requests on purpose; the throttle has its own tests.
    OAUTH_FAILURES_PER_SOURCE: '100000',
    OAUTH_FAILURES_PER_CLIENT: '100000',
    // Every clinic a test makes hashes a client secret and checks it once for its token: at the
    // production cost (N = 16384) that was ~60 ms of CPU each, hundreds of times a run.
    // test/oauth-throttle.test.ts, which times secret checks, keeps the production cost.
    CLIENT_SECRET_SCRYPT_N: '1024',
    // Given, so the runtime does not set the roles' passwords itself: files
    // starting at the same time would ALTER the same role concurrently.
    APP_DATABASE_URL: urlForRole(ownerUrl, APP_ROLE, APP_DB_PASSWORD),
    WORKER_DATABASE_URL: urlForRole(ownerUrl, WORKER_ROLE, WORKER_DB_PASSWORD),
    ...env,
  });
  const secrets: Secrets = {
    jwtSecret: JWT_SECRET,
    adminToken: ADMIN_TOKEN,
    credentialsKey: env.CREDENTIALS_KEY ?? generateKeySpec('k1'),
    appDbPassword: APP_DB_PASSWORD,
    workerDbPassword: WORKER_DB_PASSWORD,
    generated: [],
  };
  const log = opts.log ?? pino(loggerOptions(cfg.LOG_LEVEL));
  const runtime = await createRuntime({ cfg, secrets, ownerUrl, log, embedded: false, ...(opts.now ? { now: opts.now } : {}) });
  const owner = postgres(ownerUrl, { max: 4, onnotice: () => {} });
  return {
    runtime,
    cfg,
    ownerUrl,
    owner,
    http: supertest(runtime.app),
    secrets,
    async close() {
      await runtime.close();
      await owner.end();
      await fs.rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Every day 00:00-24:00, so tests can book any future time. */
export const ALWAYS_OPEN = Object.fromEntries(['1', '2', '3', '4', '5', '6', '7'].map((d) => [d, [['00:00', '24:00']]]));

export function orgPayload(overrides: Record<string, unknown> = {}) {
  return {
    name: `Test Clinic ${randomBytes(3).toString('hex')}`,
    timeZone: 'America/New_York',
    defaultRegion: 'US',
    openingHours: ALWAYS_OPEN,
    slotIntervalMinutes: 15,
    services: [
      { code: 'short', name: 'Short Visit', durationMinutes: 15 },
      { code: 'standard', name: 'Standard Visit', durationMinutes: 30 },
      { code: 'long', name: 'Long Visit', durationMinutes: 45 },
      { code: 'extended', name: 'Extended Visit', durationMinutes: 60 },
    ],
    practitioners: [{ name: 'Dr. Alice Adams' }, { name: 'Dr. Bob Brown' }],
    ...overrides,
  };
}

export interface TestOrg {
  id: string;
  clientId: string;
  clientSecret: string;
  token: string;
  practitioners: Array<{ id: string; name: string }>;
  services: Array<{ id: string; code: string; durationMinutes: number }>;
}

/** Creates an org and an OAuth client through the admin API, and fetches a token the way Vapi would. */
export async function createOrg(h: Harness, overrides: Record<string, unknown> = {}): Promise<TestOrg> {
  const created = await h.http.post('/api/admin/orgs').set('Authorization', `Bearer ${ADMIN_TOKEN}`).send(orgPayload(overrides));
  if (created.status !== 201) throw new Error(`org create failed: ${created.status} ${JSON.stringify(created.body)}`);
  const client = await h.http
    .post(`/api/admin/orgs/${created.body.id}/clients`)
    .set('Authorization', `Bearer ${ADMIN_TOKEN}`)
    .send({ name: 'vapi' });
  if (client.status !== 201) throw new Error(`client create failed: ${client.status}`);
  const token = await h.http
    .post('/oauth/token')
    .type('form')
    .send({ grant_type: 'client_credentials', client_id: client.body.clientId, client_secret: client.body.clientSecret });
  if (token.status !== 200) throw new Error(`token failed: ${token.status}`);
  return {
    id: created.body.id,
    clientId: client.body.clientId,
    clientSecret: client.body.clientSecret,
    token: token.body.access_token,
    practitioners: created.body.practitioners,
    services: created.body.services,
  };
}

/** A Vapi tool-calls message, arguments sent as a JSON string like current Vapi. */
export function vapiMessage(
  calls: Array<{ name: string; args: Record<string, unknown>; id?: string }>,
  extra: Record<string, unknown> = {},
) {
  return {
    message: {
      type: 'tool-calls',
      toolCallList: calls.map((c) => ({
        id: c.id ?? `call_${randomUUID()}`,
        type: 'function',
        function: { name: c.name, arguments: JSON.stringify(c.args) },
      })),
      call: { id: `vapi-call-${randomUUID()}` },
      ...extra,
    },
  };
}

export function callTools(h: Harness, token: string, body: unknown) {
  return h.http
    .post('/api/vapi/tools')
    .set('Authorization', `Bearer ${token}`)
    .send(body as object);
}

/** Parses results[i].result (a one-line JSON string) for assertions. */
export function resultOf(res: { body: { results: Array<{ result?: string; error?: string }> } }, i = 0) {
  const r = res.body.results[i];
  if (!r) throw new Error('no such result');
  if (r.result === undefined) throw new Error(`tool returned error: ${r.error}`);
  expectOneLine(r.result);
  return JSON.parse(r.result) as Record<string, any>;
}

function expectOneLine(s: string) {
  if (/[\r\n]/.test(s)) throw new Error('result is not a single line');
}

/** A clinic-local date N days from now, as YYYY-MM-DD. */
export function localDate(daysAhead: number, zone = 'America/New_York'): string {
  return DateTime.now().setZone(zone).plus({ days: daysAhead }).toISODate()!;
}
