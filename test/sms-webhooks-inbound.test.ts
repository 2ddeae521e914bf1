// Inbound texts: STOP / START / HELP on one registry per clinic across every
// provider, exactly one answer to the patient, the rest to the inbox. The
// fakes send the providers' real inbound webhooks, signed. Shared setup in
// test/helpers/webhooks.ts.
import { describe, expect, it } from 'vitest';
import { keywordOf } from '../src/sms/inbound.js';
import { renderKeywordReply } from '../src/sms/texts.js';
import { ADMIN_TOKEN } from './helpers/harness.js';
import { TWILIO_POOL, book, freshPhone, outboxFor, twilioLink, waitFor } from './helpers/sms.js';
import { TELNYX_POOL, clinic, events, h, metric, sentTo, telnyx, telnyxSigned, twilio, urls, useWebhookSuite } from './helpers/webhooks.js';

useWebhookSuite();

const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };
const EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>';

const optOuts = async (orgId: string, unmask = false) =>
  (await h.http.get(`/api/admin/orgs/${orgId}/opt-outs${unmask ? '?unmask=true' : ''}`).set(admin)).body as {
    items: Array<{ phone: string; source: string; previousOptOuts: number }>;
    next: string | null;
  };

describe('keywords', () => {
  it('single word, any case, punctuation around it ignored; anything longer is a message', () => {
    for (const t of ['STOP', 'stop', ' Stop. ', 'StopAll', 'unsubscribe!', 'CANCEL', 'end', 'quit', 'OptOut', 'revoke', '"STOP"'])
      expect(keywordOf(t)?.action, t).toBe('opt_out');
    for (const t of ['START', 'unstop', 'Yes!', 'yes.']) expect(keywordOf(t)?.action, t).toBe('opt_in');
    for (const t of ['HELP', 'help?', 'Info']) expect(keywordOf(t)?.action, t).toBe('help');
    for (const t of ['Stop please', 'stop it', 'STOP STOP', 'yes I will be there', 'helpful', '', '   ', 'ST0P', 'S.T.O.P'])
      expect(keywordOf(t), t).toBeNull();
  });

  it('our answers name the clinic, are GSM-7 and one segment', () => {
    expect(renderKeywordReply('help', 'Maple Street Family Clinic', '+14155550199')).toBe(
      'Maple Street Family Clinic: appointment texts. For help call +14155550199. Reply STOP to opt out.',
    );
    for (const a of ['opt_out', 'opt_in', 'help'] as const) {
      const t = renderKeywordReply(a, 'Clínica “Ñandú” Évora – Dr. Müller & Søn'.repeat(3), null);
      expect(t.length, a).toBeLessThanOrEqual(160);
      // Letters GSM-7 lacks lose their accents; the ones it has (Ñ, É, ü, ø) stay.
      expect(t, a).toMatch(/^Clinica "Ñandu" Évora - Dr\. Müller & Søn/);
    }
  });
});

describe('one opt-out registry for every provider', () => {
  it('STOP on Twilio stops a later text that would have gone via Telnyx; START restores it', async () => {
    const org = await clinic([telnyxSigned(), twilioLink()]);
    const phone = freshPhone();
    const stop = await twilio.sendInbound({ url: urls(org.id).twilioInbound, from: phone, to: TWILIO_POOL[0]!, body: 'Stop' });
    expect(stop.status).toBe(200);
    // Twilio answers STOP on its long codes itself: our TwiML is empty.
    expect(stop.body).toBe(EMPTY);
    expect((await optOuts(org.id, true)).items).toEqual([
      expect.objectContaining({ phone, source: 'inbound:twilio:STOP', previousOptOuts: 0 }),
    ]);

    const stopped = await book(h, org, { patientPhone: phone });
    expect(stopped.result).toMatchObject({ success: true, smsStatus: 'failed_but_booked', smsReason: 'opted_out' });
    expect(sentTo(phone).telnyx).toHaveLength(0);
    expect(sentTo(phone).twilio).toHaveLength(0);

    const start = await twilio.sendInbound({ url: urls(org.id).twilioInbound, from: phone, to: TWILIO_POOL[0]!, body: 'START' });
    expect(start.body).toBe(EMPTY);
    expect((await optOuts(org.id)).items).toEqual([]);
    const again = await book(h, org, { patientPhone: phone });
    expect(again.result).toMatchObject({ smsStatus: 'sent', smsProvider: 'telnyx' });
    expect(sentTo(phone).telnyx).toHaveLength(1);
    // The history keeps both.
    const history = await h.owner<{ action: string; source: string }[]>`
      SELECT action, source FROM sms_opt_out_events WHERE org_id = ${org.id} AND phone = ${phone} ORDER BY id`;
    expect(history).toEqual([
      { action: 'opt_out', source: 'inbound:twilio:STOP' },
      { action: 'opt_in', source: 'inbound:twilio:START' },
    ]);
  });

  it('STOP on Telnyx holds a message already waiting to be retried through Twilio (the gate reads the registry before every run)', async () => {
    const org = await clinic([twilioLink(), telnyxSigned()]);
    const phone = freshPhone();
    // Both providers refuse for now: the confirmation waits for a later run.
    await twilio.setFault({ kind: 'http5xx', status: 503 });
    await telnyx.setFault({ kind: 'http5xx', status: 503, scope: 'create' });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result.smsStatus).toBe('queued');
    const r = await telnyx.sendInbound({
      url: urls(org.id).telnyx,
      from: phone,
      to: TELNYX_POOL[0]!,
      text: 'STOPALL',
      autoresponseType: 'STOP',
    });
    expect(r.status).toBe(200);
    await waitFor('the opt-out', async () => (await optOuts(org.id)).items.length === 1);
    await twilio.setFault(null);
    await telnyx.setFault(null);
    await waitFor('the retry to stop', async () => (await outboxFor(h, result.appointmentId)).status === 'failed');
    expect(await outboxFor(h, result.appointmentId)).toMatchObject({ failure_reason: 'opted_out' });
    expect(sentTo(phone).twilio).toHaveLength(0);
    expect(sentTo(phone).telnyx).toHaveLength(0);
  });

  it('a provider refusal (21610) feeds the same registry, and the list masks phones unless asked', async () => {
    const org = await clinic();
    const phone = freshPhone();
    await twilio.setFault({ kind: 'status', status: 400, code: 21610, times: 1 });
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result).toMatchObject({ smsStatus: 'failed_but_booked', smsReason: 'opted_out' });
    const masked = await optOuts(org.id);
    expect(masked.items).toEqual([expect.objectContaining({ source: 'provider:twilio:21610' })]);
    expect(masked.items[0]!.phone).not.toContain(phone.slice(2));
    expect(masked.items[0]!.phone).toMatch(new RegExp(`${phone.slice(-4)}`));
    expect((await optOuts(org.id, true)).items[0]!.phone).toBe(phone);
  });

  it('the list is paginated and 404 for an unknown clinic', async () => {
    const org = await clinic([twilioLink()]);
    const phones = [freshPhone(), freshPhone(), freshPhone()];
    for (const p of phones) await twilio.sendInbound({ url: urls(org.id).twilioInbound, from: p, to: TWILIO_POOL[0]!, body: 'QUIT' });
    const first = (await h.http.get(`/api/admin/orgs/${org.id}/opt-outs?limit=2&unmask=true`).set(admin)).body;
    const second = (await h.http.get(`/api/admin/orgs/${org.id}/opt-outs?limit=2&unmask=true&before=${first.next}`).set(admin)).body;
    expect([...first.items, ...second.items].map((i: { phone: string }) => i.phone).sort()).toEqual([...phones].sort());
    expect(second.next).toBeNull();
    expect((await h.http.get(`/api/admin/orgs/00000000-0000-4000-8000-000000000000/opt-outs`).set(admin)).status).toBe(404);
  });
});

describe('exactly one answer reaches the patient', () => {
  it('Twilio, keywords answered by Twilio (default): HELP gets empty TwiML and is recorded', async () => {
    const org = await clinic([twilioLink()], { rateLimitPerHour: 100, contactPhone: '+14155550199' });
    const before = await metric('sms_inbound_total', { provider: 'twilio', action: 'help', answered_by: 'provider' });
    const r = await twilio.sendInbound({ url: urls(org.id).twilioInbound, from: freshPhone(), to: TWILIO_POOL[0]!, body: 'HELP' });
    expect(r).toMatchObject({ status: 200, body: EMPTY });
    expect(r.contentType).toMatch(/text\/xml/);
    expect(await metric('sms_inbound_total', { provider: 'twilio', action: 'help', answered_by: 'provider' })).toBe(before + 1);
    expect((await events(org.id)).map((e) => e.outcome)).toEqual(['help']);
  });

  it('Twilio with keywordReplies "ours" (Twilio keyword handling off): HELP is answered in TwiML with the clinic name and contact number', async () => {
    const org = await clinic([twilioLink({ keywordReplies: 'ours' })], { rateLimitPerHour: 100, contactPhone: '+14155550199' });
    const [name] = await h.owner<{ name: string }[]>`SELECT name FROM orgs WHERE id = ${org.id}`;
    const r = await twilio.sendInbound({ url: urls(org.id).twilioInbound, from: freshPhone(), to: TWILIO_POOL[0]!, body: 'info' });
    expect(r.body).toBe(
      `<?xml version="1.0" encoding="UTF-8"?><Response><Message>${name!.name}: appointment texts. For help call +14155550199. Reply STOP to opt out.</Message></Response>`,
    );
    // Advanced Opt-Out marks a keyword Twilio answered: then we stay silent even here.
    const aoo = await twilio.sendInbound({
      url: urls(org.id).twilioInbound,
      from: freshPhone(),
      to: TWILIO_POOL[0]!,
      body: 'HELP',
      optOutType: 'HELP',
    });
    expect(aoo.body).toBe(EMPTY);
  });

  it('Telnyx without an autoresponse: our HELP answer goes out once, from the number texted, however often the event is delivered', async () => {
    const org = await clinic([telnyxSigned()], { rateLimitPerHour: 100, contactPhone: '+14155550199' });
    const phone = freshPhone();
    const messageId = '7d3f0c52-9a0e-4a57-9f1e-3f1f2c7a9e11';
    const first = await telnyx.sendInbound({ url: urls(org.id).telnyx, from: phone, to: TELNYX_POOL[1]!, text: 'Help', messageId });
    // The same event again, newly signed (a Telnyx redelivery), and the same text under another event id.
    const again = await telnyx.sendInbound({
      url: urls(org.id).telnyx,
      from: phone,
      to: TELNYX_POOL[1]!,
      text: 'Help',
      messageId,
      eventId: first.eventId,
    });
    const other = await telnyx.sendInbound({ url: urls(org.id).telnyx, from: phone, to: TELNYX_POOL[1]!, text: 'Help', messageId });
    expect([first.status, again.status, other.status]).toEqual([200, 200, 200]);
    const reply = await waitFor('our answer', async () => sentTo(phone).telnyx[0]);
    expect(reply).toMatchObject({
      from: TELNYX_POOL[1],
      body: expect.stringMatching(/: appointment texts\. For help call \+14155550199\. Reply STOP to opt out\.$/),
    });
    await waitFor('all three processed', async () => (await events(org.id)).filter((e) => e.processed_at).length === 3);
    expect((await events(org.id)).map((e) => e.outcome).sort()).toEqual(['duplicate', 'duplicate', 'help']);
    await new Promise((r) => setTimeout(r, 200));
    expect(sentTo(phone).telnyx).toHaveLength(1);
  });

  it('Telnyx with autoresponse_type (the profile answered): nothing from us, the opt-out still recorded', async () => {
    const org = await clinic([telnyxSigned()]);
    const phone = freshPhone();
    await telnyx.sendInbound({ url: urls(org.id).telnyx, from: phone, to: TELNYX_POOL[0]!, text: 'STOP', autoresponseType: 'STOP' });
    await telnyx.sendInbound({ url: urls(org.id).telnyx, from: phone, to: TELNYX_POOL[0]!, text: 'HELP', autoresponseType: 'HELP' });
    await waitFor('both processed', async () => (await events(org.id)).filter((e) => e.processed_at).length === 2);
    await new Promise((r) => setTimeout(r, 200));
    expect(sentTo(phone).telnyx).toHaveLength(0);
    expect((await optOuts(org.id, true)).items.map((i) => i.phone)).toEqual([phone]);
  });

  it('Telnyx STOP with no autoresponse (REVOKE is not one of its keywords): our one confirmation, then nothing more', async () => {
    const org = await clinic([telnyxSigned()]);
    const phone = freshPhone();
    await telnyx.sendInbound({ url: urls(org.id).telnyx, from: phone, to: TELNYX_POOL[0]!, text: 'revoke' });
    const reply = await waitFor('our confirmation', async () => sentTo(phone).telnyx[0]);
    expect(reply.body).toMatch(/: you will get no more texts from us\. Reply START to receive them again\.$/);
    const later = await book(h, org, { patientPhone: phone });
    expect(later.result.smsReason).toBe('opted_out');
    expect(sentTo(phone).telnyx).toHaveLength(1);
  });
});

describe('the inbox', () => {
  it('any other text is stored once in the clinic inbox (paginated, phone masked), answered "call us" once a day', async () => {
    const org = await clinic([twilioLink(), telnyxSigned()]);
    const phone = freshPhone();
    const a = await twilio.sendInbound({
      url: urls(org.id).twilioInbound,
      from: phone,
      to: TWILIO_POOL[0]!,
      body: 'Running 10 minutes late, sorry!',
    });
    // Issue 11: everything else is answered with "call us", at most once a day (the Telnyx texts below get nothing).
    expect(a.body).toMatch(
      /<Message>.*thanks for your message\. For anything about your visit please call the clinic\. Reply STOP to opt out\.<\/Message>/,
    );
    await telnyx.sendInbound({
      url: urls(org.id).telnyx,
      from: phone,
      to: TELNYX_POOL[0]!,
      text: 'Stop please, wrong number',
      messageId: '0c4e2b9a-1111-4a57-9f1e-3f1f2c7a9e11',
    });
    await telnyx.sendInbound({
      url: urls(org.id).telnyx,
      from: phone,
      to: TELNYX_POOL[0]!,
      text: 'Stop please, wrong number',
      messageId: '0c4e2b9a-1111-4a57-9f1e-3f1f2c7a9e11',
    });
    await waitFor('three processed', async () => (await events(org.id)).filter((e) => e.processed_at).length === 3);
    const first = await h.http.get(`/api/admin/orgs/${org.id}/inbox?limit=1`).set(admin);
    const second = await h.http.get(`/api/admin/orgs/${org.id}/inbox?limit=1&before=${first.body.next}`).set(admin);
    const items = [...first.body.items, ...second.body.items];
    expect(items.map((i: { body: string; provider: string; kind: string }) => [i.body, i.provider, i.kind])).toEqual([
      ['Stop please, wrong number', 'telnyx', 'sms_reply'],
      ['Running 10 minutes late, sorry!', 'twilio', 'sms_reply'],
    ]);
    expect(second.body.next).toBeNull();
    expect(JSON.stringify(items)).not.toContain(phone);
    expect((await optOuts(org.id)).items).toEqual([]);
    expect(sentTo(phone).telnyx).toHaveLength(0);
  });
});
