// Webhook signatures: every forged, unsigned, stale, tampered or replayed
// request is refused with 403 and changes nothing; how the public URL is
// found behind a proxy. Shared setup in test/helpers/webhooks.ts.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { signedTwilioPost, twilioSignature, DEFAULT_TWILIO_ACCOUNT } from './fakes/fake-twilio.js';
import { telnyxSignature } from './fakes/fake-telnyx.js';
import { startHarness } from './helpers/harness.js';
import { book, freshPhone, newTwilioAccount, putSms, twilioLink, telnyxLink, waitFor } from './helpers/sms.js';
import {
  clinic,
  deliveries,
  events,
  h,
  metric,
  publicUrl,
  sentTo,
  telnyx,
  telnyxSigned,
  twilio,
  untilDelivery,
  urls,
  useWebhookSuite,
} from './helpers/webhooks.js';
import { createOrg } from './helpers/harness.js';

const TOLERANCE_S = 60;
useWebhookSuite({ TELNYX_WEBHOOK_TOLERANCE_SECONDS: String(TOLERANCE_S) });

const TOKEN = DEFAULT_TWILIO_ACCOUNT.token;
const SID = DEFAULT_TWILIO_ACCOUNT.sid;

/** Everything a webhook could change, for "nothing was done". */
async function footprint(orgId: string) {
  const [r] = await h.owner<Array<Record<string, number>>>`
    SELECT (SELECT count(*)::int FROM sms_webhook_events WHERE org_id = ${orgId}) AS events,
           (SELECT count(*)::int FROM sms_outbox WHERE org_id = ${orgId}) AS outbox,
           (SELECT count(*)::int FROM sms_attempts WHERE org_id = ${orgId} AND delivery_state IN ('undelivered', 'failed', 'delivered')) AS final,
           (SELECT count(*)::int FROM sms_opt_outs WHERE org_id = ${orgId}) AS opt_outs,
           (SELECT count(*)::int FROM sms_opt_out_events WHERE org_id = ${orgId}) AS opt_history,
           (SELECT count(*)::int FROM inbox_messages WHERE org_id = ${orgId}) AS inbox`;
  return r!;
}

const post = (url: string, headers: Record<string, string>, body: string) =>
  h.http
    .post(new URL(url).pathname + new URL(url).search)
    .set(headers)
    .send(body);

/** A real message sent through Twilio whose receipts are held back, so a forged failure would have something to fail. */
async function sentMessage(providers = [twilioLink(), telnyxSigned()]) {
  const org = await clinic(providers);
  const phone = freshPhone();
  twilio.setReceipts({ steps: [], lose: true }, phone);
  telnyx.setReceipts({ steps: [], lose: true }, phone);
  const { result } = await book(h, org, { patientPhone: phone });
  const row = (await h.owner<{ id: string }[]>`SELECT id FROM sms_outbox WHERE appointment_id = ${result.appointmentId}`)[0]!;
  return { org, phone, appointmentId: result.appointmentId, outboxId: row.id };
}

describe('Twilio: X-Twilio-Signature over the public URL, with the auth token of the link AccountSid names', () => {
  it('unsigned, forged, tampered, wrong URL, another account, unknown clinic: 403, nothing done, counted by reason', async () => {
    const { org, phone, appointmentId, outboxId } = await sentMessage();
    const sid = sentTo(phone).twilio[0]!.sid;
    const url = `${urls(org.id).twilioStatus}?m=${outboxId}`;
    const failure = {
      AccountSid: SID,
      MessageSid: sid,
      MessageStatus: 'undelivered',
      ErrorCode: '30007',
      To: phone,
      From: sentTo(phone).twilio[0]!.from,
    };
    const before = await footprint(org.id);
    const reasons = ['missing', 'mismatch', 'no_link', 'unknown_clinic'];
    const counts = Object.fromEntries(
      await Promise.all(
        reasons.map(async (r) => [r, await metric('sms_webhook_signature_failures_total', { provider: 'twilio', reason: r })]),
      ),
    );

    const cases: Array<[string, Promise<{ status: number }>]> = [];
    const form = new URLSearchParams(failure).toString();
    cases.push(['unsigned', post(url, { 'content-type': 'application/x-www-form-urlencoded' }, form)]);
    cases.push(['another token', post(url, signedTwilioPost(url, failure, 'not-the-auth-token-0123456789').headers, form)]);
    const tampered = signedTwilioPost(url, { ...failure, ErrorCode: '30003' }, TOKEN);
    cases.push(['tampered body', post(url, tampered.headers, form)]);
    cases.push(['signed for another URL', post(url, signedTwilioPost(url.replace('http://', 'https://'), failure, TOKEN).headers, form)]);
    cases.push(['signed without the query', post(url, signedTwilioPost(urls(org.id).twilioStatus, failure, TOKEN).headers, form)]);
    const other = newTwilioAccount(twilio);
    const foreign = { ...failure, AccountSid: other.sid };
    cases.push([
      'an account the clinic has no link for',
      post(url, signedTwilioPost(url, foreign, other.token).headers, new URLSearchParams(foreign).toString()),
    ]);
    const ghost = `${publicUrl}/webhooks/twilio/${randomUUID()}/status`;
    cases.push(['unknown clinic', post(ghost, signedTwilioPost(ghost, failure, TOKEN).headers, form)]);
    const junk = `${publicUrl}/webhooks/twilio/not-a-clinic/status`;
    cases.push(['not a clinic id', post(junk, signedTwilioPost(junk, failure, TOKEN).headers, form)]);
    cases.push([
      'not a form at all',
      post(url, { 'content-type': 'application/json', 'x-twilio-signature': twilioSignature(TOKEN, url, {}) }, '{"MessageSid":'),
    ]);

    for (const [what, p] of cases) expect((await p).status, what).toBe(403);
    await new Promise((r) => setTimeout(r, 100));
    expect(await footprint(org.id)).toEqual(before);
    expect((await deliveries(appointmentId))[0]!.delivery_state).toBe('accepted');
    expect(await metric('sms_webhook_signature_failures_total', { provider: 'twilio', reason: 'missing' })).toBe(counts.missing + 1);
    expect(await metric('sms_webhook_signature_failures_total', { provider: 'twilio', reason: 'mismatch' })).toBe(counts.mismatch + 4);
    expect(await metric('sms_webhook_signature_failures_total', { provider: 'twilio', reason: 'no_link' })).toBe(counts.no_link + 2);
    expect(await metric('sms_webhook_signature_failures_total', { provider: 'twilio', reason: 'unknown_clinic' })).toBe(
      counts.unknown_clinic + 2,
    );

    // Control: the same failure, correctly signed, is taken (and resent through Telnyx).
    expect((await post(url, signedTwilioPost(url, failure, TOKEN).headers, form)).status).toBe(200);
    await untilDelivery(appointmentId, (ds) => ds[0]?.delivery_state === 'undelivered');
  });

  it('a replay (the exact signature already stored) is 403 and does nothing; Twilio has no timestamp, so this is the replay check', async () => {
    const org = await clinic([twilioLink()]);
    const url = urls(org.id).twilioInbound;
    const stop = {
      AccountSid: SID,
      MessageSid: `SM${randomUUID().replace(/-/g, '')}`,
      From: freshPhone(),
      To: '+14155550101',
      Body: 'STOP',
    };
    const { headers, body } = signedTwilioPost(url, stop, TOKEN);
    const first = await post(url, headers, body);
    expect(first.status).toBe(200);
    const after = await footprint(org.id);
    // The opt-out it made is undone by hand; a replay must not make it again.
    await h.owner`DELETE FROM sms_opt_outs WHERE org_id = ${org.id}`;
    const before = await metric('sms_webhook_signature_failures_total', { provider: 'twilio', reason: 'replay' });
    expect((await post(url, headers, body)).status).toBe(403);
    expect(await metric('sms_webhook_signature_failures_total', { provider: 'twilio', reason: 'replay' })).toBe(before + 1);
    expect((await footprint(org.id)).events).toBe(after.events);
    expect((await footprint(org.id)).opt_outs).toBe(0);
  });
});

describe('Telnyx: Ed25519 over timestamp|body with the link webhookPublicKey, within the tolerance', () => {
  const finalized = (id: string, to: string, code = '40002') =>
    JSON.stringify({
      data: {
        record_type: 'event',
        id: randomUUID(),
        event_type: 'message.finalized',
        occurred_at: new Date().toISOString(),
        payload: { id, to: [{ phone_number: to, status: 'delivery_failed' }], errors: [{ code, title: 'Blocked as spam' }] },
      },
      meta: { attempt: 1 },
    });
  const now = () => Math.floor(Date.now() / 1000);

  it('unsigned, another key, tampered, stale, replayed, no key configured, unknown clinic: 403, nothing done', async () => {
    const { org, phone, appointmentId } = await sentMessage([telnyxSigned(), twilioLink()]);
    const id = sentTo(phone).telnyx[0]!.id;
    const url = urls(org.id).telnyx;
    const body = finalized(id, phone);
    const stranger = generateKeyPairSync('ed25519').privateKey;
    const before = await footprint(org.id);
    const stale0 = await metric('sms_webhook_signature_failures_total', { provider: 'telnyx', reason: 'stale' });
    const cases: Array<[string, Record<string, string>, string, string?]> = [
      ['unsigned', { 'content-type': 'application/json' }, body],
      ['signed by another key', { 'content-type': 'application/json', ...telnyxSignature(body, now(), stranger) }, body],
      ['tampered body', { 'content-type': 'application/json', ...telnyx.signEvent(body.replace('40002', '40001')) }, body],
      [
        'signature for another timestamp',
        { 'content-type': 'application/json', ...telnyx.signEvent(body, { timestamp: now() - 5 }), 'telnyx-timestamp': String(now()) },
        body,
      ],
      [
        'stale, beyond the tolerance',
        { 'content-type': 'application/json', ...telnyx.signEvent(body, { timestamp: now() - TOLERANCE_S - 30 }) },
        body,
      ],
      [
        'from the future, beyond the tolerance',
        { 'content-type': 'application/json', ...telnyx.signEvent(body, { timestamp: now() + TOLERANCE_S + 30 }) },
        body,
      ],
      ['not a timestamp', { 'content-type': 'application/json', ...telnyx.signEvent(body), 'telnyx-timestamp': 'yesterday' }, body],
      [
        'unknown clinic',
        { 'content-type': 'application/json', ...telnyx.signEvent(body) },
        body,
        `${publicUrl}/webhooks/telnyx/${randomUUID()}`,
      ],
      ['not JSON, unsigned', { 'content-type': 'application/json' }, '{"data":'],
    ];
    for (const [what, headers, b, to] of cases) expect((await post(to ?? url, headers, b)).status, what).toBe(403);
    expect(await metric('sms_webhook_signature_failures_total', { provider: 'telnyx', reason: 'stale' })).toBe(stale0 + 2);

    // A link without webhookPublicKey verifies nothing.
    const keyless = await clinic([telnyxLink()]);
    expect((await post(urls(keyless.id).telnyx, { 'content-type': 'application/json', ...telnyx.signEvent(body) }, body)).status).toBe(403);
    // A clinic with no Telnyx link at all.
    const twilioOnly = await clinic([twilioLink()]);
    expect((await post(urls(twilioOnly.id).telnyx, { 'content-type': 'application/json', ...telnyx.signEvent(body) }, body)).status).toBe(
      403,
    );

    await new Promise((r) => setTimeout(r, 100));
    expect(await footprint(org.id)).toEqual(before);
    expect((await deliveries(appointmentId))[0]!.delivery_state).toBe('accepted');

    // Within the tolerance and signed: taken once; the same signed request again is a replay.
    const headers = { 'content-type': 'application/json', ...telnyx.signEvent(body, { timestamp: now() - TOLERANCE_S + 10 }) };
    expect((await post(url, headers, body)).status).toBe(200);
    expect((await post(url, headers, body)).status).toBe(403);
    await waitFor('the resend', async () => (await footprint(org.id)).outbox === before.outbox! + 1);
    expect(await events(org.id)).toHaveLength(1);
  });
});

describe('the public URL a signature is checked against', () => {
  const inbound = (url: string) =>
    signedTwilioPost(
      url,
      { AccountSid: SID, MessageSid: `SM${randomUUID().replace(/-/g, '')}`, From: freshPhone(), To: '+14155550101', Body: 'running late' },
      TOKEN,
    );

  it('behind a proxy that strips a path prefix: PUBLIC_URL + the request path and query', async () => {
    const base = 'https://clinic-tools.example.com/voice';
    const p = await startHarness({ PUBLIC_URL: base });
    try {
      const org = await createOrg(p);
      await putSms(p, org.id, [twilioLink()]);
      const path = `/webhooks/twilio/${org.id}/inbound`;
      const ok = inbound(`${base}${path}`);
      expect((await p.http.post(path).set(ok.headers).send(ok.body)).status).toBe(200);
      // Signed for the address the service itself listens on: not what Twilio called.
      const local = inbound(`http://127.0.0.1${path}`);
      expect((await p.http.post(path).set(local.headers).send(local.body)).status).toBe(403);
    } finally {
      await p.close();
    }
  });

  it('without PUBLIC_URL: the request scheme and host, and X-Forwarded-Proto / -Host only from a trusted proxy (TRUST_PROXY)', async () => {
    for (const [trust, expected] of [
      ['1', 200],
      ['false', 403],
    ] as const) {
      const p = await startHarness({ TRUST_PROXY: trust });
      try {
        const org = await createOrg(p);
        await putSms(p, org.id, [twilioLink()]);
        const path = `/webhooks/twilio/${org.id}/inbound`;
        const signed = inbound(`https://clinic-tools.example.com${path}`);
        const res = await p.http
          .post(path)
          .set(signed.headers)
          .set('X-Forwarded-Proto', 'https')
          .set('X-Forwarded-Host', 'clinic-tools.example.com')
          .send(signed.body);
        expect(res.status, `TRUST_PROXY=${trust}`).toBe(expected);
      } finally {
        await p.close();
      }
    }
  });
});

describe('VERIFY_SMS_BRIDGE.sh: the self-signed probe', () => {
  it('reports each webhook URL reachable, refusing unsigned requests, and accepting one signed as Twilio signs it; the probe does nothing', async () => {
    const org = await clinic([twilioLink(), telnyxSigned()]);
    const res = await h.http.get('/api/sms/diagnostics?probe=webhooks').set('Authorization', `Bearer ${org.token}`);
    expect(res.status).toBe(200);
    expect(res.body.webhooks).toEqual([
      { position: 0, kind: 'twilio', url: urls(org.id).twilioStatus, reachable: true, unsignedRefused: true, signedAccepted: true },
      { position: 1, kind: 'telnyx', url: urls(org.id).telnyx, reachable: true, unsignedRefused: true, signedAccepted: null },
    ]);
    await waitFor('the probe processed', async () => (await events(org.id))[0]?.processed_at);
    expect((await events(org.id)).map((e) => [e.kind, e.outcome])).toEqual([['probe', 'probe']]);
  });
});

describe('who may touch the stored events', () => {
  it('the request role (clinic_app) may only append: no reading bodies back, no updates, no deletes; row security forced on the new tables', async () => {
    const org = await clinic([twilioLink()]);
    const url = urls(org.id).twilioInbound;
    const { headers, body } = signedTwilioPost(
      url,
      { AccountSid: SID, MessageSid: `SM${randomUUID().replace(/-/g, '')}`, From: freshPhone(), To: '+14155550101', Body: 'hello' },
      TOKEN,
    );
    expect((await post(url, headers, body)).status).toBe(200);
    const app = h.runtime.sql;
    await expect(
      app.begin(async (tx) => {
        await tx`SELECT set_config('app.org_id', ${org.id}, true)`;
        return tx`SELECT raw_body FROM sms_webhook_events`;
      }),
    ).rejects.toMatchObject({ code: '42501' });
    await expect(
      app.begin(async (tx) => {
        await tx`SELECT set_config('app.org_id', ${org.id}, true)`;
        return tx`UPDATE sms_webhook_events SET outcome = 'x'`;
      }),
    ).rejects.toMatchObject({ code: '42501' });
    await expect(
      app.begin(async (tx) => {
        await tx`SELECT set_config('app.org_id', ${org.id}, true)`;
        return tx`DELETE FROM sms_webhook_events`;
      }),
    ).rejects.toMatchObject({ code: '42501' });
    const forced = await h.owner<{ relname: string; relforcerowsecurity: boolean }[]>`
      SELECT relname, relforcerowsecurity FROM pg_class WHERE relname IN ('sms_webhook_events', 'sms_opt_out_events') ORDER BY relname`;
    expect(forced).toEqual([
      { relname: 'sms_opt_out_events', relforcerowsecurity: true },
      { relname: 'sms_webhook_events', relforcerowsecurity: true },
    ]);
    // The worker reads across clinics (its sweeps) but changes nothing without the event's org.
    const [seen] = await h.runtime.workerSql<{ n: number }[]>`SELECT count(*)::int AS n FROM sms_webhook_events WHERE org_id = ${org.id}`;
    expect(seen!.n).toBe(1);
    const touched = await h.runtime.workerSql`UPDATE sms_webhook_events SET outcome = 'x' WHERE org_id = ${org.id}`;
    expect(touched.count).toBe(0);
  });

  it('no phone number, token or key in any metric label', async () => {
    const text = (await h.http.get('/metrics')).text;
    expect(text).toMatch(/sms_webhook_signature_failures_total\{provider="twilio",reason="mismatch"\}/);
    expect(text).toMatch(/sms_receipts_total\{/);
    expect(text).not.toMatch(/\+1\d{10}/);
    expect(text).not.toContain(TOKEN);
    expect(text).not.toContain(telnyx.publicKey);
  });
});
