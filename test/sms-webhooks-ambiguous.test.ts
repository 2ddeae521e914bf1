// Ambiguous sends are resolved, not dead-lettered: an attempt the provider may
// have taken waits for evidence (its receipt, or a lookup that answers)
// without using up its delivery runs, and fails over once after
// SMS_AMBIGUOUS_MAX_MS. Shared setup in test/helpers/webhooks.ts.
import { describe, expect, it } from 'vitest';
import { ADMIN_TOKEN } from './helpers/harness.js';
import { book, freshPhone, outboxFor, settled, twilioLink } from './helpers/sms.js';
import { clinic, deliveries, h, metric, sentTo, telnyx, telnyxSigned, twilio, untilDelivery, useWebhookSuite } from './helpers/webhooks.js';

const MAX_WAIT_MS = 1000;
// Fewer runs than the wait has lookups: a wait that used up runs would end as a dead letter.
const MAX_RUNS = 3;
useWebhookSuite({ SMS_AMBIGUOUS_MAX_MS: String(MAX_WAIT_MS), SMS_MAX_ATTEMPTS: String(MAX_RUNS) });

const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };

async function deadLetters(orgId: string) {
  return (await h.http.get('/api/admin/failed-sms').query({ orgId }).set(admin)).body.items as unknown[];
}

describe('an ambiguous attempt waits for evidence', () => {
  it.each([
    ['hangs', { kind: 'hang', records: true }],
    ['resets the connection', { kind: 'reset', records: true }],
  ] as const)(
    'the primary %s after accepting (lookups too): its receipt settles it sent, with no failover and no dead letter',
    async (_what, fault) => {
      const org = await clinic();
      const phone = freshPhone();
      await twilio.setFault(fault);
      const { result } = await book(h, org, { patientPhone: phone });
      // Queued; or sent, when the receipt proved the attempt before the response budget ran out.
      expect(result.success).toBe(true);
      expect(['queued', 'sent']).toContain(result.smsStatus);
      const row = await settled(h, result.appointmentId);
      expect(row).toMatchObject({ status: 'sent', provider: 'twilio' });
      await untilDelivery(result.appointmentId, (d) => d[0]?.delivery_state === 'delivered');
      const ds = await deliveries(result.appointmentId);
      expect(ds).toEqual([
        expect.objectContaining({ provider: 'twilio', outcome: 'reconciled', provider_message_id: sentTo(phone).twilio[0]!.sid }),
      ]);
      expect(sentTo(phone).twilio).toHaveLength(1);
      expect(sentTo(phone).telnyx).toHaveLength(0);
      expect(await deadLetters(org.id)).toEqual([]);
    },
  );

  it('no evidence within SMS_AMBIGUOUS_MAX_MS: it fails over once to the next provider, and waiting used up no runs', async () => {
    const org = await clinic();
    const phone = freshPhone();
    await twilio.setFault({ kind: 'hang', records: true });
    twilio.setReceipts({ steps: ['sent', 'delivered'], lose: true }, phone);
    const before = await metric('sms_async_failovers_total', { from: 'twilio', cause: 'ambiguous_timeout' });
    const started = Date.now();
    const { result } = await book(h, org, { patientPhone: phone });
    // Queued; or sent, if the failover was accepted before the response budget ran out.
    expect(['queued', 'sent']).toContain(result.smsStatus);
    const row = await settled(h, result.appointmentId, 10_000);
    const waited = Date.now() - started;
    expect(row).toMatchObject({ status: 'sent', provider: 'telnyx' });
    expect(waited).toBeGreaterThanOrEqual(MAX_WAIT_MS);
    // Looked at many times while waiting; counted as runs only when something was sent.
    expect(row.attempts).toBeLessThan(MAX_RUNS);
    const ds = await deliveries(result.appointmentId);
    expect(ds.map((d) => [d.provider, d.outcome, d.error_code, d.failed_over])).toEqual([
      ['twilio', 'failed', 'UNRECONCILED', false],
      ['telnyx', 'accepted', null, true],
    ]);
    expect(sentTo(phone).telnyx).toHaveLength(1);
    expect(await metric('sms_async_failovers_total', { from: 'twilio', cause: 'ambiguous_timeout' })).toBe(before + 1);
    expect(await deadLetters(org.id)).toEqual([]);
  });

  it('a receipt that arrives after that failover is still recorded; both delivered is a duplicate, counted in the status figures and the metrics', async () => {
    const org = await clinic();
    const phone = freshPhone();
    await twilio.setFault({ kind: 'hang', records: true });
    // Twilio did take it, and says so only after we gave up waiting.
    twilio.setReceipts({ steps: ['sent', 'delivered'], delayMs: MAX_WAIT_MS + 900, gapMs: 10 }, phone);
    const dup0 = await metric('sms_duplicate_deliveries_total', {});
    const { result } = await book(h, org, { patientPhone: phone });
    await settled(h, result.appointmentId, 10_000);
    const ds = await untilDelivery(
      result.appointmentId,
      (d) => d.length === 2 && d.every((x) => x.delivery_state === 'delivered'),
      'both delivered',
      10_000,
    );
    expect(ds.map((d) => [d.provider, d.outcome, d.delivery_state])).toEqual([
      ['twilio', 'reconciled', 'delivered'],
      ['telnyx', 'accepted', 'delivered'],
    ]);
    expect(ds.filter((d) => d.duplicate_delivery)).toHaveLength(1);
    expect(await metric('sms_duplicate_deliveries_total', {})).toBe(dup0 + 1);
    const stats = await h.owner<
      Array<{ provider: string; accepted: string; delivered: string; ambiguous_failovers: string; duplicate_deliveries: string }>
    >`
      SELECT provider, accepted, delivered, ambiguous_failovers, duplicate_deliveries FROM sms_delivery_stats(now() - interval '1 hour')
       WHERE org_id = ${org.id} ORDER BY provider`;
    expect(
      stats.map((s) => [
        s.provider,
        Number(s.accepted),
        Number(s.delivered),
        Number(s.ambiguous_failovers),
        Number(s.duplicate_deliveries),
      ]),
    ).toEqual([
      ['telnyx', 1, 1, 0, 0],
      ['twilio', 1, 1, 1, 1],
    ]);
    // A delivered confirmation is never resent: the row stays sent, nothing else goes out.
    expect((await outboxFor(h, result.appointmentId)).status).toBe('sent');
    expect(sentTo(phone).twilio).toHaveLength(1);
    expect(sentTo(phone).telnyx).toHaveLength(1);
  });

  it('a chain of one keeps waiting rather than resend on a provider that may have it', async () => {
    const org = await clinic([twilioLink()]);
    const phone = freshPhone();
    await twilio.setFault({ kind: 'hang', records: true });
    twilio.setReceipts({ steps: [], lose: true }, phone);
    const { result } = await book(h, org, { patientPhone: phone });
    await new Promise((r) => setTimeout(r, MAX_WAIT_MS + 400));
    const row = await outboxFor(h, result.appointmentId);
    // Waiting: pending between looks, sending while a look is under way.
    expect(['pending', 'sending']).toContain(row.status);
    expect(sentTo(phone).twilio).toHaveLength(1);
    expect(await deadLetters(org.id)).toEqual([]);
    const [w] = await h.owner<{ waiting_since: Date | null }[]>`SELECT waiting_since FROM sms_outbox WHERE id = ${row.id}`;
    expect(w!.waiting_since).toBeInstanceOf(Date);
    // Once the provider answers again, the lookup finds it.
    await twilio.setFault(null);
    expect(await settled(h, result.appointmentId)).toMatchObject({ status: 'sent', provider: 'twilio' });
    expect(sentTo(phone).twilio).toHaveLength(1);
  });

  it('Telnyx primary hung: resent to Telnyx under its idempotency key while waiting, then over to Twilio after the wait', async () => {
    const org = await clinic([telnyxSigned(), twilioLink()]);
    const phone = freshPhone();
    await telnyx.setFault({ kind: 'hang', records: true });
    telnyx.setReceipts({ steps: [], lose: true }, phone);
    const { result } = await book(h, org, { patientPhone: phone });
    const row = await settled(h, result.appointmentId, 10_000);
    expect(row).toMatchObject({ status: 'sent', provider: 'twilio' });
    expect(sentTo(phone).telnyx).toHaveLength(1);
    expect(sentTo(phone).twilio).toHaveLength(1);
    const ds = await deliveries(result.appointmentId);
    expect(ds.filter((d) => d.provider === 'telnyx').length).toBeGreaterThanOrEqual(2);
    expect(ds.at(-1)).toMatchObject({ provider: 'twilio', outcome: 'accepted', failed_over: true });
  });
});
