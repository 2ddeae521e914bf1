// SMS engine: delivery through the chain, error classes, a chain of one, the booking always stands. Shared setup in test/helpers/sms-engine.ts.
import { describe, expect, it } from 'vitest';
import { COOLDOWN_MS, clinic, h, sentTo, telnyx, twilio, useSmsEngineSuite } from './helpers/sms-engine.js';
import {
  TELNYX_POOL,
  TWILIO_POOL,
  appointmentExists,
  attemptsFor,
  book,
  freshPhone,
  nextSlot,
  outboxFor,
  settled,
  telnyxLink,
  twilioLink,
} from './helpers/sms.js';

useSmsEngineSuite();

describe('delivery through the provider chain', () => {
  it('sends through the primary (Twilio) and audits the attempt', async () => {
    const org = await clinic();
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result.smsStatus).toBe('sent');
    expect(result.smsProvider).toBe('twilio');
    const { twilio: tw, telnyx: tx } = sentTo(phone);
    expect(tw).toHaveLength(1);
    expect(tx).toHaveLength(0);
    expect(TWILIO_POOL).toContain(tw[0]!.from);
    const row = await outboxFor(h, result.appointmentId);
    expect(row).toMatchObject({ status: 'sent', provider: 'twilio', from_number: tw[0]!.from });
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts).toHaveLength(1);
    expect(attempts[0]).toMatchObject({
      provider: 'twilio',
      outcome: 'accepted',
      failed_over: false,
      from_number: tw[0]!.from,
      provider_message_id: tw[0]!.sid,
      error_class: null,
    });
    expect(attempts[0]!.latency_ms).toBeGreaterThanOrEqual(0);
  });

  it('the legacy single-call route reports the same smsStatus', async () => {
    const org = await clinic();
    const phone = freshPhone();
    const res = await h.http
      .post('/api/vapi/tools/bookClinicAppointment')
      .set('Authorization', `Bearer ${org.token}`)
      .send({ toolCallId: 'legacy-1', arguments: { patientName: 'Lee Park', patientPhone: phone, serviceType: 'short', ...nextSlot() } });
    expect(res.status).toBe(200);
    expect(res.body.result).toMatchObject({ success: true, smsStatus: 'sent', smsProvider: 'twilio' });
    expect(sentTo(phone).twilio).toHaveLength(1);
  });
});

describe('error classes', () => {
  it('transient (429): retried on the same provider with backoff, then sent there', async () => {
    const org = await clinic();
    const phone = freshPhone();
    await twilio.setFault({ kind: 'http429', times: 2 });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result.smsStatus).toBe('sent');
    expect(result.smsProvider).toBe('twilio');
    expect(sentTo(phone).twilio).toHaveLength(1);
    expect(sentTo(phone).telnyx).toHaveLength(0);
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.map((a) => [a.provider, a.outcome, a.error_class, a.error_code])).toEqual([
      ['twilio', 'failed', 'transient', '20429'],
      ['twilio', 'failed', 'transient', '20429'],
      ['twilio', 'accepted', null, null],
    ]);
    expect(attempts.every((a) => !a.failed_over)).toBe(true);
  });

  it('transient (5xx): retried on the same provider, then sent there', async () => {
    const org = await clinic();
    const phone = freshPhone();
    await twilio.setFault({ kind: 'http5xx', status: 503, times: 1 });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result.smsProvider).toBe('twilio');
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.map((a) => [a.outcome, a.error_class])).toEqual([
      ['failed', 'transient'],
      ['accepted', null],
    ]);
  });

  it('refused connections are retried, then the message fails over', async () => {
    const org = await clinic();
    const phone = freshPhone();
    await twilio.setFault({ kind: 'down' });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'telnyx' });
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.map((a) => [a.provider, a.outcome, a.error_class, a.error_code])).toEqual([
      ['twilio', 'failed', 'transient', 'ECONNREFUSED'],
      ['twilio', 'failed', 'transient', 'ECONNREFUSED'],
      ['twilio', 'failed', 'transient', 'ECONNREFUSED'],
      ['telnyx', 'accepted', null, null],
    ]);
    expect(attempts[3]!.failed_over).toBe(true);
  });

  it.each([
    { status: 401, code: 20003 },
    { status: 400, code: 21212 },
    { status: 400, code: 21606 },
    { status: 400, code: 21408 },
    { status: 400, code: 30034 },
  ])('provider/config error $code: fails over to Telnyx at once, from the Telnyx pool', async ({ status, code }) => {
    const org = await clinic();
    const phone = freshPhone();
    await twilio.setFault({ kind: 'status', status, code });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'telnyx' });
    const { twilio: tw, telnyx: tx } = sentTo(phone);
    expect(tw).toHaveLength(0);
    expect(tx).toHaveLength(1);
    expect(TELNYX_POOL).toContain(tx[0]!.from);
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts).toHaveLength(2);
    expect(attempts[0]).toMatchObject({
      provider: 'twilio',
      outcome: 'failed',
      error_class: 'provider',
      error_code: String(code),
      failed_over: false,
    });
    expect(attempts[0]!.error_message).toContain(String(code));
    expect(attempts[1]).toMatchObject({ provider: 'telnyx', outcome: 'accepted', failed_over: true, from_number: tx[0]!.from });
    expect((await outboxFor(h, result.appointmentId)).from_number).toBe(tx[0]!.from);
  });

  it('provider/config error on Telnyx as primary (40305) fails over to Twilio', async () => {
    const org = await clinic([telnyxLink(), twilioLink()]);
    const phone = freshPhone();
    await telnyx.setFault({ kind: 'status', status: 400, code: '40305' });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'twilio' });
    expect(sentTo(phone).telnyx).toHaveLength(0);
    expect(TWILIO_POOL).toContain(sentTo(phone).twilio[0]!.from);
  });

  it.each([
    { code: 21211, reason: 'invalid_recipient' },
    { code: 21614, reason: 'invalid_recipient' },
  ])('recipient error $code: failed_but_booked, never retried or failed over', async ({ code, reason }) => {
    const org = await clinic();
    const phone = freshPhone();
    const telnyxBefore = telnyx.requests;
    await twilio.setFault({ kind: 'status', status: 400, code });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ success: true, smsStatus: 'failed_but_booked', smsReason: reason });
    expect(result.message).toMatch(/booked/);
    expect(await appointmentExists(h, result.appointmentId)).toBe(true);
    expect(telnyx.requests).toBe(telnyxBefore);
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.map((a) => [a.provider, a.outcome, a.error_class, a.error_code])).toEqual([
      ['twilio', 'failed', 'recipient', String(code)],
    ]);
    expect(await outboxFor(h, result.appointmentId)).toMatchObject({ status: 'failed', failure_reason: reason });
  });

  it('recipient error from Telnyx (40310) stops there too', async () => {
    const org = await clinic([telnyxLink(), twilioLink()]);
    const phone = freshPhone();
    await telnyx.setFault({ kind: 'status', status: 400, code: '40310' });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'failed_but_booked', smsReason: 'invalid_recipient' });
    expect(sentTo(phone).twilio).toHaveLength(0);
  });

  it('STOP (21610) records an opt-out; the next booking for that phone makes no provider call', async () => {
    const org = await clinic();
    const phone = freshPhone();
    await twilio.setFault({ kind: 'status', status: 400, code: 21610, times: 1 });
    const first = await book(h, org, { patientPhone: phone });
    expect(first.result).toMatchObject({ smsStatus: 'failed_but_booked', smsReason: 'opted_out' });
    const optOuts = await h.owner`SELECT phone, source FROM sms_opt_outs WHERE org_id = ${org.id}`;
    expect(optOuts).toEqual([{ phone, source: 'provider:twilio:21610' }]);
    expect(sentTo(phone).telnyx).toHaveLength(0);

    const twilioBefore = twilio.requests;
    const telnyxBefore = telnyx.requests;
    const second = await book(h, org, { patientPhone: phone });
    expect(second.result).toMatchObject({ success: true, smsStatus: 'failed_but_booked', smsReason: 'opted_out' });
    expect(twilio.requests).toBe(twilioBefore);
    expect(telnyx.requests).toBe(telnyxBefore);
    expect(await attemptsFor(h, second.result.appointmentId)).toHaveLength(0);
    expect(await appointmentExists(h, second.result.appointmentId)).toBe(true);
  });

  it('STOP from Telnyx (40300) is an opt-out as well', async () => {
    const org = await clinic([telnyxLink(), twilioLink()]);
    const phone = freshPhone();
    await telnyx.setFault({ kind: 'status', status: 422, code: '40300', times: 1 });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'failed_but_booked', smsReason: 'opted_out' });
    const [row] = await h.owner`SELECT source FROM sms_opt_outs WHERE org_id = ${org.id} AND phone = ${phone}`;
    expect(row?.source).toBe('provider:telnyx:40300');
    expect(sentTo(phone).twilio).toHaveLength(0);
  });
});

describe('chain of one (failover disabled)', () => {
  it('transient failures stay on the one provider: queued, retried in the background, later sent', async () => {
    const org = await clinic([twilioLink()]);
    const phone = freshPhone();
    const telnyxBefore = telnyx.requests;
    await twilio.setFault({ kind: 'http5xx', status: 500 });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ success: true, smsStatus: 'queued' });
    expect(await appointmentExists(h, result.appointmentId)).toBe(true);
    expect(telnyx.requests).toBe(telnyxBefore);
    expect((await outboxFor(h, result.appointmentId)).status).toMatch(/pending|sending/);

    await twilio.setFault(null);
    // The breaker opened on the three failures; after its cool-down the worker gets through.
    const row = await settled(h, result.appointmentId, COOLDOWN_MS + 8_000);
    expect(row).toMatchObject({ status: 'sent', provider: 'twilio' });
    expect(sentTo(phone).twilio).toHaveLength(1);
    expect(telnyx.requests).toBe(telnyxBefore);
  });

  it('a provider/config error does not fail over anywhere', async () => {
    const org = await clinic([twilioLink()]);
    const phone = freshPhone();
    const telnyxBefore = telnyx.requests;
    await twilio.setFault({ kind: 'status', status: 400, code: 21606 });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result.smsStatus).toBe('queued');
    expect(telnyx.requests).toBe(telnyxBefore);
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts[0]).toMatchObject({ provider: 'twilio', outcome: 'failed', error_class: 'provider' });
    expect(attempts.some((a) => a.provider !== 'twilio')).toBe(false);
  });
});

describe('the booking always stands', () => {
  it('an unexpected SMS-side error answers error_but_booked; the message goes out once things recover', async () => {
    const org = await clinic();
    const phone = freshPhone();
    await h.owner`ALTER TABLE sms_rate_log RENAME TO sms_rate_log_away`;
    let booked;
    try {
      booked = await book(h, org, { patientPhone: phone });
    } finally {
      await h.owner`ALTER TABLE sms_rate_log_away RENAME TO sms_rate_log`;
    }
    expect(booked.result).toMatchObject({ success: true, smsStatus: 'error_but_booked' });
    expect(await appointmentExists(h, booked.result.appointmentId)).toBe(true);
    const row = await settled(h, booked.result.appointmentId);
    expect(row.status).toBe('sent');
    expect(sentTo(phone).twilio).toHaveLength(1);
  });
});
