/**
 * Delivery receipts as the fake providers send them: after a message that
 * named a callback URL is accepted, its status moves on at the planned times
 * (which a lookup sees), and each step is POSTed to that URL, signed the way
 * the provider signs, unless the plan loses it. Knobs: delay, order,
 * duplicates, lost receipts, failure codes.
 */

/** One step of a message's life: a status, with the provider's error code when it failed. */
export interface ReceiptStep {
  status: string;
  code?: string | number;
}

export interface ReceiptPlan {
  /** The statuses reported, in order. */
  steps: Array<string | ReceiptStep>;
  /** Before the first step, ms. */
  delayMs?: number;
  /** Between steps, ms. */
  gapMs?: number;
  /** Each callback is delivered this many extra times (a provider retry). */
  duplicates?: number;
  /** Callbacks are delivered in reverse order (the statuses still move in order). */
  reorder?: boolean;
  /** Callbacks are never delivered (the statuses still move: a lookup sees them). */
  lose?: boolean;
}

export interface CallbackResult {
  url: string;
  /** The status this callback reported. */
  status: string;
  /** Our server's answer; 0 when it could not be reached. */
  answer: number;
  messageId: string;
  at: number;
}

export const DELIVERED: ReceiptPlan = { steps: ['sent', 'delivered'], delayMs: 5, gapMs: 25 };

export const step = (s: string | ReceiptStep): ReceiptStep => (typeof s === 'string' ? { status: s } : s);

/**
 * Plays plans: moves each message's status at the planned times (setStatus)
 * and delivers callbacks (deliver), and keeps every timer so close() leaves
 * nothing behind.
 */
export class ReceiptScheduler {
  private timers = new Set<NodeJS.Timeout>();
  private closed = false;
  private plan: ReceiptPlan = DELIVERED;
  private readonly planFor = new Map<string, ReceiptPlan>();
  readonly results: CallbackResult[] = [];
  private inFlight = new Set<Promise<void>>();

  /** The plan for every message from now on, or for messages to one recipient. */
  setPlan(plan: ReceiptPlan, to?: string): void {
    if (to) this.planFor.set(to, plan);
    else this.plan = plan;
  }

  resetPlans(): void {
    this.plan = DELIVERED;
    this.planFor.clear();
  }

  /**
   * Schedules the plan for one accepted message. `apply` moves its status;
   * `deliver` POSTs one callback and answers our server's status.
   */
  schedule(
    m: { id: string; to: string },
    url: string | null,
    apply: (s: ReceiptStep) => void,
    deliver: (s: ReceiptStep, attempt: number) => Promise<number>,
  ): void {
    // A message sent without a callback URL keeps its first status: the
    // suites that never named one were written against that.
    if (this.closed || !url) return;
    const plan = this.planFor.get(m.to) ?? this.plan;
    const steps = plan.steps.map(step);
    const delay = plan.delayMs ?? 0;
    const gap = plan.gapMs ?? 0;
    steps.forEach((s, i) => this.later(delay + i * gap, () => apply(s)));
    if (plan.lose) return;
    const order = plan.reorder ? [...steps].reverse() : steps;
    const last = delay + Math.max(0, steps.length - 1) * gap;
    order.forEach((s, i) => {
      // Reordered callbacks all leave once the last status is reached, latest first.
      const at = plan.reorder ? last + i * Math.max(gap, 20) : delay + i * gap;
      for (let d = 0; d <= (plan.duplicates ?? 0); d++) {
        this.later(at + d, () => {
          const p = deliver(s, d + 1)
            .catch(() => 0)
            .then((answer) => {
              this.results.push({ url, status: s.status, answer, messageId: m.id, at: Date.now() });
            });
          this.inFlight.add(p);
          void p.finally(() => this.inFlight.delete(p));
        });
      }
    });
  }

  later(ms: number, fn: () => void): void {
    if (this.closed) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  /** Waits for every callback already on its way. */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.inFlight]);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await this.settle();
  }
}

/** POSTs a webhook the way a provider does; answers the status and the body. */
export async function postWebhook(
  url: string,
  headers: Record<string, string>,
  body: string,
): Promise<{ status: number; body: string; contentType: string }> {
  const res = await fetch(url, { method: 'POST', headers, body, signal: AbortSignal.timeout(10_000) });
  return { status: res.status, body: await res.text(), contentType: res.headers.get('content-type') ?? '' };
}
