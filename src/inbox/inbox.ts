import type { Sql, TransactionSql } from 'postgres';
import { withOrg } from '../db/pool.js';
import { beforeCursor, cursorUs, decodeCursor, page } from '../db/keyset.js';
import { phoneForLog } from '../log.js';

/**
 * The clinic's inbox: what patients and callers left for the front desk (SMS
 * replies that are no keyword, messages taken by the voice agent, reschedule
 * requests, cancellations by reply), in one list. Table: inbox_messages
 * (sql/005_admin.sql; auto_reply from 011).
 */

export type InboxChannel = 'sms' | 'voice';

export interface NewInboxMessage {
  orgId: string;
  channel: InboxChannel;
  kind: string;
  body: string;
  fromPhone?: string | null | undefined;
  patientName?: string | null | undefined;
  appointmentId?: string | null | undefined;
  provider?: string | null | undefined;
  providerMessageId?: string | null | undefined;
  callId?: string | null | undefined;
  /** The automatic answer the patient got (e.g. call_us), if any. */
  autoReply?: string | null | undefined;
}

/**
 * Stores one message inside the caller's transaction (already scoped to the
 * org). A provider message seen before (a webhook retried) is not stored twice;
 * returns the id, or null for such a duplicate.
 */
export async function addInboxMessage(tx: TransactionSql, m: NewInboxMessage): Promise<string | null> {
  const [row] = await tx<{ id: string }[]>`
    INSERT INTO inbox_messages (org_id, channel, kind, body, from_phone, patient_name, appointment_id,
                                provider, provider_message_id, call_id, auto_reply)
    VALUES (${m.orgId}, ${m.channel}, ${m.kind}, ${m.body}, ${m.fromPhone ?? null}, ${m.patientName ?? null},
            ${m.appointmentId ?? null}, ${m.provider ?? null}, ${m.providerMessageId ?? null}, ${m.callId ?? null},
            ${m.autoReply ?? null})
    ON CONFLICT (org_id, provider, provider_message_id) WHERE provider_message_id IS NOT NULL DO NOTHING
    RETURNING id`;
  return row?.id ?? null;
}

export interface InboxItem {
  id: string;
  channel: InboxChannel;
  kind: string;
  from: string | null;
  patientName: string | null;
  body: string;
  appointmentId: string | null;
  provider: string | null;
  callId: string | null;
  createdAt: string;
  handledAt: string | null;
}

interface InboxRow {
  id: string;
  channel: InboxChannel;
  kind: string;
  from_phone: string | null;
  patient_name: string | null;
  body: string;
  appointment_id: string | null;
  provider: string | null;
  call_id: string | null;
  created_at: Date;
  handled_at: Date | null;
  cursor_us: string;
}

/** Newest first, keyset-paginated. Phones are masked unless `unmask`. */
export async function listInbox(
  sql: Sql,
  orgId: string,
  q: { limit: number; before?: string | undefined; unmask?: boolean | undefined },
): Promise<{ items: InboxItem[]; next: string | null }> {
  const cursor = decodeCursor(q.before);
  const rows = await withOrg(
    sql,
    orgId,
    (tx) => tx<InboxRow[]>`
    SELECT id, channel, kind, from_phone, patient_name, body, appointment_id, provider, call_id, created_at, handled_at,
           ${cursorUs(tx, 'created_at')} AS cursor_us
      FROM inbox_messages
     WHERE true ${beforeCursor(tx, 'created_at', 'id', cursor)}
     ORDER BY created_at DESC, id DESC
     LIMIT ${q.limit + 1}`,
  );
  const { items, next } = page(rows, q.limit);
  return {
    next,
    items: items.map((r) => ({
      id: r.id,
      channel: r.channel,
      kind: r.kind,
      from: r.from_phone ? (q.unmask ? r.from_phone : (phoneForLog(r.from_phone) ?? null)) : null,
      patientName: r.patient_name,
      body: r.body,
      appointmentId: r.appointment_id,
      provider: r.provider,
      callId: r.call_id,
      createdAt: r.created_at.toISOString(),
      handledAt: r.handled_at?.toISOString() ?? null,
    })),
  };
}
