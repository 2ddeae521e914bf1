import {
  BrokenCircuitError,
  CircuitState,
  ConsecutiveBreaker,
  circuitBreaker,
  handleWhen,
  type CircuitBreakerPolicy,
} from 'cockatiel';
import pRetry from 'p-retry';
import pTimeout, { TimeoutError } from 'p-timeout';
import type { Logger } from 'pino';
import { scrubPhones } from '../log.js';
import { breakerState, smsAttemptDuration, smsAttempts, smsFailovers } from '../metrics.js';
import type { ChainLink } from './config.js';
import { pickSender } from './sticky.js';
import { ProviderSendError, type ErrorClass, type SendAccepted } from './types.js';

/**
 * The failover engine. For one message it walks the org's provider chain:
 *
 *   - transient errors retry the same provider (p-retry, exponential backoff
 *     with jitter), then fail over;
 *   - provider/config errors fail over at once;
 *   - recipient errors stop everything (no other carrier can fix a bad number,
 *     and resending after STOP is a compliance breach);
 *   - ambiguous outcomes (timeout after the request left) are reconciled with
 *     the provider before anything is resent anywhere.
 *
 * Each attempt runs under a per-(org, account) circuit breaker and a per-attempt
 * timeout; an open (or probing) breaker sends the message straight on to the
 * next provider without waiting.
 */

export interface EngineMessage {
  id: string;
  orgId: string;
  to: string;
  body: string;
  /** Worker id holding the outbox row's lease; an attempt is only opened while it still does. */
  leaseHolder: string;
}

/** What attempt() attaches to the error it throws, so the caller can settle that audit row. */
interface AttemptTrace {
  attemptId?: number;
  from?: string | null;
  startedAt?: number;
}

export interface InFlightAttempt {
  attemptId: number;
  provider: string;
  accountKey: string;
  from: string | null;
  startedAt: string;
}

/** Where the engine writes its audit trail (sms_attempts); the worker supplies the SQL. */
export interface AttemptRecorder {
  begin(msg: EngineMessage, link: ChainLink, preferredFrom: string | null, failedOver: boolean): Promise<{ attemptId: number; from: string | null }>;
  finish(
    msg: EngineMessage,
    attemptId: number,
    r: {
      outcome: 'accepted' | 'failed' | 'reconciled' | 'in_flight';
      errorClass?: ErrorClass | undefined;
      code?: string | undefined;
      message?: string | undefined;
      providerMessageId?: string | undefined;
      latencyMs?: number | undefined;
      optOut?: boolean | undefined;
    },
  ): Promise<void>;
  skip(msg: EngineMessage, link: ChainLink, reason: { errorClass: string; code: string; message: string }): Promise<void>;
}

export type DeliveryResult =
  | { status: 'sent'; provider: string; providerMessageId: string; from: string | null; failedOver: boolean; reconciled: boolean }
  | { status: 'failed'; reason: string; errorClass?: ErrorClass; code?: string; provider?: string; message: string }
  | { status: 'retry'; reason: string; errorClass?: ErrorClass; code?: string; provider?: string; message: string };

export interface EngineOptions {
  attemptTimeoutMs: number;
  /** Retries of one provider on transient errors before failing over. */
  retriesPerProvider: number;
  retryMinMs: number;
  retryMaxMs: number;
  breakerThreshold: number;
  breakerCooldownMs: number;
  /** How long a lookup of an ambiguous attempt may take. */
  reconcileTimeoutMs: number;
  /**
   * After the attempt timeout, how long to wait for a request the SDK could not
   * cancel to end on its own (it ends by the SDK's backstop timeout at the
   * latest). A slow provider that answers 201 just after our timeout must not be
   * taken for a failure: the lookup right after could miss the message and the
   * failover would send a second text.
   */
  lateAnswerGraceMs: number;
  /**
   * After this long, an ambiguous attempt that still cannot be reconciled is
   * given up on and the message is sent again: a late duplicate is judged
   * better than a confirmation that never arrives.
   */
  reconcileWindowMs: number;
}

const BREAKER_COUNTS: ReadonlySet<ErrorClass> = new Set(['transient', 'provider', 'ambiguous']);

export class SmsEngine {
  private readonly breakers = new Map<string, CircuitBreakerPolicy>();

  constructor(
    private readonly opts: EngineOptions,
    private readonly recorder: AttemptRecorder,
    private readonly log: Logger,
  ) {}

  /** Exposed for tests and diagnostics: the breaker of one org's provider account. */
  breaker(orgId: string, accountKey: string): CircuitBreakerPolicy {
    const key = `${orgId}|${accountKey}`;
    let b = this.breakers.get(key);
    if (!b) {
      b = circuitBreaker(
        handleWhen((e) => e instanceof ProviderSendError && BREAKER_COUNTS.has(e.errorClass)),
        { halfOpenAfter: this.opts.breakerCooldownMs, breaker: new ConsecutiveBreaker(this.opts.breakerThreshold) },
      );
      const labels = { org: orgId, provider: accountKey.split(':')[0] ?? 'unknown' };
      b.onStateChange((s) => {
        breakerState.set(labels, s === CircuitState.Closed ? 0 : 1);
        this.log.warn({ orgId, account: accountKey.split(':')[0], state: CircuitState[s] }, 'sms breaker state change');
      });
      this.breakers.set(key, b);
    }
    return b;
  }

  async deliver(msg: EngineMessage, chain: ChainLink[], inFlight: InFlightAttempt | null): Promise<DeliveryResult> {
    let links = chain;
    if (inFlight) {
      const settled = await this.reconcile(msg, chain, inFlight);
      if (settled.kind === 'found' || settled.kind === 'unknown') return settled.result;
      // A resend to the same provider under the same idempotency key; once it is
      // accepted, sms_finish_attempt marks the earlier attempt as superseded.
      if (settled.kind === 'same_provider_only') links = settled.links;
    }
    return this.walk(msg, links);
  }

  /** Tries each link in order until one accepts, a recipient error stops the walk, or an ambiguous attempt must wait. */
  private async walk(msg: EngineMessage, links: ChainLink[]): Promise<DeliveryResult> {
    let failedOver = false;
    let last: ProviderSendError | undefined;
    for (const [i, link] of links.entries()) {
      const breaker = this.breaker(msg.orgId, link.provider.accountKey);
      // Half-open lets exactly one probe through; everyone else moves on rather
      // than queueing behind it (cockatiel would make them wait for the probe).
      if (breaker.state === CircuitState.Open || breaker.state === CircuitState.HalfOpen) {
        if (breaker.state === CircuitState.Open && this.cooledDown(breaker)) {
          // fall through: this call becomes the half-open probe
        } else {
          await this.skipOpen(msg, link, links[i + 1]);
          failedOver = true;
          continue;
        }
      }
      if (link.pool.length === 0) {
        await this.recorder.skip(msg, link, { errorClass: 'provider', code: 'NO_SENDER', message: 'no sender numbers' });
        this.noteFailover(link, links[i + 1], 'no_sender');
        failedOver = true;
        continue;
      }
      try {
        const sent = await this.sendWithRetries(msg, link, breaker, failedOver);
        return { status: 'sent', provider: link.kind, providerMessageId: sent.providerMessageId, from: sent.from, failedOver, reconciled: false };
      } catch (err) {
        if (err instanceof BrokenCircuitError) {
          // Opened (or went half-open elsewhere) between our check and the call.
          await this.skipOpen(msg, link, links[i + 1]);
          failedOver = true;
          continue;
        }
        // attempt() turns every provider failure into a ProviderSendError; anything
        // else (the audit write failed, the lease was lost) is ours, not the provider's.
        if (!(err instanceof ProviderSendError)) throw err;
        const e = err;
        last = e;
        if (e.errorClass === 'recipient') {
          return { status: 'failed', reason: e.optOut ? 'opted_out' : 'invalid_recipient', errorClass: e.errorClass, code: e.code, provider: link.kind, message: e.message };
        }
        if (e.errorClass === 'ambiguous') {
          const trace = e as ProviderSendError & AttemptTrace;
          const since = new Date((trace.startedAt ?? Date.now() - this.opts.attemptTimeoutMs) - 5_000);
          const found = await this.lookup(msg, link, trace.from ?? null, since);
          if (found === 'unknown') {
            // The provider may have it and cannot tell us: resending anywhere risks
            // a duplicate. The attempt stays in flight for the next run to reconcile.
            return { status: 'retry', reason: 'ambiguous_unreconciled', errorClass: 'ambiguous', code: e.code, provider: link.kind, message: e.message };
          }
          if (found) {
            if (trace.attemptId !== undefined) {
              await this.recorder.finish(msg, trace.attemptId, { outcome: 'reconciled', providerMessageId: found.providerMessageId, errorClass: 'ambiguous', code: e.code, message: 'found at provider after timeout' });
            }
            return { status: 'sent', provider: link.kind, providerMessageId: found.providerMessageId, from: trace.from ?? null, failedOver, reconciled: true };
          }
          if (trace.attemptId !== undefined) {
            await this.recorder.finish(msg, trace.attemptId, { outcome: 'failed', errorClass: 'ambiguous', code: e.code, message: 'not found at provider after timeout' });
          }
        }
        this.noteFailover(link, links[i + 1], e.errorClass);
        failedOver = true;
      }
    }
    return {
      status: 'retry',
      reason: last ? `all_providers_failed:${last.errorClass}` : 'all_providers_unavailable',
      ...(last ? { errorClass: last.errorClass, code: last.code, provider: last.provider } : {}),
      message: last?.message ?? 'every provider was skipped (breaker open or no senders)',
    };
  }

  private async skipOpen(msg: EngineMessage, link: ChainLink, next: ChainLink | undefined) {
    await this.recorder.skip(msg, link, { errorClass: 'breaker_open', code: 'BREAKER_OPEN', message: 'circuit open' });
    this.noteFailover(link, next, 'breaker_open');
  }

  private cooledDown(b: CircuitBreakerPolicy): boolean {
    // cockatiel moves Open -> HalfOpen lazily on the next execute() once the
    // cool-down has passed; its serialised state tells us whether that is now.
    const s = b.toJSON() as { ownState: { value: CircuitState; openedAt?: number } };
    return s.ownState.openedAt !== undefined && Date.now() - s.ownState.openedAt >= this.opts.breakerCooldownMs;
  }

  private noteFailover(from: ChainLink, to: ChainLink | undefined, cause: string) {
    if (to) smsFailovers.inc({ from: from.kind, to: to.kind, cause });
  }

  private async sendWithRetries(msg: EngineMessage, link: ChainLink, breaker: CircuitBreakerPolicy, failedOver: boolean) {
    const preferred = pickSender(msg.to, link.pool, msg.orgId);
    return pRetry(
      async () => breaker.execute(() => this.attempt(msg, link, preferred, failedOver)),
      {
        retries: this.opts.retriesPerProvider,
        minTimeout: this.opts.retryMinMs,
        maxTimeout: this.opts.retryMaxMs,
        factor: 2,
        randomize: true,
        shouldRetry: ({ error }) => error instanceof ProviderSendError && error.errorClass === 'transient',
      },
    );
  }

  /** One provider call: audit row first, then the call under a hard timeout. */
  private async attempt(msg: EngineMessage, link: ChainLink, preferred: string | null, failedOver: boolean) {
    const { attemptId, from } = await this.recorder.begin(msg, link, preferred, failedOver);
    const startedAt = Date.now();
    const started = performance.now();
    const abort = new AbortController();
    const sending = link.provider.send({ to: msg.to, from: from ?? preferred ?? '', body: msg.body, idempotencyKey: `sms-${msg.id}`, signal: abort.signal });
    try {
      let accepted: SendAccepted;
      try {
        accepted = await pTimeout(sending, { milliseconds: this.opts.attemptTimeoutMs });
      } catch (raw) {
        accepted = await this.lateOrThrow(raw, sending, abort, link);
      }
      const latencyMs = Math.round(performance.now() - started);
      smsAttempts.inc({ provider: link.kind, outcome: 'accepted', error_class: 'none' });
      smsAttemptDuration.observe({ provider: link.kind }, latencyMs / 1000);
      await this.recorder.finish(msg, attemptId, { outcome: 'accepted', providerMessageId: accepted.providerMessageId, latencyMs });
      return { providerMessageId: accepted.providerMessageId, from };
    } catch (raw) {
      const e = raw instanceof ProviderSendError ? raw : link.provider.classify(raw);
      const latencyMs = Math.round(performance.now() - started);
      smsAttempts.inc({ provider: link.kind, outcome: 'failed', error_class: e.errorClass });
      smsAttemptDuration.observe({ provider: link.kind }, latencyMs / 1000);
      // An ambiguous attempt stays in flight until reconciled: a crash now must
      // leave the next worker a reason to look before it resends.
      await this.recorder.finish(msg, attemptId, {
        outcome: e.errorClass === 'ambiguous' ? 'in_flight' : 'failed',
        errorClass: e.errorClass,
        code: e.code,
        message: e.message,
        latencyMs,
        optOut: e.optOut,
      });
      const trace: AttemptTrace = { attemptId, from, startedAt };
      Object.assign(e, trace);
      throw e;
    }
  }

  /**
   * Called when the send failed or our timeout fired. Returns a late acceptance,
   * or throws the ProviderSendError that best describes the attempt.
   */
  private async lateOrThrow(raw: unknown, sending: Promise<SendAccepted>, abort: AbortController, link: ChainLink): Promise<SendAccepted> {
    if (!(raw instanceof TimeoutError)) throw raw instanceof ProviderSendError ? raw : link.provider.classify(raw);
    abort.abort(raw);
    const timedOut = new ProviderSendError({ message: `no answer within ${this.opts.attemptTimeoutMs} ms`, errorClass: 'ambiguous', provider: link.kind, code: 'TIMEOUT', cause: raw });
    // Adapters answer an abort at once (Telnyx cancels its fetch; Twilio hands
    // back the request it could not cancel as lateAnswer). One that ignores the
    // signal gets a moment, then counts as timed out.
    const answer = await pTimeout(
      sending.then(
        (ok): SendAccepted | ProviderSendError => ok,
        (err: unknown) => (err instanceof ProviderSendError ? err : link.provider.classify(err)),
      ),
      { milliseconds: 100, fallback: () => timedOut },
    );
    if (!(answer instanceof ProviderSendError)) return answer;
    if (!answer.lateAnswer) throw answer.errorClass === 'ambiguous' ? answer : timedOut;
    const late = await pTimeout(answer.lateAnswer, { milliseconds: this.opts.lateAnswerGraceMs, fallback: () => answer });
    if (!(late instanceof ProviderSendError)) return late;
    // A definite refusal (e.g. HTTP 500) after all: nothing was accepted, so the
    // ordinary rules apply. Anything else stays ambiguous.
    throw late.errorClass === 'ambiguous' ? answer : late;
  }

  /**
   * Looks for a message an ambiguous attempt may have created. Returns the
   * message, null when the provider says there is none, or 'unknown' when the
   * provider cannot tell us (no lookup API, or the lookup itself fails).
   */
  private async lookup(msg: EngineMessage, link: ChainLink, from: string | null, since: Date) {
    if (!link.provider.findRecent || !from) return 'unknown' as const;
    try {
      return await pTimeout(link.provider.findRecent({ to: msg.to, from, body: msg.body, since }), {
        milliseconds: this.opts.reconcileTimeoutMs,
      });
    } catch (err) {
      this.log.warn({ err: scrubPhones((err as Error).message), provider: link.kind }, 'sms reconcile lookup failed');
      return 'unknown' as const;
    }
  }

  /** Settles an attempt a previous run left in flight, before this run sends anything. */
  private async reconcile(
    msg: EngineMessage,
    chain: ChainLink[],
    prior: InFlightAttempt,
  ): Promise<
    | { kind: 'found'; result: DeliveryResult }
    | { kind: 'unknown'; result: DeliveryResult }
    | { kind: 'not_found' }
    | { kind: 'same_provider_only'; links: ChainLink[] }
  > {
    const link = chain.find((l) => l.provider.accountKey === prior.accountKey);
    const age = Date.now() - new Date(prior.startedAt).getTime();
    const expired = age > this.opts.reconcileWindowMs;
    const found = link ? await this.lookup(msg, link, prior.from, new Date(new Date(prior.startedAt).getTime() - 5_000)) : 'unknown';
    if (found && found !== 'unknown') {
      await this.recorder.finish(msg, prior.attemptId, { outcome: 'reconciled', providerMessageId: found.providerMessageId, message: 'found at provider on reconcile' });
      return { kind: 'found', result: { status: 'sent', provider: link!.kind, providerMessageId: found.providerMessageId, from: prior.from, failedOver: false, reconciled: true } };
    }
    if (found === null) {
      await this.recorder.finish(msg, prior.attemptId, { outcome: 'failed', errorClass: 'ambiguous', code: 'NOT_FOUND', message: 'not found at provider on reconcile' });
      return { kind: 'not_found' };
    }
    if (expired) {
      await this.recorder.finish(msg, prior.attemptId, { outcome: 'failed', errorClass: 'ambiguous', code: 'UNRECONCILED', message: 'reconcile window passed; resending' });
      this.log.warn({ outboxId: msg.id, provider: prior.provider }, 'sms attempt could not be reconciled within the window; resending');
      return { kind: 'not_found' };
    }
    // The provider cannot tell us. A provider that honours idempotency keys
    // (Telnyx) can be asked again with the same key; anything else waits.
    if (link?.provider.capabilities.idempotentSend) return { kind: 'same_provider_only', links: [link] };
    return {
      kind: 'unknown',
      result: { status: 'retry', reason: 'ambiguous_unreconciled', errorClass: 'ambiguous', code: 'UNRECONCILED', provider: prior.provider, message: 'previous attempt may have been accepted; waiting to reconcile' },
    };
  }
}
