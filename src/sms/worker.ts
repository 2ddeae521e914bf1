import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Sql } from 'postgres';
import type { Config } from '../config.js';
import { phoneForLog } from '../log.js';
import { outboxBacklog, smsFinal } from '../metrics.js';
import type { ChainLink, ChainLoader } from './config.js';
import type { AttemptRecorder, DeliveryResult, EngineMessage, InFlightAttempt, SmsEngine } from './engine.js';

export interface OutboxRow {
  id: string;
  org_id: string;
  appointment_id: string;
  kind: string;
  to_phone: string;
  body: string;
  attempts: number;
  dry_run: boolean;
}

/** What one delivery run concluded; the notifier maps it to smsStatus. */
export type RunOutcome =
  | { status: 'sent'; provider: string }
  | { status: 'failed'; reason: string }
  | { status: 'retry'; reason: string }
  | { status: 'skipped'; reason: string };

const RETURNING = 'id, org_id, appointment_id, kind, to_phone, body, attempts, dry_run';

/** sms_gate's answer (sql/002_sms.sql). */
interface GateAnswer {
  decision: 'send' | 'already_sent' | 'cancelled' | 'superseded' | 'gone' | 'expired' | 'opted_out' | 'rate_limited';
  inFlight?: InFlightAttempt | null;
  provider?: string;
  providerMessageId?: string | null;
  from?: string | null;
}

/** SQLSTATE raised by sms_begin_attempt when the caller no longer holds the row's lease. */
export const LEASE_LOST = 'SM001';

/** Recorder backed by the sms_* SQL functions, each one round trip under the message's org. */
export function sqlRecorder(workerSql: Sql): AttemptRecorder {
  return {
    async begin(msg, link, preferred, failedOver) {
      const [row] = await workerSql<{ r: { attemptId: number; from: string | null } }[]>`
        SELECT sms_begin_attempt(${msg.orgId}::uuid, ${msg.id}::uuid, ${msg.leaseHolder}, ${msg.to}, ${link.kind},
                                 ${link.provider.accountKey}, ${link.pool}::text[], ${preferred}, ${failedOver}) AS r`;
      if (!row) throw new Error('sms_begin_attempt returned nothing');
      return { attemptId: Number(row.r.attemptId), from: row.r.from };
    },
    async finish(msg, attemptId, r) {
      await workerSql`
        SELECT sms_finish_attempt(${msg.orgId}::uuid, ${attemptId}, ${r.outcome}, ${r.errorClass ?? null},
                                  ${r.code ?? null}, ${r.message ?? null}, ${r.providerMessageId ?? null},
                                  ${r.latencyMs ?? null}, ${r.optOut ?? false}, ${msg.leaseHolder})`;
    },
    async skip(msg, link, reason) {
      await workerSql`
        SELECT sms_record_skip(${msg.orgId}::uuid, ${msg.id}::uuid, ${link.kind}, ${link.provider.accountKey},
                               ${reason.errorClass}, ${reason.code}, ${reason.message})`;
    },
  };
}

/**
 * Drains the outbox. Rows are claimed with FOR UPDATE SKIP LOCKED and a short
 * lease, so any number of processes share the work; a row whose worker died is
 * claimed again once its lease runs out, and the engine reconciles whatever
 * attempt that worker left in flight before sending again.
 */
export class OutboxWorker {
  readonly id = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  private running = false;
  private inFlight = new Set<Promise<unknown>>();
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly sql: Sql,
    private readonly engine: SmsEngine,
    private readonly chains: ChainLoader,
    private readonly cfg: Config,
    private readonly log: Logger,
  ) {}

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

  /** Claims and processes one specific message now (dead-letter retry). */
  async processNow(outboxId: string): Promise<RunOutcome | null> {
    return this.claimAndRun(this.sql`id = ${outboxId}`);
  }

  /**
   * Claims and processes the confirmation of one appointment now: the
   * booking's fast path, one round trip to claim. Null when the row is absent,
   * settled, or held by another worker.
   */
  async processFor(orgId: string, appointmentId: string, kind: string): Promise<RunOutcome | null> {
    return this.claimAndRun(this.sql`org_id = ${orgId} AND appointment_id = ${appointmentId} AND kind = ${kind}`);
  }

  private async claimAndRun(which: ReturnType<Sql>): Promise<RunOutcome | null> {
    const [row] = await this.claimRows(this.sql`SELECT id FROM sms_outbox WHERE ${which} AND ${this.due()} FOR UPDATE SKIP LOCKED`);
    return row ? this.track(this.process(row)) : null;
  }

  /** Claimable: due for an attempt, or leased by a worker whose lease ran out. */
  private due() {
    return this.sql`((status = 'pending' AND next_attempt_at <= now()) OR (status = 'sending' AND locked_until < now()))`;
  }

  /** The one claim statement: takes the lease on the rows `ids` selects. */
  private claimRows(ids: ReturnType<Sql>): Promise<OutboxRow[]> {
    return this.sql<OutboxRow[]>`
      UPDATE sms_outbox o
         SET status = 'sending', locked_until = now() + ${this.cfg.SMS_LEASE_MS} * interval '1 millisecond',
             locked_by = ${this.id}, attempts = o.attempts + 1, updated_at = now()
        FROM (${ids}) due
       WHERE o.id = due.id
      RETURNING ${this.sql.unsafe(RETURNING.split(', ').map((c) => `o.${c}`).join(', '))}`;
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p)).catch(() => {});
    return p;
  }

  private async run(): Promise<void> {
    while (this.running) {
      let claimed = 0;
      try {
        const free = this.cfg.SMS_WORKER_CONCURRENCY - this.inFlight.size;
        if (free > 0) {
          const rows = await this.claim(Math.min(free, this.cfg.SMS_WORKER_BATCH));
          claimed = rows.length;
          for (const row of rows) void this.track(this.process(row)).catch(() => {});
        }
      } catch (err) {
        this.log.error({ err }, 'outbox claim failed');
      }
      // A full batch means more is probably due: go again at once.
      if (claimed > 0 && claimed >= this.cfg.SMS_WORKER_BATCH) continue;
      if (this.inFlight.size >= this.cfg.SMS_WORKER_CONCURRENCY) {
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

  private async claim(n: number): Promise<OutboxRow[]> {
    const rows = await this.claimRows(
      this.sql`SELECT id FROM sms_outbox WHERE ${this.due()} ORDER BY next_attempt_at LIMIT ${n} FOR UPDATE SKIP LOCKED`,
    );
    outboxBacklog.set(rows.length);
    return rows;
  }

  /** One delivery run of one claimed row. Never throws: every path ends in a recorded state. */
  private async process(row: OutboxRow): Promise<RunOutcome> {
    const log = this.log.child({ outboxId: row.id, orgId: row.org_id, to: phoneForLog(row.to_phone) });
    const releaseLease = this.holdLease(row, log);
    try {
      const [gate] = await this.sql<{ g: GateAnswer }[]>`
        SELECT sms_gate(${row.id}::uuid, ${this.cfg.SMS_RATE_LIMIT_PER_HOUR}) AS g`;
      const g: GateAnswer = gate?.g ?? { decision: 'gone' };
      switch (g.decision) {
        case 'send':
          break;
        case 'already_sent':
          // A previous run got it accepted (or reconciled) but died before recording it here.
          await this.complete(row, { status: 'sent', provider: g.provider ?? 'unknown', providerMessageId: g.providerMessageId ?? '', from: g.from ?? null, failedOver: false, reconciled: true });
          return { status: 'sent', provider: g.provider ?? 'unknown' };
        case 'cancelled':
          await this.finishWithout(row, 'appointment_cancelled');
          return { status: 'skipped', reason: 'appointment_cancelled' };
        case 'superseded':
          await this.finishWithout(row, 'superseded');
          return { status: 'skipped', reason: 'superseded' };
        case 'gone':
          return { status: 'skipped', reason: 'gone' };
        default:
          // expired, opted_out, rate_limited: a permanent no-send, kept as a dead letter.
          await this.fail(row, { reason: g.decision, message: `not sent: ${g.decision}` });
          return { status: 'failed', reason: g.decision };
      }

      const chain = await this.chainFor(row);
      if (chain === 'unavailable') {
        // Configured, but no credentials decrypt (e.g. CREDENTIALS_KEY lost a key):
        // an operator can fix that, so the message waits instead of dying.
        const r = { status: 'retry' as const, reason: 'credentials_unavailable', message: 'no provider credentials could be decrypted' };
        await this.record(row, r, log);
        return { status: 'retry', reason: r.reason };
      }
      if (!chain) {
        await this.fail(row, { reason: 'not_configured', message: 'SMS is not configured or disabled for this clinic' });
        return { status: 'failed', reason: 'not_configured' };
      }
      const msg: EngineMessage = { id: row.id, orgId: row.org_id, to: row.to_phone, body: row.body, leaseHolder: this.id };
      const result = await this.engine.deliver(msg, chain, g.inFlight ?? null);
      await this.record(row, result, log);
      if (result.status === 'sent') return { status: 'sent', provider: result.provider };
      return { status: result.status, reason: result.reason };
    } catch (err) {
      if ((err as { code?: unknown }).code === LEASE_LOST) {
        // Another worker holds the row now; it owns the outcome.
        log.warn('sms outbox lease lost mid-run; leaving the row to its new holder');
        return { status: 'retry', reason: 'lease_lost' };
      }
      log.error({ err }, 'outbox message processing failed');
      await this.retryLater(row, { reason: 'internal_error', message: (err as Error).message }).catch((e) =>
        log.error({ err: e }, 'could not release outbox row; its lease will expire'),
      );
      return { status: 'retry', reason: 'internal_error' };
    } finally {
      releaseLease();
    }
  }

  /**
   * Keeps the lease alive while this run is working: a run can legitimately take
   * longer than the lease (several providers, retries, reconcile lookups), and a
   * live row whose lease ran out would be claimed and sent a second time by
   * another process. Only a dead worker stops renewing.
   */
  private holdLease(row: OutboxRow, log: Logger): () => void {
    const every = Math.max(100, Math.floor(this.cfg.SMS_LEASE_MS / 3));
    const timer = setInterval(() => {
      this.sql`
        UPDATE sms_outbox SET locked_until = now() + ${this.cfg.SMS_LEASE_MS} * interval '1 millisecond'
         WHERE id = ${row.id} AND locked_by = ${this.id} AND status = 'sending'`.catch((err: unknown) =>
        log.warn({ err }, 'could not renew sms outbox lease'),
      );
    }, every);
    timer.unref();
    return () => clearInterval(timer);
  }

  private async chainFor(row: OutboxRow): Promise<ChainLink[] | 'unavailable' | null> {
    const loaded = await this.chains.load(row.org_id);
    if (row.dry_run) {
      // A dry run exercises the whole pipeline, but only the sandbox "sends".
      const pool = loaded?.links[0]?.pool ?? ['+15005550006'];
      return [{ position: 0, kind: 'sandbox', provider: this.chains.sandboxProvider, pool }];
    }
    if (!loaded || !loaded.enabled) return null;
    if (loaded.broken.length) this.log.error({ orgId: row.org_id, broken: loaded.broken }, 'sms credentials could not be decrypted');
    if (loaded.links.length === 0) return loaded.broken.length ? 'unavailable' : null;
    return loaded.links;
  }

  private async record(row: OutboxRow, r: DeliveryResult | { status: 'retry'; reason: string; message: string }, log: Logger) {
    if (r.status === 'sent') {
      // sms_finish_attempt already marked the row sent, atomically with the
      // accepted (or reconciled) attempt: no further round trip.
      smsFinal.inc({ status: 'sent', reason: r.failedOver ? 'failed_over' : 'primary' });
      log.info({ provider: r.provider, failedOver: r.failedOver, reconciled: r.reconciled }, 'sms sent');
    } else if (r.status === 'failed') {
      await this.fail(row, r);
      log.warn({ reason: r.reason, code: r.code, provider: r.provider }, 'sms failed permanently');
    } else {
      const dead = row.attempts >= this.cfg.SMS_MAX_ATTEMPTS;
      if (dead) await this.fail(row, { ...r, reason: 'retries_exhausted', message: `${r.reason}: ${r.message}` });
      else await this.retryLater(row, r);
      log.warn({ reason: r.reason, code: 'code' in r ? r.code : undefined, attempts: row.attempts, dead }, dead ? 'sms retries exhausted' : 'sms will retry');
    }
  }

  private async complete(row: OutboxRow, r: Extract<DeliveryResult, { status: 'sent' }>) {
    // Guarded by the lease holder: a worker whose lease was taken over cannot
    // overwrite the newer holder's state.
    await this.sql`
      UPDATE sms_outbox SET status = 'sent', sent_at = now(), provider = ${r.provider},
             provider_message_id = ${r.providerMessageId || null}, from_number = ${r.from},
             locked_until = NULL, locked_by = NULL, updated_at = now()
       WHERE id = ${row.id} AND locked_by = ${this.id} AND status = 'sending'`;
    smsFinal.inc({ status: 'sent', reason: r.failedOver ? 'failed_over' : 'primary' });
  }

  private async fail(row: OutboxRow, r: { reason: string; message: string; errorClass?: string | undefined; code?: string | undefined; provider?: string | undefined }) {
    await this.sql`
      UPDATE sms_outbox SET status = 'failed', failed_at = now(), failure_reason = ${r.reason},
             last_error = ${`${r.reason}: ${r.message}`.slice(0, 500)},
             last_error_class = ${r.errorClass ?? r.reason}, last_error_code = ${r.code ?? null},
             provider = COALESCE(${r.provider ?? null}, provider),
             locked_until = NULL, locked_by = NULL, updated_at = now()
       WHERE id = ${row.id} AND locked_by = ${this.id} AND status = 'sending'`;
    smsFinal.inc({ status: 'failed', reason: r.reason });
  }

  /** The message is no longer wanted (appointment cancelled or moved): not a dead letter. */
  private async finishWithout(row: OutboxRow, reason: 'appointment_cancelled' | 'superseded') {
    await this.sql`
      UPDATE sms_outbox SET status = 'cancelled', failure_reason = ${reason}, last_error = ${reason},
             locked_until = NULL, locked_by = NULL, updated_at = now()
       WHERE id = ${row.id} AND locked_by = ${this.id} AND status = 'sending'`;
    smsFinal.inc({ status: 'cancelled', reason });
  }

  private async retryLater(row: OutboxRow, r: { reason: string; message: string; errorClass?: string | undefined; code?: string | undefined; provider?: string | undefined }) {
    // Exponential backoff between runs, with "equal" jitter: half fixed, half random.
    const cap = Math.min(this.cfg.SMS_RETRY_MAX_MS, this.cfg.SMS_RETRY_BASE_MS * 2 ** Math.max(0, row.attempts - 1));
    const delay = Math.round(cap / 2 + Math.random() * (cap / 2));
    await this.sql`
      UPDATE sms_outbox SET status = 'pending', next_attempt_at = now() + ${delay} * interval '1 millisecond',
             last_error = ${`${r.reason}: ${r.message}`.slice(0, 500)}, last_error_class = ${r.errorClass ?? r.reason},
             last_error_code = ${r.code ?? null}, provider = COALESCE(${r.provider ?? null}, provider),
             locked_until = NULL, locked_by = NULL, updated_at = now()
       WHERE id = ${row.id} AND locked_by = ${this.id} AND status = 'sending'`;
  }
}
