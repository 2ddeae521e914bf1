import { describe, expect, it } from 'vitest';
import { Batcher } from '../src/sms/batch.js';

describe('Batcher (group commit of the outbox statements)', () => {
  it('sends the calls made before the event loop turns as one batch, each caller getting its own result', async () => {
    const batches: number[][] = [];
    const b = new Batcher<number, number>(
      async (xs) => {
        batches.push(xs);
        return xs.map((x) => x * 10);
      },
      { maxBatch: 100, maxInFlight: 2 },
    );
    const out = await Promise.all([1, 2, 3].map((x) => b.call(x)));
    expect(out).toEqual([10, 20, 30]);
    expect(batches).toEqual([[1, 2, 3]]);
  });

  it('queues calls while maxInFlight batches run, then sends them together; never more than maxBatch at once', async () => {
    const batches: number[][] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const b = new Batcher<number, number>(
      async (xs) => {
        batches.push(xs);
        if (batches.length === 1) await gate;
        return xs;
      },
      { maxBatch: 2, maxInFlight: 1 },
    );
    const first = b.call(1);
    await new Promise((r) => setImmediate(r));
    const rest = [2, 3, 4].map((x) => b.call(x));
    await new Promise((r) => setTimeout(r, 20));
    expect(batches).toEqual([[1]]);
    release();
    expect(await Promise.all([first, ...rest])).toEqual([1, 2, 3, 4]);
    expect(batches).toEqual([[1], [2, 3], [4]]);
  });

  it('when a batch fails, runs its items one by one, so one bad item fails alone', async () => {
    const batches: number[][] = [];
    const b = new Batcher<number, number>(
      async (xs) => {
        batches.push(xs);
        if (xs.includes(2)) throw new Error('bad item');
        return xs;
      },
      { maxBatch: 10, maxInFlight: 1 },
    );
    const out = await Promise.allSettled([1, 2, 3].map((x) => b.call(x)));
    expect(out.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((out[1] as PromiseRejectedResult).reason).toMatchObject({ message: 'bad item' });
    expect(batches).toEqual([[1, 2, 3], [1], [2], [3]]);
  });

  it('takes an answer without one result per item for a failed batch, and goes again one by one', async () => {
    const batches: number[][] = [];
    const b = new Batcher<number, number>(
      async (xs) => {
        batches.push(xs);
        return [xs[0]! * 10];
      },
      { maxBatch: 10, maxInFlight: 1 },
    );
    expect(await Promise.all([b.call(1), b.call(2)])).toEqual([10, 20]);
    expect(batches).toEqual([[1, 2], [1], [2]]);
  });
});
