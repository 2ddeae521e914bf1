import type { DateTime } from 'luxon';
import type { Sql } from 'postgres';
import type { Tenant } from '../db/pool.js';
import { computeSlots, fetchBusy, type Slot } from './availability.js';
import type { OrgContext, Practitioner, Service } from './org.js';

/**
 * Searching for open slots over several days: the domain side of "the next
 * opening" and "the nearest openings". Tools pass plain values, never their
 * context, so data flows one way: route → tool → domain → database.
 */

/** What a search is for: one clinic, one service, the practitioners who may take it. */
export interface SlotSearch {
  sql: Sql;
  tenant: Tenant;
  org: OrgContext;
  service: Service;
  candidates: Practitioner[];
}

const LOOKAHEAD_DAYS = 14;
const ALTERNATIVE_DAYS = 7;

/**
 * Open slots from the local day of `from` onwards, day by day, stopping once
 * `count` are found or `days` have been searched. One busy-time query covers
 * the whole range.
 */
export async function openSlotsFrom(
  search: SlotSearch,
  from: DateTime,
  notBefore: DateTime,
  days: number,
  count: number,
): Promise<Slot[]> {
  const start = from.startOf('day');
  const busy = await fetchBusy(search.sql, search.tenant, start, start.plus({ days }));
  const out: Slot[] = [];
  for (let i = 0; i < days && out.length < count; i++) {
    const d = start.plus({ days: i });
    const slots = computeSlots({
      org: search.org,
      date: { year: d.year, month: d.month, day: d.day },
      service: search.service,
      practitioners: search.candidates,
      busy,
      notBefore,
    });
    out.push(...slots.slice(0, count - out.length));
  }
  return out;
}

/** First open slot on the local day of `from` or the days after it, looking a bounded distance ahead. */
export async function nextOpenDay(search: SlotSearch, from: DateTime, now: DateTime): Promise<Slot | null> {
  const [first] = await openSlotsFrom(search, from, now, LOOKAHEAD_DAYS, 1);
  return first ?? null;
}

/** The next few open slots at or after the instant `from`, same day first, then following days. */
export async function alternativesAfter(search: SlotSearch, from: DateTime, now: DateTime, count: number): Promise<Slot[]> {
  const nowLocal = now.setZone(search.org.timeZone);
  return openSlotsFrom(search, from, from > nowLocal ? from : nowLocal, ALTERNATIVE_DAYS, count);
}
