/**
 * Retell custom functions (issue 12): signature under the clinic's own
 * Retell key, held against retell-sdk's own verify; both payload shapes;
 * idempotency on call id + name + arguments; caller id from signalling; the
 * org checks; tool errors as sentences.
 */
import fs from 'node:fs';
import { randomUUID } from 'node:crypto';
import Retell from 'retell-sdk';
import { beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { checkRetellSignature, signRetell } from '../src/auth/retell-signature.js';
import { TOOLS } from '../src/tools/index.js';
import { createOrg, localDate } from './helpers/harness.js';
import type { TestOrg } from './helpers/harness.js';
import { useClinics, useHarness } from './helpers/fixture.js';
import { admin, appointmentsOf, retellBody, retellCall, retellPost, setRetellKey } from './helpers/platforms.js';

const h = useHarness();
const [a, b, noKey] = useClinics(h, 3) as [TestOrg, TestOrg, TestOrg];
let keyA: string;
let keyB: string;

beforeAll(async () => {
  [keyA, keyB] = await Promise.all([setRetellKey(h, a.id), setRetellKey(h, b.id)]);
});

let slot = 0;
const bookingArgs = (over: Record<string, unknown> = {}) => {
  slot += 1;
  return {
    patientName: 'Retell Patient',
    appointmentDate: localDate(10 + Math.floor(slot / 30)),
    appointmentTime: `${String(8 + Math.floor((slot % 30) / 4)).padStart(2, '0')}:${String((slot % 4) * 15).padStart(2, '0')}`,
    serviceType: 'short',
    ...over,
  };
};

const toolsPath = (orgId: string) => `/api/retell/${orgId}/tools`;

describe('the signature agrees with retell-sdk', () => {
  const body = JSON.stringify({ name: 'checkAvailability', call: { call_id: 'c1' }, args: { date: '2030-01-02' } });
  const key = 'key_sdk_agreement_0123456789';
  const MIN = 60_000;

  const cases: Array<[string, () => { raw: string; sig: string }]> = [
    ['valid, now', () => ({ raw: body, sig: signRetell(body, key, Date.now()) })],
    ['valid, 4 minutes old', () => ({ raw: body, sig: signRetell(body, key, Date.now() - 4 * MIN) })],
    ['valid, 4 minutes ahead', () => ({ raw: body, sig: signRetell(body, key, Date.now() + 4 * MIN) })],
    ['tampered body', () => ({ raw: body.replace('2030', '2031'), sig: signRetell(body, key, Date.now()) })],
    ['re-serialised body', () => ({ raw: JSON.stringify(JSON.parse(body), null, 1), sig: signRetell(body, key, Date.now()) })],
    ['stale: 6 minutes old', () => ({ raw: body, sig: signRetell(body, key, Date.now() - 6 * MIN) })],
    ['future: 6 minutes ahead', () => ({ raw: body, sig: signRetell(body, key, Date.now() + 6 * MIN) })],
    ['wrong key', () => ({ raw: body, sig: signRetell(body, 'key_someone_else_000000', Date.now()) })],
    [
      'timestamp changed after signing',
      () => ({ raw: body, sig: signRetell(body, key, Date.now()).replace(/^v=(\d+)/, (_m, t: string) => `v=${Number(t) + 1}`) }),
    ],
    ['truncated digest', () => ({ raw: body, sig: signRetell(body, key, Date.now()).slice(0, -2) })],
    ['no digest', () => ({ raw: body, sig: `v=${Date.now()}` })],
    ['garbage', () => ({ raw: body, sig: 'sha256=deadbeef' })],
  ];

  for (const [label, make] of cases) {
    it(`${label}: ours and Retell.verify give the same answer`, async () => {
      const { raw, sig } = make();
      const sdk = await Retell.verify(raw, key, sig);
      const ours = checkRetellSignature(Buffer.from(raw), key, sig, Date.now()).ok;
      expect(ours).toBe(sdk);
      expect(typeof sdk).toBe('boolean');
    });
  }

  it('the two sides agree on who is valid at all (control: the cases are not all one answer)', async () => {
    const answers = await Promise.all(
      cases.map(async ([, make]) => {
        const { raw, sig } = make();
        return Retell.verify(raw, key, sig);
      }),
    );
    expect(answers.filter(Boolean).length).toBe(3);
  });

  it("a signature made by retell-sdk verifies with ours, and ours with the SDK's", async () => {
    const sdkSig = await Retell.sign(body, key);
    expect(checkRetellSignature(Buffer.from(body), key, sdkSig, Date.now()).ok).toBe(true);
    expect(await Retell.verify(body, key, signRetell(body, key))).toBe(true);
  });

  it('the SDK answers with a Promise (the v5 gotcha): an un-awaited check would always pass', () => {
    const pending = Retell.verify(body, key, 'garbage');
    expect(pending).toBeInstanceOf(Promise);
    expect(Boolean(pending)).toBe(true);
    return pending;
  });
});

describe('booking through Retell', () => {
  it('books with the default payload; the caller id comes from call.from_number, the call id from call.call_id', async () => {
    const before = await appointmentsOf(h, a.id);
    const call = retellCall({ from_number: '+14155550171' });
    const res = await retellPost(h, toolsPath(a.id), retellBody('bookClinicAppointment', bookingArgs(), call), keyA);
    expect(res.status).toBe(200);
    expect(res.body.success).toBe(true);
    expect(res.body.message).toMatch(/^You're booked for a Short Visit/);
    expect(res.body.appointmentId).toMatch(/^[0-9a-f-]{36}$/);
    expect(await appointmentsOf(h, a.id)).toBe(before + 1);
    const [row] = await h.owner`SELECT patient_phone, call_id FROM appointments WHERE id = ${res.body.appointmentId}`;
    expect(row).toEqual({ patient_phone: '+14155550171', call_id: call.call_id });
    const [key] = await h.owner`SELECT key FROM idempotency_keys WHERE org_id = ${a.id} AND key LIKE ${`retell:${call.call_id}:%`}`;
    expect(key!.key).toMatch(new RegExp(`^retell:${call.call_id}:bookClinicAppointment:[0-9a-f]{32}$`));
  });

  it("a phone number in the arguments is the patient's; the caller id is only the fallback", async () => {
    const res = await retellPost(
      h,
      toolsPath(a.id),
      retellBody('bookClinicAppointment', bookingArgs({ patientPhone: '(415) 555-0188' })),
      keyA,
    );
    const [row] = await h.owner`SELECT patient_phone FROM appointments WHERE id = ${res.body.appointmentId}`;
    expect(row!.patient_phone).toBe('+14155550188');
  });

  it('on an outbound call the patient is the to_number', async () => {
    const call = retellCall({ direction: 'outbound', from_number: '+14155550100', to_number: '+14155550172' });
    const res = await retellPost(h, toolsPath(a.id), retellBody('bookClinicAppointment', bookingArgs(), call), keyA);
    const [row] = await h.owner`SELECT patient_phone FROM appointments WHERE id = ${res.body.appointmentId}`;
    expect(row!.patient_phone).toBe('+14155550172');
  });

  it('a replay (Retell retries, freshly signed) returns the same appointment and books nothing new', async () => {
    const call = retellCall();
    const args = bookingArgs();
    const first = await retellPost(h, toolsPath(a.id), retellBody('bookClinicAppointment', args, call), keyA);
    expect(first.body.success).toBe(true);
    const before = await appointmentsOf(h, a.id);
    // Retell's transcript grows between attempts; the arguments' key order may differ too.
    const again = retellBody('bookClinicAppointment', Object.fromEntries(Object.entries(args).reverse()), call).replace(
      '"transcript":"…"',
      '"transcript":"… and more"',
    );
    const second = await retellPost(h, toolsPath(a.id), again, keyA, { at: Date.now() + 1000 });
    expect(second.status).toBe(200);
    expect(second.body.appointmentId).toBe(first.body.appointmentId);
    expect(second.body.alreadyBooked).toBe(true);
    expect(await appointmentsOf(h, a.id)).toBe(before);
  });

  it('the same call asking for another time is a new booking, not a replay', async () => {
    const call = retellCall();
    const one = await retellPost(h, toolsPath(a.id), retellBody('bookClinicAppointment', bookingArgs(), call), keyA);
    const two = await retellPost(h, toolsPath(a.id), retellBody('bookClinicAppointment', bookingArgs(), call), keyA);
    expect(one.body.success && two.body.success).toBe(true);
    expect(two.body.appointmentId).not.toBe(one.body.appointmentId);
  });

  it('args_at_root: the body is the arguments; call id and caller come from the configured headers', async () => {
    const before = await appointmentsOf(h, a.id);
    const raw = JSON.stringify(bookingArgs());
    const callId = `call_${randomUUID()}`;
    const headers = { 'X-Retell-Call-Id': callId, 'X-Retell-Caller-Number': '+14155550173' };
    const res = await retellPost(h, `${toolsPath(a.id)}/bookClinicAppointment`, raw, keyA, { headers });
    expect(res.status).toBe(200);
    expect(res.body.success).toBe(true);
    const [row] = await h.owner`SELECT patient_phone, call_id FROM appointments WHERE id = ${res.body.appointmentId}`;
    expect(row).toEqual({ patient_phone: '+14155550173', call_id: callId });
    const replay = await retellPost(h, `${toolsPath(a.id)}/bookClinicAppointment`, raw, keyA, { headers });
    expect(replay.body.appointmentId).toBe(res.body.appointmentId);
    expect(await appointmentsOf(h, a.id)).toBe(before + 1);
  });

  it('args_at_root without a call id is a 400 naming the header, and nothing is booked', async () => {
    const before = await appointmentsOf(h, a.id);
    const res = await retellPost(
      h,
      `${toolsPath(a.id)}/bookClinicAppointment`,
      JSON.stringify(bookingArgs({ patientPhone: '+14155550174' })),
      keyA,
    );
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_envelope');
    expect(res.body.message).toMatch(/X-Retell-Call-Id/);
    expect(await appointmentsOf(h, a.id)).toBe(before);
  });

  it('tool errors are sentences with 200: a bad date, an unknown function, a missing phone on a web call', async () => {
    const bad = await retellPost(
      h,
      toolsPath(a.id),
      retellBody('bookClinicAppointment', bookingArgs({ appointmentDate: 'next blursday' })),
      keyA,
    );
    expect(bad.status).toBe(200);
    expect(bad.body).toMatchObject({ success: false, error: 'invalid_date' });
    expect(bad.body.message).toMatch(/couldn't understand that date/);
    const unknown = await retellPost(h, toolsPath(a.id), retellBody('deleteAllPatients', {}), keyA);
    expect(unknown.status).toBe(200);
    expect(unknown.body).toMatchObject({ success: false, error: 'unknown_tool' });
    const web = retellCall({ from_number: undefined, to_number: undefined });
    delete (web as Partial<typeof web>).from_number;
    const phoneless = await retellPost(h, toolsPath(a.id), retellBody('bookClinicAppointment', bookingArgs(), web), keyA);
    expect(phoneless.body).toMatchObject({ success: false, error: 'missing_phone' });
  });

  it('malformed requests are clear 4xx answers, never 500', async () => {
    const p = toolsPath(a.id);
    expect((await retellPost(h, p, '{"name":', keyA)).status).toBe(400);
    for (const raw of [
      '[]',
      '{"call":{"call_id":"c"},"args":{}}',
      '{"name":"checkAvailability","args":{}}',
      '{"name":"checkAvailability","call":{"call_id":"c"},"args":"[1]"}',
      `{"name":"checkAvailability","call":{"call_id":"${'x'.repeat(300)}"},"args":{}}`,
    ]) {
      const res = await retellPost(h, p, raw, keyA);
      expect(res.status, raw).toBe(400);
      expect(res.body.error, raw).toMatch(/^invalid_/);
    }
  });
});

describe('Retell credentials', () => {
  const raw = () => retellBody('bookClinicAppointment', bookingArgs({ patientPhone: '+14155550175' }));

  it('a missing, forged, stale or wrong-key signature is 401 and nothing is booked', async () => {
    const before = await appointmentsOf(h, a.id);
    const body = raw();
    const attempts = [
      retellPost(h, toolsPath(a.id), body, null),
      retellPost(h, toolsPath(a.id), body, keyB),
      retellPost(h, toolsPath(a.id), body, keyA, { at: Date.now() - 6 * 60_000 }),
      retellPost(h, toolsPath(a.id), body, keyA, { at: Date.now() + 6 * 60_000 }),
      retellPost(h, toolsPath(a.id), body.replace('Retell Patient', 'Forged Patient'), keyA, { signature: signRetell(body, keyA) }),
      retellPost(h, toolsPath(a.id), body, keyA, { signature: `v=${Date.now()},d=${'0'.repeat(64)}` }),
    ];
    for (const res of await Promise.all(attempts)) {
      expect(res.status).toBe(401);
      expect(res.body.error).toBe('invalid_signature');
    }
    expect(await appointmentsOf(h, a.id)).toBe(before);
  });

  it('a clinic without a Retell key, or no such clinic, is 401; a path that is no clinic id is 404', async () => {
    const before = await appointmentsOf(h, noKey.id);
    const body = raw();
    expect((await retellPost(h, toolsPath(noKey.id), body, keyA)).status).toBe(401);
    expect((await retellPost(h, toolsPath(randomUUID()), body, keyA)).status).toBe(401);
    expect((await retellPost(h, '/api/retell/not-a-clinic/tools', body, keyA)).status).toBe(404);
    expect(await appointmentsOf(h, noKey.id)).toBe(before);
  });

  it("cross-clinic: clinic A's key cannot act for clinic B, and metadata, dynamic variables or arguments naming B are refused", async () => {
    const [beforeA, beforeB] = [await appointmentsOf(h, a.id), await appointmentsOf(h, b.id)];
    expect((await retellPost(h, toolsPath(b.id), raw(), keyA)).status).toBe(401);
    const named = [
      retellBody('bookClinicAppointment', bookingArgs({ patientPhone: '+14155550176' }), retellCall({ metadata: { org_id: b.id } })),
      retellBody(
        'bookClinicAppointment',
        bookingArgs({ patientPhone: '+14155550176' }),
        retellCall({ retell_llm_dynamic_variables: { org_id: b.id } }),
      ),
      retellBody('bookClinicAppointment', bookingArgs({ patientPhone: '+14155550176', organizationId: b.id })),
    ];
    for (const body of named) {
      const res = await retellPost(h, toolsPath(a.id), body, keyA);
      expect(res.status).toBe(403);
      expect(res.body.error).toBe('org_mismatch');
    }
    expect([await appointmentsOf(h, a.id), await appointmentsOf(h, b.id)]).toEqual([beforeA, beforeB]);
    // Naming its own clinic is fine (control).
    const own = await retellPost(
      h,
      toolsPath(a.id),
      retellBody(
        'bookClinicAppointment',
        bookingArgs({ patientPhone: '+14155550176' }),
        retellCall({ metadata: { org_id: a.id.toUpperCase() } }),
      ),
      keyA,
    );
    expect(own.body.success).toBe(true);
  });

  it('a deactivated clinic with a good signature is 403, even with its settings cached, and nothing is booked', async () => {
    const org = await createOrg(h);
    const key = await setRetellKey(h, org.id);
    const warm = await retellPost(h, toolsPath(org.id), raw(), key);
    expect(warm.body.success).toBe(true);
    await h.owner`UPDATE orgs SET active = false WHERE id = ${org.id}`;
    const before = await appointmentsOf(h, org.id);
    const res = await retellPost(h, toolsPath(org.id), raw(), key);
    expect(res.status).toBe(403);
    expect(res.body.error).toBe('org_inactive');
    expect(await appointmentsOf(h, org.id)).toBe(before);
  });

  it('clearing the key refuses Retell at once', async () => {
    const org = await createOrg(h);
    const key = await setRetellKey(h, org.id);
    expect((await retellPost(h, toolsPath(org.id), retellBody('checkAvailability', { date: localDate(3) }), key)).status).toBe(200);
    expect((await h.http.patch(`/api/admin/orgs/${org.id}`).set(admin).send({ retellApiKey: null })).status).toBe(200);
    expect((await retellPost(h, toolsPath(org.id), retellBody('checkAvailability', { date: localDate(3) }), key)).status).toBe(401);
  });

  it('the key is stored encrypted and never shown: retellApiKeyConfigured only', async () => {
    const view = await h.http.get(`/api/admin/orgs/${a.id}`).set(admin);
    expect(view.body.retellApiKeyConfigured).toBe(true);
    expect(view.text).not.toContain(keyA);
    const [row] = await h.owner<{ retell_api_key_enc: string }[]>`SELECT retell_api_key_enc FROM orgs WHERE id = ${a.id}`;
    expect(row!.retell_api_key_enc).toMatch(/^v1\./);
    expect(row!.retell_api_key_enc).not.toContain(keyA);
    expect(view.text).not.toContain(row!.retell_api_key_enc);
  });
});

describe('the Retell function JSON in docs/platforms.md', () => {
  const doc = fs.readFileSync(new URL('../docs/platforms.md', import.meta.url), 'utf8');
  const start = doc.indexOf('## Retell');
  const section = doc.slice(start, doc.indexOf('\n## ', start + 5));
  const fns = [...section.matchAll(/```json\n([\s\S]*?)```/g)]
    .map((m) => JSON.parse(m[1]!) as Record<string, any>)
    .filter((b) => b.type === 'custom');

  it('has one custom function per tool the server offers', () => {
    expect(fns.map((f) => f.name).sort()).toEqual([...TOOLS.keys()].sort());
  });

  for (const name of TOOLS.keys()) {
    it(`${name}: our URL, and exactly the parameters the tool takes, required as the tool requires`, () => {
      const f = fns.find((x) => x.name === name)!;
      expect(f.url).toBe('https://YOUR-SERVER/api/retell/YOUR_ORG_ID/tools');
      expect(f.method).toBe('POST');
      const shape = (TOOLS.get(name)!.schema as z.ZodObject).shape as Record<string, z.ZodType>;
      const props = Object.keys(f.parameters.properties);
      expect(props.filter((k) => !(k in shape))).toEqual([]);
      expect(props).not.toContain('organizationId');
      const required = Object.keys(shape).filter((k) => !shape[k]!.safeParse(undefined).success);
      expect([...f.parameters.required].sort()).toEqual(required.sort());
    });
  }
});
