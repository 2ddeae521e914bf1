import type { Sql } from 'postgres';
import { withOrg, withTenant, type Tenant } from '../db/pool.js';
import { beforeCursor, cursorUs, decodeCursor, page } from '../db/keyset.js';
import { phoneForLog } from '../log.js';

/**
 * The clinic's call log: one row per call, written from the platform's
 * end-of-call report (table `calls`, sql/007_voice.sql). The transcript is
 * kept only for clinics that turned it on.
 */

export type CallPlatform = 'vapi' | 'retell' | 'elevenlabs';

export interface CallReport {
  platform: CallPlatform;
  callId: string;
  callerPhone: string | null;
  startedAt: Date | null;
  endedAt: Date | null;
  durationSeconds: number | null;
  endedReason: string | null;
  toolsUsed: string[];
  transcript: string | null;
}

/**
 * Stores a report once: the same call reported again (the platform retried
 * the webhook) changes nothing. Runs with the org and client re-verified in
 * the same transaction. Returns whether this delivery was the first.
 */
export async function recordCall(sql: Sql, tenant: Tenant, r: CallReport): Promise<boolean> {
  const rows = await withTenant(
    sql,
    tenant,
    (tx) => tx`
    INSERT INTO calls (org_id, platform, call_id, caller_phone, started_at, ended_at, duration_seconds,
                       ended_reason, tools_used, transcript)
    VALUES (${tenant.orgId}, ${r.platform}, ${r.callId}, ${r.callerPhone}, ${r.startedAt}, ${r.endedAt},
            ${r.durationSeconds}, ${r.endedReason}, ${r.toolsUsed}, ${r.transcript})
    ON CONFLICT (org_id, platform, call_id) DO NOTHING
    RETURNING id`,
  );
  return rows.length === 1;
}

export interface CallItem {
  id: string;
  platform: CallPlatform;
  callId: string;
  from: string | null;
  startedAt: string | null;
  endedAt: string | null;
  durationSeconds: number | null;
  endedReason: string | null;
  toolsUsed: string[];
  transcript: string | null;
  createdAt: string;
}

interface CallRow {
  id: string;
  platform: CallPlatform;
  call_id: string;
  caller_phone: string | null;
  started_at: Date | null;
  ended_at: Date | null;
  duration_seconds: string | null;
  ended_reason: string | null;
  tools_used: string[];
  transcript: string | null;
  created_at: Date;
  cursor_us: string;
}

/** Newest first, keyset-paginated like the inbox. Phones are masked unless `unmask`. */
export async function listCalls(
  sql: Sql,
  orgId: string,
  q: { limit: number; before?: string | undefined; unmask?: boolean | undefined },
): Promise<{ items: CallItem[]; next: string | null }> {
  const cursor = decodeCursor(q.before);
  const rows = await withOrg(
    sql,
    orgId,
    (tx) => tx<CallRow[]>`
    SELECT id, platform, call_id, caller_phone, started_at, ended_at, duration_seconds, ended_reason, tools_used,
           transcript, created_at, ${cursorUs(tx, 'created_at')} AS cursor_us
      FROM calls
     WHERE true ${beforeCursor(tx, 'created_at', 'id', cursor)}
     ORDER BY created_at DESC, id DESC
     LIMIT ${q.limit + 1}`,
  );
  const { items, next } = page(rows, q.limit);
  return {
    next,
    items: items.map((r) => ({
      id: r.id,
      platform: r.platform,
      callId: r.call_id,
      from: r.caller_phone ? (q.unmask ? r.caller_phone : (phoneForLog(r.caller_phone) ?? null)) : null,
      startedAt: r.started_at?.toISOString() ?? null,
      endedAt: r.ended_at?.toISOString() ?? null,
      durationSeconds: r.duration_seconds === null ? null : Number(r.duration_seconds),
      endedReason: r.ended_reason,
      toolsUsed: r.tools_used,
      transcript: r.transcript,
      createdAt: r.created_at.toISOString(),
    })),
  };
}
