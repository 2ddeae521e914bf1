import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { LRUCache } from 'lru-cache';
import PQueue from 'p-queue';
import type { Sql } from 'postgres';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import { secretChecks, tokenThrottled } from '../metrics.js';
import { findClient, hashSecret, verifySecret, type ClientRecord } from './clients.js';

/**
 * Client authentication for the token endpoint, built so that guessing cannot
 * stall it (the voice platform fetches a token mid-call):
 *
 * - A client that authenticated before is recognised by an in-memory HMAC of
 *   its secret and skips scrypt, so a guessing storm cannot queue it behind
 *   other requests' scrypt work. The database is still read every time:
 *   revocation and deactivation take effect at once.
 * - Failures are throttled per source address and per client id. A request
 *   reserves a point on arrival (so a burst of parallel guesses is bounded
 *   before any of them finishes) and gets it back on success.
 * - Unknown client ids cost no scrypt. Every failure is answered after the
 *   same delay as a real scrypt check, so timing tells nothing about which ids
 *   exist.
 * - scrypt checks run at most two at a time, leaving libuv's other threads to
 *   everything else that uses them (the JWT signature is WebCrypto, which runs
 *   there too). A request from an address and for a client id with no failures
 *   in the window goes ahead of those that have them, so a first-time client
 *   waits for at most the checks already running, not for a storm's queue;
 *   when too many suspect checks are waiting, the next is refused at once.
 *
 * The counters are per process: N processes give a guesser N times the budget,
 * which still bounds the work per process.
 */

/** Suspect checks (from an address or for an id with failures) allowed to wait; beyond, refused at once. */
const SUSPECT_QUEUE = 32;

export type ClientAuthResult =
  | { ok: true; client: ClientRecord }
  | { ok: false; reason: 'unknown_client' | 'bad_secret' | 'revoked' | 'org_inactive' }
  | { ok: false; reason: 'throttled'; retryAfterSeconds: number };

export interface ClientAuthOptions {
  /** How long a throttled request is held before its 429 (jittered ±20 %). */
  throttlePauseMs: number;
  /** Failed attempts one source address may make per window. */
  failuresPerSource: number;
  /** Failed attempts against one client id per window. */
  failuresPerClient: number;
  windowSeconds: number;
  /** scrypt's N for new client secrets: the calibration hash uses it too, so padding matches real checks. */
  scryptN?: number;
}

export class ClientAuthenticator {
  private readonly pepper = randomBytes(32);
  /** clientId → HMAC(pepper, secret) and the stored hash it was checked against. */
  private readonly known = new LRUCache<string, { digest: Buffer; hash: string }>({ max: 10_000, ttl: 3_600_000 });
  private readonly bySource: RateLimiterMemory;
  private readonly byClient: RateLimiterMemory;
  /** Running estimate of one scrypt check, for padding failures to the same duration. */
  private scryptMs = 50;
  private readonly checks = new PQueue({ concurrency: 2 });
  private readonly calibrated: Promise<void>;
  private readonly throttlePauseMs: number;
  private readonly scryptN: number | undefined;

  constructor(
    private readonly sql: Sql,
    opts: ClientAuthOptions,
  ) {
    this.throttlePauseMs = opts.throttlePauseMs;
    this.scryptN = opts.scryptN;
    this.bySource = new RateLimiterMemory({ keyPrefix: 'src', points: opts.failuresPerSource, duration: opts.windowSeconds });
    this.byClient = new RateLimiterMemory({ keyPrefix: 'cli', points: opts.failuresPerClient, duration: opts.windowSeconds });
    this.calibrated = this.calibrate();
  }

  async authenticate(clientId: string, secret: string, source: string): Promise<ClientAuthResult> {
    const digest = createHmac('sha256', this.pepper).update(secret).digest();
    const remembered = this.known.get(clientId);
    if (remembered && timingSafeEqual(remembered.digest, digest)) {
      const client = await findClient(this.sql, clientId);
      if (client && client.secretHash === remembered.hash) return this.verdict(client);
      this.known.delete(clientId);
    }

    const started = performance.now();
    const reserved = await this.reserve(source, clientId);
    if ('ok' in reserved) return reserved;
    const { clean } = reserved;
    if (!clean && this.checks.size >= SUSPECT_QUEUE) {
      await Promise.all([this.bySource.reward(source, 1), this.byClient.reward(clientId, 1)]);
      tokenThrottled.inc({ by: 'busy' });
      return this.throttled(null);
    }

    const client = await findClient(this.sql, clientId);
    let ok = false;
    if (client) {
      const cachedMismatch = remembered !== undefined && remembered.hash === client.secretHash;
      if (!cachedMismatch) {
        ok = await this.checks.add(
          async () => {
            const t = performance.now();
            secretChecks.inc();
            const verified = await verifySecret(secret, client.secretHash);
            this.scryptMs = 0.8 * this.scryptMs + 0.2 * (performance.now() - t);
            return verified;
          },
          { priority: clean ? 1 : 0 },
        );
      }
    }
    if (!client || !ok) {
      await this.pad(started);
      return { ok: false, reason: client ? 'bad_secret' : 'unknown_client' };
    }
    await Promise.all([this.bySource.reward(source, 1), this.byClient.reward(clientId, 1)]);
    this.known.set(clientId, { digest, hash: client.secretHash });
    return this.verdict(client);
  }

  /** Forget a client's remembered secret (revoked or re-pinned in this process). */
  forget(clientId: string): void {
    this.known.delete(clientId);
  }

  private verdict(client: ClientRecord): ClientAuthResult {
    if (client.revoked) return { ok: false, reason: 'revoked' };
    if (!client.orgActive) return { ok: false, reason: 'org_inactive' };
    return { ok: true, client };
  }

  /**
   * Takes one point from both budgets; a spent budget refuses without any
   * database or scrypt work. `clean`: this is the only attempt from the
   * address and for the id in the window (no failure, nothing else in flight).
   */
  private async reserve(source: string, clientId: string): Promise<ClientAuthResult | { clean: boolean }> {
    let src;
    try {
      src = await this.bySource.consume(source, 1);
    } catch (rej) {
      tokenThrottled.inc({ by: 'source' });
      return this.throttled(rej);
    }
    try {
      const cli = await this.byClient.consume(clientId, 1);
      return { clean: src.consumedPoints === 1 && cli.consumedPoints === 1 };
    } catch (rej) {
      tokenThrottled.inc({ by: 'client' });
      await this.bySource.reward(source, 1);
      return this.throttled(rej);
    }
  }

  /**
   * A throttled request is answered after a pause: a guesser that keeps N
   * requests in flight then gets N answers a second at most, so the cheap
   * refusals cannot themselves crowd the event loop.
   */
  private async throttled(rejection: unknown): Promise<ClientAuthResult> {
    await sleep(this.throttlePauseMs * (0.8 + Math.random() * 0.4));
    return { ok: false, reason: 'throttled', retryAfterSeconds: retryAfter(rejection) };
  }

  private async pad(started: number): Promise<void> {
    await this.calibrated;
    const wait = this.scryptMs * (0.9 + Math.random() * 0.2) - (performance.now() - started);
    if (wait > 0) await sleep(wait);
  }

  private async calibrate(): Promise<void> {
    const stored = await hashSecret(randomBytes(24).toString('base64url'), this.scryptN);
    const t = performance.now();
    await verifySecret('calibration', stored);
    this.scryptMs = performance.now() - t;
  }
}

function retryAfter(rejection: unknown): number {
  const ms = (rejection as { msBeforeNext?: number } | null)?.msBeforeNext ?? 1000;
  return Math.max(1, Math.ceil(ms / 1000));
}
