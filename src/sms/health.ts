/**
 * Provider health shared by every process.
 *
 * A background monitor probes each distinct provider account (its adapter's
 * `probe()`: Twilio fetches the account, Telnyx reads the messaging profile,
 * the sandbox is always healthy) and writes the result into
 * `sms_provider_health` (sql/009_health.sql). A row's lease decides who
 * probes: a process claims a due row by moving `lease_until` one interval on,
 * so with N processes on one database each account is still probed once per
 * interval. Every process reads every row twice an interval, and its breakers
 * (breakers.ts) skip an account a fresh row says is down, including in a
 * process that never sent to it or just started. A row nobody has probed for
 * SMS_HEALTH_STALE_MS is ignored, so an account is never held open by a
 * verdict nobody renews.
 *
 * An account is a (account key, credentials fingerprint) pair: the accounts
 * are found through the clinics' chains, and two clinics of an agency share a
 * row only when they hold the same credentials.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import pTimeout from 'p-timeout';
import type { Logger } from 'pino';
import type { Sql } from 'postgres';
import type { Config } from '../config.js';
import { withOperator, withOrg, type Tx } from '../db/pool.js';
import { healthAccountsDown, healthProbeDuration, healthProbes } from '../metrics.js';
import type { SharedHealth } from './breakers.js';
import { healthKeyOf, splitHealthKey, type ChainLoader, type StoredLink } from './config.js';
import { ProviderSendError, type ErrorClass, type ProbeResult, type ProviderKind, type SmsProvider } from './types.js';

export interface HealthSettings {
  /** Probe from this process; every process reads the shared rows either way. */
  probing: boolean;
  intervalMs: number;
  probeTimeoutMs: number;
  /** Rows probed longer ago than this are ignored. */
  staleMs: number;
}

export function healthSettings(cfg: Config): HealthSettings {
  return {
    probing: cfg.SMS_HEALTH_ENABLED ?? cfg.SMS_WORKER_ENABLED,
    intervalMs: cfg.SMS_HEALTH_INTERVAL_MS,
    probeTimeoutMs: cfg.SMS_HEALTH_PROBE_TIMEOUT_MS ?? Math.min(2000, Math.floor(cfg.SMS_HEALTH_INTERVAL_MS / 2)),
    staleMs: cfg.SMS_HEALTH_STALE_MS ?? cfg.SMS_HEALTH_INTERVAL_MS * 3,
  };
}

type ProbeErrorClass = Exclude<ErrorClass, 'recipient'>;

/** Rows claimed per statement; when all were due, the next claim follows at once. */
const CLAIM_BATCH = 32;
const PROBES_AT_ONCE = 8;
/** ±15 %, so processes started together do not tick together. */
const jitter = (ms: number) => ms * (0.85 + Math.random() * 0.3);
const secs = (ms: number) => ms / 1000;

interface LinkRow extends StoredLink {
  org_id: string;
}

interface HealthRow {
  account_key: string;
  credentials_fp: string;
  kind: string;
  ok: boolean | null;
  fresh: boolean;
  due_in_ms: number;
}

interface Outcome {
  key: string;
  kind: string;
  ok: boolean;
  latencyMs: number;
  errorClass: ProbeErrorClass | null;
  errorCode: string | null;
}

/** Enough of an account key to tell accounts apart in a log line or a status page. */
export function maskAccount(accountKey: string): string {
  const [kind, id = ''] = accountKey.split(/:(.*)/s);
  return id.length > 12 ? `${kind}:${id.slice(0, 6)}…${id.slice(-4)}` : accountKey;
}

export class HealthMonitor implements SharedHealth {
  readonly id = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  /** Health keys that a fresh row says are down. */
  private down = new Set<string>();
  /** When each row's next probe is due (Date.now() clock), as of the last read or own probe. */
  private due = new Map<string, number>();
  /** One client per account found in the clinics' chains, to probe it with. */
  private clients = new Map<string, { provider: SmsProvider; kind: string }>();
  private discoveredAt = Number.NEGATIVE_INFINITY;
  /**
   * Accounts whose breaker opened on real sends here, each until when it is
   * worth asking for: probed at once, or as soon as the recheck gap since the
   * last probe allows.
   */
  private readonly suspects = new Map<string, number>();
  private running = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private readonly readyPromise: Promise<void>;
  private markReady!: () => void;
  private readonly readEveryMs: number;
  /** A first failed probe is confirmed (or dismissed) this soon, not a whole interval later. */
  private readonly recheckMs: number;

  constructor(
    private readonly sql: Sql,
    private readonly chains: ChainLoader,
    private readonly settings: HealthSettings,
    private readonly log: Logger,
  ) {
    this.readyPromise = new Promise((resolve) => {
      this.markReady = resolve;
    });
    // Reading twice an interval keeps "skipped everywhere within one interval" true despite the jitter.
    this.readEveryMs = settings.intervalMs / 2;
    this.recheckMs = Math.max(settings.intervalMs / 6, 10);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.wake?.();
    await this.loop;
    this.markReady();
  }

  ready(): Promise<void> {
    return this.readyPromise;
  }

  isDown(healthKey: string): boolean {
    return this.down.has(healthKey);
  }

  opened(healthKey: string): void {
    if (!this.settings.probing || !this.running) return;
    this.suspects.set(healthKey, Date.now() + 2 * this.recheckMs);
    this.wake?.();
  }

  private async run(): Promise<void> {
    while (this.running) {
      let delay = this.readEveryMs;
      try {
        delay = await this.tick();
      } catch (err) {
        this.log.warn({ err }, 'sms health check failed');
      } finally {
        this.markReady();
      }
      if (!this.running) break;
      if (this.suspects.size) delay = Math.min(delay, this.recheckMs / 2);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, jitter(delay));
        // Never what keeps a process (or a test run) alive.
        t.unref();
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  /** One round: read what everyone knows, then (probing) find the accounts and probe those due. Returns the wait until the next. */
  private async tick(): Promise<number> {
    await this.read();
    // A process that just started acts on what the others found before it probes anything itself.
    this.markReady();
    if (!this.settings.probing) return this.readEveryMs;
    if (Date.now() - this.discoveredAt >= this.settings.intervalMs) await this.discover();
    if (this.untilNextDue() > 0 && this.suspects.size === 0) return Math.min(this.readEveryMs, this.untilNextDue());
    const claimed = await this.claim();
    if (claimed.length) await this.probeAll(claimed);
    if (claimed.length === CLAIM_BATCH) return 0;
    // A row someone else is probing right now stays due until the next read: do not spin on it.
    return Math.min(this.readEveryMs, Math.max(this.untilNextDue(), Math.min(25, this.readEveryMs)));
  }

  private untilNextDue(): number {
    const now = Date.now();
    let next = Number.POSITIVE_INFINITY;
    for (const key of this.clients.keys()) next = Math.min(next, (this.due.get(key) ?? now) - now);
    return next;
  }

  private async read(): Promise<void> {
    const rows = await this.sql<HealthRow[]>`
      SELECT account_key, credentials_fp, kind, ok,
             COALESCE(probed_at > now() - make_interval(secs => ${secs(this.settings.staleMs)}), false) AS fresh,
             COALESCE(GREATEST(EXTRACT(EPOCH FROM lease_until - now()) * 1000, 0), 0)::float8 AS due_in_ms
        FROM sms_provider_health`;
    const now = Date.now();
    const down = new Set<string>();
    const perKind = new Map<string, number>();
    for (const r of rows) {
      const key = healthKeyOf(r.account_key, r.credentials_fp);
      const isDown = r.fresh && r.ok === false;
      if (isDown) down.add(key);
      perKind.set(r.kind, (perKind.get(r.kind) ?? 0) + (isDown ? 1 : 0));
      this.due.set(key, now + r.due_in_ms);
    }
    this.down = down;
    healthAccountsDown.reset();
    for (const [provider, n] of perKind) healthAccountsDown.set({ provider }, n);
  }

  /** Lists every enabled clinic's chain (operator scope) and keeps one client per distinct account. */
  private async discover(): Promise<void> {
    const rows = await withOperator(
      this.sql,
      (tx) => tx<LinkRow[]>`
      SELECT p.org_id, p.position, p.kind, p.credentials_enc, p.attempt_timeout_ms, p.link_settings
        FROM sms_providers p
        JOIN sms_settings s ON s.org_id = p.org_id
        JOIN orgs o ON o.id = p.org_id
       WHERE s.enabled AND o.active
       ORDER BY p.org_id, p.position`,
    );
    const clients = new Map<string, { provider: SmsProvider; kind: string }>();
    for (const r of rows) {
      let built;
      try {
        built = this.chains.client(r.org_id, r);
      } catch {
        // Undecryptable: the worker reports it when it loads that clinic's chain.
        continue;
      }
      if (!clients.has(built.healthKey)) clients.set(built.healthKey, { provider: built.provider, kind: r.kind });
    }
    this.clients = clients;
    this.discoveredAt = Date.now();
    const fresh = [...clients].filter(([key]) => !this.due.has(key));
    if (fresh.length === 0) return;
    const keys = fresh.map(([key]) => splitHealthKey(key));
    await this.sql`
      INSERT INTO sms_provider_health (account_key, credentials_fp, kind)
      SELECT * FROM unnest(${keys.map((k) => k.accountKey)}::text[], ${keys.map((k) => k.credentialsFp)}::text[],
                           ${fresh.map(([, c]) => c.kind)}::text[])
      ON CONFLICT DO NOTHING`;
  }

  /** Takes the leases of due rows among the accounts this process knows (and of suspects not probed just now). */
  private async claim(): Promise<Array<{ key: string; failures: number }>> {
    const mine = [...this.clients.keys()].map(splitHealthKey);
    if (mine.length === 0) return [];
    const now = Date.now();
    for (const [k, until] of this.suspects) if (until < now || !this.clients.has(k)) this.suspects.delete(k);
    const suspects = [...this.suspects.keys()].map(splitHealthKey);
    const rows = await this.sql<{ account_key: string; credentials_fp: string; consecutive_failures: number }[]>`
      WITH mine AS (
        SELECT * FROM unnest(${mine.map((k) => k.accountKey)}::text[], ${mine.map((k) => k.credentialsFp)}::text[]) AS m(account_key, credentials_fp)
      ), suspect AS (
        SELECT * FROM unnest(${suspects.map((k) => k.accountKey)}::text[], ${suspects.map((k) => k.credentialsFp)}::text[]) AS s(account_key, credentials_fp)
      ), due AS (
        SELECT h.account_key, h.credentials_fp
          FROM sms_provider_health h JOIN mine USING (account_key, credentials_fp)
         WHERE h.lease_until IS NULL OR h.lease_until <= now()
            OR ((h.account_key, h.credentials_fp) IN (SELECT account_key, credentials_fp FROM suspect)
                AND (h.probed_at IS NULL OR h.probed_at <= now() - make_interval(secs => ${secs(this.recheckMs)})))
         ORDER BY h.lease_until NULLS FIRST
         LIMIT ${CLAIM_BATCH}
         FOR UPDATE OF h SKIP LOCKED
      )
      UPDATE sms_provider_health h
         SET lease_until = now() + make_interval(secs => ${secs(this.settings.intervalMs)}), leased_by = ${this.id}
        FROM due
       WHERE h.account_key = due.account_key AND h.credentials_fp = due.credentials_fp
      RETURNING h.account_key, h.credentials_fp, h.consecutive_failures`;
    return rows.map((r) => {
      const key = healthKeyOf(r.account_key, r.credentials_fp);
      this.due.set(key, now + this.settings.intervalMs);
      this.suspects.delete(key);
      return { key, failures: r.consecutive_failures };
    });
  }

  private async probeAll(claimed: Array<{ key: string; failures: number }>): Promise<void> {
    const outcomes: Outcome[] = [];
    const queue = [...claimed];
    await Promise.all(
      Array.from({ length: Math.min(PROBES_AT_ONCE, queue.length) }, async () => {
        for (let c = queue.shift(); c; c = queue.shift()) {
          const client = this.clients.get(c.key);
          if (client) outcomes.push(await this.probeOne(c.key, client.provider, client.kind));
        }
      }),
    );
    if (outcomes.length === 0) return;
    const keys = outcomes.map((o) => splitHealthKey(o.key));
    // The first failure of a run is probed again after the recheck gap; later ones wait the interval.
    const written = await this.sql<{ account_key: string; credentials_fp: string; next_in_ms: number }[]>`
      UPDATE sms_provider_health h
         SET probed_at = now(), ok = r.ok::boolean, latency_ms = r.latency_ms, error_class = r.error_class, error_code = r.error_code,
             consecutive_failures = CASE WHEN r.ok::boolean THEN 0 ELSE h.consecutive_failures + 1 END,
             down_since = CASE WHEN r.ok::boolean THEN NULL ELSE COALESCE(h.down_since, now()) END,
             lease_until = now() + make_interval(secs => CASE WHEN r.ok::boolean OR h.consecutive_failures > 0
                                                               THEN ${secs(this.settings.intervalMs)}::float8
                                                               ELSE ${secs(this.recheckMs)}::float8 END)
        FROM unnest(${keys.map((k) => k.accountKey)}::text[], ${keys.map((k) => k.credentialsFp)}::text[],
                    ${outcomes.map((o) => String(o.ok))}::text[], ${outcomes.map((o) => o.latencyMs)}::int[],
                    ${outcomes.map((o) => o.errorClass)}::text[], ${outcomes.map((o) => o.errorCode)}::text[])
             AS r(account_key, credentials_fp, ok, latency_ms, error_class, error_code)
       WHERE h.account_key = r.account_key AND h.credentials_fp = r.credentials_fp AND h.leased_by = ${this.id}
      RETURNING h.account_key, h.credentials_fp,
                (EXTRACT(EPOCH FROM h.lease_until - now()) * 1000)::float8 AS next_in_ms`;
    const now = Date.now();
    const kept = new Map(written.map((w) => [healthKeyOf(w.account_key, w.credentials_fp), w.next_in_ms]));
    for (const o of outcomes) {
      const nextIn = kept.get(o.key);
      // Another process took the lease over while this probe ran: its result stands.
      if (nextIn === undefined) continue;
      this.due.set(o.key, now + nextIn);
      const wasDown = this.down.has(o.key);
      const { accountKey } = splitHealthKey(o.key);
      if (!o.ok && !wasDown) {
        this.down.add(o.key);
        this.log.warn(
          { provider: o.kind, account: maskAccount(accountKey), errorClass: o.errorClass, code: o.errorCode },
          'sms provider account down',
        );
      } else if (o.ok && wasDown) {
        this.down.delete(o.key);
        this.log.info({ provider: o.kind, account: maskAccount(accountKey) }, 'sms provider account recovered');
      }
    }
  }

  private async probeOne(key: string, provider: SmsProvider, kind: string): Promise<Outcome> {
    const started = performance.now();
    const timeoutMs = this.settings.probeTimeoutMs;
    let r: ProbeResult;
    if (!provider.probe) {
      // Nothing to reach and nothing to fail (the sandbox).
      r = { reachable: true, ok: true, latencyMs: 0 };
    } else {
      try {
        // Adapters keep to the timeout themselves; this only guards against one that does not.
        r = await pTimeout(provider.probe({ timeoutMs }), {
          milliseconds: timeoutMs + 1000,
          fallback: (): ProbeResult => ({
            reachable: false,
            ok: false,
            error: new ProviderSendError({
              message: `${kind}: probe got no answer in time`,
              errorClass: 'ambiguous',
              provider: provider.kind,
              code: 'TIMEOUT',
            }),
          }),
        });
      } catch (err) {
        r = { reachable: false, ok: false, error: provider.classify(err) };
      }
    }
    const ok = r.ok ?? r.reachable;
    const latencyMs = Math.max(0, Math.round(r.latencyMs ?? performance.now() - started));
    // A probe names no recipient: a "recipient" answer can only be about the account.
    const errorClass: ProbeErrorClass | null = ok
      ? null
      : r.error?.errorClass === 'recipient'
        ? 'provider'
        : (r.error?.errorClass ?? 'transient');
    const errorCode = ok ? null : (r.error?.code?.slice(0, 40) ?? (r.reachable ? null : 'UNREACHABLE'));
    healthProbes.inc({ provider: kind, result: ok ? 'ok' : 'failed', error_class: errorClass ?? 'none' });
    healthProbeDuration.observe({ provider: kind }, latencyMs / 1000);
    return { key, kind, ok, latencyMs, errorClass, errorCode };
  }
}

/** One link of a clinic's chain with its account's shared health. */
export interface LinkHealth {
  position: number;
  kind: ProviderKind;
  /** Masked, enough to tell accounts apart (`twilio:AC1a2b…9f0e`, `telnyx:1a2b3c4d`); null when the credentials do not decrypt. */
  account: string | null;
  credentials: 'ok' | 'undecryptable';
  /** The last probe by any process (ISO 8601), null if none yet. */
  probedAt: string | null;
  latencyMs: number | null;
  /** What the last probe found; null if none yet. */
  ok: boolean | null;
  errorClass: ProbeErrorClass | null;
  /** The provider's code (`20003`, `10009`, `40312`), a network code (`ECONNREFUSED`, `TIMEOUT`) or `ACCOUNT_SUSPENDED`. */
  errorCode: string | null;
  consecutiveFailures: number;
  /** First failed probe of the current run of failures. */
  downSince: string | null;
  /** Probed within SMS_HEALTH_STALE_MS; a stale row decides nothing. */
  fresh: boolean;
  /**
   * The breaker as every process sees it through the shared row: `open` (a
   * fresh probe found the account down: every process skips it), `closed` (a
   * fresh probe found it healthy; a process whose breaker the outage opened
   * makes one half-open trial with its next message), `unknown` (no fresh
   * probe: each process's breaker goes by its own sends alone).
   */
  breaker: 'open' | 'closed' | 'unknown';
}

export interface ClinicHealth {
  orgId: string;
  /** The clinic's SMS switch; disabled clinics' own accounts are not probed. */
  enabled: boolean;
  providers: LinkHealth[];
}

interface StatusLinkRow extends LinkRow {
  enabled: boolean;
}

interface StatusHealthRow {
  account_key: string;
  credentials_fp: string;
  probed_at: Date | null;
  ok: boolean | null;
  latency_ms: number | null;
  error_class: ProbeErrorClass | null;
  error_code: string | null;
  consecutive_failures: number;
  down_since: Date | null;
  fresh: boolean;
}

/**
 * The shared health of every clinic's chain (or of one clinic's, read under
 * its own org), for the status API. Reads the clinics' chains to know which
 * account each link uses (the credentials are decrypted, never returned) and
 * the shared rows for those accounts; nothing is probed.
 */
export async function readHealth(workerSql: Sql, chains: ChainLoader, opts: { staleMs: number; orgId?: string }): Promise<ClinicHealth[]> {
  const list = (tx: Tx) => tx<StatusLinkRow[]>`
    SELECT p.org_id, p.position, p.kind, p.credentials_enc, p.attempt_timeout_ms, p.link_settings, COALESCE(s.enabled, false) AS enabled
      FROM sms_providers p LEFT JOIN sms_settings s ON s.org_id = p.org_id
     ORDER BY p.org_id, p.position`;
  const links = opts.orgId ? await withOrg(workerSql, opts.orgId, list) : await withOperator(workerSql, list);
  const keyed = links.map((l) => {
    try {
      return { link: l, healthKey: chains.client(l.org_id, l).healthKey };
    } catch {
      return { link: l, healthKey: null };
    }
  });
  const keys = [...new Set(keyed.flatMap((k) => (k.healthKey ? [k.healthKey] : [])))].map(splitHealthKey);
  const rows = keys.length
    ? await workerSql<StatusHealthRow[]>`
        SELECT account_key, credentials_fp, probed_at, ok, latency_ms, error_class, error_code, consecutive_failures, down_since,
               COALESCE(probed_at > now() - make_interval(secs => ${secs(opts.staleMs)}), false) AS fresh
          FROM sms_provider_health
         WHERE (account_key, credentials_fp) IN (
                 SELECT * FROM unnest(${keys.map((k) => k.accountKey)}::text[], ${keys.map((k) => k.credentialsFp)}::text[]))`
    : [];
  const byKey = new Map(rows.map((r) => [healthKeyOf(r.account_key, r.credentials_fp), r]));
  const clinics = new Map<string, ClinicHealth>();
  for (const { link, healthKey } of keyed) {
    let clinic = clinics.get(link.org_id);
    if (!clinic) {
      clinic = { orgId: link.org_id, enabled: link.enabled, providers: [] };
      clinics.set(link.org_id, clinic);
    }
    const row = healthKey ? byKey.get(healthKey) : undefined;
    clinic.providers.push({
      position: link.position,
      kind: link.kind,
      account: healthKey ? maskAccount(splitHealthKey(healthKey).accountKey) : null,
      credentials: healthKey ? 'ok' : 'undecryptable',
      probedAt: row?.probed_at?.toISOString() ?? null,
      latencyMs: row?.latency_ms ?? null,
      ok: row?.ok ?? null,
      errorClass: row?.error_class ?? null,
      errorCode: row?.error_code ?? null,
      consecutiveFailures: row?.consecutive_failures ?? 0,
      downSince: row?.down_since?.toISOString() ?? null,
      fresh: row?.fresh ?? false,
      breaker: !row?.fresh ? 'unknown' : row.ok ? 'closed' : 'open',
    });
  }
  return [...clinics.values()];
}
