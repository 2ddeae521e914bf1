// SMS engine: circuit breakers. Shared setup in test/helpers/sms-engine.ts.
import { describe, expect, it } from 'vitest';
import { COOLDOWN_MS, clinic, h, twilio, useSmsEngineSuite } from './helpers/sms-engine.js';
import { attemptsFor, book, newTwilioAccount, putSms, telnyxLink, twilioCreates, twilioLink } from './helpers/sms.js';

useSmsEngineSuite();

describe('circuit breaker per (org, provider account)', () => {
  it('opens after N consecutive failures, skips Twilio while open, probes after the cool-down, closes on success', async () => {
    const org = await clinic();
    const account = newTwilioAccount(twilio);
    await putSms(h, org.id, [twilioLink({ accountSid: account.sid, authToken: account.token }), telnyxLink()], { rateLimitPerHour: 100 });
    const creates = () => twilioCreates(twilio, account.sid);
    await twilio.setFault({ kind: 'status', status: 401, code: 20003 });

    for (let i = 1; i <= 3; i++) {
      const { result } = await book(h, org);
      expect(result.smsProvider).toBe('telnyx');
      expect(creates()).toBe(i);
    }
    // Open: straight to Telnyx, Twilio's request count stops growing, no waiting.
    const openedAt = Date.now();
    const skipped = await book(h, org);
    expect(Date.now() - openedAt).toBeLessThan(COOLDOWN_MS);
    expect(skipped.result.smsProvider).toBe('telnyx');
    expect(creates()).toBe(3);
    const audit = await attemptsFor(h, skipped.result.appointmentId);
    expect(audit.map((a) => [a.provider, a.outcome, a.error_code])).toEqual([
      ['twilio', 'skipped', 'BREAKER_OPEN'],
      ['telnyx', 'accepted', null],
    ]);

    // Half-open after the cool-down: one probe goes through; it fails, so the breaker opens again.
    await new Promise((r) => setTimeout(r, COOLDOWN_MS + 100));
    expect((await book(h, org)).result.smsProvider).toBe('telnyx');
    expect(creates()).toBe(4);
    expect((await book(h, org)).result.smsProvider).toBe('telnyx');
    expect(creates()).toBe(4);

    // Twilio recovers; the next probe succeeds and closes the breaker.
    await twilio.setFault(null);
    await new Promise((r) => setTimeout(r, COOLDOWN_MS + 100));
    expect((await book(h, org)).result.smsProvider).toBe('twilio');
    expect((await book(h, org)).result.smsProvider).toBe('twilio');
    expect(creates()).toBe(6);
  });

  it("one clinic's open breaker does not affect another clinic on the same provider", async () => {
    const broken = await clinic();
    const healthy = await clinic();
    const account = newTwilioAccount(twilio);
    await putSms(h, broken.id, [twilioLink({ accountSid: account.sid, authToken: 'wrong-token-0123456789' }), telnyxLink()], {
      rateLimitPerHour: 100,
    });
    for (let i = 0; i < 4; i++) expect((await book(h, broken)).result.smsProvider).toBe('telnyx');
    expect(h.runtime.sms.engine.breaker(broken.id, `twilio:${account.sid}`).state).not.toBe(0);
    expect((await book(h, healthy)).result.smsProvider).toBe('twilio');
  });
});
