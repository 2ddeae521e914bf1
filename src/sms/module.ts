import type { DateTime } from 'luxon';
import type { Logger } from 'pino';
import type { Sql } from 'postgres';
import type { Config } from '../config.js';
import type { ConfirmationNotifier } from '../tools/types.js';
import { ChainLoader } from './config.js';
import type { Keyring } from '../crypto.js';
import { SmsEngine } from './engine.js';
import { HealthMonitor, healthSettings } from './health.js';
import { createNotifier } from './notifier.js';
import { sqlAttemptLog } from './attempts.js';
import { InboundProcessor } from './inbound.js';
import { ReceiptProcessor } from './receipts.js';
import { WebhookIntake, statusCallbackUrl } from './webhooks.js';
import { OutboxWorker } from './worker.js';

export interface SmsModule {
  notifier: ConfirmationNotifier;
  engine: SmsEngine;
  worker: OutboxWorker;
  chains: ChainLoader;
  health: HealthMonitor;
  /** Provider webhooks on the request path: verify and store. */
  intake: WebhookIntake;
  /** Acting on stored receipts, and the sweeps (lost receipts, unfinished events). */
  receipts: ReceiptProcessor;
  /** Acting on stored inbound texts: opt-outs, HELP, the inbox. */
  inbound: InboundProcessor;
  stop(): Promise<void>;
}

/** Wires the SMS engine: chain loader, engine, outbox worker and the booking's notifier. */
export function createSmsModule(opts: {
  cfg: Config;
  sql: Sql;
  workerSql: Sql;
  keyring: Keyring;
  log: Logger;
  now: () => DateTime;
}): SmsModule {
  const { cfg, sql, workerSql, keyring, log } = opts;
  // A clinic's chain and switches are reused as long as its other settings are (ORG_CACHE_TTL_MS).
  const chains = new ChainLoader(workerSql, keyring, cfg, cfg.ORG_CACHE_TTL_MS);
  const health = new HealthMonitor(workerSql, chains, healthSettings(cfg), log);
  const engine = new SmsEngine(
    {
      attemptTimeoutMs: cfg.SMS_ATTEMPT_TIMEOUT_MS,
      retriesPerProvider: 2,
      // In-run retries must fit the booking's response budget; the worker's own
      // SMS_RETRY_* backoff spaces out whole runs after that.
      retryMinMs: Math.min(100, cfg.SMS_RETRY_BASE_MS),
      retryMaxMs: Math.min(1_000, cfg.SMS_RETRY_MAX_MS),
      breakerThreshold: cfg.SMS_BREAKER_THRESHOLD,
      breakerCooldownMs: cfg.SMS_BREAKER_COOLDOWN_MS,
      reconcileTimeoutMs: Math.min(1_000, cfg.SMS_ATTEMPT_TIMEOUT_MS),
      lateAnswerGraceMs: cfg.SMS_SDK_TIMEOUT_MARGIN_MS + 250,
      ambiguousMaxMs: cfg.SMS_AMBIGUOUS_MAX_MS,
      callbackUrl: (kind, orgId, outboxId) => statusCallbackUrl(cfg.PUBLIC_URL, kind, orgId, outboxId),
    },
    sqlAttemptLog(workerSql),
    log,
    health,
  );
  const worker = new OutboxWorker(workerSql, engine, chains, cfg, log);
  const receipts = new ReceiptProcessor(
    workerSql,
    chains,
    worker,
    {
      receiptTimeoutMs: cfg.SMS_RECEIPT_TIMEOUT_MS,
      sweepEveryMs: Math.min(5_000, Math.max(100, cfg.SMS_WORKER_POLL_MS * 2)),
      lookupTimeoutMs: Math.min(5_000, cfg.SMS_ATTEMPT_TIMEOUT_MS * 2),
      leaseMs: cfg.SMS_LEASE_MS,
    },
    log,
  );
  const inbound = new InboundProcessor(workerSql, chains, log);
  receipts.setInbound(inbound);
  // Every process reads the shared health; healthSettings() says whether this one also probes.
  health.start();
  if (cfg.SMS_WORKER_ENABLED) {
    worker.start();
    receipts.start();
  }
  const notifier = createNotifier({ workerSql, worker, budgetMs: cfg.SMS_RESPONSE_BUDGET_MS, log });
  return {
    notifier,
    engine,
    worker,
    chains,
    health,
    intake: new WebhookIntake(sql, chains),
    receipts,
    inbound,
    async stop() {
      await receipts.stop();
      await Promise.all([worker.stop(), health.stop()]);
    },
  };
}
