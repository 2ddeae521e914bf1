import { createHash } from 'node:crypto';
import { describe, it, expect } from 'vitest';
import { pickSender, rankSenders } from '../src/sms/sticky.js';

const POOL = ['+15550000001', '+15550000002', '+15550000003', '+15550000004'] as const;
const FIFTH = '+15550000005';
const RECIPIENTS = Array.from({ length: 1000 }, (_, i) => `+1617${String(5_000_000 + i * 37).padStart(7, '0')}`);

function assign(pool: readonly string[], salt?: string): Map<string, string | null> {
  return new Map(RECIPIENTS.map((r) => [r, pickSender(r, pool, salt)]));
}

describe('pickSender', () => {
  it('returns null for an empty pool', () => {
    expect(pickSender('+16175550100', [])).toBeNull();
    expect(rankSenders('+16175550100', [])).toEqual([]);
  });

  it('returns the only number of a single-number pool', () => {
    expect(pickSender('+16175550100', ['+15550000009'])).toBe('+15550000009');
  });

  it('is deterministic and independent of pool order', () => {
    const reversed = [...POOL].reverse();
    for (const r of RECIPIENTS.slice(0, 200)) {
      const first = pickSender(r, POOL);
      expect(pickSender(r, POOL)).toBe(first);
      expect(pickSender(r, reversed)).toBe(first);
    }
  });

  it('scores with sha256(salt|recipient|number), highest first 8 bytes winning', () => {
    const recipient = '+16175550123';
    const salt = 'org-1';
    const expected = [...POOL].sort((a, b) => {
      const sa = createHash('sha256').update(`${salt}|${recipient}|${a}`).digest().readBigUInt64BE(0);
      const sb = createHash('sha256').update(`${salt}|${recipient}|${b}`).digest().readBigUInt64BE(0);
      return sa > sb ? -1 : 1;
    });
    expect(rankSenders(recipient, POOL, salt)).toEqual(expected);
    expect(pickSender(recipient, POOL, salt)).toBe(expected[0]);
  });

  it('ignores duplicate numbers in the pool', () => {
    const withDupes = [POOL[0], POOL[1], POOL[1], POOL[2], POOL[0], POOL[3], POOL[3]];
    for (const r of RECIPIENTS.slice(0, 200)) {
      expect(pickSender(r, withDupes)).toBe(pickSender(r, POOL));
    }
    expect(rankSenders(RECIPIENTS[0] ?? '', withDupes)).toHaveLength(4);
  });

  it('spreads 1000 recipients roughly evenly over 4 numbers', () => {
    const counts = new Map<string, number>();
    for (const sender of assign(POOL).values()) {
      expect(sender).not.toBeNull();
      counts.set(sender ?? '', (counts.get(sender ?? '') ?? 0) + 1);
    }
    expect([...counts.keys()].sort()).toEqual([...POOL].sort());
    for (const n of counts.values()) {
      expect(n).toBeGreaterThanOrEqual(150);
      expect(n).toBeLessThanOrEqual(350);
    }
  });

  it('adding a fifth number only moves recipients onto it, about a fifth of them', () => {
    const before = assign(POOL);
    const after = assign([...POOL, FIFTH]);
    let moved = 0;
    for (const r of RECIPIENTS) {
      if (after.get(r) !== before.get(r)) {
        moved += 1;
        expect(after.get(r)).toBe(FIFTH);
      }
    }
    expect(moved).toBeGreaterThanOrEqual(140);
    expect(moved).toBeLessThanOrEqual(260);
  });

  it('removing a number only moves the recipients that were on it', () => {
    const removed = POOL[2];
    const before = assign(POOL);
    const after = assign(POOL.filter((n) => n !== removed));
    let orphans = 0;
    for (const r of RECIPIENTS) {
      if (before.get(r) === removed) {
        orphans += 1;
        expect(after.get(r)).not.toBe(removed);
        expect(after.get(r)).not.toBeNull();
      } else {
        expect(after.get(r)).toBe(before.get(r));
      }
    }
    expect(orphans).toBeGreaterThan(0);
  });

  it('a removed number hands its recipients to their second choice', () => {
    for (const r of RECIPIENTS.slice(0, 200)) {
      const [top, second] = rankSenders(r, POOL);
      expect(
        pickSender(
          r,
          POOL.filter((n) => n !== top),
        ),
      ).toBe(second);
    }
  });

  it('salt changes assignments, so pools sharing numbers are not correlated', () => {
    const a = assign(POOL, 'org-a');
    const b = assign(POOL, 'org-b');
    const same = RECIPIENTS.filter((r) => a.get(r) === b.get(r)).length;
    // Independent assignments agree about 1/4 of the time.
    expect(same).toBeGreaterThan(150);
    expect(same).toBeLessThan(350);
    expect(assign(POOL, '')).toEqual(assign(POOL));
  });
});
