import type { DateTime } from 'luxon';
import type { Sql } from 'postgres';
import type { Tenant } from '../db/pool.js';
import { computeSlots, fetchBusy, type Slot } from './availability.js';
import type { OrgContext, Practitioner, Service } from './org.js';
import { addDays, localDateOf, localDayBounds, type LocalDate } from './time.js';

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
 * Open slots from the local date `from` onwards, day by day, stopping once
 * `count` are found or `days` have been searched. One busy-time query covers
 * the whole range, from the first instant of `from` to the end of the last
 * day (local days, whatever their length).
 */
export async function openSlotsFrom(
  search: SlotSearch,
  from: LocalDate,
  notBefore: DateTime,
  days: number,
  count: number,
): Promise<Slot[]> {
  const zone = search.org.timeZone;
  const busy = await fetchBusy(
    search.sql,
    search.tenant,
    localDayBounds(from, zone).start,
    localDayBounds(addDays(from, days - 1), zone).end,
  );
  const out: Slot[] = [];
  for (let i = 0; i < days && out.length < count; i++) {
    const slots = computeSlots({
      org: search.org,
      date: addDays(from, i),
      service: search.service,
      practitioners: search.candidates,
      busy,
      notBefore,
    });
    out.push(...slots.slice(0, count - out.length));
  }
  return out;
}

/** First open slot on the local date `from` or the days after it, looking a bounded distance ahead. */
export async function nextOpenDay(search: SlotSearch, from: LocalDate, now: DateTime): Promise<Slot | null> {
  const [first] = await openSlotsFrom(search, from, now, LOOKAHEAD_DAYS, 1);
  return first ?? null;
}

/** The next few open slots at or after the instant `from`, same day first, then following days. */
export async function alternativesAfter(search: SlotSearch, from: DateTime, now: DateTime, count: number): Promise<Slot[]> {
  const local = from.setZone(search.org.timeZone);
  const nowLocal = now.setZone(search.org.timeZone);
  return openSlotsFrom(search, localDateOf(local), local > nowLocal ? local : nowLocal, ALTERNATIVE_DAYS, count);
}
