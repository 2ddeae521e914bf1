/**
 * Delivery receipts, after they are stored (webhooks.ts): each is applied to
 * the attempt it is about by one SQL statement (sms_apply_receipt, which also
 * decides the one resend after a failure), then this process acts on what was
 * decided at once: a resend row or a message that a receipt proved sent is run
 * here rather than at the next poll.
 *
 * What the request path could not finish is finished by the sweeps (every
 * process that runs the outbox worker): events stored but never processed (a
 * crash, a receipt that waited for a run), receipts that came before their
 * message id was recorded, and accepted messages whose receipt never came
 * (looked up once, after SMS_RECEIPT_TIMEOUT_MS).
 */
import type { Logger } from 'pino';
import pTimeout from 'p-timeout';
import type { Sql } from 'postgres';
import { scrubPhones } from '../log.js';
import { smsAsyncFailovers, smsDuplicateDeliveries, smsReceiptLookups, smsReceipts } from '../metrics.js';
import { Batcher } from './batch.js';
import { ruleFor } from './classify.js';
import type { ChainLink, ChainLoader } from './config.js';
import type { InboundProcessor } from './inbound.js';
import { RECEIPT_KINDS } from './providers/index.js';
import type { DeliveryReceipt, DeliveryState, ErrorClass, ProviderKind, SmsProvider } from './types.js';
import type { StoredWebhook } from './webhooks.js';
import type { OutboxWorker } from './worker.js';

export interface ApplyResult {
  outcome: 'applied' | 'duplicate' | 'stale' | 'unmatched' | 'deferred';
  attemptId?: number;
  outboxId?: string;
  duplicate?: boolean;
  resendId?: string | null;
  proved?: boolean;
}

export interface ReceiptOptions {
  /** SMS_RECEIPT_TIMEOUT_MS. */
  receiptTimeoutMs: number;
  /** How often the sweeps run in a process with the worker on. */
  sweepEveryMs: number;
  /** How long one provider lookup may take. */
  lookupTimeoutMs: number;
  /** SMS_LEASE_MS: how long a deferred receipt keeps being retried in this process. */
  leaseMs: number;
}

/**
 * A receipt waiting for a run that holds its message is tried again after
 * these waits (the last one repeated), for as long as a run may hold a row
 * (its lease, renewed while it works), then left to the sweep.
 */
const DEFER_MS = [20, 50, 100, 200, 400, 800, 1600, 2000];
/** A stored event not processed after this long is the sweep's. */
const ORPHAN_AFTER_MS = 2_000;
const SWEEP_BATCH = 100;

const FINAL_FAILURE: ReadonlySet<DeliveryState> = new Set(['undelivered', 'failed']);

/**
 * The class a receipt's code has in the adapter's table. A final failure with
 * an unknown code (or none) counts as a provider failure: the text did not
 * arrive, and one resend elsewhere is the better risk.
 */
export function receiptClass(
  provider: SmsProvider,
  r: Pick<DeliveryReceipt, 'status' | 'code'>,
): { errorClass: ErrorClass | null; optOut: boolean } {
  if (!FINAL_FAILURE.has(r.status)) return { errorClass: null, optOut: false };
  const rule = ruleFor(provider.codes, r.code);
  return { errorClass: rule?.errorClass ?? 'provider', optOut: rule?.optOut === true };
}

interface ApplyItem {
  org: string;
  event: string | null;
  provider: string;
  account: string;
  outbox: string | null;
  messageId: string;
  state: DeliveryState;
  code: string | null;
  class: ErrorClass | null;
  optOut: boolean;
}

export class ReceiptProcessor {
  /** Receipts processed together are applied in one statement (sms_apply_receipts): one commit for many. */
  private readonly applies: Batcher<ApplyItem, ApplyResult>;
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;
  private lastLostSweep = 0;
  private readonly deferred = new Set<NodeJS.Timeout>();
  /** Receipts waiting for a run of this process that holds their message, by outbox row. */
  private readonly waitingFor = new Map<string, Map<string, { stored: StoredWebhook; attempt: number }>>();
  private inbound: InboundProcessor | undefined;
  private stopped = false;

  constructor(
    /** clinic_worker: acting on events is the worker role's. */
    private readonly sql: Sql,
    private readonly chains: ChainLoader,
    private readonly worker: OutboxWorker,
    private readonly opts: ReceiptOptions,
    private readonly log: Logger,
  ) {
    // The run a receipt waited for has settled its row: go now rather than at the next retry,
    // before the row's next run decides anything (say, to fail over).
    worker.onSettled((outboxId) => {
      const waiting = this.waitingFor.get(outboxId);
      if (!waiting) return;
      this.waitingFor.delete(outboxId);
      for (const { stored, attempt } of waiting.values()) void this.process(stored, attempt + 1);
    });
    this.applies = new Batcher(
      async (items) => {
        const rows = await sql<
          { idx: number; result: ApplyResult }[]
        >`SELECT * FROM sms_apply_receipts(${sql.json(items as unknown as Record<string, string>[])}::jsonb)`;
        const byIdx = new Map(rows.map((r) => [r.idx, r.result]));
        return items.map((_, i) => byIdx.get(i) ?? { outcome: 'deferred' as const });
      },
      { maxBatch: 200, maxInFlight: 2 },
    );
  }

  /** Inbound texts found by the sweep go to their own processor. */
  setInbound(inbound: InboundProcessor): void {
    this.inbound = inbound;
  }

  /** Processes one stored event that is not an inbound text; never throws (a failure is the sweep's to retry). */
  async process(stored: StoredWebhook, attempt = 0): Promise<ApplyResult | null> {
    try {
      if (stored.kind !== 'receipt') {
        await this.done(stored, stored.kind === 'probe' ? 'probe' : 'ignored');
        return null;
      }
      const link = await this.linkFor(stored.orgId, stored.accountKey);
      const event = link?.provider.webhooks?.parse({ url: stored.url, headers: {}, rawBody: stored.rawBody }, 'receipt') ?? null;
      if (!link || event?.kind !== 'receipt') {
        await this.done(stored, 'ignored');
        return null;
      }
      const result = await this.apply(stored.orgId, stored.id, link, event.receipt);
      if (result.outcome === 'deferred') {
        if (result.outboxId) {
          const waiting = this.waitingFor.get(result.outboxId) ?? new Map<string, { stored: StoredWebhook; attempt: number }>();
          waiting.set(stored.id, { stored, attempt: Math.max(0, attempt) });
          this.waitingFor.set(result.outboxId, waiting);
        }
        if (attempt >= 0) this.retryLater(stored, attempt);
      } else if (result.outboxId) {
        this.waitingFor.get(result.outboxId)?.delete(stored.id);
      }
      return result;
    } catch (err) {
      this.log.warn(
        { err: scrubPhones((err as Error).message), eventId: stored.id, provider: stored.provider },
        'sms receipt could not be processed yet',
      );
      return null;
    }
  }

  /** Applies a receipt (event null: the answer of a lookup) and acts on what sms_apply_receipt decided. */
  async apply(orgId: string, eventId: string | null, link: ChainLink, r: DeliveryReceipt): Promise<ApplyResult> {
    const { errorClass, optOut } = receiptClass(link.provider, r);
    const result = await this.applies.call({
      org: orgId,
      event: eventId,
      provider: link.kind,
      account: link.provider.accountKey,
      outbox: r.outboxRef ?? null,
      messageId: r.providerMessageId,
      state: r.status,
      code: r.code ?? null,
      class: errorClass,
      optOut,
    });
    smsReceipts.inc({ provider: link.kind, state: r.status, outcome: result.outcome });
    if (result.duplicate) {
      smsDuplicateDeliveries.inc({ provider: link.kind });
      this.log.warn(
        { orgId, outboxId: result.outboxId, provider: link.kind },
        'sms delivered twice: a late receipt for an attempt given up on',
      );
    }
    if (result.resendId) {
      smsAsyncFailovers.inc({ from: link.kind, cause: 'receipt' });
      this.log.warn(
        { orgId, outboxId: result.outboxId, resendId: result.resendId, provider: link.kind, code: r.code },
        'sms undelivered; resending through the next provider',
      );
      this.runNow(result.resendId);
    } else if (result.proved && result.outboxId) {
      // The message waited for this evidence; its next run settles it sent.
      this.runNow(result.outboxId);
    }
    return result;
  }

  private runNow(outboxId: string): void {
    void this.worker.processNow(outboxId).catch((err: unknown) => this.log.error({ err, outboxId }, 'sms run after a receipt failed'));
  }

  private retryLater(stored: StoredWebhook, attempt: number): void {
    const waited = DEFER_MS.slice(0, attempt).reduce((a, b) => a + b, 0) + Math.max(0, attempt - DEFER_MS.length) * DEFER_MS.at(-1)!;
    if (this.stopped || waited > this.opts.leaseMs + 2_000) return;
    const wait = DEFER_MS[Math.min(attempt, DEFER_MS.length - 1)]!;
    const t = setTimeout(() => {
      this.deferred.delete(t);
      void this.process(stored, attempt + 1);
    }, wait);
    t.unref();
    this.deferred.add(t);
  }

  private async done(stored: Pick<StoredWebhook, 'orgId' | 'id'>, outcome: string): Promise<void> {
    await this.sql`SELECT sms_webhook_event_done(${stored.orgId}::uuid, ${stored.id}::bigint, ${outcome})`;
  }

  private async linkFor(orgId: string, accountKey: string): Promise<ChainLink | undefined> {
    const chain = await this.chains.load(orgId);
    return chain?.links.find((l) => l.provider.accountKey === accountKey);
  }

  start(): void {
    if (this.timer) return;
    this.stopped = false;
    this.timer = setInterval(() => {
      if (this.sweeping) return;
      this.sweeping = this.sweep()
        .catch((err: unknown) => this.log.warn({ err }, 'sms receipt sweep failed'))
        .finally(() => {
          this.sweeping = undefined;
        });
    }, this.opts.sweepEveryMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const t of this.deferred) clearTimeout(t);
    this.deferred.clear();
    this.waitingFor.clear();
    await this.sweeping;
  }

  /** One pass of every sweep; tests call it directly. */
  async sweep(opts: { orphanAfterMs?: number; lost?: boolean } = {}): Promise<void> {
    await this.sweepStored(opts.orphanAfterMs ?? ORPHAN_AFTER_MS);
    const lostEvery = Math.min(this.opts.receiptTimeoutMs / 2, 30_000);
    if (opts.lost || (opts.lost === undefined && Date.now() - this.lastLostSweep >= lostEvery)) {
      this.lastLostSweep = Date.now();
      await this.lookUpLost();
    }
  }

  /** Stored events nobody finished, and unmatched receipts whose message id is now known. */
  private async sweepStored(orphanAfterMs: number): Promise<void> {
    const rows = await this.sql<
      Array<{
        id: string;
        org_id: string;
        provider: ProviderKind;
        account_key: string;
        kind: StoredWebhook['kind'];
        event_key: string;
        request_url: string;
        raw_body: string;
      }>
    >`
      (SELECT id, org_id, provider, account_key, kind, event_key, request_url, raw_body FROM sms_webhook_events
        WHERE processed_at IS NULL AND received_at < now() - ${orphanAfterMs} * interval '1 millisecond'
        ORDER BY received_at LIMIT ${SWEEP_BATCH})
      UNION ALL
      (SELECT e.id, e.org_id, e.provider, e.account_key, e.kind, e.event_key, e.request_url, e.raw_body
         FROM sms_webhook_events e
        WHERE e.outcome = 'unmatched' AND e.received_at > now() - interval '1 hour'
          AND EXISTS (SELECT 1 FROM sms_attempts a WHERE a.org_id = e.org_id AND a.provider = e.provider
                         AND a.provider_message_id = e.provider_message_id)
        ORDER BY e.received_at LIMIT ${SWEEP_BATCH})`;
    for (const r of rows) {
      const stored: StoredWebhook = {
        id: String(r.id),
        orgId: r.org_id,
        provider: r.provider,
        accountKey: r.account_key,
        kind: r.kind,
        eventKey: r.event_key,
        url: r.request_url,
        rawBody: r.raw_body,
      };
      // No retries of its own from here: the next sweep comes soon enough.
      if (r.kind === 'inbound' && this.inbound) await this.inbound.processStored(stored);
      else await this.process(stored, -1);
    }
  }

  /**
   * Accepted messages whose final receipt never came: looked up once at the
   * provider (Twilio recommends this reconciliation; callbacks get lost), and
   * the answer applied as a receipt would be.
   */
  async lookUpLost(): Promise<void> {
    const claimed = await this.sql<
      Array<{ attempt_id: string; org_id: string; provider: ProviderKind; account_key: string; provider_message_id: string | null }>
    >`
      SELECT * FROM sms_claim_lost_receipts(${this.opts.receiptTimeoutMs}, ${[...RECEIPT_KINDS]}::text[], 50)`;
    for (const a of claimed) {
      const link = await this.linkFor(a.org_id, a.account_key);
      if (!link?.provider.lookup || !a.provider_message_id) {
        smsReceiptLookups.inc({ provider: a.provider, result: 'failed' });
        continue;
      }
      try {
        const found = await pTimeout(link.provider.lookup(a.provider_message_id), { milliseconds: this.opts.lookupTimeoutMs });
        if (!found) {
          smsReceiptLookups.inc({ provider: a.provider, result: 'not_found' });
          continue;
        }
        if (!found.delivery) {
          smsReceiptLookups.inc({ provider: a.provider, result: 'no_news' });
          continue;
        }
        smsReceiptLookups.inc({ provider: a.provider, result: 'answered' });
        await this.apply(a.org_id, null, link, { providerMessageId: a.provider_message_id, status: found.delivery, code: found.code });
      } catch (err) {
        smsReceiptLookups.inc({ provider: a.provider, result: 'failed' });
        this.log.warn({ err: scrubPhones((err as Error).message), provider: a.provider }, 'sms lookup of a lost receipt failed');
      }
    }
  }
}
