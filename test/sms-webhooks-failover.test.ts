// Failover after acceptance: a final failure receipt is classified with the
// adapter's code table; sender, provider or filtering failures resend once
// through the next provider, recipient and transient ones only record. Shared
// setup in test/helpers/webhooks.ts.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_TWILIO_ACCOUNT, signedTwilioPost } from './fakes/fake-twilio.js';
import { postWebhook } from './fakes/receipts.js';
import { ADMIN_TOKEN, type Harness } from './helpers/harness.js';
import { book, freshPhone, twilioLink, waitFor } from './helpers/sms.js';
import {
  TELNYX_POOL,
  TWILIO_POOL,
  clinic,
  deliveries,
  h,
  listeningHarness,
  metric,
  sentTo,
  telnyx,
  telnyxSigned,
  twilio,
  untilDelivery,
  useWebhookSuite,
  webhookEnv,
} from './helpers/webhooks.js';

useWebhookSuite({ SMS_RECEIPT_TIMEOUT_MS: '400' });

const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };
const failing = (code: string | number, status = 'undelivered') => ({ steps: ['sent', { status, code }], delayMs: 5, gapMs: 5 });

async function rows(appointmentId: string, harness: Harness = h) {
  return harness.owner<Array<{ id: string; kind: string; status: string; resend_of: string | null; failure_reason: string | null }>>`
    SELECT id, kind, status, resend_of, failure_reason FROM sms_outbox WHERE appointment_id = ${appointmentId} ORDER BY created_at, kind`;
}

describe('sender, provider or carrier filtering: resent once through the next provider', () => {
  it.each(['30007', '30032', '30034'])(
    'Twilio %s: resent once through Telnyx from its own pool; the booking said sent and still does',
    async (code) => {
      const org = await clinic();
      const phone = freshPhone();
      twilio.setReceipts(failing(code), phone);
      const before = await metric('sms_async_failovers_total', { from: 'twilio', cause: 'receipt' });
      const { result } = await book(h, org, { patientPhone: phone });
      expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'twilio' });
      const ds = await untilDelivery(
        result.appointmentId,
        (d) => d.some((x) => x.provider === 'telnyx' && x.delivery_state === 'delivered'),
        'the resend delivered',
      );
      expect(ds.map((d) => [d.kind, d.provider, d.delivery_state, d.delivery_code, d.delivery_class, d.failed_over])).toEqual([
        ['booked', 'twilio', 'undelivered', code, 'provider', false],
        ['booked:resend', 'telnyx', 'delivered', null, null, true],
      ]);
      expect(sentTo(phone).twilio).toHaveLength(1);
      expect(sentTo(phone).telnyx).toHaveLength(1);
      expect(TELNYX_POOL).toContain(sentTo(phone).telnyx[0]!.from);
      const [orig, resend] = await rows(result.appointmentId);
      expect(orig).toMatchObject({ kind: 'booked', status: 'sent', resend_of: null });
      expect(resend).toMatchObject({ kind: 'booked:resend', status: 'sent', resend_of: orig!.id });
      expect(await metric('sms_async_failovers_total', { from: 'twilio', cause: 'receipt' })).toBe(before + 1);

      // The admin view shows both messages: the original undelivered, the resend delivered.
      const view = await h.http.get(`/api/admin/orgs/${org.id}/messages`).set(admin);
      expect(view.body.items.map((m: { deliveryState: string; resendOf: string | null }) => [m.deliveryState, m.resendOf])).toEqual([
        ['delivered', orig!.id],
        ['undelivered', null],
      ]);
    },
  );

  it('Telnyx 40002 (blocked as spam) in message.finalized: resent once through Twilio', async () => {
    const org = await clinic([telnyxSigned(), twilioLink()]);
    const phone = freshPhone();
    telnyx.setReceipts({ steps: ['sent', { status: 'delivery_failed', code: '40002' }], delayMs: 5, gapMs: 5 }, phone);
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result.smsProvider).toBe('telnyx');
    await untilDelivery(result.appointmentId, (d) => d.some((x) => x.provider === 'twilio' && x.delivery_state === 'delivered'));
    expect(sentTo(phone).telnyx).toHaveLength(1);
    expect(sentTo(phone).twilio).toHaveLength(1);
    expect(TWILIO_POOL).toContain(sentTo(phone).twilio[0]!.from);
  });

  it('a resend that fails too is not resent again; a chain of one leaves a dead letter that says so', async () => {
    const org = await clinic();
    const phone = freshPhone();
    twilio.setReceipts(failing('30007'), phone);
    telnyx.setReceipts({ steps: ['sent', { status: 'delivery_failed', code: '40002' }], delayMs: 5, gapMs: 5 }, phone);
    const { result } = await book(h, org, { patientPhone: phone });
    await untilDelivery(result.appointmentId, (d) => d.length === 2 && d.every((x) => x.delivery_state === 'undelivered'));
    await new Promise((r) => setTimeout(r, 300));
    expect(sentTo(phone).twilio).toHaveLength(1);
    expect(sentTo(phone).telnyx).toHaveLength(1);
    expect(await rows(result.appointmentId)).toHaveLength(2);

    const single = await clinic([twilioLink()]);
    const p2 = freshPhone();
    twilio.setReceipts(failing('30034'), p2);
    const b = await book(h, single, { patientPhone: p2 });
    const dead = await waitFor('the resend row to fail', async () =>
      (await rows(b.result.appointmentId)).find((r) => r.status === 'failed'),
    );
    expect(dead).toMatchObject({ kind: 'booked:resend', failure_reason: 'no_failover_provider' });
    expect(sentTo(p2).twilio).toHaveLength(1);
    const list = await h.http.get('/api/admin/failed-sms').query({ orgId: single.id }).set(admin);
    expect(list.body.items).toEqual([
      expect.objectContaining({ id: dead.id, reason: 'no_failover_provider', deliveryState: 'undelivered', resendOf: expect.any(String) }),
    ]);
  });

  it('a lost receipt looked up as 30007 is resent the same way', async () => {
    const org = await clinic();
    const phone = freshPhone();
    twilio.setReceipts({ ...failing('30007'), lose: true }, phone);
    const { result } = await book(h, org, { patientPhone: phone });
    await untilDelivery(
      result.appointmentId,
      (d) => d.some((x) => x.provider === 'telnyx' && x.delivery_state === 'delivered'),
      'the resend after the lookup',
      5_000,
    );
    expect((await deliveries(result.appointmentId))[0]).toMatchObject({ delivery_state: 'undelivered', delivery_code: '30007' });
  });
});

describe('recipient and transient failures: recorded, never resent elsewhere', () => {
  it.each([
    ['30005', 'recipient'],
    ['30006', 'recipient'],
    ['30003', 'transient'],
  ])('Twilio %s (%s): the reason is recorded; no resend', async (code, cls) => {
    const org = await clinic();
    const phone = freshPhone();
    twilio.setReceipts(failing(code), phone);
    const { result } = await book(h, org, { patientPhone: phone });
    await untilDelivery(result.appointmentId, (d) => d[0]?.delivery_state === 'undelivered');
    await new Promise((r) => setTimeout(r, 300));
    expect(await deliveries(result.appointmentId)).toEqual([expect.objectContaining({ delivery_code: code, delivery_class: cls })]);
    expect(sentTo(phone).telnyx).toHaveLength(0);
    expect(await rows(result.appointmentId)).toHaveLength(1);
  });

  it('a message with a delivered receipt is never resent: a conflicting failure afterwards changes nothing', async () => {
    const org = await clinic();
    const phone = freshPhone();
    twilio.setReceipts({ steps: ['delivered', { status: 'undelivered', code: '30007' }], delayMs: 5, gapMs: 20 }, phone);
    const { result } = await book(h, org, { patientPhone: phone });
    await waitFor('both receipts processed', async () => {
      const [r] = await h.owner<
        { n: number }[]
      >`SELECT count(*)::int AS n FROM sms_webhook_events WHERE org_id = ${org.id} AND processed_at IS NOT NULL`;
      return r!.n === 2;
    });
    expect(await deliveries(result.appointmentId)).toEqual([expect.objectContaining({ delivery_state: 'delivered' })]);
    expect(sentTo(phone).telnyx).toHaveLength(0);
  });
});

describe('two processes receiving the same failure receipt at the same moment', () => {
  let h2: Awaited<ReturnType<typeof listeningHarness>>;
  beforeAll(async () => {
    h2 = await listeningHarness({ ...webhookEnv(), CREDENTIALS_KEY: h.secrets.credentialsKey }, { ownerUrl: h.ownerUrl });
  });
  afterAll(async () => h2?.close());

  it('Telnyx redelivers one finalized event (two signatures) to both processes at once: exactly one resend, each time', async () => {
    const org = await clinic([telnyxSigned(), twilioLink()]);
    const phones = Array.from({ length: 6 }, () => freshPhone());
    for (const p of phones) telnyx.setReceipts({ steps: [], lose: true }, p);
    const booked = await Promise.all(phones.map((p) => book(h, org, { patientPhone: p })));
    await Promise.all(
      booked.map(async ({ result }, i) => {
        const msg = sentTo(phones[i]!).telnyx[0]!;
        const body = JSON.stringify({
          data: {
            record_type: 'event',
            id: randomUUID(),
            event_type: 'message.finalized',
            occurred_at: new Date().toISOString(),
            payload: {
              id: msg.id,
              to: [{ phone_number: msg.to, status: 'delivery_failed' }],
              errors: [{ code: '40002', title: 'Blocked as spam' }],
              webhook_url: msg.webhookUrl,
            },
          },
          meta: { attempt: 1 },
        });
        const ts = Math.floor(Date.now() / 1000);
        const to = (base: string) => `${base}/webhooks/telnyx/${org.id}`;
        const answers = await Promise.all([
          postWebhook(to(h.cfg.PUBLIC_URL!), telnyx.signEvent(body, { timestamp: ts }), body),
          postWebhook(to(h2.publicUrl), telnyx.signEvent(body, { timestamp: ts - 1 }), body),
        ]);
        expect(answers.map((a) => a.status)).toEqual([200, 200]);
        await untilDelivery(result.appointmentId, (d) => d.some((x) => x.provider === 'twilio' && x.delivery_state === 'delivered'));
      }),
    );
    await new Promise((r) => setTimeout(r, 300));
    for (const [i, { result }] of booked.entries()) {
      expect(sentTo(phones[i]!).twilio, phones[i]).toHaveLength(1);
      expect(await rows(result.appointmentId)).toHaveLength(2);
    }
  });

  it('Twilio sends one callback to both processes at once: one is taken, the other is a replay; one resend', async () => {
    const org = await clinic();
    const phone = freshPhone();
    twilio.setReceipts({ steps: [], lose: true }, phone);
    const { result } = await book(h, org, { patientPhone: phone });
    const msg = sentTo(phone).twilio[0]!;
    const params = {
      AccountSid: DEFAULT_TWILIO_ACCOUNT.sid,
      MessageSid: msg.sid,
      MessageStatus: 'undelivered',
      ErrorCode: '30007',
      From: msg.from,
      To: msg.to,
    };
    // Each process is reached at its own address, so each is signed for the URL it was sent to.
    const path = new URL(msg.statusCallback!).pathname + new URL(msg.statusCallback!).search;
    const answers = await Promise.all(
      [h.cfg.PUBLIC_URL!, h2.publicUrl].map((base) => {
        const { headers, body } = signedTwilioPost(`${base}${path}`, params, DEFAULT_TWILIO_ACCOUNT.token);
        return postWebhook(`${base}${path}`, headers, body);
      }),
    );
    expect(answers.map((a) => a.status)).toEqual([200, 200]);
    await untilDelivery(result.appointmentId, (d) => d.some((x) => x.provider === 'telnyx' && x.delivery_state === 'delivered'));
    await new Promise((r) => setTimeout(r, 300));
    expect(sentTo(phone).telnyx).toHaveLength(1);
    expect(await rows(result.appointmentId)).toHaveLength(2);
  });
});

describe('dead letters on delivery states', () => {
  it('a retry is allowed while nothing was delivered, and refused once any attempt of the confirmation was', async () => {
    const org = await clinic([twilioLink()]);
    const phone = freshPhone();
    twilio.setReceipts(failing('30007'), phone);
    const { result } = await book(h, org, { patientPhone: phone });
    const dead = await waitFor('the resend row to fail', async () => (await rows(result.appointmentId)).find((r) => r.status === 'failed'));
    const retry = await h.http.post(`/api/admin/failed-sms/${dead.id}/retry`).set(admin);
    expect(retry.status).toBe(202);
    await waitFor('failed again', async () => (await rows(result.appointmentId)).find((r) => r.id === dead.id && r.status === 'failed'));
    // As if the original had been delivered after all (a receipt for an attempt given up on).
    await h.owner`UPDATE sms_attempts SET delivery_state = 'delivered' WHERE outbox_id = (SELECT resend_of FROM sms_outbox WHERE id = ${dead.id})`;
    const refused = await h.http.post(`/api/admin/failed-sms/${dead.id}/retry`).set(admin);
    expect(refused.status).toBe(409);
    expect(refused.body.error).toBe('already_delivered');
    expect(sentTo(phone).twilio).toHaveLength(1);
  });
});
