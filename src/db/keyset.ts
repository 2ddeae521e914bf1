import type { Sql, TransactionSql } from 'postgres';

type Q = Sql | TransactionSql;
import { AppError } from '../errors.js';

/**
 * Keyset pagination on (timestamp, id), newest first: stable while rows
 * arrive. The cursor keeps the timestamp to the microsecond; rounded to
 * milliseconds, rows written within the same millisecond as a page's last row
 * would be skipped or repeated.
 */
export interface Cursor {
  us: string;
  id: string;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function decodeCursor(raw: string | undefined): Cursor | null {
  if (raw === undefined) return null;
  const [us, id] = Buffer.from(raw, 'base64url').toString('utf8').split('|');
  if (!us || !/^\d{1,18}$/.test(us) || !id || !UUID_RE.test(id)) throw new AppError(400, 'invalid_request', 'Bad cursor.');
  return { us, id };
}

export const encodeCursor = (us: string, id: string): string => Buffer.from(`${us}|${id}`).toString('base64url');

/** `column` in microseconds since the epoch, as text: select it AS cursor_us. */
export const cursorUs = (sql: Q, column: string) => sql.unsafe(`(extract(epoch FROM ${column}) * 1000000)::bigint::text`);

/** `AND (column, id) < cursor`, or nothing on the first page. */
export const beforeCursor = (sql: Q, column: string, idColumn: string, cursor: Cursor | null) =>
  cursor
    ? sql`AND (${sql.unsafe(column)}, ${sql.unsafe(idColumn)}) < (timestamptz 'epoch' + ${cursor.us}::bigint * interval '1 microsecond', ${cursor.id}::uuid)`
    : sql``;

/** Takes a page from rows fetched with LIMIT n + 1, and the cursor of the next page. */
export function page<T extends { cursor_us: string; id: string }>(rows: T[], limit: number): { items: T[]; next: string | null } {
  const items = rows.slice(0, limit);
  const last = items[items.length - 1];
  return { items, next: rows.length > limit && last ? encodeCursor(last.cursor_us, last.id) : null };
}
