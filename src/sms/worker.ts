import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Sql } from 'postgres';
import type { Config } from '../config.js';
import { phoneForLog } from '../log.js';
import { outboxBacklog, smsFinal } from '../metrics.js';
import { unwantedReason } from './attempts.js';
import { Batcher, type BatcherOptions } from './batch.js';
import type { ChainLink, ChainLoader } from './config.js';
import type { EngineMessage, SmsEngine } from './engine.js';
import {
  Outbox,
  isLeaseLost,
  runOutcome,
  type GateVerdict,
  type OutboxRow,
  type OutboxStatus,
  type RunOutcome,
  type RunResult,
  type Settlement,
} from './outbox.js';

export type { OutboxRow, RunOutcome, RunResult } from './outbox.js';
export { LEASE_LOST } from './outbox.js';

export interface WorkerOptions {
  /** Batching of the gate and settle statements (see batch.ts). */
  batch?: BatcherOptions;
}

/**
 * Drains the outbox. Rows are claimed with FOR UPDATE SKIP LOCKED and a short
 * lease, so any number of processes share the work; a row whose worker died is
 * claimed again once its lease runs out, and the engine reconciles whatever
 * attempt that worker left in flight before sending again.
 *
 * Each claimed row is processed on its own (gate, engine, settle), all of them
 * at once; their statements are coalesced, so a claimed batch is gated in one
 * statement, has its first attempts opened in one more, and is settled a few
 * rows per statement as the providers answer.
 */
export class OutboxWorker {
  readonly id = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  readonly outbox: Outbox;
  private running = false;
  private inFlight = new Set<Promise<unknown>>();
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  /** Rows this worker holds right now; their leases are renewed together. */
  private readonly held = new Set<string>();
  private renewTimer: NodeJS.Timeout | undefined;
  private readonly gates: Batcher<string, GateVerdict>;
  private readonly settledListeners: Array<(outboxId: string) => void> = [];
  private readonly settles: Batcher<{ row: OutboxRow; settlement: Settlement }, OutboxStatus | 'not_held'>;

  constructor(
    private readonly sql: Sql,
    private readonly engine: SmsEngine,
    private readonly chains: ChainLoader,
    private readonly cfg: Config,
    private readonly log: Logger,
    opts: WorkerOptions = {},
  ) {
    this.outbox = new Outbox(sql, this.id, {
      leaseMs: cfg.SMS_LEASE_MS,
      retryBaseMs: cfg.SMS_RETRY_BASE_MS,
      retryMaxMs: cfg.SMS_RETRY_MAX_MS,
      maxAttempts: cfg.SMS_MAX_ATTEMPTS,
      defaultRateLimit: cfg.SMS_RATE_LIMIT_PER_HOUR,
      ambiguousMaxMs: cfg.SMS_AMBIGUOUS_MAX_MS,
    });
    const batch = opts.batch ?? { maxBatch: 500, maxInFlight: 2 };
    this.gates = new Batcher((ids) => this.outbox.gate(ids), batch);
    this.settles = new Batcher((items) => this.outbox.settle(items), batch);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.wake?.();
    await this.loop;
    await Promise.allSettled([...this.inFlight]);
  }

  /** Called with a row's id whenever a run of this worker has settled it (receipts waiting for that run go next). */
  onSettled(fn: (outboxId: string) => void): void {
    this.settledListeners.push(fn);
  }

  /** Claims and processes one specific message now (dead-letter retry). */
  async processNow(outboxId: string): Promise<RunOutcome | null> {
    const r = await this.claimAndRun(this.sql`id = ${outboxId}`);
    return r ? runOutcome(r) : null;
  }

  /**
   * Claims and processes the confirmation of one appointment now: the
   * booking's fast path, one round trip to claim. Null when the row is absent,
   * settled, or held by another worker.
   */
  async processFor(orgId: string, appointmentId: string, kind: string): Promise<RunResult | null> {
    return this.claimAndRun(this.sql`org_id = ${orgId} AND appointment_id = ${appointmentId} AND kind = ${kind}`);
  }

  private async claimAndRun(which: ReturnType<Sql>): Promise<RunResult | null> {
    const row = await this.outbox.claimWhere(which);
    return row ? this.track(this.process(row)) : null;
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p)).catch(() => {});
    return p;
  }

  private async run(): Promise<void> {
    const concurrency = this.cfg.SMS_WORKER_CONCURRENCY;
    // Slots are refilled a batch at a time: claiming each slot as it frees up
    // would cost, per message, the statements that batching saves.
    const refill = Math.max(1, Math.min(this.cfg.SMS_WORKER_BATCH, Math.ceil(concurrency / 2)));
    while (this.running) {
      let asked = 0;
      let claimed = 0;
      try {
        const free = concurrency - this.inFlight.size;
        if (free >= refill || (free > 0 && this.inFlight.size === 0)) {
          asked = Math.min(free, this.cfg.SMS_WORKER_BATCH);
          const rows = await this.outbox.claimDue(asked);
          outboxBacklog.set(rows.length);
          claimed = rows.length;
          for (const row of rows) void this.track(this.process(row)).catch(() => {});
        }
      } catch (err) {
        this.log.error({ err }, 'outbox claim failed');
      }
      // Everything asked for was due: more probably is. Go again at once.
      if (asked > 0 && claimed === asked) continue;
      if (concurrency - this.inFlight.size < refill && this.inFlight.size > 0) {
        await Promise.race([...this.inFlight]).catch(() => {});
        continue;
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, this.cfg.SMS_WORKER_POLL_MS);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  /** One delivery run of one claimed row. Never throws: every path ends in a recorded state. */
  private async process(row: OutboxRow): Promise<RunResult> {
    const log = this.log.child({ outboxId: row.id, orgId: row.org_id, to: phoneForLog(row.to_phone) });
    this.hold(row.id);
    try {
      const g = await this.gates.call(row.id);
      if (g.status === 'gone') return g;
      const settlement = g.status === 'sending' ? await this.deliver(row, g.inFlight, g.resendAfter) : g;
      return await this.settle(row, settlement, log);
    } catch (err) {
      if (isLeaseLost(err)) {
        // Another worker holds the row now; it owns the outcome.
        log.warn('sms outbox lease lost mid-run; leaving the row to its new holder');
        return { status: 'sending', reason: 'lease_lost' };
      }
      const unwanted = unwantedReason(err);
      if (unwanted) {
        // Cancelled or moved after the gate; the opening of the attempt cancelled the row instead.
        for (const fn of this.settledListeners) fn(row.id);
        smsFinal.inc({ status: 'cancelled', reason: unwanted });
        log.info({ reason: unwanted }, 'sms not sent: its appointment changed just before the send');
        return { status: 'cancelled', reason: unwanted };
      }
      log.error({ err }, 'outbox message processing failed');
      try {
        return await this.settle(row, { status: 'pending', reason: 'internal_error', message: (err as Error).message }, log);
      } catch (e) {
        log.error({ err: e }, 'could not release outbox row; its lease will expire');
        return { status: 'pending', reason: 'internal_error', message: (err as Error).message };
      }
    } finally {
      this.release(row.id);
    }
  }

  private async deliver(
    row: OutboxRow,
    inFlight: Extract<GateVerdict, { status: 'sending' }>['inFlight'],
    resendAfter: string | null,
  ): Promise<Settlement> {
    const chain = await this.chainFor(row);
    if (chain === 'unavailable') {
      // Configured, but no credentials decrypt (e.g. CREDENTIALS_KEY lost a key):
      // an operator can fix that, so the message waits instead of dying.
      return { status: 'pending', reason: 'credentials_unavailable', message: 'no provider credentials could be decrypted' };
    }
    if (!chain) return { status: 'failed', reason: 'not_configured', message: 'SMS is not configured or disabled for this clinic' };
    const msg: EngineMessage = { id: row.id, orgId: row.org_id, to: row.to_phone, body: row.body, leaseHolder: this.id, run: row.attempts };
    return this.engine.deliver(msg, chain.links, inFlight, { failover: chain.failover, resendAfter });
  }

  /** Moves the row (with the other rows settling now, in one statement), then counts and logs what happened. */
  private async settle(row: OutboxRow, s: Settlement, log: Logger): Promise<RunResult> {
    const status = await this.settles.call({ row, settlement: s });
    if (status === 'not_held') {
      log.warn({ wanted: s.status }, 'sms outbox lease lost before settling; leaving the row to its new holder');
      return { status: 'sending', reason: 'lease_lost' };
    }
    for (const fn of this.settledListeners) fn(row.id);
    switch (s.status) {
      case 'sent':
        smsFinal.inc({ status: 'sent', reason: s.failedOver ? 'failed_over' : 'primary' });
        log.info({ provider: s.provider, failedOver: s.failedOver, reconciled: s.reconciled }, 'sms sent');
        return s;
      case 'cancelled':
        smsFinal.inc({ status: 'cancelled', reason: s.reason });
        return s;
      case 'failed':
        smsFinal.inc({ status: 'failed', reason: s.reason });
        log.warn({ reason: s.reason, code: s.code, provider: s.provider }, 'sms failed permanently');
        return s;
      case 'pending': {
        if (s.wait) {
          log.warn({ reason: s.reason, code: s.code, provider: s.provider }, 'sms waits for evidence about an ambiguous attempt');
          return s;
        }
        const dead = status === 'failed';
        if (dead) smsFinal.inc({ status: 'failed', reason: 'retries_exhausted' });
        log.warn({ reason: s.reason, code: s.code, attempts: row.attempts, dead }, dead ? 'sms retries exhausted' : 'sms will retry');
        return dead ? { ...s, status: 'failed', reason: 'retries_exhausted', message: `${s.reason}: ${s.message}` } : s;
      }
    }
  }

  /**
   * While this worker holds rows, their leases are renewed every third of the
   * lease: a run can legitimately take longer than the lease (several
   * providers, retries, reconcile lookups), and a live row whose lease ran out
   * would be claimed and sent a second time by another process. Only a dead
   * worker stops renewing.
   */
  private hold(id: string): void {
    this.held.add(id);
    if (this.renewTimer) return;
    const every = Math.max(100, Math.floor(this.cfg.SMS_LEASE_MS / 3));
    this.renewTimer = setInterval(() => {
      this.outbox.renew([...this.held]).catch((err: unknown) => this.log.warn({ err }, 'could not renew sms outbox leases'));
    }, every);
    this.renewTimer.unref();
  }

  private release(id: string): void {
    this.held.delete(id);
    if (this.held.size === 0 && this.renewTimer) {
      clearInterval(this.renewTimer);
      this.renewTimer = undefined;
    }
  }

  private async chainFor(row: OutboxRow): Promise<{ links: ChainLink[]; failover: boolean } | 'unavailable' | null> {
    const loaded = await this.chains.load(row.org_id);
    if (row.dry_run) {
      // A dry run exercises the whole pipeline, but only the sandbox "sends".
      const pool = loaded?.links[0]?.pool.length ? loaded.links[0].pool : ['+15005550006'];
      return { links: [{ position: 0, kind: 'sandbox', provider: this.chains.sandboxProvider, pool, settings: {} }], failover: false };
    }
    if (!loaded || !loaded.enabled) return null;
    if (loaded.broken.length) this.log.error({ orgId: row.org_id, broken: loaded.broken }, 'sms credentials could not be decrypted');
    if (loaded.links.length === 0) return loaded.broken.length ? 'unavailable' : null;
    // With the switch off the primary alone sends: its credentials not decrypting is a wait, not a failover.
    if (!loaded.failoverEnabled && !loaded.links.some((l) => l.position === 0)) return 'unavailable';
    return { links: loaded.links, failover: loaded.failoverEnabled };
  }
}
