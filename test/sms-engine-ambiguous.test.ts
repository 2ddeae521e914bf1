// SMS engine: ambiguous outcomes and reconcile. Shared setup in test/helpers/sms-engine.ts.
import { describe, expect, it } from 'vitest';
import { ATTEMPT_MS, clinic, h, sentTo, telnyx, twilio, useSmsEngineSuite } from './helpers/sms-engine.js';
import {
  attemptsFor,
  book,
  freshPhone,
  newTwilioAccount,
  outboxFor,
  putSms,
  settled,
  telnyxLink,
  twilioCreates,
  twilioLink,
} from './helpers/sms.js';

useSmsEngineSuite();

describe('ambiguous outcomes (timeout after the request left)', () => {
  it('create hung but the message was accepted: reconciled, exactly one text across both providers', async () => {
    const org = await clinic();
    const phone = freshPhone();
    await twilio.setFault({ kind: 'hang', records: true, scope: 'create' });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'twilio' });
    expect(sentTo(phone).twilio).toHaveLength(1);
    expect(sentTo(phone).telnyx).toHaveLength(0);
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts).toHaveLength(1);
    expect(attempts[0]).toMatchObject({
      provider: 'twilio',
      outcome: 'reconciled',
      error_class: 'ambiguous',
      error_code: 'TIMEOUT',
      provider_message_id: sentTo(phone).twilio[0]!.sid,
    });
  });

  it('create hung and nothing was accepted: the lookup says so, and it fails over after one attempt timeout', async () => {
    const org = await clinic();
    const phone = freshPhone();
    const account = newTwilioAccount(twilio);
    await putSms(h, org.id, [twilioLink({ accountSid: account.sid, authToken: account.token }), telnyxLink()], { rateLimitPerHour: 100 });
    await twilio.setFault({ kind: 'hang', records: false, scope: 'create' });
    const { result, ms } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'telnyx' });
    expect(ms).toBeGreaterThanOrEqual(ATTEMPT_MS);
    // One create, no blind retry of an ambiguous attempt.
    expect(twilioCreates(twilio, account.sid)).toBe(1);
    expect(sentTo(phone).twilio).toHaveLength(0);
    expect(sentTo(phone).telnyx).toHaveLength(1);
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.map((a) => [a.provider, a.outcome, a.error_class, a.failed_over])).toEqual([
      ['twilio', 'failed', 'ambiguous', false],
      ['telnyx', 'accepted', null, true],
    ]);
    expect(attempts[0]!.error_message).toMatch(/not found/);
  });

  it('a slow provider that answers just after the attempt timeout is taken at its word: no failover, no second text', async () => {
    const org = await clinic();
    const phone = freshPhone();
    // Only the create is slow, so a premature lookup would answer "not found".
    await twilio.setFault({ kind: 'slow', ms: ATTEMPT_MS + 300, scope: 'create' });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'twilio' });
    expect(sentTo(phone).twilio).toHaveLength(1);
    expect(sentTo(phone).telnyx).toHaveLength(0);
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.map((a) => [a.provider, a.outcome])).toEqual([['twilio', 'accepted']]);
    expect(attempts[0]!.latency_ms).toBeGreaterThanOrEqual(ATTEMPT_MS + 250);
  });

  it('provider fully hung (lookups too): waits for reconcile instead of resending elsewhere', async () => {
    const org = await clinic();
    const phone = freshPhone();
    await twilio.setFault({ kind: 'hang', records: true });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ success: true, smsStatus: 'queued' });
    expect(sentTo(phone).twilio).toHaveLength(1); // accepted, answer lost
    expect(sentTo(phone).telnyx).toHaveLength(0);
    const inFlight = await attemptsFor(h, result.appointmentId);
    expect(inFlight.map((a) => [a.provider, a.outcome])).toContainEqual(['twilio', 'in_flight']);
    // Still hung a while later: background runs keep asking, nobody resends.
    await new Promise((r) => setTimeout(r, 600));
    expect(sentTo(phone).telnyx).toHaveLength(0);
    expect(sentTo(phone).twilio).toHaveLength(1);
    expect((await outboxFor(h, result.appointmentId)).status).not.toBe('sent');

    await twilio.setFault(null);
    const row = await settled(h, result.appointmentId);
    expect(row.status).toBe('sent');
    expect(sentTo(phone).twilio).toHaveLength(1);
    expect(sentTo(phone).telnyx).toHaveLength(0);
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.filter((a) => a.outcome === 'reconciled')).toHaveLength(1);
    expect(attempts.filter((a) => a.outcome === 'accepted')).toHaveLength(0);
  });

  it('Telnyx has no lookup: an ambiguous attempt is resent only to Telnyx, under the same idempotency key', async () => {
    const org = await clinic([telnyxLink(), twilioLink()]);
    const phone = freshPhone();
    await telnyx.setFault({ kind: 'hang', records: true });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result.smsStatus).toBe('queued');
    expect(sentTo(phone).telnyx).toHaveLength(1);
    await telnyx.setFault(null);
    const row = await settled(h, result.appointmentId);
    expect(row).toMatchObject({ status: 'sent', provider: 'telnyx' });
    // The resend was answered from Telnyx's idempotency store: still one text, none via Twilio.
    expect(sentTo(phone).telnyx).toHaveLength(1);
    expect(sentTo(phone).twilio).toHaveLength(0);
    const keys = telnyx.log.filter((r) => r.method === 'POST').map((r) => r.idempotencyKey);
    expect(keys.filter((k) => k === `sms-${row.id}`).length).toBeGreaterThanOrEqual(2);
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.every((a) => a.provider === 'telnyx')).toBe(true);
    expect(attempts.filter((a) => a.outcome === 'accepted')).toHaveLength(1);
    expect(attempts.filter((a) => a.outcome === 'in_flight')).toHaveLength(0);
    expect(attempts.filter((a) => a.error_code === 'SUPERSEDED').length).toBeGreaterThanOrEqual(1);
  });
});
