/**
 * The console's pages and forms over HTTP, against the real server, database
 * and fake providers: what the HTML says (escaped, phones masked, texts exact),
 * the failover switch, and the dead letters' retry, its refusal once the
 * patient has the confirmation, delete, and the filters.
 */
import { describe, expect, it } from 'vitest';
import { startFakeTelnyx } from './fakes/fake-telnyx.js';
import { startFakeTwilio } from './fakes/fake-twilio.js';
import { consoleSession, opsGet, opsPost, type ConsoleSession } from './helpers/console.js';
import { useHarness, useServer } from './helpers/fixture.js';
import { createOrg } from './helpers/harness.js';
import {
  book,
  freshPhone,
  newTwilioAccount,
  outboxFor,
  providerEnv,
  putSms,
  telnyxLink,
  twilioCreates,
  twilioLink,
} from './helpers/sms.js';

const twilio = useServer('fake twilio', () => startFakeTwilio());
const telnyx = useServer('fake telnyx', () => startFakeTelnyx());
const h = useHarness(() => ({
  ...providerEnv(twilio.url, telnyx.url),
  SMS_MAX_ATTEMPTS: '1',
  SMS_ATTEMPT_TIMEOUT_MS: '500',
  SMS_SDK_TIMEOUT_MARGIN_MS: '200',
}));

let s: ConsoleSession;
const session = async () => (s ??= await consoleSession(h));

/** A clinic on a Twilio account of its own, failing over to Telnyx when the switch is on. */
async function clinic(over: Record<string, unknown> = {}, failoverEnabled = true) {
  const org = await createOrg(h, over);
  const account = newTwilioAccount(twilio);
  await putSms(h, org.id, [twilioLink({ accountSid: account.sid, authToken: account.token }), telnyxLink()], {
    rateLimitPerHour: 100,
    failoverEnabled,
  });
  return { org, account };
}

describe('the overview', () => {
  it('lists every clinic with its chain, switch and figures, escaping what clinics call themselves', async () => {
    const { org } = await clinic({ name: 'Dr <b>Bold</b> & "Sons" <script>alert(1)</script>' });
    await book(h, org);
    const res = await opsGet(h, await session(), '/ops');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/text\/html/);
    expect(res.text).toContain('Dr &lt;b&gt;Bold&lt;/b&gt; &amp; &quot;Sons&quot; &lt;script&gt;alert(1)&lt;/script&gt;');
    expect(res.text).not.toContain('<script>alert(1)');
    expect(res.text).toContain(`href="/ops/clinics/${org.id}"`);
    expect(res.text).toMatch(/<span class="kind">twilio<\/span> <span class="state">(up|unknown)<\/span>/);
    expect(res.text).toContain(`action="/ops/clinics/${org.id}/failover"`);
    expect(res.text).toMatch(/role="img" aria-label="[^"]*last 24 hours/);
  });

  it('htmx gets the clinics table alone, the part it swaps', async () => {
    const res = await opsGet(h, await session(), '/ops').set('HX-Request', 'true');
    expect(res.status).toBe(200);
    expect(res.text.trimStart()).toMatch(/^<h1>Overview<\/h1>/);
    expect(res.text).toContain('id="clinics"');
    expect(res.text).not.toContain('<html');
  });
});

describe("a clinic's page", () => {
  it('shows the text exactly as the patient gets it, its state, provider and attempts, with the phone masked; never a credential', async () => {
    const { org, account } = await clinic();
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone, patientName: "Zoë <O'Brien>" });
    const [row] = await h.owner<{ body: string }[]>`SELECT body FROM sms_outbox WHERE appointment_id = ${result.appointmentId}`;
    const res = await opsGet(h, await session(), `/ops/clinics/${org.id}`);
    expect(res.status).toBe(200);
    const escaped = row!.body
      .replace(/&/g, '&amp;')
      .replace(/</g, '&lt;')
      .replace(/>/g, '&gt;')
      .replace(/"/g, '&quot;')
      .replace(/'/g, '&#39;');
    expect(res.text).toContain(`<p class="body">${escaped}</p>`);
    expect(res.text).not.toContain(phone);
    expect(res.text).toContain(`…${phone.slice(-4)}#`);
    expect(res.text).toMatch(/twilio accepted/);
    expect(res.text).toContain('decrypts');
    expect(res.text).not.toContain(account.token);
    expect(res.text).not.toContain(account.sid);
    expect(res.headers['cache-control']).toBe('no-store');
  });

  it('a clinic that does not exist is a 404 page', async () => {
    const res = await opsGet(h, await session(), '/ops/clinics/00000000-0000-4000-8000-000000000000');
    expect(res.status).toBe(404);
    expect(res.text).toContain('Not found');
    expect((await opsGet(h, await session(), '/ops/clinics/nope')).status).toBe(404);
  });
});

describe('the failover switch', () => {
  it('a form flips it at once, recorded with the console as the actor; the next message follows it', async () => {
    const { org } = await clinic({}, false);
    const res = await opsPost(h, await session(), `/ops/clinics/${org.id}/failover`, { enabled: 'true', back: '/ops' });
    expect(res.status).toBe(303);
    expect(res.headers.location).toBe('/ops?notice=failover_on');
    const [row] = await h.owner<{ failover_enabled: boolean }[]>`SELECT failover_enabled FROM sms_settings WHERE org_id = ${org.id}`;
    expect(row!.failover_enabled).toBe(true);
    const audit = await h.owner<
      { actor: string; to_enabled: boolean }[]
    >`SELECT actor, to_enabled FROM sms_failover_changes WHERE org_id = ${org.id} ORDER BY id`;
    expect(audit.at(-1)).toEqual({ actor: 'console', to_enabled: true });
    // Effective at once in this process: Twilio refuses, Telnyx takes it.
    await twilio.setFault({ kind: 'status', status: 401, code: 20003, times: 1, scope: 'create' });
    expect((await book(h, org)).result.smsProvider).toBe('telnyx');
  });

  it('without the CSRF token nothing changes (403)', async () => {
    const { org } = await clinic({}, false);
    const res = await h.http
      .post(`/ops/clinics/${org.id}/failover`)
      .set('Cookie', (await session()).cookie)
      .type('form')
      .send({ enabled: 'true' });
    expect(res.status).toBe(403);
    const [row] = await h.owner<{ failover_enabled: boolean }[]>`SELECT failover_enabled FROM sms_settings WHERE org_id = ${org.id}`;
    expect(row!.failover_enabled).toBe(false);
  });

  it('refuses a return path outside the console', async () => {
    const { org } = await clinic({}, false);
    const res = await opsPost(h, await session(), `/ops/clinics/${org.id}/failover`, { enabled: 'true', back: 'https://evil.example/' });
    expect(res.status).toBe(400);
  });
});

describe('dead letters', () => {
  /** A message that became a dead letter: Twilio refused it and the clinic does not fail over. */
  async function deadLetter() {
    const c = await clinic({}, false);
    await twilio.setFault({ kind: 'status', status: 401, code: 20003, times: 1, scope: 'create' });
    const phone = freshPhone();
    const { result } = await book(h, c.org, { patientPhone: phone });
    const row = await outboxFor(h, result.appointmentId);
    expect(row.status).toBe('failed');
    return { ...c, phone, row, appointmentId: result.appointmentId };
  }

  it('are listed with the phone masked and the text exact, and a retry sends the message once', async () => {
    const d = await deadLetter();
    const list = await opsGet(h, await session(), `/ops/dead-letters?org=${d.org.id}`);
    expect(list.status).toBe(200);
    expect(list.text).toContain(`id="dead-${d.row.id}"`);
    expect(list.text).not.toContain(d.phone);
    expect(list.text).toContain('retries_exhausted');
    const retry = await opsPost(h, await session(), `/ops/dead-letters/${d.row.id}/retry`);
    expect(retry.status).toBe(303);
    expect(retry.headers.location).toBe('/ops/dead-letters?notice=retried');
    expect((await outboxFor(h, d.appointmentId)).status).toBe('sent');
    expect(twilio.messages.filter((m) => m.to === d.phone)).toHaveLength(1);
    expect(twilioCreates(twilio, d.account.sid)).toBe(2);
    // Once delivered, a second retry is refused and sends nothing.
    const again = await opsPost(h, await session(), `/ops/dead-letters/${d.row.id}/retry`);
    expect(again.status).toBe(409);
    expect(twilio.messages.filter((m) => m.to === d.phone)).toHaveLength(1);
  });

  it('a retry is refused once the patient has the confirmation, as in the API', async () => {
    const { org } = await clinic();
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    const row = await outboxFor(h, result.appointmentId);
    expect(row.status).toBe('sent');
    // Marked failed by hand (as the owner): an accepted attempt stands, so no retry may send it again.
    await h.owner`UPDATE sms_outbox SET status = 'failed', failed_at = now(), failure_reason = 'retries_exhausted' WHERE id = ${row.id}`;
    const res = await opsPost(h, await session(), `/ops/dead-letters/${row.id}/retry`);
    expect(res.status).toBe(409);
    expect(res.text).toContain('Refused: the patient already has a confirmation for this appointment.');
    expect((await outboxFor(h, result.appointmentId)).status).toBe('failed');
    expect(twilio.messages.filter((m) => m.to === phone)).toHaveLength(1);
  });

  it('delete removes one, and filters narrow the list by clinic, reason and age', async () => {
    const a = await deadLetter();
    const b = await deadLetter();
    await h.owner`UPDATE sms_outbox SET failed_at = now() - interval '3 days', failure_reason = 'invalid_recipient' WHERE id = ${b.row.id}`;
    const ids = async (q: string) =>
      [...(await opsGet(h, await session(), `/ops/dead-letters${q}`)).text.matchAll(/id="dead-([0-9a-f-]{36})"/g)].map((m) => m[1]);
    expect(await ids(`?org=${a.org.id}`)).toEqual([a.row.id]);
    expect(await ids('?age=24h')).toContain(a.row.id);
    expect(await ids('?age=24h')).not.toContain(b.row.id);
    expect(await ids('?age=7d')).toEqual(expect.arrayContaining([a.row.id, b.row.id]));
    expect(await ids('?reason=invalid_recipient')).toEqual([b.row.id]);
    expect((await opsGet(h, await session(), '/ops/dead-letters?reason=whatever')).status).toBe(400);

    const del = await opsPost(h, await session(), `/ops/dead-letters/${a.row.id}/delete`);
    expect(del.status).toBe(303);
    expect(await h.owner`SELECT 1 FROM sms_outbox WHERE id = ${a.row.id}`).toHaveLength(0);
    expect((await opsPost(h, await session(), `/ops/dead-letters/${a.row.id}/delete`)).status).toBe(404);
    // Not a dead letter: nothing to delete.
    const { org } = await clinic();
    const sent = await outboxFor(h, (await book(h, org)).result.appointmentId);
    expect((await opsPost(h, await session(), `/ops/dead-letters/${sent.id}/delete`)).status).toBe(404);
    expect(await h.owner`SELECT 1 FROM sms_outbox WHERE id = ${sent.id}`).toHaveLength(1);
  });
});
