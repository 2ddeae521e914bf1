/**
 * A clinic's opt-out registry as the front desk (and the reminders work)
 * reads it: every phone that will not be texted, since when and why, newest
 * first, phones masked unless asked. One registry per clinic across every
 * provider: inbound STOP on any of them, a provider's refusal (21610, 40300)
 * or a STOP-class receipt all write it; START removes the phone (the history
 * keeps both, sms_opt_out_events).
 */
import type { Sql } from 'postgres';
import { withOrg } from '../db/pool.js';
import { beforeCursor, cursorUs, decodeCursor, page } from '../db/keyset.js';
import { phoneForLog } from '../log.js';

export interface OptOutItem {
  id: string;
  phone: string;
  /** e.g. inbound:twilio:STOP, provider:twilio:21610, receipt:telnyx:40300 */
  source: string;
  optedOutAt: string;
  /** Times this phone opted out before and came back (START). */
  previousOptOuts: number;
}

export async function listOptOuts(
  sql: Sql,
  orgId: string,
  q: { limit: number; before?: string | undefined; unmask?: boolean | undefined },
): Promise<{ items: OptOutItem[]; next: string | null }> {
  const cursor = decodeCursor(q.before);
  const rows = await withOrg(
    sql,
    orgId,
    (tx) => tx<Array<{ id: string; phone: string; source: string; created_at: Date; cursor_us: string; earlier: number }>>`
    SELECT o.id, o.phone, o.source, o.created_at, ${cursorUs(tx, 'o.created_at')} AS cursor_us,
           (SELECT count(*)::int FROM sms_opt_out_events e
             WHERE e.org_id = o.org_id AND e.phone = o.phone AND e.action = 'opt_in') AS earlier
      FROM sms_opt_outs o
     WHERE true ${beforeCursor(tx, 'o.created_at', 'o.id', cursor)}
     ORDER BY o.created_at DESC, o.id DESC
     LIMIT ${q.limit + 1}`,
  );
  const { items, next } = page(rows, q.limit);
  return {
    next,
    items: items.map((r) => ({
      id: r.id,
      phone: q.unmask ? r.phone : (phoneForLog(r.phone) ?? ''),
      source: r.source,
      optedOutAt: r.created_at.toISOString(),
      previousOptOuts: r.earlier,
    })),
  };
}
