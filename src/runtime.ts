import { DateTime } from 'luxon';
import type { Logger } from 'pino';
import type { Sql } from 'postgres';
import { buildApp, type App } from './app.js';
import { ClientAuthenticator } from './auth/client-auth.js';
import type { AppDeps } from './deps.js';
import { createTokenService } from './auth/tokens.js';
import type { Config } from './config.js';
import { migrate } from './db/migrate.js';
import { connect } from './db/pool.js';
import { APP_ROLE, WORKER_ROLE, assertRlsEnforced, enableRoleLogin, urlForRole } from './db/roles.js';
import { seedDemo, type SeedResult } from './orgs/seed.js';
import { OrgContextCache } from './booking/org.js';
import { parseKeyring } from './crypto.js';
import type { Secrets } from './secrets.js';
import { createSmsModule, type SmsModule } from './sms/module.js';
import { healthSettings } from './sms/health.js';
import { ProcessHeartbeat } from './ops/processes.js';
import { setBacklogSource } from './metrics.js';
import { readBacklog } from './sms/status.js';
import { STARTED_AT, VERSION } from './version.js';

export interface Runtime {
  app: App;
  deps: AppDeps;
  sql: Sql;
  workerSql: Sql;
  sms: SmsModule;
  seed: SeedResult | null;
  close(): Promise<void>;
}

/**
 * Wires the service against a database: migrate as the owner, then serve as
 * clinic_app and run the outbox worker as clinic_worker. Both are checked to
 * be unable to bypass row-level security before anything is served.
 */
export async function createRuntime(opts: {
  cfg: Config;
  secrets: Secrets;
  ownerUrl: string;
  log: Logger;
  embedded: boolean;
  now?: () => DateTime;
}): Promise<Runtime> {
  const { cfg, secrets, ownerUrl, log } = opts;
  const owner = connect(ownerUrl, 2, 'clinic-voice-tools:migrate');
  let sql: Sql | undefined;
  let workerSql: Sql | undefined;
  let stopHeartbeat: (() => Promise<void>) | undefined;
  try {
    const { applied } = await migrate(owner);
    if (applied.length) log.info({ applied }, 'migrations applied');
    if (!cfg.APP_DATABASE_URL) await enableRoleLogin(owner, APP_ROLE, secrets.appDbPassword);
    if (!cfg.WORKER_DATABASE_URL) await enableRoleLogin(owner, WORKER_ROLE, secrets.workerDbPassword);
    sql = connect(cfg.APP_DATABASE_URL ?? urlForRole(ownerUrl, APP_ROLE, secrets.appDbPassword), cfg.DB_POOL_MAX, 'clinic-voice-tools:app');
    workerSql = connect(
      cfg.WORKER_DATABASE_URL ?? urlForRole(ownerUrl, WORKER_ROLE, secrets.workerDbPassword),
      cfg.WORKER_DB_POOL_MAX,
      'clinic-voice-tools:worker',
    );
    await assertRlsEnforced(sql, 'APP_DATABASE_URL');
    await assertRlsEnforced(workerSql, 'WORKER_DATABASE_URL');

    const keyring = parseKeyring(secrets.credentialsKey);
    const now = opts.now ?? (() => DateTime.now());
    const sms = createSmsModule({ cfg, sql, workerSql, keyring, log: log.child({ module: 'sms' }), now });
    const heartbeat = new ProcessHeartbeat(
      workerSql,
      {
        workerEnabled: cfg.SMS_WORKER_ENABLED,
        healthProbing: healthSettings(cfg).probing,
        workerId: cfg.SMS_WORKER_ENABLED ? sms.worker.id : null,
        monitorId: sms.health.id,
        version: VERSION,
        startedAt: STARTED_AT,
      },
      cfg.OPS_HEARTBEAT_MS,
      log,
    );
    const unregisterBacklog = setBacklogSource(() => readBacklog(workerSql!));
    stopHeartbeat = async () => {
      unregisterBacklog();
      await heartbeat.stop();
    };
    await heartbeat.start();
    const seedWanted = cfg.SEED_DEMO ?? opts.embedded;
    const seed = seedWanted
      ? await seedDemo(sql, owner, keyring, cfg, { clientId: cfg.DEMO_CLIENT_ID, clientSecret: cfg.DEMO_CLIENT_SECRET })
      : null;

    const deps: AppDeps = {
      cfg,
      sql,
      tokens: createTokenService(cfg, secrets.jwtSecret),
      keyring,
      adminToken: secrets.adminToken,
      workerSql,
      clientAuth: new ClientAuthenticator(sql, {
        failuresPerSource: cfg.OAUTH_FAILURES_PER_SOURCE,
        failuresPerClient: cfg.OAUTH_FAILURES_PER_CLIENT,
        windowSeconds: cfg.OAUTH_THROTTLE_WINDOW_SECONDS,
        throttlePauseMs: cfg.OAUTH_THROTTLE_PAUSE_MS,
        scryptN: cfg.CLIENT_SECRET_SCRYPT_N,
      }),
      sms,
      orgCache: new OrgContextCache(cfg.ORG_CACHE_TTL_MS),
      log,
      now,
      processId: heartbeat.id,
    };
    const app = buildApp(deps);
    const appSql = sql;
    const wSql = workerSql;
    return {
      app,
      deps,
      sql: appSql,
      workerSql: wSql,
      sms,
      seed,
      async close() {
        await stopHeartbeat?.();
        await sms.stop();
        await Promise.all([appSql.end({ timeout: 5 }), wSql.end({ timeout: 5 })]);
      },
    };
  } catch (err) {
    await stopHeartbeat?.();
    await Promise.all([sql?.end({ timeout: 1 }), workerSql?.end({ timeout: 1 })]);
    throw err;
  } finally {
    await owner.end({ timeout: 5 });
  }
}
