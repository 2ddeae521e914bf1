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
  /** null on the clinic's total row. */
  account_key: string | null;
  attempts: number;
  refused: number;
  failed_over: number;
  accepted: number;
  delivered: number;
  undelivered: number;
  awaiting: number;
  p50: number | null;
  p99: number | null;
}

interface ResendAgg {
  org_id: string;
  /** The account whose failure receipt the resend answers; null on the clinic's total row. */
  after_account: string | null;
  /** The account the resend went out through; null on the clinic's total row. */
  via_account: string | null;
  resends: number;
  /** Of those, attempts flagged failed_over (they are not failovers at once). */
  failed_over: number;
}

interface OutboxAgg {
  org_id: string;
  pending: number;
  sending: number;
  oldest_due_age: number | null;
}

interface DeadAgg {
  org_id: string;
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
    orgId ? withOrg(workerSql, orgId, (tx) => fn(tx, tx`AND org_id = ${orgId}`)) : withOperator(workerSql, (tx) => fn(tx, tx``));
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

  const [orgs, switches, health, attempts, resends, outbox, dead, optOuts, bookings] = await Promise.all([
    orgId ? oneOrg(deps.sql, orgId) : allOrgs(workerSql),
    orgId ? oneSwitch(workerSql, orgId) : listSmsSwitches(workerSql),
    readHealth(workerSql, deps.chains, {
      staleMs: deps.staleMs,
      ...(orgId ? { orgId } : {}),
      localBreaker: (o, a) => deps.engine.breakerHere(o, a),
    }),
    // The hour's attempts (BRIN on started_at), per link and per clinic, in one pass.
    inScope(
      (tx, only) => tx<AttemptAgg[]>`
      SELECT org_id, account_key,
             count(*) FILTER (WHERE outcome <> 'skipped')::int AS attempts,
             count(*) FILTER (WHERE outcome = 'failed')::int AS refused,
             (CASE WHEN GROUPING(account_key) = 1 THEN count(DISTINCT outbox_id) FILTER (WHERE failed_over AND outcome <> 'skipped')
                   ELSE count(*) FILTER (WHERE failed_over AND outcome <> 'skipped') END)::int AS failed_over,
             count(*) FILTER (WHERE delivery_state IS NOT NULL)::int AS accepted,
             count(*) FILTER (WHERE delivery_state = 'delivered')::int AS delivered,
             count(*) FILTER (WHERE delivery_state IN ('undelivered', 'failed'))::int AS undelivered,
             count(*) FILTER (WHERE delivery_state IN ('accepted', 'sent'))::int AS awaiting,
             percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE outcome <> 'skipped') AS p50,
             percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE outcome <> 'skipped') AS p99
        FROM sms_attempts
       WHERE started_at >= ${since} ${only}
       GROUP BY GROUPING SETS ((org_id, account_key), (org_id))`,
    ),
    // The hour's resends after a failure receipt (the outbox's partial index on resend_of): the async failovers.
    inScope(
      (tx) => tx<ResendAgg[]>`
      SELECT o.org_id, o.resend_after_account AS after_account, a.account_key AS via_account,
             count(DISTINCT o.id)::int AS resends,
             (CASE WHEN GROUPING(o.resend_after_account) = 1 THEN count(DISTINCT o.id) FILTER (WHERE a.failed_over)
                   ELSE count(*) FILTER (WHERE a.failed_over) END)::int AS failed_over
        FROM sms_outbox o LEFT JOIN sms_attempts a ON a.outbox_id = o.id AND a.outcome <> 'skipped'
       WHERE o.resend_of IS NOT NULL AND o.created_at >= ${since} ${orgId ? tx`AND o.org_id = ${orgId}` : tx``}
       GROUP BY GROUPING SETS ((o.org_id, o.resend_after_account, a.account_key), (o.org_id))`,
    ),
    // Two statements, so that each finds its rows through its own partial index.
    inScope(
      (tx, only) => tx<OutboxAgg[]>`
      SELECT org_id,
             count(*) FILTER (WHERE status = 'pending')::int AS pending,
             count(*) FILTER (WHERE status = 'sending')::int AS sending,
             EXTRACT(EPOCH FROM now() - min(next_attempt_at) FILTER (WHERE status = 'pending' AND next_attempt_at <= now()))::float8 AS oldest_due_age
        FROM sms_outbox
       WHERE status IN ('pending', 'sending') ${only}
       GROUP BY org_id`,
    ),
    inScope(
      (tx, only) => tx<DeadAgg[]>`
      SELECT org_id, count(*)::int AS dead, count(*) FILTER (WHERE failed_at >= ${since})::int AS dead_last_hour
        FROM sms_outbox
       WHERE status = 'failed' ${only}
       GROUP BY org_id`,
    ),
    inScope(
      (tx, only) => tx<{ org_id: string; n: number }[]>`
      SELECT org_id, count(*)::int AS n FROM sms_opt_outs WHERE true ${only} GROUP BY org_id`,
    ),
    inScope(
      (tx) => tx<{ org_id: string; n: number }[]>`
      SELECT a.org_id, count(*)::int AS n
        FROM appointments a JOIN orgs o ON o.id = a.org_id
       WHERE a.created_at > now() - interval '26 hours'
         AND a.created_at >= (date_trunc('day', now() AT TIME ZONE o.time_zone) AT TIME ZONE o.time_zone)
         ${orgId ? tx`AND a.org_id = ${orgId}` : tx``}
       GROUP BY a.org_id`,
    ),
  ]);

  const healthByOrg = new Map(health.map((c) => [c.orgId, c]));
  const outboxBy = new Map(outbox.map((r) => [r.org_id, r]));
  const deadBy = new Map(dead.map((r) => [r.org_id, r]));
  const optOutsBy = new Map(optOuts.map((r) => [r.org_id, r.n]));
  const bookingsBy = new Map(bookings.map((r) => [r.org_id, r.n]));
  // Attempts name their account in full; links show it masked (maskAccount), which is how the two meet.
  const linkKey = (org: string, account: string) => `${org}|${maskAccount(account)}`;
  const attemptsBy = new Map<string, AttemptAgg>();
  for (const a of attempts) attemptsBy.set(a.account_key === null ? `${a.org_id}|` : linkKey(a.org_id, a.account_key), a);
  const asyncBy = new Map<string, number>();
  const resentFailedOverBy = new Map<string, number>();
  const add = (m: Map<string, number>, k: string, n: number) => m.set(k, (m.get(k) ?? 0) + n);
  for (const r of resends) {
    if (r.after_account === null && r.via_account === null) {
      asyncBy.set(`${r.org_id}|`, r.resends);
      resentFailedOverBy.set(`${r.org_id}|`, r.failed_over);
      continue;
    }
    if (r.after_account) add(asyncBy, linkKey(r.org_id, r.after_account), r.resends);
    if (r.via_account) add(resentFailedOverBy, linkKey(r.org_id, r.via_account), r.failed_over);
  }

  /** A window's figures from the attempts' row; a resend's attempt is an async failover, so it is not counted as one at once. */
  const figures = (key: string): SendFigures => {
    const a = attemptsBy.get(key);
    return {
      attempts: a?.attempts ?? 0,
      accepted: a?.accepted ?? 0,
      delivered: a?.delivered ?? 0,
      undelivered: a?.undelivered ?? 0,
      awaitingReceipt: a?.awaiting ?? 0,
      refused: a?.refused ?? 0,
      deliveryRate: rate(a?.delivered ?? 0, a?.undelivered ?? 0),
      latencyMs: { p50: round(a?.p50 ?? null), p99: round(a?.p99 ?? null) },
      failovers: Math.max(0, (a?.failed_over ?? 0) - (resentFailedOverBy.get(key) ?? 0)),
      asyncFailovers: asyncBy.get(key) ?? 0,
    };
  };

  const clinics: ClinicStatus[] = orgs.map((o) => {
    const h = healthByOrg.get(o.id);
    const sw = switches.get(o.id);
    const providers: LinkStatus[] = (h?.providers ?? []).map((l) => ({
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
      ...(l.account ? figures(`${o.id}|${l.account}`) : emptyFigures()),
    }));
    const ob = outboxBy.get(o.id);
    const dl = deadBy.get(o.id);
    return {
      orgId: o.id,
      name: o.name,
      timeZone: o.timeZone,
      active: o.active,
      sms: { configured: sw !== undefined, enabled: sw?.enabled ?? false, failoverEnabled: sw?.failoverEnabled ?? false },
      providers,
      lastHour: { ...figures(`${o.id}|`), deadLettered: dl?.dead_last_hour ?? 0 },
      outbox: {
        depth: (ob?.pending ?? 0) + (ob?.sending ?? 0),
        pending: ob?.pending ?? 0,
        sending: ob?.sending ?? 0,
        oldestDueAgeSeconds:
          ob?.oldest_due_age === null || ob?.oldest_due_age === undefined ? null : Math.max(0, Math.round(ob.oldest_due_age)),
      },
      deadLetters: dl?.dead ?? 0,
      optOuts: optOutsBy.get(o.id) ?? 0,
      bookingsToday: bookingsBy.get(o.id) ?? 0,
    };
  });

  const ages = clinics.map((c) => c.outbox.oldestDueAgeSeconds).filter((a): a is number => a !== null);
  const total = (f: (c: ClinicStatus) => number) => clinics.reduce((n, c) => n + f(c), 0);
  return {
    generatedAt: new Date().toISOString(),
    since: since.toISOString(),
    clinics,
    totals: {
      clinics: clinics.length,
      linksDown: total((c) => c.providers.filter((p) => p.health.state === 'down' || p.breaker.shared === 'open').length),
      outboxDepth: total((c) => c.outbox.depth),
      oldestDueAgeSeconds: ages.length ? Math.max(...ages) : null,
      deadLetters: total((c) => c.deadLetters),
      optOuts: total((c) => c.optOuts),
      accepted: total((c) => c.lastHour.accepted),
      delivered: total((c) => c.lastHour.delivered),
      undelivered: total((c) => c.lastHour.undelivered),
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
  const rows = await withOrg(
    workerSql,
    orgId,
    (tx) => tx<{ enabled: boolean; failover_enabled: boolean }[]>`
    SELECT enabled, failover_enabled FROM sms_settings WHERE org_id = ${orgId}`,
  );
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

type SeriesRow = { org_id: string; h: number; accepted: number; delivered: number; undelivered: number };

/**
 * The finished hours of the charts, kept for a minute: they hardly change (a
 * late receipt may still move one), and reading them is most of the cost of
 * an overview that refreshes every few seconds. One per console.
 */
export class SeriesCache {
  entry: { firstHour: number; currentHour: number; at: number; rows: SeriesRow[] } | undefined;
  constructor(readonly ttlMs = 60_000) {}
}

/**
 * Each clinic's last `hours` hours of accepted attempts, by hour (oldest
 * first), for the console's delivery-rate charts. Every hour is present, an
 * hour without sends as zeros. With a cache, only the current hour is read
 * each time.
 */
export async function readDeliverySeries(
  workerSql: Sql,
  opts: { hours: number; orgId?: string; cache?: SeriesCache },
): Promise<Map<string, HourBucket[]>> {
  const now = Date.now();
  const currentHour = Math.floor(now / HOUR_MS) * HOUR_MS;
  const firstHour = currentHour - (opts.hours - 1) * HOUR_MS;
  const read = (from: number, to: number | null) =>
    scoped(
      workerSql,
      opts.orgId,
    )(
      (tx, only) => tx<SeriesRow[]>`
      SELECT org_id, floor(EXTRACT(EPOCH FROM started_at) / 3600)::int AS h,
             count(*)::int AS accepted,
             count(*) FILTER (WHERE delivery_state = 'delivered')::int AS delivered,
             count(*) FILTER (WHERE delivery_state IN ('undelivered', 'failed'))::int AS undelivered
        FROM sms_attempts
       WHERE started_at >= ${new Date(from)} ${to === null ? tx`` : tx`AND started_at < ${new Date(to)}`}
         AND delivery_state IS NOT NULL ${only}
       GROUP BY 1, 2`,
    );
  let rows: SeriesRow[];
  const c = opts.cache;
  if (c) {
    const e = c.entry;
    const fresh = e && e.firstHour === firstHour && e.currentHour === currentHour && now - e.at < c.ttlMs;
    const [finished, current] = await Promise.all([
      fresh ? Promise.resolve(e.rows) : read(firstHour, currentHour),
      read(currentHour, null),
    ]);
    if (!fresh) c.entry = { firstHour, currentHour, at: now, rows: finished };
    rows = [...finished, ...current];
  } else {
    rows = await read(firstHour, null);
  }
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
  const rows = await withOrg(
    workerSql,
    orgId,
    (tx) => tx<{ account_key: string; at: Date }[]>`
    SELECT account_key, max(started_at) AS at
      FROM sms_attempts
     WHERE started_at > now() - interval '30 days' AND org_id = ${orgId} AND outcome IN ('accepted', 'reconciled')
     GROUP BY account_key`,
  );
  return new Map(rows.map((r) => [maskAccount(r.account_key), r.at.toISOString()]));
}
