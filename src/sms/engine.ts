import { BrokenCircuitError, CircuitState, type CircuitBreakerPolicy } from 'cockatiel';
import pRetry from 'p-retry';
import pTimeout, { TimeoutError } from 'p-timeout';
import type { Logger } from 'pino';
import { scrubPhones } from '../log.js';
import { smsAsyncFailovers, smsAttemptDuration, smsAttempts, smsFailovers } from '../metrics.js';
import type { AttemptLog, EngineMessage } from './attempts.js';
import { Breakers, type SharedHealth } from './breakers.js';
import type { ChainLink } from './config.js';
import type { FailureDetail, InFlightAttempt, Settlement } from './outbox.js';
import { pickSender } from './sticky.js';
import { ProviderSendError, type ProviderKind, type SendAccepted } from './types.js';

export type { EngineMessage } from './attempts.js';

/**
 * The failover engine. For one message it walks the org's provider chain:
 *
 *   - transient errors retry the same provider (p-retry, exponential backoff
 *     with jitter), then fail over;
 *   - provider/config errors fail over at once;
 *   - recipient errors stop everything (no other carrier can fix a bad number,
 *     and resending after STOP is a compliance breach);
 *   - ambiguous outcomes (timeout after the request left) are reconciled with
 *     the provider before anything is resent anywhere; with no answer the
 *     message waits for evidence (a receipt or a later lookup) and fails over
 *     once after SMS_AMBIGUOUS_MAX_MS;
 *   - a resend row (a failure receipt after acceptance) walks only the links
 *     after the account that failed.
 *
 * Each attempt runs under a per-(org, account) circuit breaker and a per-attempt
 * timeout; an open (or probing) breaker sends the message straight on to the
 * next provider without waiting. The engine decides; the worker settles the
 * row with what it decided (outbox.ts).
 */

/** How one provider call went. A failure keeps what reconciling it needs. */
export type AttemptResult =
  | { ok: true; attemptId: number; from: string | null; providerMessageId: string; latencyMs: number }
  | { ok: false; attemptId: number; from: string | null; startedAt: number; error: ProviderSendError };

/** What a delivery run decides: the row is sent, to be tried again later, or a dead letter. */
export type DeliveryResult = Extract<Settlement, { status: 'sent' | 'pending' | 'failed' }>;

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
   * After this long without evidence (no receipt, no lookup that answers), an
   * ambiguous attempt is given up on and the message fails over once to the
   * next provider: a late duplicate is judged better than a confirmation that
   * never arrives. The attempt stays receivable: a late receipt for it is
   * still recorded, and a second delivery counted as a duplicate.
   */
  ambiguousMaxMs: number;
  /** The status-callback URL to name on a send, or undefined to name none (PUBLIC_URL unset). */
  callbackUrl?: (kind: ProviderKind, orgId: string, outboxId: string) => string | undefined;
}

/** A lookup may also find a message created a little before the attempt's own clock said it started. */
const LOOKUP_SLACK_MS = 5_000;
/** After an abort, how long an adapter that ignores the signal gets before the attempt counts as timed out. */
const ABORT_ANSWER_MS = 100;

export class SmsEngine {
  private readonly breakers: Breakers;

  constructor(
    private readonly opts: EngineOptions,
    private readonly attempts: AttemptLog,
    private readonly log: Logger,
    health?: SharedHealth,
  ) {
    this.breakers = new Breakers({ threshold: opts.breakerThreshold, cooldownMs: opts.breakerCooldownMs, health }, log);
  }

  /** Exposed for tests and diagnostics: the breaker of one org's provider account. */
  breaker(orgId: string, accountKey: string): CircuitBreakerPolicy {
    return this.breakers.policy(orgId, accountKey);
  }

  /**
   * This process's breaker for one org's account, as the status figures show
   * it: `closed` also when no message of this process has used the account yet.
   */
  breakerHere(orgId: string, accountKey: string): 'closed' | 'open' | 'half-open' | 'isolated' {
    const state = this.breakers.peek(orgId, accountKey);
    if (state === CircuitState.Open) return 'open';
    if (state === CircuitState.HalfOpen) return 'half-open';
    if (state === CircuitState.Isolated) return 'isolated';
    return 'closed';
  }

  /**
   * One delivery run. `failover: false` (the clinic's switch) walks position 0
   * alone. `resendAfter` (a resend row) names the account whose failure receipt
   * this message replaces: only the links after it are tried, and with the
   * switch off there are none. An attempt a previous run left in flight is
   * reconciled against the whole chain: it may be on a link the switch now
   * leaves out.
   */
  async deliver(
    msg: EngineMessage,
    chain: ChainLink[],
    inFlight: InFlightAttempt | null,
    opts: { failover?: boolean; resendAfter?: string | null } = {},
  ): Promise<DeliveryResult> {
    await this.breakers.ready();
    const failover = opts.failover !== false;
    const primaryOnly = chain.filter((l) => l.position === 0);
    let links = failover ? chain : primaryOnly;
    if (opts.resendAfter) {
      links = failover ? linksAfter(chain, opts.resendAfter) : [];
      if (links.length === 0) {
        const message = failover ? 'no other provider in the chain to resend through' : 'failover is switched off for this clinic';
        return { status: 'failed', reason: 'no_failover_provider', message };
      }
    }
    if (inFlight) {
      const settled = await this.reconcile(msg, chain, inFlight);
      if (settled.kind === 'settled') return settled.result;
      // A resend to the same provider under the same idempotency key; once it is
      // accepted, the settle marks the earlier attempt as superseded.
      if (settled.kind === 'same_provider_only') links = settled.links;
      // No evidence within SMS_AMBIGUOUS_MAX_MS: once to the next provider, or,
      // with the switch off, again on the primary alone.
      if (settled.kind === 'fail_over') return failover ? this.walk(msg, settled.links, true) : this.walk(msg, primaryOnly);
    }
    return this.walk(msg, links, Boolean(opts.resendAfter));
  }

  /** Tries each link in order until one accepts, a recipient error stops the walk, or an ambiguous attempt must wait. */
  private async walk(msg: EngineMessage, links: ChainLink[], startFailedOver = false): Promise<DeliveryResult> {
    let failedOver = startFailedOver;
    let last: ProviderSendError | undefined;
    for (const [i, link] of links.entries()) {
      const next = links[i + 1];
      if (this.breakers.admit(msg.orgId, link.provider.accountKey, link.healthKey) === 'skip') {
        await this.skipOpen(msg, link, next);
        failedOver = true;
        continue;
      }
      if (link.pool.length === 0 && !link.provider.capabilities.ownSender) {
        await this.attempts.skip(msg, link, { errorClass: 'provider', code: 'NO_SENDER', message: 'no sender numbers' });
        this.noteFailover(link, next, 'no_sender');
        failedOver = true;
        continue;
      }
      let r: AttemptResult;
      try {
        r = await this.sendWithRetries(msg, link, failedOver);
      } catch (err) {
        if (err instanceof BrokenCircuitError) {
          // Opened (or went half-open elsewhere) between our check and the call.
          await this.skipOpen(msg, link, next);
          failedOver = true;
          continue;
        }
        // Anything else (the audit write failed, the lease was lost) is ours, not the provider's.
        throw err;
      }
      if (r.ok) {
        return {
          status: 'sent',
          provider: link.kind,
          providerMessageId: r.providerMessageId,
          from: r.from,
          failedOver,
          reconciled: false,
          attempt: { id: r.attemptId, outcome: 'accepted', providerMessageId: r.providerMessageId, latencyMs: r.latencyMs },
        };
      }
      const e = r.error;
      last = e;
      if (e.errorClass === 'recipient') {
        return { status: 'failed', reason: e.optOut ? 'opted_out' : 'invalid_recipient', ...detail(e, link) };
      }
      if (e.errorClass === 'ambiguous') {
        const found = await this.lookup(msg, link, r.from, new Date(r.startedAt - LOOKUP_SLACK_MS));
        if (found === 'unknown') {
          // The provider may have it and cannot tell us: resending anywhere risks
          // a duplicate. The attempt stays in flight and the message waits for
          // evidence (its receipt, or a later lookup) without using up its runs.
          return {
            status: 'pending',
            reason: 'ambiguous_unreconciled',
            ...detail(e, link),
            wait: { from: new Date(r.startedAt).toISOString() },
          };
        }
        if (found) {
          return {
            status: 'sent',
            provider: link.kind,
            providerMessageId: found.providerMessageId,
            from: r.from,
            failedOver,
            reconciled: true,
            attempt: {
              id: r.attemptId,
              outcome: 'reconciled',
              providerMessageId: found.providerMessageId,
              errorClass: 'ambiguous',
              code: e.code,
              message: 'found at provider after timeout',
            },
          };
        }
        await this.attempts.close(msg, r.attemptId, {
          outcome: 'failed',
          errorClass: 'ambiguous',
          code: e.code,
          message: 'not found at provider after timeout',
        });
      }
      this.noteFailover(link, next, e.errorClass);
      failedOver = true;
    }
    return last
      ? { status: 'pending', reason: `all_providers_failed:${last.errorClass}`, ...detail(last) }
      : { status: 'pending', reason: 'all_providers_unavailable', message: 'every provider was skipped (breaker open or no senders)' };
  }

  private async skipOpen(msg: EngineMessage, link: ChainLink, next: ChainLink | undefined) {
    await this.attempts.skip(msg, link, { errorClass: 'breaker_open', code: 'BREAKER_OPEN', message: 'circuit open' });
    this.noteFailover(link, next, 'breaker_open');
  }

  private noteFailover(from: ChainLink, to: ChainLink | undefined, cause: string) {
    if (to) smsFailovers.inc({ from: from.kind, to: to.kind, cause });
  }

  /** One link: attempts through its breaker, retried by p-retry while they fail transiently. */
  private async sendWithRetries(msg: EngineMessage, link: ChainLink, failedOver: boolean): Promise<AttemptResult> {
    const preferred = pickSender(msg.to, link.pool, msg.orgId);
    let last: AttemptResult | undefined;
    try {
      return await pRetry(
        async () => {
          last = await this.breakers.run(msg.orgId, link.provider.accountKey, () => this.attempt(msg, link, preferred, failedOver));
          // p-retry retries what it is thrown; only a transient failure is worth another try here.
          if (!last.ok && last.error.errorClass === 'transient') throw last.error;
          return last;
        },
        {
          retries: this.opts.retriesPerProvider,
          minTimeout: this.opts.retryMinMs,
          maxTimeout: this.opts.retryMaxMs,
          factor: 2,
          randomize: true,
          shouldRetry: ({ error }) => error instanceof ProviderSendError && error.errorClass === 'transient',
        },
      );
    } catch (err) {
      // Retries used up: the last attempt's own result.
      if (last && !last.ok && err === last.error) return last;
      throw err;
    }
  }

  /** One provider call: audit row first, then the call under a hard timeout. */
  private async attempt(msg: EngineMessage, link: ChainLink, preferred: string | null, failedOver: boolean): Promise<AttemptResult> {
    const { attemptId, from } = await this.attempts.open(msg, link, preferred, failedOver);
    const startedAt = Date.now();
    const started = performance.now();
    const abort = new AbortController();
    const statusCallbackUrl = this.opts.callbackUrl?.(link.kind, msg.orgId, msg.id);
    const sending = link.provider.send({
      to: msg.to,
      from: from ?? preferred ?? '',
      body: msg.body,
      idempotencyKey: `sms-${msg.id}`,
      signal: abort.signal,
      messageId: msg.id,
      orgId: msg.orgId,
      ...(msg.run !== undefined ? { attempt: msg.run } : {}),
      ...(statusCallbackUrl ? { statusCallbackUrl } : {}),
    });
    let accepted: SendAccepted;
    try {
      try {
        accepted = await pTimeout(sending, { milliseconds: link.attemptTimeoutMs ?? this.opts.attemptTimeoutMs });
      } catch (raw) {
        accepted = await this.lateOrThrow(raw, sending, abort, link);
      }
    } catch (raw) {
      const error = raw instanceof ProviderSendError ? raw : link.provider.classify(raw);
      const latencyMs = Math.round(performance.now() - started);
      smsAttempts.inc({ provider: link.kind, outcome: 'failed', error_class: error.errorClass });
      smsAttemptDuration.observe({ provider: link.kind }, latencyMs / 1000);
      // An ambiguous attempt stays in flight until reconciled: a crash now must
      // leave the next worker a reason to look before it resends.
      await this.attempts.close(msg, attemptId, {
        outcome: error.errorClass === 'ambiguous' ? 'in_flight' : 'failed',
        errorClass: error.errorClass,
        code: error.code,
        message: error.message,
        latencyMs,
        optOut: error.optOut,
      });
      return { ok: false, attemptId, from, startedAt, error };
    }
    const latencyMs = Math.round(performance.now() - started);
    smsAttempts.inc({ provider: link.kind, outcome: 'accepted', error_class: 'none' });
    smsAttemptDuration.observe({ provider: link.kind }, latencyMs / 1000);
    // Recorded as accepted by the settle, in the same statement as the row's sent status.
    return { ok: true, attemptId, from, providerMessageId: accepted.providerMessageId, latencyMs };
  }

  /**
   * Called when the send failed or our timeout fired. Returns a late acceptance,
   * or throws the ProviderSendError that best describes the attempt.
   */
  private async lateOrThrow(raw: unknown, sending: Promise<SendAccepted>, abort: AbortController, link: ChainLink): Promise<SendAccepted> {
    if (!(raw instanceof TimeoutError)) throw raw instanceof ProviderSendError ? raw : link.provider.classify(raw);
    abort.abort(raw);
    const timedOut = new ProviderSendError({
      message: `no answer within ${link.attemptTimeoutMs ?? this.opts.attemptTimeoutMs} ms`,
      errorClass: 'ambiguous',
      provider: link.kind,
      code: 'TIMEOUT',
      cause: raw,
    });
    // Adapters answer an abort at once (Telnyx cancels its fetch; Twilio hands
    // back the request it could not cancel as lateAnswer). One that ignores the
    // signal gets a moment, then counts as timed out.
    const answer = await pTimeout(
      sending.then(
        (ok): SendAccepted | ProviderSendError => ok,
        (err: unknown) => (err instanceof ProviderSendError ? err : link.provider.classify(err)),
      ),
      { milliseconds: ABORT_ANSWER_MS, fallback: () => timedOut },
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
    | { kind: 'settled'; result: DeliveryResult }
    | { kind: 'not_found' }
    | { kind: 'same_provider_only'; links: ChainLink[] }
    | { kind: 'fail_over'; links: ChainLink[] }
  > {
    const link = chain.find((l) => l.provider.accountKey === prior.accountKey);
    const started = new Date(prior.startedAt).getTime();
    const found = link ? await this.lookup(msg, link, prior.from, new Date(started - LOOKUP_SLACK_MS)) : 'unknown';
    if (link && found && found !== 'unknown') {
      return {
        kind: 'settled',
        result: {
          status: 'sent',
          provider: link.kind,
          providerMessageId: found.providerMessageId,
          from: prior.from,
          failedOver: false,
          reconciled: true,
          attempt: {
            id: prior.attemptId,
            outcome: 'reconciled',
            providerMessageId: found.providerMessageId,
            message: 'found at provider on reconcile',
          },
        },
      };
    }
    if (found === null) {
      await this.attempts.close(msg, prior.attemptId, {
        outcome: 'failed',
        errorClass: 'ambiguous',
        code: 'NOT_FOUND',
        message: 'not found at provider on reconcile',
      });
      return { kind: 'not_found' };
    }
    // The wait counts from the first ambiguous attempt of this message: a
    // provider resent under its idempotency key must not restart it.
    const since = Math.min(started, prior.waitingSince ? new Date(prior.waitingSince).getTime() : started);
    if (Date.now() - since >= this.opts.ambiguousMaxMs) {
      const next = linksAfter(chain, prior.accountKey);
      if (next.length > 0) {
        // Still receivable: a late receipt for it is recorded, and counted as a
        // duplicate if both texts arrive. A receipt that came during this very
        // run wins: the message was sent after all.
        const given = await this.attempts.giveUp(msg, prior.attemptId, 'no receipt or lookup within SMS_AMBIGUOUS_MAX_MS; failed over');
        if (!given.gaveUp) {
          return {
            kind: 'settled',
            result: {
              status: 'sent',
              provider: link?.kind ?? (prior.provider as ProviderKind),
              providerMessageId: given.providerMessageId ?? null,
              from: prior.from,
              failedOver: false,
              reconciled: true,
            },
          };
        }
        smsAsyncFailovers.inc({ from: prior.provider, cause: 'ambiguous_timeout' });
        this.log.warn(
          { outboxId: msg.id, provider: prior.provider, waitedMs: Date.now() - since },
          'sms ambiguous attempt not settled in time; failing over',
        );
        return { kind: 'fail_over', links: next };
      }
      // Nothing after it in the chain: resending on a provider that may have it
      // (and cannot say) would risk the duplicate for nothing. Keep waiting.
    }
    // The provider cannot tell us. A provider that honours idempotency keys
    // (Telnyx) can be asked again with the same key; anything else waits.
    if (link?.provider.capabilities.idempotentSend) return { kind: 'same_provider_only', links: [link] };
    return {
      kind: 'settled',
      result: {
        status: 'pending',
        reason: 'ambiguous_unreconciled',
        errorClass: 'ambiguous',
        code: 'UNRECONCILED',
        provider: prior.provider,
        message: 'previous attempt may have been accepted; waiting for its receipt or a lookup',
        wait: { from: new Date(since).toISOString() },
      },
    };
  }
}

/** The links after the one with `accountKey`; every other link when it is no longer in the chain. */
export function linksAfter(chain: ChainLink[], accountKey: string): ChainLink[] {
  const i = chain.findIndex((l) => l.provider.accountKey === accountKey);
  return i < 0 ? chain.filter((l) => l.provider.accountKey !== accountKey) : chain.slice(i + 1);
}

function detail(e: ProviderSendError, link?: ChainLink): Omit<FailureDetail, 'reason'> {
  return { errorClass: e.errorClass, code: e.code, provider: link?.kind ?? e.provider, message: e.message };
}
