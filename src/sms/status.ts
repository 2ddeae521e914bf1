/**
 * The SMS status figures, in one place: what GET /api/admin/sms/status, a
 * clinic's GET /api/sms/status and the operator console all show.
 *
 * Per clinic and provider link: the account's shared health (readHealth), the
 * breaker as every process sees it and as this process holds it, and the last
 * hour of sends (accepted, delivered, undelivered, delivery rate, p50/p99
 * latency, failovers, async failovers). Per clinic: the outbox (depth, how
 * late the oldest due message is), dead letters, opt-outs, bookings made today
 * in the clinic's own zone.
 *
 * Each figure is one aggregate statement over every clinic at once (or one
 * clinic, under its own org): recent attempts are found through the BRIN index
 * on sms_attempts.started_at, the outbox through its partial indexes. Nothing
 * here returns a phone number, a message text or a credential.
 */
import type { Sql } from 'postgres';
import { withOperator, withOrg, type Tx } from '../db/pool.js';
import { getOrg, listOrgs } from '../orgs/orgs.js';
import { maskAccount, readHealth, type LinkHealth } from './health.js';
import { listSmsSwitches, type ChainLoader } from './config.js';
import type { SmsEngine } from './engine.js';

export interface StatusDeps {
  /** The worker role: the one that reads across clinics, in operator scope. */
  workerSql: Sql;
  /** The request role: one clinic's settings. */
  sql: Sql;
  chains: ChainLoader;
  engine: SmsEngine;
  staleMs: number;
}

export interface LatencyFigures {
  p50: number | null;
  p99: number | null;
}

/** A window's sends. Counts are of provider attempts, except deadLettered (messages). */
export interface SendFigures {
  /** Attempts a provider was asked to take (skips excluded). */
  attempts: number;
  /** Attempts a provider accepted (or that were reconciled as accepted). */
  accepted: number;
  /** Accepted attempts a receipt reported on the patient's phone. */
  delivered: number;
  /** Accepted attempts a final receipt reported undelivered or failed. */
  undelivered: number;
  /** Accepted, no final receipt yet (or the provider sends none). */
  awaitingReceipt: number;
  /** Attempts the provider refused at once (error class in the attempt). */
  refused: number;
  /** delivered ÷ (delivered + undelivered): of the attempts with a final receipt, the share delivered; null without any. */
  deliveryRate: number | null;
  /** Send latency of the attempts, in ms. */
  latencyMs: LatencyFigures;
  /** Attempts made on this link because an earlier one failed or was skipped (per clinic: messages that failed over). */
  failovers: number;
  /** Accepted attempts sent again elsewhere after a failure receipt. */
  asyncFailovers: number;
}

export interface LinkStatus extends SendFigures {
  position: number;
  kind: string;
  account: string | null;
  credentials: 'ok' | 'undecryptable';
  health: Pick<LinkHealth, 'probedAt' | 'latencyMs' | 'ok' | 'errorClass' | 'errorCode' | 'consecutiveFailures' | 'downSince' | 'fresh'> & {
    /** up / down by a fresh probe, unknown without one. */
    state: 'up' | 'down' | 'unknown';
  };
  breaker: {
    /** As every process acts on it, through the shared health record. */
    shared: LinkHealth['breaker'];
    /** This process's own breaker (cockatiel), which also learns from its own sends. */
    here: string;
  };
}

export interface ClinicStatus {
  orgId: string;
  name: string;
  timeZone: string;
  active: boolean;
  sms: { configured: boolean; enabled: boolean; failoverEnabled: boolean };
  providers: LinkStatus[];
  lastHour: SendFigures & { deadLettered: number };
  outbox: {
    /** Messages waiting for a run or in one (pending + sending). */
    depth: number;
    pending: number;
    sending: number;
    /** How long the oldest message that is due has been waiting for a worker, in seconds; null when none is due. */
    oldestDueAgeSeconds: number | null;
  };
  deadLetters: number;
  optOuts: number;
  /** Appointments booked since midnight in the clinic's zone. */
  bookingsToday: number;
}

export interface StatusReport {
  generatedAt: string;
  /** Start of the "last hour" window. */
  since: string;
  clinics: ClinicStatus[];
  totals: {
    clinics: number;
    linksDown: number;
    outboxDepth: number;
    oldestDueAgeSeconds: number | null;
    deadLetters: number;
    optOuts: number;
    accepted: number;
    delivered: number;
    undelivered: number;
  };
}

interface AttemptAgg {
  org_id: string;
  account_key: string | null;
  attempts: number;
  refused: number;
  failovers: number;
  p50: number | null;
  p99: number | null;
}

interface DeliveryAgg {
  org_id: string;
  account_key: string;
  accepted: number;
  delivered: number;
  undelivered: number;
  failed: number;
  awaiting_receipt: number;
  async_failovers: number;
}

interface OutboxAgg {
  org_id: string;
  pending: number;
  sending: number;
  oldest_due_age: number | null;
  dead: number;
  dead_last_hour: number;
}

const HOUR_MS = 3_600_000;
const round = (n: number | null) => (n === null ? null : Math.round(n));

function emptyFigures(): SendFigures {
  return {
    attempts: 0,
    accepted: 0,
    delivered: 0,
    undelivered: 0,
    awaitingReceipt: 0,
    refused: 0,
    deliveryRate: null,
    latencyMs: { p50: null, p99: null },
    failovers: 0,
    asyncFailovers: 0,
  };
}

const rate = (delivered: number, undelivered: number) => (delivered + undelivered > 0 ? delivered / (delivered + undelivered) : null);

/** One scope for every statement: the clinic's own org, or operator scope across clinics. */
function scoped(workerSql: Sql, orgId: string | undefined) {
  return <T>(fn: (tx: Tx, only: ReturnType<Tx>) => Promise<T>): Promise<T> =>
    orgId
      ? withOrg(workerSql, orgId, (tx) => fn(tx, tx`AND org_id = ${orgId}`))
      : withOperator(workerSql, (tx) => fn(tx, tx``));
}

/**
 * The status of every clinic (operator scope), or of one (`orgId`, read under
 * that clinic's org). `orgId` naming no clinic yields no clinics.
 */
export async function readStatus(deps: StatusDeps, opts: { orgId?: string } = {}): Promise<StatusReport> {
  const { workerSql } = deps;
  const orgId = opts.orgId;
  const inScope = scoped(workerSql, orgId);
  const since = new Date(Date.now() - HOUR_MS);

  const [orgs, switches, health, attempts, delivery, outbox, optOuts, bookings] = await Promise.all([
    orgId ? oneOrg(deps.sql, orgId) : allOrgs(workerSql),
    orgId ? oneSwitch(workerSql, orgId) : listSmsSwitches(workerSql),
    readHealth(workerSql, deps.chains, { staleMs: deps.staleMs, ...(orgId ? { orgId } : {}), localBreaker: (o, a) => deps.engine.breakerHere(o, a) }),
    inScope((tx) => tx<AttemptAgg[]>`
      SELECT a.org_id, a.account_key,
             count(*) FILTER (WHERE a.outcome <> 'skipped')::int AS attempts,
             count(*) FILTER (WHERE a.outcome = 'failed')::int AS refused,
             -- At once, in the same run; a resend after a failure receipt is an async failover, counted apart.
             (CASE WHEN GROUPING(a.account_key) = 1 THEN count(DISTINCT a.outbox_id) FILTER (WHERE a.failed_over AND a.outcome <> 'skipped' AND o.resend_of IS NULL)
                   ELSE count(*) FILTER (WHERE a.failed_over AND a.outcome <> 'skipped' AND o.resend_of IS NULL) END)::int AS failovers,
             percentile_cont(0.5) WITHIN GROUP (ORDER BY a.latency_ms) FILTER (WHERE a.outcome <> 'skipped') AS p50,
             percentile_cont(0.99) WITHIN GROUP (ORDER BY a.latency_ms) FILTER (WHERE a.outcome <> 'skipped') AS p99
        FROM sms_attempts a JOIN sms_outbox o ON o.id = a.outbox_id
       WHERE a.started_at >= ${since} ${orgId ? tx`AND a.org_id = ${orgId}` : tx``}
       GROUP BY GROUPING SETS ((a.org_id, a.account_key), (a.org_id))`),
    inScope((tx, only) => tx<DeliveryAgg[]>`
      SELECT org_id, account_key, accepted::int, delivered::int, undelivered::int, failed::int,
             awaiting_receipt::int, async_failovers::int
        FROM sms_delivery_stats(${since})
       WHERE true ${only}`),
    inScope((tx, only) => tx<OutboxAgg[]>`
      SELECT org_id,
             count(*) FILTER (WHERE status = 'pending')::int AS pending,
             count(*) FILTER (WHERE status = 'sending')::int AS sending,
             EXTRACT(EPOCH FROM now() - min(next_attempt_at) FILTER (WHERE status = 'pending' AND next_attempt_at <= now()))::float8 AS oldest_due_age,
             count(*) FILTER (WHERE status = 'failed')::int AS dead,
             count(*) FILTER (WHERE status = 'failed' AND failed_at >= ${since})::int AS dead_last_hour
        FROM sms_outbox
       WHERE status IN ('pending', 'sending', 'failed') ${only}
       GROUP BY org_id`),
    inScope((tx, only) => tx<{ org_id: string; n: number }[]>`
      SELECT org_id, count(*)::int AS n FROM sms_opt_outs WHERE true ${only} GROUP BY org_id`),
    inScope((tx) => tx<{ org_id: string; n: number }[]>`
      SELECT a.org_id, count(*)::int AS n
        FROM appointments a JOIN orgs o ON o.id = a.org_id
       WHERE a.created_at > now() - interval '26 hours'
         AND a.created_at >= (date_trunc('day', now() AT TIME ZONE o.time_zone) AT TIME ZONE o.time_zone)
         ${orgId ? tx`AND a.org_id = ${orgId}` : tx``}
       GROUP BY a.org_id`),
  ]);

  const healthByOrg = new Map(health.map((c) => [c.orgId, c]));
  const attemptsBy = new Map(attempts.map((r) => [`${r.org_id}|${r.account_key ?? ''}`, r]));
  const outboxBy = new Map(outbox.map((r) => [r.org_id, r]));
  const optOutsBy = new Map(optOuts.map((r) => [r.org_id, r.n]));
  const bookingsBy = new Map(bookings.map((r) => [r.org_id, r.n]));
  // Attempts name their account in full; links show it masked (maskAccount), which is how the two meet.
  const deliveryBy = new Map<string, DeliveryAgg[]>();
  for (const d of delivery) {
    const k = `${d.org_id}|${maskAccount(d.account_key)}`;
    deliveryBy.set(k, [...(deliveryBy.get(k) ?? []), d]);
  }
  const attemptsByMasked = new Map<string, AttemptAgg>();
  for (const a of attempts) if (a.account_key) attemptsByMasked.set(`${a.org_id}|${maskAccount(a.account_key)}`, a);

  const clinics: ClinicStatus[] = orgs.map((o) => {
    const h = healthByOrg.get(o.id);
    const sw = switches.get(o.id);
    const providers: LinkStatus[] = (h?.providers ?? []).map((l) => {
      const key = `${o.id}|${l.account ?? ''}`;
      const a = l.account ? attemptsByMasked.get(key) : undefined;
      const ds = l.account ? (deliveryBy.get(key) ?? []) : [];
      const sum = (f: (d: DeliveryAgg) => number) => ds.reduce((n, d) => n + f(d), 0);
      const undelivered = sum((d) => d.undelivered + d.failed);
      const delivered = sum((d) => d.delivered);
      return {
        position: l.position,
        kind: l.kind,
        account: l.account,
        credentials: l.credentials,
        health: {
          probedAt: l.probedAt,
          latencyMs: l.latencyMs,
          ok: l.ok,
          errorClass: l.errorClass,
          errorCode: l.errorCode,
          consecutiveFailures: l.consecutiveFailures,
          downSince: l.downSince,
          fresh: l.fresh,
          state: !l.fresh || l.ok === null ? 'unknown' : l.ok ? 'up' : 'down',
        },
        breaker: { shared: l.breaker, here: l.breakerHere ?? 'closed' },
        attempts: a?.attempts ?? 0,
        accepted: sum((d) => d.accepted),
        delivered,
        undelivered,
        awaitingReceipt: sum((d) => d.awaiting_receipt),
        refused: a?.refused ?? 0,
        deliveryRate: rate(delivered, undelivered),
        latencyMs: { p50: round(a?.p50 ?? null), p99: round(a?.p99 ?? null) },
        failovers: a?.failovers ?? 0,
        asyncFailovers: sum((d) => d.async_failovers),
      };
    });
    const total = attemptsBy.get(`${o.id}|`);
    const all = delivery.filter((d) => d.org_id === o.id);
    const sum = (f: (d: DeliveryAgg) => number) => all.reduce((n, d) => n + f(d), 0);
    const delivered = sum((d) => d.delivered);
    const undelivered = sum((d) => d.undelivered + d.failed);
    const ob = outboxBy.get(o.id);
    return {
      orgId: o.id,
      name: o.name,
      timeZone: o.timeZone,
      active: o.active,
      sms: { configured: sw !== undefined, enabled: sw?.enabled ?? false, failoverEnabled: sw?.failoverEnabled ?? false },
      providers,
      lastHour: {
        ...emptyFigures(),
        attempts: total?.attempts ?? 0,
        accepted: sum((d) => d.accepted),
        delivered,
        undelivered,
        awaitingReceipt: sum((d) => d.awaiting_receipt),
        refused: total?.refused ?? 0,
        deliveryRate: rate(delivered, undelivered),
        latencyMs: { p50: round(total?.p50 ?? null), p99: round(total?.p99 ?? null) },
        failovers: total?.failovers ?? 0,
        asyncFailovers: sum((d) => d.async_failovers),
        deadLettered: ob?.dead_last_hour ?? 0,
      },
      outbox: {
        depth: (ob?.pending ?? 0) + (ob?.sending ?? 0),
        pending: ob?.pending ?? 0,
        sending: ob?.sending ?? 0,
        oldestDueAgeSeconds: ob?.oldest_due_age === null || ob?.oldest_due_age === undefined ? null : Math.max(0, Math.round(ob.oldest_due_age)),
      },
      deadLetters: ob?.dead ?? 0,
      optOuts: optOutsBy.get(o.id) ?? 0,
      bookingsToday: bookingsBy.get(o.id) ?? 0,
    };
  });

  const ages = clinics.map((c) => c.outbox.oldestDueAgeSeconds).filter((a): a is number => a !== null);
  const add = (f: (c: ClinicStatus) => number) => clinics.reduce((n, c) => n + f(c), 0);
  return {
    generatedAt: new Date().toISOString(),
    since: since.toISOString(),
    clinics,
    totals: {
      clinics: clinics.length,
      linksDown: add((c) => c.providers.filter((p) => p.health.state === 'down' || p.breaker.shared === 'open').length),
      outboxDepth: add((c) => c.outbox.depth),
      oldestDueAgeSeconds: ages.length ? Math.max(...ages) : null,
      deadLetters: add((c) => c.deadLetters),
      optOuts: add((c) => c.optOuts),
      accepted: add((c) => c.lastHour.accepted),
      delivered: add((c) => c.lastHour.delivered),
      undelivered: add((c) => c.lastHour.undelivered),
    },
  };
}

async function allOrgs(workerSql: Sql) {
  const out: Array<{ id: string; name: string; timeZone: string; active: boolean }> = [];
  let before: string | undefined;
  for (;;) {
    const page = await listOrgs(workerSql, { limit: 1000, ...(before ? { before } : {}) });
    out.push(...page.items);
    if (!page.next) break;
    before = page.next;
  }
  // Alphabetical: the order an operator scans a list of clinics in.
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

async function oneOrg(sql: Sql, orgId: string) {
  const org = await getOrg(sql, orgId);
  return org ? [{ id: org.id, name: org.name, timeZone: org.timeZone, active: org.active }] : [];
}

async function oneSwitch(workerSql: Sql, orgId: string) {
  const rows = await withOrg(workerSql, orgId, (tx) => tx<{ enabled: boolean; failover_enabled: boolean }[]>`
    SELECT enabled, failover_enabled FROM sms_settings WHERE org_id = ${orgId}`);
  return new Map(rows.map((r) => [orgId, { enabled: r.enabled, failoverEnabled: r.failover_enabled }]));
}

export interface HourBucket {
  /** Start of the hour (ISO 8601). */
  hour: string;
  accepted: number;
  delivered: number;
  undelivered: number;
  /** delivered ÷ (delivered + undelivered), null for an hour without a final receipt. */
  rate: number | null;
}

/**
 * Each clinic's last `hours` hours of accepted attempts, by hour (oldest
 * first), for the console's delivery-rate charts. Every hour is present, an
 * hour without sends as zeros.
 */
export async function readDeliverySeries(workerSql: Sql, opts: { hours: number; orgId?: string }): Promise<Map<string, HourBucket[]>> {
  const now = Date.now();
  const firstHour = Math.floor(now / HOUR_MS) * HOUR_MS - (opts.hours - 1) * HOUR_MS;
  const rows = await scoped(workerSql, opts.orgId)((tx, only) => tx<
    { org_id: string; h: number; accepted: number; delivered: number; undelivered: number }[]
  >`
    SELECT org_id, floor(EXTRACT(EPOCH FROM started_at) / 3600)::int AS h,
           count(*)::int AS accepted,
           count(*) FILTER (WHERE delivery_state = 'delivered')::int AS delivered,
           count(*) FILTER (WHERE delivery_state IN ('undelivered', 'failed'))::int AS undelivered
      FROM sms_attempts
     WHERE started_at >= ${new Date(firstHour)} AND delivery_state IS NOT NULL ${only}
     GROUP BY 1, 2`);
  const out = new Map<string, HourBucket[]>();
  const first = firstHour / HOUR_MS;
  for (const r of rows) {
    let series = out.get(r.org_id);
    if (!series) {
      series = Array.from({ length: opts.hours }, (_, i) => ({
        hour: new Date((first + i) * HOUR_MS).toISOString(),
        accepted: 0,
        delivered: 0,
        undelivered: 0,
        rate: null,
      }));
      out.set(r.org_id, series);
    }
    const b = series[r.h - first];
    if (!b) continue;
    b.accepted = r.accepted;
    b.delivered = r.delivered;
    b.undelivered = r.undelivered;
    b.rate = rate(r.delivered, r.undelivered);
  }
  return out;
}

export interface Backlog {
  pending: number;
  sending: number;
  oldestDueAgeSeconds: number;
  deadLetters: number;
  optOuts: number;
}

/** The outbox and opt-out totals across clinics, for the Prometheus gauges (no clinic in any label). */
export async function readBacklog(workerSql: Sql): Promise<Backlog> {
  return withOperator(workerSql, async (tx) => {
    const [o] = await tx<{ pending: number; sending: number; age: number | null; dead: number }[]>`
      SELECT count(*) FILTER (WHERE status = 'pending')::int AS pending,
             count(*) FILTER (WHERE status = 'sending')::int AS sending,
             EXTRACT(EPOCH FROM now() - min(next_attempt_at) FILTER (WHERE status = 'pending' AND next_attempt_at <= now()))::float8 AS age,
             count(*) FILTER (WHERE status = 'failed')::int AS dead
        FROM sms_outbox WHERE status IN ('pending', 'sending', 'failed')`;
    const [x] = await tx<{ n: number }[]>`SELECT count(*)::int AS n FROM sms_opt_outs`;
    return { pending: o!.pending, sending: o!.sending, oldestDueAgeSeconds: Math.max(0, o!.age ?? 0), deadLetters: o!.dead, optOuts: x!.n };
  });
}

/**
 * When each of a clinic's provider accounts last took a message (the
 * console's "last successful send"), by masked account, over the last 30 days.
 */
export async function lastAcceptedSends(workerSql: Sql, orgId: string): Promise<Map<string, string>> {
  const rows = await withOrg(workerSql, orgId, (tx) => tx<{ account_key: string; at: Date }[]>`
    SELECT account_key, max(started_at) AS at
      FROM sms_attempts
     WHERE started_at > now() - interval '30 days' AND org_id = ${orgId} AND outcome IN ('accepted', 'reconciled')
     GROUP BY account_key`);
  return new Map(rows.map((r) => [maskAccount(r.account_key), r.at.toISOString()]));
}
