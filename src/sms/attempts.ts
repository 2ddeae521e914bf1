/**
 * The attempt audit trail (sms_attempts), as the engine writes it: an attempt
 * is opened (in flight) before any byte goes to a provider, and closed when it
 * did not deliver. An attempt that delivered is closed by the outbox's settle,
 * together with its row (outbox.ts).
 */
import type { Sql } from 'postgres';
import { scrubPhones } from '../log.js';
import { Batcher } from './batch.js';
import type { ChainLink } from './config.js';
import { LEASE_LOST, type CancelReason } from './outbox.js';
import type { ErrorClass } from './types.js';

export interface EngineMessage {
  id: string;
  orgId: string;
  to: string;
  body: string;
  /** Worker id holding the outbox row's lease; an attempt is only opened while it still does. */
  leaseHolder: string;
  /** The row's delivery run, this one included (outbox `attempts`). */
  run?: number;
}

export interface AttemptLog {
  /** Opens an in-flight attempt; rejects with SQLSTATE SM001 when the worker no longer holds the row. */
  open(
    msg: EngineMessage,
    link: ChainLink,
    preferredFrom: string | null,
    failedOver: boolean,
  ): Promise<{ attemptId: number; from: string | null }>;
  /** Closes an attempt that did not deliver; `in_flight` keeps an ambiguous one open for a later reconcile. */
  close(
    msg: EngineMessage,
    attemptId: number,
    r: {
      outcome: 'failed' | 'in_flight';
      errorClass?: ErrorClass | undefined;
      code?: string | undefined;
      message?: string | undefined;
      latencyMs?: number | undefined;
      optOut?: boolean | undefined;
    },
  ): Promise<void>;
  /**
   * Gives up on an ambiguous attempt before failing over, unless a receipt
   * proved it meanwhile (then `gaveUp` is false and the message is sent).
   */
  giveUp(msg: EngineMessage, attemptId: number, message: string): Promise<{ gaveUp: boolean; providerMessageId?: string | null }>;
  /** A provider passed over without a call (breaker open, no sender numbers). */
  skip(msg: EngineMessage, link: ChainLink, reason: { errorClass: string; code: string; message: string }): Promise<void>;
}

interface OpenItem {
  outbox: string;
  org: string;
  recipient: string;
  provider: string;
  account: string;
  pool: string[];
  preferred: string | null;
  failedOver: boolean;
  worker: string;
}

function leaseLost(outboxId: string): Error {
  return Object.assign(new Error(`sms outbox row ${outboxId} is no longer leased by this worker`), { code: LEASE_LOST });
}

/** What opening an attempt answers: the attempt, a lost lease (null), or a message no longer wanted. */
type Opened = { attemptId: number; from: string | null } | { unwanted: CancelReason } | null;
const UNWANTED = 'cancelled:';

/**
 * SQLSTATE-like code of "the appointment was cancelled or moved after the
 * gate": sms_open_attempts has already cancelled the row, so the run ends
 * there and nothing is sent.
 */
export const NO_LONGER_WANTED = 'SM003';

function noLongerWanted(outboxId: string, reason: CancelReason): Error {
  return Object.assign(new Error(`sms outbox row ${outboxId} is no longer wanted: ${reason}`), { code: NO_LONGER_WANTED, reason });
}

/** The reason, when `err` says the message stopped being wanted between its gate and its send. */
export function unwantedReason(err: unknown): CancelReason | null {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === NO_LONGER_WANTED
    ? (err as { reason: CancelReason }).reason
    : null;
}

/** The audit trail in PostgreSQL; the opens of many messages go out as one statement (sms_open_attempts). */
export function sqlAttemptLog(sql: Sql, batch = { maxBatch: 500, maxInFlight: 2 }): AttemptLog {
  const opens = new Batcher<OpenItem, Opened>(async (items) => {
    // One worker per process, so one lease holder per batch; grouped anyway so the fencing stays exact.
    const out = new Map<string, Opened>();
    for (const worker of new Set(items.map((i) => i.worker))) {
      const mine = items.filter((i) => i.worker === worker).map(({ worker: _w, ...rest }) => rest);
      const rows = await sql<{ outbox_id: string; attempt_id: string | null; from_number: string | null }[]>`
        SELECT * FROM sms_open_attempts(${worker}, ${sql.json(mine)}::jsonb)`;
      for (const r of rows) {
        const dropped =
          r.attempt_id === null && r.from_number?.startsWith(UNWANTED) ? (r.from_number.slice(UNWANTED.length) as CancelReason) : null;
        out.set(
          `${worker}|${r.outbox_id}`,
          dropped ? { unwanted: dropped } : r.attempt_id === null ? null : { attemptId: Number(r.attempt_id), from: r.from_number },
        );
      }
    }
    return items.map((i) => out.get(`${i.worker}|${i.outbox}`) ?? null);
  }, batch);

  return {
    async open(msg, link, preferred, failedOver) {
      const opened = await opens.call({
        outbox: msg.id,
        org: msg.orgId,
        recipient: msg.to,
        provider: link.kind,
        account: link.provider.accountKey,
        pool: link.pool,
        preferred,
        failedOver,
        worker: msg.leaseHolder,
      });
      if (!opened) throw leaseLost(msg.id);
      if ('unwanted' in opened) throw noLongerWanted(msg.id, opened.unwanted);
      return opened;
    },
    async close(msg, attemptId, r) {
      await sql`
        SELECT sms_finish_attempt(${msg.orgId}::uuid, ${attemptId}, ${r.outcome}, ${r.errorClass ?? null},
                                  ${r.code ?? null}, ${scrubPhones(r.message) ?? null}, ${null},
                                  ${r.latencyMs ?? null}, ${r.optOut ?? false}, ${msg.leaseHolder})`;
    },
    async giveUp(msg, attemptId, message) {
      const [row] = await sql<{ r: { gaveUp: boolean; providerMessageId?: string | null } }[]>`
        SELECT sms_give_up_attempt(${msg.orgId}::uuid, ${attemptId}, ${msg.leaseHolder}, ${message}) AS r`;
      return row!.r;
    },
    async skip(msg, link, reason) {
      await sql`
        SELECT sms_record_skip(${msg.orgId}::uuid, ${msg.id}::uuid, ${link.kind}, ${link.provider.accountKey},
                               ${reason.errorClass}, ${reason.code}, ${reason.message})`;
    },
  };
}
