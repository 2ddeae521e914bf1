/**
 * sms_delivery_stats (the status figures): an acceptance that can never get a
 * receipt (sandbox, SNS, a relay without receipts) is not "awaiting a receipt".
 */
import { describe, expect, it } from 'vitest';
import { startFakeTwilio } from './fakes/fake-twilio.js';
import { useClinic, useHarness, useServer } from './helpers/fixture.js';
import { book, putSms, twilioLink } from './helpers/sms.js';

const twilio = useServer('fake twilio', () => startFakeTwilio());
const h = useHarness(() => ({ TWILIO_API_BASE_URL: twilio.url }));
const sandboxClinic = useClinic(h);
const twilioClinic = useClinic(h);

const stats = async (orgId: string) =>
  h.owner<Array<{ provider: string; accepted: string; awaiting_receipt: string }>>`
    SELECT provider, accepted::text, awaiting_receipt::text FROM sms_delivery_stats(now() - interval '1 hour') WHERE org_id = ${orgId}`;

describe('sms_delivery_stats', () => {
  it('counts a sandbox acceptance as accepted, never as awaiting a receipt; a Twilio one awaits its receipt', async () => {
    await putSms(h, sandboxClinic.id, [{ kind: 'sandbox', senderNumbers: ['+15005550006'] }]);
    await putSms(h, twilioClinic.id, [twilioLink()]);
    expect((await book(h, sandboxClinic)).result.smsStatus).toBe('sent');
    expect((await book(h, twilioClinic)).result.smsStatus).toBe('sent');
    expect(await stats(sandboxClinic.id)).toEqual([{ provider: 'sandbox', accepted: '1', awaiting_receipt: '0' }]);
    expect(await stats(twilioClinic.id)).toEqual([{ provider: 'twilio', accepted: '1', awaiting_receipt: '1' }]);
  });
});
