import { writeSync } from 'node:fs';
import type { Server } from 'node:http';
import path from 'node:path';
import type { Express } from 'express';
import type { Logger } from 'pino';
import { loadConfig } from './config.js';
import { startEmbeddedPostgres } from './db/embedded.js';
import { lockDataDir, type DataDirLock } from './db/instance.js';
import { createLogger } from './log.js';
import { createRuntime } from './runtime.js';
import { resolveSecrets } from './secrets.js';
import { describeStartupFailure, firstRunBanner, listenFailure, readyLine, StartupError, type StartInfo } from './startup.js';

/** What has been started so far, stopped in reverse order: HTTP, SMS worker and pools, database, DATA_DIR lock. */
class Started {
  private readonly stops: Array<{ what: string; stop: () => Promise<void> }> = [];
  constructor(private readonly log: Logger) {}
  add(what: string, stop: () => Promise<void>) {
    this.stops.push({ what, stop });
  }
  async stopAll() {
    for (let s = this.stops.pop(); s; s = this.stops.pop()) {
      await s.stop().catch((err: unknown) => this.log.warn({ err, what: s!.what }, 'could not stop cleanly'));
    }
  }
}

let log: Logger | undefined;
let started: Started | undefined;
/** The signal that asked us to stop, if one did. */
let stopping: string | undefined;

async function main(): Promise<void> {
  const cfg = loadConfig();
  const logger = createLogger(cfg.LOG_LEVEL);
  log = logger;
  const running = new Started(logger);
  started = running;

  // A signal during start-up stops what has started once the current step ends; a second one exits at once
  // (the embedded database's watchdog still stops it).
  let serving: (() => Promise<void>) | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      if (!serving) process.exit(130);
      return;
    }
    stopping = signal;
    if (serving) void serving();
  };
  for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(s, onSignal);
  const step = async <T>(p: Promise<T>): Promise<T> => {
    const v = await p;
    if (stopping) throw new Interrupted(stopping);
    return v;
  };

  // The embedded database's data directory belongs to one process at a time:
  // take it before anything in it (secrets.json included) is read or written.
  let dataDirLock: DataDirLock | undefined;
  if (!cfg.DATABASE_URL) {
    const lock = await step(lockDataDir(cfg.DATA_DIR));
    running.add('DATA_DIR lock', () => lock.release());
    dataDirLock = lock;
  }
  const secrets = await step(resolveSecrets(cfg));

  let ownerUrl = cfg.DATABASE_URL;
  if (!ownerUrl) {
    logger.info({ dataDir: cfg.DATA_DIR }, 'DATABASE_URL not set: starting embedded PostgreSQL');
    const pgLog = logger.child({ module: 'embedded-pg' });
    const embedded = await startEmbeddedPostgres({
      dataDir: cfg.DATA_DIR,
      port: cfg.EMBEDDED_PG_PORT,
      log: (line) => line && pgLog.debug(line),
      warn: (line) => pgLog.warn(line),
      ...(dataDirLock ? { lock: dataDirLock } : {}),
    });
    running.add('embedded PostgreSQL', () => embedded.stop());
    if (stopping) throw new Interrupted(stopping);
    ownerUrl = embedded.ownerUrl;
  }

  const runtime = await createRuntime({ cfg, secrets, ownerUrl, log: logger, embedded: !cfg.DATABASE_URL }).catch((err: unknown) => {
    throw unreachable(err, cfg.DATABASE_URL ? 'DATABASE_URL' : 'the embedded PostgreSQL') ?? err;
  });
  running.add('runtime (SMS worker, pools)', () => runtime.close());
  if (stopping) throw new Interrupted(stopping);

  const server = await listen(runtime.app, cfg.PORT, cfg.HOST);
  running.add('HTTP server', async () => {
    // Stop accepting, let requests in flight finish (bounded), then drop what is left.
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    await Promise.race([closed, new Promise((r) => setTimeout(r, 10_000).unref())]);
    server.closeAllConnections();
  });
  server.on('error', (err) => logger.error({ err }, 'http server error'));
  // Vapi waits up to 20 s per tool call; keep connections alive longer than
  // typical proxies so they never reuse a socket we are closing.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : cfg.PORT;

  const info: StartInfo = {
    seed: runtime.seed,
    baseUrl: cfg.PUBLIC_URL ?? `http://localhost:${port}`,
    newAdminToken: secrets.generated.includes('ADMIN_TOKEN') ? secrets.adminToken : undefined,
    adminTokenFrom: cfg.ADMIN_TOKEN ? 'env' : { file: path.join(cfg.DATA_DIR, 'secrets.json') },
  };
  process.stdout.write((firstRunBanner(info) ?? '') + readyLine(info));
  logger.info({ port }, 'listening');

  serving = async () => {
    logger.info({ signal: stopping }, 'shutting down');
    const force = setTimeout(() => process.exit(1), 15_000).unref();
    try {
      await running.stopAll();
    } finally {
      logger.flush();
      clearTimeout(force);
      process.exit(0);
    }
  };
  if (stopping) await serving();
}

class Interrupted extends Error {
  constructor(readonly signal: string) {
    super(`interrupted by ${signal}`);
  }
}

/** A connection-level failure (refused, no such host, timeout), said as such; undefined for anything else. */
function unreachable(err: unknown, what: string): StartupError | undefined {
  const e = err as { code?: unknown; message?: unknown };
  const codes = ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNRESET', 'CONNECT_TIMEOUT'];
  return typeof e?.code === 'string' && codes.includes(e.code)
    ? new StartupError(`cannot connect to the database (${what}): ${String(e.message)}`)
    : undefined;
}

/** Listens, or fails with the reason: Express 5 hands a listen error to the callback, and the server emits it too. */
function listen(app: Express, port: number, host: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const fail = (err: NodeJS.ErrnoException) => reject(listenFailure(err, host, port));
    const server = app.listen(port, host, (err?: Error) => (err ? fail(err) : resolve(server)));
    server.once('error', fail);
  });
}

main().catch(async (err: unknown) => {
  // Stopped by a signal during start-up: whatever failed after it (initdb gets the terminal's Ctrl-C too) is not news.
  if (err instanceof Interrupted || stopping) {
    log?.info({ signal: stopping }, 'stopped during start-up');
    await started?.stopAll();
    log?.flush();
    process.exit(0);
  }
  const { line, expected } = describeStartupFailure(err);
  // One line on stderr; a stack only for what we did not expect (a bug), and only in the log.
  if (!expected) log?.error({ err }, 'startup failed');
  writeSync(2, `${line}\n`);
  await started?.stopAll();
  log?.flush();
  process.exit(1);
});
