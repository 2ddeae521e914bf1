// Receipts that never come: the lookup of a lost receipt after SMS_RECEIPT_TIMEOUT_MS, and the
// providers that have none. Shared setup in test/helpers/webhooks.ts; the receipts that do come
// are in test/sms-webhooks-receipts.test.ts.
import { describe, expect, it } from 'vitest';
import { book, freshPhone, twilioLink, waitFor } from './helpers/sms.js';
import { clinic, deliveries, events, h, sentTo, telnyx, telnyxSigned, twilio, untilDelivery, useWebhookSuite } from './helpers/webhooks.js';

const RECEIPT_TIMEOUT_MS = 400;
useWebhookSuite({ SMS_RECEIPT_TIMEOUT_MS: String(RECEIPT_TIMEOUT_MS) });

const delivered = (ds: Array<{ delivery_state: string | null }>) => ds.some((d) => d.delivery_state === 'delivered');

describe('providers without receipts, and receipts that never come', () => {
  it('the sandbox has no webhooks: its messages are accepted, final, and never looked up', async () => {
    const org = await clinic([{ kind: 'sandbox', senderNumbers: ['+15005550006'] }]);
    const { result } = await book(h, org, { patientPhone: freshPhone() });
    expect(result.smsStatus).toBe('sent');
    await new Promise((r) => setTimeout(r, RECEIPT_TIMEOUT_MS + 100));
    await h.runtime.sms.receipts.sweep({ lost: true });
    const [a] = await h.owner<{ delivery_state: string; lookup_at: Date | null }[]>`
      SELECT a.delivery_state, a.lookup_at FROM sms_attempts a JOIN sms_outbox o ON o.id = a.outbox_id WHERE o.appointment_id = ${result.appointmentId}`;
    expect(a).toEqual({ delivery_state: 'accepted', lookup_at: null });
  });

  it.each(['twilio', 'telnyx'] as const)(
    '%s: a lost receipt is looked up once after SMS_RECEIPT_TIMEOUT_MS, and the answer applied',
    async (kind) => {
      const org = await clinic(kind === 'twilio' ? [twilioLink()] : [telnyxSigned()]);
      const phone = freshPhone();
      (kind === 'twilio' ? twilio : telnyx).setReceipts({ steps: ['sent', 'delivered'], delayMs: 5, gapMs: 5, lose: true }, phone);
      const { result } = await book(h, org, { patientPhone: phone });
      // The worker's sweep finds it once the timeout passed.
      const ds = await untilDelivery(result.appointmentId, delivered, 'the lookup', 5_000);
      expect(ds[0]).toMatchObject({ delivery_state: 'delivered' });
      const id = kind === 'twilio' ? sentTo(phone).twilio[0]!.sid : sentTo(phone).telnyx[0]!.id;
      const lookups = () => (kind === 'twilio' ? twilio.log : telnyx.log).filter((r) => r.method === 'GET' && r.path.includes(id)).length;
      expect(lookups()).toBe(1);
      await new Promise((r) => setTimeout(r, RECEIPT_TIMEOUT_MS));
      await h.runtime.sms.receipts.sweep({ lost: true });
      expect(lookups()).toBe(1);
      expect(await events(org.id)).toEqual([]);
    },
  );

  it('a lookup that says nothing new leaves the state where it was, and is not repeated', async () => {
    const org = await clinic([twilioLink()]);
    const phone = freshPhone();
    twilio.setReceipts({ steps: [], lose: true }, phone);
    const { result } = await book(h, org, { patientPhone: phone });
    await waitFor(
      'looked up',
      async () => {
        const [a] = await h.owner<{ lookup_at: Date | null }[]>`
        SELECT a.lookup_at FROM sms_attempts a JOIN sms_outbox o ON o.id = a.outbox_id WHERE o.appointment_id = ${result.appointmentId}`;
        return a?.lookup_at;
      },
      5_000,
    );
    expect((await deliveries(result.appointmentId))[0]!.delivery_state).toBe('accepted');
  });
});
