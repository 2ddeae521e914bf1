/**
 * Group commit for the outbox's statements. Messages are processed one by one
 * in the code (easier to follow), but the statements they need go to the
 * database in batches: every call made before the event loop next turns goes
 * out as one statement, and calls made while `maxInFlight` statements are
 * already running wait for one of them and then go out together.
 *
 * So a claimed batch of 100 rows is gated in one statement and has its first
 * attempts opened in one more; settles, which arrive as providers answer, are
 * committed a few at a time. A single booking (the fast path) waits for
 * nothing: its statement goes out on the next turn of the event loop.
 */
export interface BatcherOptions {
  /** Most items in one statement. */
  maxBatch: number;
  /** Statements of this kind running at once; later calls queue behind them. */
  maxInFlight: number;
}

interface Pending<I, O> {
  item: I;
  resolve: (o: O) => void;
  reject: (err: unknown) => void;
}

export class Batcher<I, O> {
  private queue: Array<Pending<I, O>> = [];
  private running = 0;
  private scheduled = false;

  /**
   * `run` gets the items of one batch and answers with one result per item, in
   * the same order.
   */
  constructor(
    private readonly run: (items: I[]) => Promise<O[]>,
    private readonly opts: BatcherOptions,
  ) {}

  call(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.flush();
        });
      }
    });
  }

  private flush(): void {
    while (this.running < this.opts.maxInFlight && this.queue.length > 0) {
      const batch = this.queue.splice(0, this.opts.maxBatch);
      this.running += 1;
      void this.execute(batch).finally(() => {
        this.running -= 1;
        this.flush();
      });
    }
  }

  private async execute(batch: Array<Pending<I, O>>): Promise<void> {
    try {
      const out = await this.run(batch.map((p) => p.item));
      if (out.length !== batch.length) throw new Error(`batch answered ${out.length} results for ${batch.length} items`);
      batch.forEach((p, i) => p.resolve(out[i] as O));
    } catch (err) {
      if (batch.length === 1) {
        batch[0]!.reject(err);
        return;
      }
      // One bad item must not fail its neighbours: each statement is one
      // transaction, so nothing of the failed batch was kept; go again one by one.
      await Promise.all(
        batch.map(async (p) => {
          try {
            const [o] = await this.run([p.item]);
            p.resolve(o as O);
          } catch (e) {
            p.reject(e);
          }
        }),
      );
    }
  }
}
