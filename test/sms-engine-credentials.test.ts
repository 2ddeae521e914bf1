// SMS engine: per-clinic credentials, diagnostics, the admin API surface. Shared setup in test/helpers/sms-engine.ts.
import supertest from 'supertest';
import { describe, expect, it } from 'vitest';
import { generateKeySpec } from '../src/crypto.js';
import { DEFAULT_TELNYX_API_KEY } from './fakes/fake-telnyx.js';
import { DEFAULT_TWILIO_ACCOUNT } from './fakes/fake-twilio.js';
import { ADMIN_TOKEN, createOrg, startHarness, type TestOrg } from './helpers/harness.js';
import { clinic, h, sentTo, telnyx, twilio, smsEnv, useSmsEngineSuite } from './helpers/sms-engine.js';
import { TELNYX_POOL, TWILIO_POOL, book, freshPhone, newTwilioAccount, putSms, telnyxLink, twilioLink } from './helpers/sms.js';

useSmsEngineSuite();

describe('per-clinic credentials', () => {
  it("each clinic's messages go out under its own Twilio account, never another clinic's", async () => {
    const a = newTwilioAccount(twilio);
    const b = newTwilioAccount(twilio);
    const orgA = await clinic([twilioLink({ accountSid: a.sid, authToken: a.token })]);
    const orgB = await clinic([twilioLink({ accountSid: b.sid, authToken: b.token })]);
    const phonesA = [freshPhone(), freshPhone()];
    const phonesB = [freshPhone(), freshPhone()];
    for (let i = 0; i < 2; i++) {
      expect((await book(h, orgA, { patientPhone: phonesA[i] })).result.smsStatus).toBe('sent');
      expect((await book(h, orgB, { patientPhone: phonesB[i] })).result.smsStatus).toBe('sent');
    }
    for (const p of phonesA) expect(sentTo(p).twilio.map((m) => m.accountSid)).toEqual([a.sid]);
    for (const p of phonesB) expect(sentTo(p).twilio.map((m) => m.accountSid)).toEqual([b.sid]);
    const basic = (acc: { sid: string; token: string }) => `Basic ${Buffer.from(`${acc.sid}:${acc.token}`).toString('base64')}`;
    for (const [acc, other] of [
      [a, b],
      [b, a],
    ] as const) {
      const reqs = twilio.log.filter((r) => r.path.includes(acc.sid));
      expect(reqs.length).toBeGreaterThanOrEqual(2);
      expect(reqs.every((r) => r.authorization === basic(acc))).toBe(true);
      expect(twilio.log.some((r) => r.path.includes(acc.sid) && r.authorization === basic(other))).toBe(false);
    }
  });

  it('credentials never come back out of the API and are not stored in plaintext', async () => {
    const org = await createOrg(h);
    const account = newTwilioAccount(twilio);
    const telnyxKey = `KEY_${account.token}`;
    telnyx.addApiKey(telnyxKey);
    const put = await putSms(h, org.id, [
      twilioLink({ accountSid: account.sid, authToken: account.token }),
      telnyxLink({ apiKey: telnyxKey }),
    ]);
    const got = await h.http.get(`/api/admin/orgs/${org.id}/sms`).set('Authorization', `Bearer ${ADMIN_TOKEN}`);
    expect(got.status).toBe(200);
    expect(got.body.providers.map((p: { kind: string }) => p.kind)).toEqual(['twilio', 'telnyx']);
    for (const text of [JSON.stringify(put), JSON.stringify(got.body)]) {
      expect(text).not.toContain(account.token);
      expect(text).not.toContain(telnyxKey);
      expect(text).not.toContain(account.sid);
    }
    const rows = await h.owner<{ kind: string; credentials_enc: string }[]>`
      SELECT kind, credentials_enc FROM sms_providers WHERE org_id = ${org.id} ORDER BY position`;
    expect(rows).toHaveLength(2);
    for (const r of rows) {
      expect(r.credentials_enc).toMatch(/^v1\.k1\./);
      for (const secret of [account.token, telnyxKey, account.sid]) {
        expect(r.credentials_enc).not.toContain(secret);
        expect(r.credentials_enc).not.toContain(Buffer.from(secret).toString('base64').slice(0, 16));
      }
    }
    // Admin auth is required to read the chain at all.
    expect((await h.http.get(`/api/admin/orgs/${org.id}/sms`)).status).toBe(401);
  });

  it('CREDENTIALS_KEY rotation: a runtime with "k2,k1" still sends and re-encrypts under k2', async () => {
    const k1 = generateKeySpec('k1');
    const k2 = generateKeySpec('k2');
    const h1 = await startHarness({ ...smsEnv(), CREDENTIALS_KEY: k1 });
    let ownerUrl: string;
    let org: TestOrg;
    try {
      ownerUrl = h1.ownerUrl;
      org = await createOrg(h1);
      await putSms(h1, org.id, [twilioLink()]);
      const [before] = await h1.owner<{ credentials_enc: string }[]>`SELECT credentials_enc FROM sms_providers WHERE org_id = ${org.id}`;
      expect(before!.credentials_enc).toMatch(/^v1\.k1\./);
    } finally {
      await h1.close();
    }
    const h2 = await startHarness({ ...smsEnv(), CREDENTIALS_KEY: `${k2},${k1}` }, { ownerUrl });
    try {
      const phone = freshPhone();
      expect((await book(h2, org, { patientPhone: phone })).result).toMatchObject({ smsStatus: 'sent', smsProvider: 'twilio' });
      expect(sentTo(phone).twilio).toHaveLength(1);
      const [after] = await h2.owner<{ credentials_enc: string }[]>`SELECT credentials_enc FROM sms_providers WHERE org_id = ${org.id}`;
      expect(after!.credentials_enc).toMatch(/^v1\.k2\./);
    } finally {
      await h2.close();
    }
    // k1 can now be retired.
    const h3 = await startHarness({ ...smsEnv(), CREDENTIALS_KEY: k2 }, { ownerUrl });
    try {
      const phone = freshPhone();
      expect((await book(h3, org, { patientPhone: phone })).result.smsStatus).toBe('sent');
    } finally {
      await h3.close();
    }
  });
});

describe('diagnostics', () => {
  it("reports, for the token's own clinic, whether credentials decrypt and providers answer, without secrets", async () => {
    const org = await clinic();
    const res = await h.http.get('/api/sms/diagnostics').set('Authorization', `Bearer ${org.token}`);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      configured: true,
      enabled: true,
      providers: [
        { position: 0, kind: 'twilio', decrypts: true, senders: TWILIO_POOL.length, reachable: true },
        { position: 1, kind: 'telnyx', decrypts: true, senders: TELNYX_POOL.length, reachable: true },
      ],
    });
    const text = JSON.stringify(res.body);
    expect(text).not.toContain(DEFAULT_TWILIO_ACCOUNT.token);
    expect(text).not.toContain(DEFAULT_TELNYX_API_KEY);
    expect((await h.http.get('/api/sms/diagnostics')).status).toBe(401);
  });
});

describe('admin API surface', () => {
  it('rejects an invalid chain and unknown orgs', async () => {
    const org = await createOrg(h);
    const bad = await h.http
      .put(`/api/admin/orgs/${org.id}/sms`)
      .set('Authorization', `Bearer ${ADMIN_TOKEN}`)
      .send({ providers: [{ kind: 'twilio', accountSid: 'nope', authToken: 'x', senderNumbers: ['123'] }] });
    expect(bad.status).toBe(400);
    expect(JSON.stringify(bad.body)).not.toContain('"x"');
    const missing = await h.http
      .put('/api/admin/orgs/00000000-0000-4000-8000-000000000000/sms')
      .set('Authorization', `Bearer ${ADMIN_TOKEN}`)
      .send({ providers: [twilioLink()] });
    expect(missing.status).toBe(404);
    const unauth = await supertest(h.runtime.app)
      .put(`/api/admin/orgs/${org.id}/sms`)
      .send({ providers: [twilioLink()] });
    expect(unauth.status).toBe(401);
  });
});
