// Delivery receipts: the fakes send the providers' real status callbacks and
// message events, signed as the providers sign them, to the URL named on send.
// Shared setup in test/helpers/webhooks.ts.
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { signedTwilioPost, DEFAULT_TWILIO_ACCOUNT } from './fakes/fake-twilio.js';
import { postWebhook } from './fakes/receipts.js';
import { ADMIN_TOKEN } from './helpers/harness.js';
import { book, freshPhone, twilioLink, waitFor, putSms, telnyxLink } from './helpers/sms.js';
import {
  clinic,
  deliveries,
  events,
  h,
  metric,
  sentTo,
  telnyx,
  telnyxSigned,
  twilio,
  untilDelivery,
  urls,
  useWebhookSuite,
} from './helpers/webhooks.js';

// The production SMS_RECEIPT_TIMEOUT_MS (10 minutes): every receipt here comes by callback, and no
// lookup may run first. With a short one, a busy machine could have the lookup of a lost receipt
// mark the message sent before the fake's "sent" callback arrived, which then counted as a duplicate.
// The lookups have their own file, test/sms-webhooks-lookups.test.ts.
useWebhookSuite();

const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };
const delivered = (ds: Array<{ delivery_state: string | null }>) => ds.some((d) => d.delivery_state === 'delivered');

describe('receipts move each accepted attempt forward: accepted -> sent -> delivered', () => {
  it('Twilio: the send names the status callback, and its signed callbacks deliver the message; smsStatus is still "sent"', async () => {
    const org = await clinic();
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'twilio' });
    const [msg] = sentTo(phone).twilio;
    const [row] = await h.owner<{ id: string }[]>`SELECT id FROM sms_outbox WHERE appointment_id = ${result.appointmentId}`;
    expect(msg!.statusCallback).toBe(`${urls(org.id).twilioStatus}?m=${row!.id}`);

    const ds = await untilDelivery(result.appointmentId, delivered);
    expect(ds).toEqual([
      expect.objectContaining({ provider: 'twilio', outcome: 'accepted', delivery_state: 'delivered', provider_message_id: msg!.sid }),
    ]);
    const evs = await waitFor('both processed', async () => {
      const e = await events(org.id);
      return e.length === 2 && e.every((x) => x.processed_at) ? e : null;
    });
    expect(evs.map((e) => [e.kind, e.event_key])).toEqual([
      ['receipt', `${msg!.sid}:sent`],
      ['receipt', `${msg!.sid}:delivered`],
    ]);
    expect(evs[1]!.outcome).toBe('applied');
    // Sent is applied, unless a busy machine had the delivered one processed first: then it is stale.
    expect(['applied', 'stale']).toContain(evs[0]!.outcome);
    expect(twilio.callbacks.filter((c) => c.messageId === msg!.sid).map((c) => c.answer)).toEqual([200, 200]);

    // The admin view shows the delivery state, per message and per attempt.
    const view = await h.http.get(`/api/admin/orgs/${org.id}/messages`).set(admin);
    expect(view.body.items[0]).toMatchObject({ status: 'sent', deliveryState: 'delivered', resendOf: null });
    expect(view.body.items[0].attempts[0]).toMatchObject({ deliveryState: 'delivered', deliveryCode: null, duplicateDelivery: false });
    expect(view.body.items[0].attempts[0].deliveredAt).toEqual(expect.any(String));
  });

  it('Telnyx: webhook_url on the send, message.sent then message.finalized (Ed25519-signed) deliver it', async () => {
    const org = await clinic([telnyxSigned(), twilioLink()]);
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'sent', smsProvider: 'telnyx' });
    const [msg] = sentTo(phone).telnyx;
    expect(msg!.webhookUrl).toMatch(new RegExp(`^${urls(org.id).telnyx}\\?m=[0-9a-f-]{36}$`));
    const ds = await untilDelivery(result.appointmentId, delivered);
    expect(ds).toEqual([expect.objectContaining({ provider: 'telnyx', delivery_state: 'delivered', provider_message_id: msg!.id })]);
    // Both events were taken; which one came first is the network's business (a late sent is stale).
    expect((await events(org.id)).map((e) => e.event_key).length).toBe(2);
    expect((await events(org.id)).map((e) => e.outcome)).toContain('applied');
  });

  it('out of order: a late "sent" after "delivered" changes nothing (stale)', async () => {
    const org = await clinic();
    const phone = freshPhone();
    twilio.setReceipts({ steps: ['sent', 'delivered'], delayMs: 5, gapMs: 40, reorder: true }, phone);
    const { result } = await book(h, org, { patientPhone: phone });
    await waitFor(
      'both callbacks answered',
      async () => twilio.callbacks.filter((c) => c.messageId === sentTo(phone).twilio[0]?.sid).length === 2,
    );
    await waitFor('both processed', async () => (await events(org.id)).every((e) => e.processed_at !== null));
    expect(twilio.callbacks.filter((c) => c.messageId === sentTo(phone).twilio[0]!.sid).map((c) => c.status)).toEqual([
      'delivered',
      'sent',
    ]);
    expect((await events(org.id)).map((e) => e.outcome)).toEqual(['applied', 'stale']);
    expect((await deliveries(result.appointmentId))[0]!.delivery_state).toBe('delivered');
  });

  it('duplicated: a Telnyx redelivery (same event, new signature) is answered 200 and changes nothing; an identical Twilio retry is a replay (403)', async () => {
    const tOrg = await clinic([telnyxSigned()]);
    const tPhone = freshPhone();
    telnyx.setReceipts({ steps: ['sent', 'delivered'], delayMs: 5, gapMs: 30, duplicates: 1 }, tPhone);
    const t = await book(h, tOrg, { patientPhone: tPhone });
    await waitFor(
      'four Telnyx deliveries answered',
      async () => telnyx.callbacks.filter((c) => c.messageId === sentTo(tPhone).telnyx[0]?.id).length === 4,
    );
    expect(telnyx.callbacks.filter((c) => c.messageId === sentTo(tPhone).telnyx[0]!.id).map((c) => c.answer)).toEqual([200, 200, 200, 200]);
    await waitFor('processed', async () => (await events(tOrg.id)).every((e) => e.processed_at !== null));
    // Each status is applied once at most; its redelivery (or a late sent after delivered) changes nothing.
    const evs = await events(tOrg.id);
    expect(evs).toHaveLength(4);
    for (const e of evs) expect(['applied', 'duplicate', 'stale']).toContain(e.outcome);
    expect(evs.filter((e) => e.outcome === 'applied').length).toBeGreaterThanOrEqual(1);
    expect(evs.filter((e) => e.outcome !== 'applied').length).toBeGreaterThanOrEqual(2);
    expect((await deliveries(t.result.appointmentId)).map((d) => d.delivery_state)).toEqual(['delivered']);

    const wOrg = await clinic([twilioLink()]);
    const wPhone = freshPhone();
    twilio.setReceipts({ steps: ['sent', 'delivered'], delayMs: 5, gapMs: 30, duplicates: 1 }, wPhone);
    const w = await book(h, wOrg, { patientPhone: wPhone });
    await waitFor(
      'four Twilio deliveries answered',
      async () => twilio.callbacks.filter((c) => c.messageId === sentTo(wPhone).twilio[0]?.sid).length === 4,
    );
    // Each status once taken, its identical retry refused as a replay.
    const answers = twilio.callbacks.filter((c) => c.messageId === sentTo(wPhone).twilio[0]!.sid);
    for (const st of ['sent', 'delivered'])
      expect(
        answers
          .filter((c) => c.status === st)
          .map((c) => c.answer)
          .sort(),
      ).toEqual([200, 403]);
    expect(await events(wOrg.id)).toHaveLength(2);
    await untilDelivery(w.result.appointmentId, delivered);
  });

  it('a signed receipt for a message we do not know is stored and counted, not an error', async () => {
    const org = await clinic();
    const before = await metric('sms_receipts_total', { provider: 'twilio', state: 'delivered', outcome: 'unmatched' });
    const sid = `SM${randomUUID().replace(/-/g, '')}`;
    const url = urls(org.id).twilioStatus;
    const params = {
      AccountSid: DEFAULT_TWILIO_ACCOUNT.sid,
      MessageSid: sid,
      MessageStatus: 'delivered',
      From: '+14155550101',
      To: '+14155559876',
    };
    const { headers, body } = signedTwilioPost(url, params, DEFAULT_TWILIO_ACCOUNT.token);
    expect((await postWebhook(url, headers, body)).status).toBe(200);
    await waitFor('processed', async () => (await events(org.id))[0]?.processed_at);
    expect((await events(org.id)).map((e) => [e.kind, e.outcome])).toEqual([['receipt', 'unmatched']]);
    expect(await metric('sms_receipts_total', { provider: 'twilio', state: 'delivered', outcome: 'unmatched' })).toBe(before + 1);
  });

  it('a receipt that came before its message id was recorded is matched by the sweep once it is', async () => {
    const org = await clinic([twilioLink()]);
    const phone = freshPhone();
    twilio.setReceipts({ steps: ['sent'], delayMs: 5 }, phone);
    const { result } = await book(h, org, { patientPhone: phone });
    await untilDelivery(result.appointmentId, (ds) => ds[0]?.delivery_state === 'sent');
    // A receipt with no outbox reference (a console-configured callback), for an id not recorded yet.
    const sid = `SM${randomUUID().replace(/-/g, '')}`;
    const url = urls(org.id).twilioStatus;
    const { headers, body } = signedTwilioPost(
      url,
      { AccountSid: DEFAULT_TWILIO_ACCOUNT.sid, MessageSid: sid, MessageStatus: 'delivered', To: phone, From: '+14155550101' },
      DEFAULT_TWILIO_ACCOUNT.token,
    );
    expect((await postWebhook(url, headers, body)).status).toBe(200);
    await waitFor('unmatched', async () => (await events(org.id)).some((e) => e.outcome === 'unmatched'));
    // As a settle committing late would: the attempt learns that id now.
    await h.owner`UPDATE sms_attempts SET provider_message_id = ${sid}, delivery_state = 'sent' WHERE outbox_id = (SELECT id FROM sms_outbox WHERE appointment_id = ${result.appointmentId})`;
    await h.runtime.sms.receipts.sweep({ lost: false });
    expect((await deliveries(result.appointmentId))[0]).toMatchObject({ provider_message_id: sid, delivery_state: 'delivered' });
  });
});

describe('settings a clinic needs for webhooks', () => {
  it('GET .../sms shows the exact URLs to paste into the Twilio console and the Telnyx profile, and the public key', async () => {
    const org = await clinic(undefined, { rateLimitPerHour: 100, contactPhone: '+14155550199' });
    const res = await h.http.get(`/api/admin/orgs/${org.id}/sms`).set(admin);
    expect(res.status).toBe(200);
    expect(res.body.contactPhone).toBe('+14155550199');
    expect(res.body.providers[0]).toMatchObject({ kind: 'twilio', keywordReplies: 'twilio' });
    expect(res.body.providers[1]).toMatchObject({ kind: 'telnyx', webhookPublicKey: telnyx.publicKey });
    expect(JSON.stringify(res.body)).not.toContain(DEFAULT_TWILIO_ACCOUNT.token);
    expect(res.body.webhooks).toEqual({
      publicUrl: h.cfg.PUBLIC_URL,
      statusCallbackOnSend: true,
      twilio: { inbound: urls(org.id).twilioInbound, statusCallback: urls(org.id).twilioStatus },
      telnyx: { webhook: urls(org.id).telnyx },
    });
  });

  it('refuses a webhookPublicKey that is not 32 bytes of base64, and a contactPhone that is not E.164', async () => {
    const org = await clinic();
    for (const bad of ['not-base64!', Buffer.alloc(31).toString('base64'), Buffer.alloc(33).toString('base64')]) {
      const res = await h.http
        .put(`/api/admin/orgs/${org.id}/sms`)
        .set(admin)
        .send({ providers: [telnyxLink({ webhookPublicKey: bad })] });
      expect(res.status, bad).toBe(400);
      expect(res.body.message).toMatch(/webhookPublicKey/);
    }
    const phone = await h.http
      .put(`/api/admin/orgs/${org.id}/sms`)
      .set(admin)
      .send({ contactPhone: '555-0199', providers: [twilioLink()] });
    expect(phone.status).toBe(400);
    expect(phone.body.message).toMatch(/contactPhone/);
    await putSms(h, org.id, [telnyxLink({ webhookPublicKey: Buffer.alloc(32, 7).toString('base64') })]);
  });
});
