/**
 * Circuit breakers, one per (clinic, provider account), on cockatiel's public
 * surface: its events tell us when a breaker opened, closed or went half-open.
 */
import { CircuitState, ConsecutiveBreaker, circuitBreaker, handleWhenResult, type CircuitBreakerPolicy } from 'cockatiel';
import type { Logger } from 'pino';
import { breakerState } from '../metrics.js';
import type { ErrorClass, ProviderSendError } from './types.js';

/** What an attempt through a breaker came to; only failures of these classes count against the provider. */
export type Judged = { ok: true } | { ok: false; error: ProviderSendError };

const COUNTS: ReadonlySet<ErrorClass> = new Set(['transient', 'provider', 'ambiguous']);

/** Thrown through cockatiel and caught straight after: see run(). */
class Uncounted<T> {
  constructor(readonly result: T) {}
}

interface Entry {
  policy: CircuitBreakerPolicy;
  /** When it last opened (Date.now()), while it is open. */
  openedAt: number | null;
}

export class Breakers {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly opts: { threshold: number; cooldownMs: number },
    private readonly log: Logger,
  ) {}

  private entry(orgId: string, accountKey: string): Entry {
    const key = `${orgId}|${accountKey}`;
    let e = this.entries.get(key);
    if (!e) {
      const policy = circuitBreaker(
        handleWhenResult((r: unknown) => !(r as Judged).ok && COUNTS.has((r as Extract<Judged, { ok: false }>).error.errorClass)),
        { halfOpenAfter: this.opts.cooldownMs, breaker: new ConsecutiveBreaker(this.opts.threshold) },
      );
      const entry: Entry = { policy, openedAt: null };
      policy.onBreak(() => {
        entry.openedAt = Date.now();
      });
      policy.onReset(() => {
        entry.openedAt = null;
      });
      const labels = { org: orgId, provider: accountKey.split(':')[0] ?? 'unknown' };
      policy.onStateChange((s) => {
        breakerState.set(labels, s === CircuitState.Closed ? 0 : 1);
        this.log.warn({ orgId, account: accountKey.split(':')[0], state: CircuitState[s] }, 'sms breaker state change');
      });
      e = entry;
      this.entries.set(key, e);
    }
    return e;
  }

  policy(orgId: string, accountKey: string): CircuitBreakerPolicy {
    return this.entry(orgId, accountKey).policy;
  }

  /**
   * May a message try this account now? `go` while closed; `probe` when open
   * and cooled down (this call becomes the one half-open probe); `skip`
   * otherwise. Half-open lets exactly one probe through and everyone else
   * moves on rather than queueing behind it (cockatiel would make them wait).
   */
  admit(orgId: string, accountKey: string): 'go' | 'probe' | 'skip' {
    const e = this.entry(orgId, accountKey);
    const state = e.policy.state;
    if (state === CircuitState.Closed) return 'go';
    if (state === CircuitState.Open && e.openedAt !== null && Date.now() - e.openedAt >= this.opts.cooldownMs) return 'probe';
    return 'skip';
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
