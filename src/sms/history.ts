import type { Sql } from 'postgres';
import { withOrg } from '../db/pool.js';
import { beforeCursor, cursorUs, decodeCursor, page } from '../db/keyset.js';
import { phoneForLog } from '../log.js';

/**
 * A clinic's recent messages as the patient gets them (sandbox ones included),
 * with their state and every provider attempt: what a new clinic engineer
 * reads to see the texts, and what an operator reads after a complaint.
 */

export interface MessageAttemptView {
  provider: string;
  outcome: string;
  errorClass: string | null;
  errorCode: string | null;
  from: string | null;
  failedOver: boolean;
  latencyMs: number | null;
  startedAt: string;
  /** accepted, sent, delivered, undelivered, failed; null when the provider never accepted it. */
  deliveryState: string | null;
  /** The provider's asynchronous error code of an undelivered / failed receipt. */
  deliveryCode: string | null;
  deliveredAt: string | null;
  /** Delivered although another attempt of the same confirmation was delivered too. */
  duplicateDelivery: boolean;
}

export interface MessageView {
  id: string;
  appointmentId: string;
  kind: string;
  to: string;
  body: string;
  status: string;
  provider: string | null;
  from: string | null;
  dryRun: boolean;
  runs: number;
  reason: string | null;
  error: string | null;
  createdAt: string;
  sentAt: string | null;
  /**
   * What reached the patient: delivered when any attempt was, otherwise the
   * state of the latest attempt a provider accepted (null when none was). A
   * provider without receipts (the sandbox) stays at accepted, its final word.
   */
  deliveryState: string | null;
  /** A resend after a failure receipt: the message it replaces. */
  resendOf: string | null;
  attempts: MessageAttemptView[];
}

interface Row {
  id: string;
  appointment_id: string;
  kind: string;
  to_phone: string;
  body: string;
  status: string;
  provider: string | null;
  from_number: string | null;
  dry_run: boolean;
  attempts: number;
  failure_reason: string | null;
  last_error: string | null;
  created_at: Date;
  sent_at: Date | null;
  resend_of: string | null;
  delivery: string | null;
  cursor_us: string;
  tries: MessageAttemptView[];
}

export async function listMessages(
  sql: Sql,
  orgId: string,
  q: { limit: number; before?: string | undefined; unmask?: boolean | undefined; status?: string | undefined },
): Promise<{ items: MessageView[]; next: string | null }> {
  const cursor = decodeCursor(q.before);
  const rows = await withOrg(
    sql,
    orgId,
    (tx) => tx<Row[]>`
    SELECT o.id, o.appointment_id, o.kind, o.to_phone, o.body, o.status, o.provider, o.from_number, o.dry_run,
           o.attempts, o.failure_reason, o.last_error, o.created_at, o.sent_at, o.resend_of,
           COALESCE((SELECT 'delivered' FROM sms_attempts d WHERE d.outbox_id = o.id AND d.delivery_state = 'delivered' LIMIT 1),
                    (SELECT d.delivery_state FROM sms_attempts d WHERE d.outbox_id = o.id AND d.delivery_state IS NOT NULL
                      ORDER BY d.id DESC LIMIT 1)) AS delivery,
           ${cursorUs(tx, 'o.created_at')} AS cursor_us,
           COALESCE((SELECT jsonb_agg(jsonb_build_object(
                       'provider', a.provider, 'outcome', a.outcome, 'errorClass', a.error_class,
                       'errorCode', a.error_code, 'from', a.from_number, 'failedOver', a.failed_over,
                       'latencyMs', a.latency_ms, 'startedAt', a.started_at, 'deliveryState', a.delivery_state,
                       'deliveryCode', a.delivery_code, 'deliveredAt', a.delivered_at,
                       'duplicateDelivery', a.duplicate_delivery) ORDER BY a.id)
                       FROM sms_attempts a WHERE a.outbox_id = o.id), '[]'::jsonb) AS tries
      FROM sms_outbox o
     WHERE true ${q.status ? tx`AND o.status = ${q.status}` : tx``}
           ${beforeCursor(tx, 'o.created_at', 'o.id', cursor)}
     ORDER BY o.created_at DESC, o.id DESC
     LIMIT ${q.limit + 1}`,
  );
  const { items, next } = page(rows, q.limit);
  const phone = (p: string | null) => (p && !q.unmask ? (phoneForLog(p) ?? null) : p);
  return {
    next,
    items: items.map((r) => ({
      id: r.id,
      appointmentId: r.appointment_id,
      kind: r.kind,
      to: phone(r.to_phone) ?? '',
      body: r.body,
      status: r.status,
      provider: r.provider,
      from: r.from_number,
      dryRun: r.dry_run,
      runs: r.attempts,
      reason: r.failure_reason,
      error: r.last_error,
      createdAt: r.created_at.toISOString(),
      sentAt: r.sent_at?.toISOString() ?? null,
      deliveryState: r.delivery,
      resendOf: r.resend_of,
      attempts: r.tries.map((a) => ({
        ...a,
        startedAt: new Date(a.startedAt).toISOString(),
        deliveredAt: a.deliveredAt ? new Date(a.deliveredAt).toISOString() : null,
      })),
    })),
  };
}
