/**
 * Sticky sender selection: a patient should keep hearing from the same clinic
 * number (replies thread together, STOP applies to the number they saw), even
 * as numbers are added to or retired from the pool.
 *
 * Rendezvous (highest-random-weight) hashing gives that without any shared
 * state: every (recipient, number) pair gets an independent pseudo-random
 * score and the recipient goes to the highest. Adding a number can only win
 * recipients for the new number; removing one only re-homes the recipients it
 * was winning. The engine persists the choice; this module only computes it.
 */
import { createHash } from 'node:crypto';

function score(salt: string, recipient: string, sender: string): bigint {
  return createHash('sha256').update(`${salt}|${recipient}|${sender}`, 'utf8').digest().readBigUInt64BE(0);
}

/**
 * Pool numbers ordered from most to least preferred for this recipient, without
 * duplicates. The head is `pickSender`'s answer; the rest is a stable failover
 * order, so when the preferred number cannot send the recipient still lands on
 * the same second choice every time.
 */
export function rankSenders(recipient: string, pool: readonly string[], salt = ''): string[] {
  return [...new Set(pool)]
    .map((sender) => ({ sender, score: score(salt, recipient, sender) }))
    .sort((a, b) => {
      if (a.score !== b.score) return a.score > b.score ? -1 : 1;
      // Equal 64-bit scores are practically impossible; ordering by the number
      // keeps the result independent of pool order even then.
      return a.sender < b.sender ? -1 : a.sender > b.sender ? 1 : 0;
    })
    .map((entry) => entry.sender);
}

/**
 * Deterministically picks the sender for `recipient` from `pool`, or null when
 * the pool is empty. `salt` (e.g. the org id) decorrelates assignments between
 * pools that share numbers. Inputs are compared verbatim, so callers should
 * pass normalised E.164 strings.
 */
export function pickSender(recipient: string, pool: readonly string[], salt = ''): string | null {
  let best: string | null = null;
  let bestScore = -1n;
  for (const sender of new Set(pool)) {
    const s = score(salt, recipient, sender);
    if (s > bestScore || (s === bestScore && best !== null && sender < best)) {
      best = sender;
      bestScore = s;
    }
  }
  return best;
}
