/**
 * The claim statement against a backlog, in real PostgreSQL: it walks the
 * index of waiting rows instead of reading the whole outbox (with thousands of
 * reminders due at once a sequential scan made every claim cost more as the
 * backlog grew), and a lease that ran out is still taken over.
 */
import postgres, { type Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WORKER_ROLE, urlForRole } from '../src/db/roles.js';
import { Outbox } from '../src/sms/outbox.js';
import { WORKER_DB_PASSWORD, createOrg, startHarness, type Harness } from './helpers/harness.js';
import { enqueue } from './helpers/sms.js';

const BACKLOG = 3000;
const opts = { leaseMs: 30_000, retryBaseMs: 1000, retryMaxMs: 300_000, maxAttempts: 6, defaultRateLimit: 1000 };

let h: Harness;
let worker: Sql;
const statements: Array<{ query: string; params: unknown[] }> = [];

beforeAll(async () => {
  h = await startHarness();
  // The worker role, as the engine connects; every statement it sends is kept so that its plan can be read.
  worker = postgres(urlForRole(h.ownerUrl, WORKER_ROLE, WORKER_DB_PASSWORD), {
    max: 1,
    onnotice: () => {},
    debug: (_conn, query, params) => statements.push({ query, params: params as unknown[] }),
  });
  const org = await createOrg(h);
  const phones = Array.from({ length: BACKLOG }, (_, i) => `+1415555${String(i % 10_000).padStart(4, '0')}`);
  await enqueue(h, org, phones);
  await h.owner`ANALYZE sms_outbox`;
});
afterAll(async () => {
  await worker?.end();
  await h?.close();
});

type PlanNode = { 'Node Type': string; 'Relation Name'?: string; 'Index Name'?: string; Plans?: PlanNode[] };
const nodesOf = (n: PlanNode): PlanNode[] => [n, ...(n.Plans ?? []).flatMap(nodesOf)];

describe('claiming due rows from a backlog', () => {
  it('reads the index of waiting rows, not the whole outbox', async () => {
    const outbox = new Outbox(worker, 'claim-test-a', opts);
    statements.length = 0;
    const rows = await outbox.claimDue(100);
    expect(rows).toHaveLength(100);
    const claim = statements.find((s) => /FOR UPDATE SKIP LOCKED/.test(s.query));
    expect(claim, 'the claim statement was sent').toBeDefined();

    const [explained] = await worker.unsafe<Array<{ 'QUERY PLAN': Array<{ Plan: PlanNode }> }>>(
      `EXPLAIN (FORMAT JSON) ${claim!.query}`,
      claim!.params as never[],
    );
    const nodes = nodesOf(explained!['QUERY PLAN'][0]!.Plan);
    const onOutbox = nodes.filter((n) => n['Relation Name'] === 'sms_outbox');
    expect(onOutbox.map((n) => n['Node Type'])).not.toContain('Seq Scan');
    expect(onOutbox.some((n) => n['Index Name'] === 'sms_outbox_due_org_idx')).toBe(true);

    // The invariant the claim's condition relies on: a leased row is never due later than its claim.
    const [late] = await h.owner<{ n: number }[]>`
      SELECT count(*)::int AS n FROM sms_outbox WHERE status = 'sending' AND next_attempt_at > now()`;
    expect(late!.n).toBe(0);
  });

  it('takes over a lease that ran out, and only then', async () => {
    const short = new Outbox(worker, 'claim-test-short', { ...opts, leaseMs: 200 });
    const other = new Outbox(worker, 'claim-test-other', opts);
    const held = await short.claimDue(5);
    expect(held).toHaveLength(5);
    const ids = new Set(held.map((r) => r.id));

    // While the lease runs, another worker gets other rows.
    const meanwhile = await other.claimDue(BACKLOG);
    expect(meanwhile.some((r) => ids.has(r.id))).toBe(false);

    await new Promise((r) => setTimeout(r, 300));
    const taken = await other.claimDue(BACKLOG);
    expect(new Set(taken.map((r) => r.id))).toEqual(ids);
    const owners = await h.owner<{ locked_by: string }[]>`SELECT DISTINCT locked_by FROM sms_outbox WHERE id = ANY(${[...ids]}::uuid[])`;
    expect(owners.map((r) => r.locked_by)).toEqual(['claim-test-other']);
  });
});
