/**
 * The delivery states of src/sms/delivery.ts against the database: every
 * (state, receipt) pair is applied by sms_apply_receipt, and the attempt moves
 * exactly when the table lists the move. docs/sms.md shows the same table.
 */
import { describe, expect, it } from 'vitest';
import { DELIVERY_MOVES, DELIVERY_STATES, type DeliveryStateName } from '../src/sms/delivery.js';
import { useClinic, useHarness } from './helpers/fixture.js';
import { enqueue, freshPhone, putSms, twilioLink } from './helpers/sms.js';

const h = useHarness();
const org = useClinic(h);

const FROM: Array<DeliveryStateName | null> = [null, 'accepted', 'sent', 'delivered', 'undelivered', 'failed'];
// A receipt never says "accepted": that is the provider's answer to the send.
const TO: DeliveryStateName[] = ['sent', 'delivered', 'undelivered', 'failed'];
const ACCOUNT = 'twilio:AC' + 'a1'.repeat(16);

async function attemptIn(state: DeliveryStateName | null, pmid: string): Promise<{ attemptId: number; outboxId: string }> {
  const [row] = await enqueue(h, org, [freshPhone()]);
  const outcome = state === null ? 'in_flight' : 'accepted';
  const [a] = await h.owner<{ id: string }[]>`
    INSERT INTO sms_attempts (outbox_id, org_id, provider, account_key, outcome, provider_message_id)
    VALUES (${row!.id}, ${org.id}, 'twilio', ${ACCOUNT}, ${outcome}, ${state === null ? null : pmid}) RETURNING id`;
  if (state !== null) await h.owner`UPDATE sms_attempts SET delivery_state = ${state} WHERE id = ${a!.id}`;
  if (state !== null) await h.owner`UPDATE sms_outbox SET status = 'sent' WHERE id = ${row!.id}`;
  return { attemptId: Number(a!.id), outboxId: row!.id };
}

describe('delivery states', () => {
  it('the database ranks the states as the table does', async () => {
    for (const s of DELIVERY_STATES) {
      const [r] = await h.owner<{ rank: number }[]>`SELECT sms_delivery_rank(${s.state}) AS rank`;
      expect(r!.rank, s.state).toBe(s.rank);
    }
  });

  it('a receipt moves a state exactly when the table lists the move; every other receipt changes nothing', async () => {
    await putSms(h, org.id, [twilioLink()], { rateLimitPerHour: 1000 });
    const listed = new Set(DELIVERY_MOVES.map((m) => `${m.from}>${m.to}`));
    let seq = 0;
    for (const from of FROM) {
      for (const to of TO) {
        seq += 1;
        const pmid = `SM${String(seq).padStart(32, '0')}`;
        const { attemptId, outboxId } = await attemptIn(from, pmid);
        const [res] = await h.runtime.workerSql<{ r: { outcome: string } }[]>`
          SELECT sms_apply_receipt(${org.id}::uuid, NULL, 'twilio', ${ACCOUNT}, ${from === null ? outboxId : null}::uuid,
                                   ${pmid}, ${to}, ${to === 'undelivered' || to === 'failed' ? '30003' : null}, 'transient', false) AS r`;
        const [after] = await h.owner<
          { delivery_state: string | null; outcome: string }[]
        >`SELECT delivery_state, outcome FROM sms_attempts WHERE id = ${attemptId}`;
        const moved = after!.delivery_state !== from;
        expect(moved, `${from} -> ${to} (${res!.r.outcome})`).toBe(listed.has(`${from}>${to}`));
        expect(res!.r.outcome, `${from} -> ${to}`).toBe(moved ? 'applied' : from === to ? 'duplicate' : 'stale');
        // A receipt proves that an attempt whose answer was lost was accepted.
        if (from === null) expect(after!.outcome).toBe('reconciled');
      }
    }
  });
});
