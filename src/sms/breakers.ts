/**
 * Circuit breakers, one per (clinic, provider account), on cockatiel's public
 * surface: its events tell us when a breaker opened, closed or went half-open.
 *
 * Shared health (health.ts) reaches a breaker the one way cockatiel takes
 * anything in: as failures. When a fresh shared probe says the account is down,
 * a closed breaker is fed failures of its own until it opens, with its usual
 * events (gauge, log line), in a process that may never have sent a thing.
 * Such an opening has no cool-down (its halfOpenAfter backoff is 0): the probe,
 * not time, says when to try again. While the record says down, every message
 * skips the account; once it no longer does (recovered, or the record went
 * stale because nobody probes any more), the next message is the one half-open
 * trial, as after any opening, and a success closes the breaker.
 */
import {
  CircuitState,
  ConsecutiveBreaker,
  circuitBreaker,
  handleWhenResult,
  type CircuitBreakerPolicy,
  type IBackoff,
  type IHalfOpenAfterBackoffContext,
} from 'cockatiel';
import type { Logger } from 'pino';
import { breakerState } from '../metrics.js';
import { ProviderSendError, type ErrorClass, type ProviderKind } from './types.js';

/** What an attempt through a breaker came to; only failures of these classes count against the provider. */
export type Judged = { ok: true } | { ok: false; error: ProviderSendError };

const COUNTS: ReadonlySet<ErrorClass> = new Set(['transient', 'provider', 'ambiguous']);

/** What the breakers need from the shared health records (health.ts), by a link's health key. */
export interface SharedHealth {
  /** Settles once this process has read the shared records (or failed to) at least once. */
  ready(): Promise<void>;
  /** A fresh shared probe found this account down. */
  isDown(healthKey: string): boolean;
  /** A breaker of this account opened on real sends: worth probing the account now. */
  opened(healthKey: string): void;
}

/** Thrown through cockatiel and caught straight after: see run(). */
class Uncounted<T> {
  constructor(readonly result: T) {}
}

interface Entry {
  policy: CircuitBreakerPolicy;
  /** When it last opened (Date.now()), while it is open. */
  openedAt: number | null;
  /** How long the current opening lasts before a half-open trial: the cool-down, or 0 after shared down. */
  halfOpenAfter: number;
  /** Learnt from the engine's admit(); absent for links without a shared record (dry runs). */
  healthKey: string | undefined;
  /** The failure shared down is fed as; recognised by identity in cockatiel's events. */
  readonly down: Judged;
  feeding: boolean;
}

export class Breakers {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly opts: { threshold: number; cooldownMs: number; health?: SharedHealth | undefined },
    private readonly log: Logger,
  ) {}

  private entry(orgId: string, accountKey: string): Entry {
    const key = `${orgId}|${accountKey}`;
    let e = this.entries.get(key);
    if (!e) {
      const kind = accountKey.split(':')[0] ?? 'unknown';
      const down: Judged = {
        ok: false,
        error: new ProviderSendError({
          message: 'a shared probe found the account down',
          errorClass: 'provider',
          provider: kind as ProviderKind,
          code: 'SHARED_DOWN',
        }),
      };
      const byHealth = (r: unknown) => typeof r === 'object' && r !== null && 'value' in r && r.value === down;
      const halfOpenAfter = (ctx: IHalfOpenAfterBackoffContext): IBackoff<IHalfOpenAfterBackoffContext> => {
        const duration = byHealth(ctx.result) ? 0 : this.opts.cooldownMs;
        entry.halfOpenAfter = duration;
        return { duration, next: halfOpenAfter };
      };
      const policy = circuitBreaker(
        handleWhenResult((r: unknown) => !(r as Judged).ok && COUNTS.has((r as Extract<Judged, { ok: false }>).error.errorClass)),
        { halfOpenAfter: { next: halfOpenAfter }, breaker: new ConsecutiveBreaker(this.opts.threshold) },
      );
      const entry: Entry = { policy, openedAt: null, halfOpenAfter: this.opts.cooldownMs, healthKey: undefined, down, feeding: false };
      policy.onBreak((reason) => {
        entry.openedAt = Date.now();
        // Other processes learn of an opening on real sends through a probe of the account, not from us (docs/sms.md).
        if (!byHealth(reason) && !('isolated' in reason) && entry.healthKey) this.opts.health?.opened(entry.healthKey);
      });
      policy.onReset(() => {
        entry.openedAt = null;
      });
      const labels = { org: orgId, provider: kind };
      policy.onStateChange((s) => {
        breakerState.set(labels, s === CircuitState.Closed ? 0 : 1);
        this.log.warn(
          { orgId, account: kind, state: CircuitState[s], ...(entry.feeding ? { cause: 'shared_health' } : {}) },
          'sms breaker state change',
        );
      });
      e = entry;
      this.entries.set(key, e);
    }
    return e;
  }

  /** This process's breaker state for the account, without creating one: undefined when nothing here has used it yet. */
  peek(orgId: string, accountKey: string): CircuitState | undefined {
    return this.entries.get(`${orgId}|${accountKey}`)?.policy.state;
  }

  policy(orgId: string, accountKey: string): CircuitBreakerPolicy {
    return this.entry(orgId, accountKey).policy;
  }

  /** Settles once the shared health has been read: a process that just started skips what others found down. */
  ready(): Promise<void> {
    return this.opts.health?.ready() ?? Promise.resolve();
  }

  /**
   * May a message try this account now? `go` while closed; `probe` when open
   * and cooled down (this call becomes the one half-open probe); `skip`
   * otherwise, and always while a fresh shared probe says the account is down.
   * Half-open lets exactly one probe through and everyone else moves on rather
   * than queueing behind it (cockatiel would make them wait).
   */
  admit(orgId: string, accountKey: string, healthKey?: string): 'go' | 'probe' | 'skip' {
    const e = this.entry(orgId, accountKey);
    if (healthKey) e.healthKey = healthKey;
    if (healthKey && this.opts.health?.isDown(healthKey)) {
      if (e.policy.state === CircuitState.Closed) void this.feedDown(e);
      return 'skip';
    }
    const state = e.policy.state;
    if (state === CircuitState.Closed) return 'go';
    if (state === CircuitState.Open && e.openedAt !== null && Date.now() - e.openedAt >= e.halfOpenAfter) return 'probe';
    return 'skip';
  }

  /** Opens a closed breaker with the shared verdict, through cockatiel's own counting. */
  private async feedDown(e: Entry): Promise<void> {
    if (e.feeding) return;
    e.feeding = true;
    try {
      // Bounded: a real send that succeeds meanwhile resets the count, once per send in flight.
      for (let i = 0; i < this.opts.threshold * 2 && e.policy.state === CircuitState.Closed; i++) {
        await e.policy.execute(() => Promise.resolve(e.down));
      }
    } catch {
      // BrokenCircuitError: a real send opened it first, which is all this wanted.
    } finally {
      e.feeding = false;
    }
  }

  /**
   * Runs one attempt through the account's breaker. cockatiel counts a failure
   * it is told to handle, resets the count on any other result, and does
   * neither for an error it is not told to handle. A recipient error says
   * nothing about the provider, so it must do neither: it travels through
   * cockatiel as such an error and comes back out as the result it is.
   */
  async run<T extends Judged>(orgId: string, accountKey: string, attempt: () => Promise<T>): Promise<T> {
    try {
      return (await this.policy(orgId, accountKey).execute(async () => {
        const r = await attempt();
        if (!r.ok && r.error.errorClass === 'recipient') throw new Uncounted(r);
        return r;
      })) as T;
    } catch (err) {
      if (err instanceof Uncounted) return err.result as T;
      throw err;
    }
  }
}
