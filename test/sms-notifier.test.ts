/**
 * The booking's view of its first SMS run when the row is briefly held by
 * someone else's claim: it must wait for the run, not report `queued` at once.
 */
import { describe, expect, it } from 'vitest';
import { useClinic, useHarness } from './helpers/fixture.js';
import { enqueue, freshPhone, putSms } from './helpers/sms.js';

const h = useHarness();
const org = useClinic(h);

describe('notifier.outcome', () => {
  it('a row locked by a claim that is not committed yet: waits, claims it itself when freed, and answers sent', async () => {
    await putSms(h, org.id, [{ kind: 'sandbox', senderNumbers: ['+15005550006'] }]);
    const [row] = await enqueue(h, org, [freshPhone()]);
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    // Another transaction holds the row the way a worker's claim statement does
    // before it commits (SKIP LOCKED passes it by), then gives it up unclaimed.
    const holder = h.owner
      .begin(async (tx) => {
        await tx`SELECT id FROM sms_outbox WHERE id = ${row!.id} FOR UPDATE`;
        await released;
        throw new Error('rolled back on purpose');
      })
      .catch(() => undefined);
    await new Promise((r) => setTimeout(r, 50));
    const answer = h.runtime.sms.notifier.outcome(org.id, row!.appointment_id, 'booked', Date.now());
    setTimeout(release, 150);
    expect(await answer).toEqual({ smsStatus: 'sent', smsProvider: 'sandbox' });
    await holder;
    const [after] = await h.owner<{ status: string; attempts: number }[]>`SELECT status, attempts FROM sms_outbox WHERE id = ${row!.id}`;
    expect(after).toEqual({ status: 'sent', attempts: 1 });
  });

  it('a row that already ended a run in "try again later" is reported queued at once (control)', async () => {
    await putSms(h, org.id, [{ kind: 'sandbox', senderNumbers: ['+15005550006'] }]);
    const [row] = await enqueue(h, org, [freshPhone()]);
    await h.owner`UPDATE sms_outbox SET attempts = 1, next_attempt_at = now() + interval '1 hour', last_error_class = 'transient' WHERE id = ${row!.id}`;
    const t = Date.now();
    expect(await h.runtime.sms.notifier.outcome(org.id, row!.appointment_id, 'booked', Date.now())).toEqual({ smsStatus: 'queued' });
    expect(Date.now() - t).toBeLessThan(1000);
  });
});
