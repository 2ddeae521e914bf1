/**
 * ElevenLabs server tools (issue 12): the OAuth2 client-credentials auth
 * connection against /oauth/token (credentials in the body, JSON or form),
 * the flat body with the mapped system variables, idempotency on the
 * conversation id, the org checks, and the tool JSON shipped in
 * docs/platforms.md.
 */
import fs from 'node:fs';
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { TOOLS } from '../src/tools/index.js';
import { createOrg, localDate } from './helpers/harness.js';
import type { TestOrg } from './helpers/harness.js';
import { useClinics, useHarness } from './helpers/fixture.js';
import { admin, appointmentsOf, elevenPost } from './helpers/platforms.js';

const h = useHarness();
const [a, b] = useClinics(h, 2) as [TestOrg, TestOrg];

let slot = 0;
const bookingArgs = (over: Record<string, unknown> = {}) => {
  slot += 1;
  return {
    patientName: 'Eleven Patient',
    appointmentDate: localDate(11 + Math.floor(slot / 30)),
    appointmentTime: `${String(8 + Math.floor((slot % 30) / 4)).padStart(2, '0')}:${String((slot % 4) * 15).padStart(2, '0')}`,
    serviceType: 'short',
    ...over,
  };
};

describe('/oauth/token as ElevenLabs calls it', () => {
  it('accepts client credentials in a JSON body, with the scope and extra fields it may add', async () => {
    const res = await h.http.post('/oauth/token').set('Content-Type', 'application/json').send({
      grant_type: 'client_credentials',
      client_id: a.clientId,
      client_secret: a.clientSecret,
      scope: 'tools:invoke',
      audience: 'x',
    });
    expect(res.status).toBe(200);
    expect(res.body.token_type).toBe('Bearer');
    expect(res.headers['cache-control']).toBe('no-store');
    const tool = await elevenPost(h, res.body.access_token, 'checkAvailability', { date: localDate(4) });
    expect(tool.status).toBe(200);
    expect(tool.body.success).toBe(true);
  });

  it('accepts them form-encoded in the body (the connection default)', async () => {
    const res = await h.http
      .post('/oauth/token')
      .type('form')
      .send({ grant_type: 'client_credentials', client_id: a.clientId, client_secret: a.clientSecret, scope: 'tools:invoke' });
    expect(res.status).toBe(200);
    expect(typeof res.body.access_token).toBe('string');
  });

  it('a wrong secret in a JSON body is 401 invalid_client', async () => {
    const res = await h.http.post('/oauth/token').send({ grant_type: 'client_credentials', client_id: a.clientId, client_secret: 'wrong' });
    expect(res.status).toBe(401);
    expect(res.body.error).toBe('invalid_client');
  });
});

describe('booking through ElevenLabs', () => {
  it('books; the caller id comes from the mapped system__caller_id, the call id from system__conversation_id', async () => {
    const before = await appointmentsOf(h, a.id);
    const conv = `conv_${randomUUID()}`;
    const res = await elevenPost(h, a.token, 'bookClinicAppointment', bookingArgs(), conv, '+14155550181');
    expect(res.status).toBe(200);
    expect(res.body.success).toBe(true);
    expect(res.body.message).toMatch(/^You're booked for a Short Visit/);
    expect(await appointmentsOf(h, a.id)).toBe(before + 1);
    const [row] = await h.owner`SELECT patient_phone, call_id FROM appointments WHERE id = ${res.body.appointmentId}`;
    expect(row).toEqual({ patient_phone: '+14155550181', call_id: conv });
    const [key] = await h.owner`SELECT key FROM idempotency_keys WHERE org_id = ${a.id} AND key LIKE ${`elevenlabs:${conv}:%`}`;
    expect(key!.key).toMatch(new RegExp(`^elevenlabs:${conv}:bookClinicAppointment:[0-9a-f]{32}$`));
  });

  it('a replay returns the same appointment and books nothing new', async () => {
    const conv = `conv_${randomUUID()}`;
    const args = bookingArgs({ patientPhone: '+14155550182' });
    const first = await elevenPost(h, a.token, 'bookClinicAppointment', args, conv);
    const before = await appointmentsOf(h, a.id);
    const second = await elevenPost(h, a.token, 'bookClinicAppointment', Object.fromEntries(Object.entries(args).reverse()), conv);
    expect(second.status).toBe(200);
    expect(second.body.appointmentId).toBe(first.body.appointmentId);
    expect(second.body.alreadyBooked).toBe(true);
    expect(await appointmentsOf(h, a.id)).toBe(before);
  });

  it('form-encoded tool bodies work too', async () => {
    const res = await h.http
      .post('/api/elevenlabs/tools/checkAvailability')
      .set('Authorization', `Bearer ${a.token}`)
      .type('form')
      .send({ date: localDate(4), conversationId: `conv_${randomUUID()}` });
    expect(res.status).toBe(200);
    expect(res.body.success).toBe(true);
  });

  it('tool errors are sentences with 200; a missing conversation id is a 400 naming the mapping', async () => {
    const bad = await elevenPost(
      h,
      a.token,
      'bookClinicAppointment',
      bookingArgs({ appointmentTime: 'teatime', patientPhone: '+14155550183' }),
    );
    expect(bad.status).toBe(200);
    expect(bad.body).toMatchObject({ success: false, error: 'invalid_time' });
    const unknown = await elevenPost(h, a.token, 'deleteAllPatients', {});
    expect(unknown.body).toMatchObject({ success: false, error: 'unknown_tool' });
    const before = await appointmentsOf(h, a.id);
    const noConv = await h.http
      .post('/api/elevenlabs/tools/bookClinicAppointment')
      .set('Authorization', `Bearer ${a.token}`)
      .send(bookingArgs({ patientPhone: '+14155550183' }));
    expect(noConv.status).toBe(400);
    expect(noConv.body.message).toMatch(/system__conversation_id/);
    const notObject = await h.http
      .post('/api/elevenlabs/tools/checkAvailability')
      .set('Authorization', `Bearer ${a.token}`)
      .set('Content-Type', 'application/json')
      .send('[1,2]');
    expect(notObject.status).toBe(400);
    expect(await appointmentsOf(h, a.id)).toBe(before);
  });
});

describe('ElevenLabs credentials and the org checks', () => {
  it('no token or a forged one is 401 and nothing is booked', async () => {
    const before = await appointmentsOf(h, a.id);
    expect((await elevenPost(h, null, 'bookClinicAppointment', bookingArgs({ patientPhone: '+14155550184' }))).status).toBe(401);
    expect((await elevenPost(h, `${a.token}x`, 'bookClinicAppointment', bookingArgs({ patientPhone: '+14155550184' }))).status).toBe(401);
    expect(await appointmentsOf(h, a.id)).toBe(before);
  });

  it('a deactivated clinic is 403 with its settings cached, nothing booked', async () => {
    const org = await createOrg(h);
    expect((await elevenPost(h, org.token, 'bookClinicAppointment', bookingArgs({ patientPhone: '+14155550185' }))).body.success).toBe(
      true,
    );
    await h.owner`UPDATE orgs SET active = false WHERE id = ${org.id}`;
    const before = await appointmentsOf(h, org.id);
    const res = await elevenPost(h, org.token, 'bookClinicAppointment', bookingArgs({ patientPhone: '+14155550185' }));
    expect(res.status).toBe(403);
    expect(await appointmentsOf(h, org.id)).toBe(before);
  });

  it("cross-clinic: another clinic named in the arguments is 403, and B's appointment is invisible to A", async () => {
    const before = await appointmentsOf(h, a.id);
    const named = await elevenPost(
      h,
      a.token,
      'bookClinicAppointment',
      bookingArgs({ patientPhone: '+14155550186', organizationId: b.id }),
    );
    expect(named.status).toBe(403);
    expect(named.body.error).toBe('org_mismatch');
    expect(await appointmentsOf(h, a.id)).toBe(before);
    const bBooking = await elevenPost(h, b.token, 'bookClinicAppointment', bookingArgs({ patientPhone: '+14155550187' }));
    const cancel = await elevenPost(h, a.token, 'cancelAppointment', { appointmentId: bBooking.body.appointmentId });
    expect(cancel.body).toMatchObject({ success: false, error: 'appointment_not_found' });
    const [row] = await h.owner`SELECT status FROM appointments WHERE id = ${bBooking.body.appointmentId}`;
    expect(row!.status).toBe('booked');
  });

  it("the clinic's Vapi-only layers (HMAC, x-vapi-secret) do not apply to ElevenLabs, and still apply to Vapi", async () => {
    const org = await createOrg(h);
    const set = await h.http
      .patch(`/api/admin/orgs/${org.id}`)
      .set(admin)
      .send({ vapiHmacSecret: 'vapi-hmac-secret-long-enough', vapiSecret: 'vapi-shared-secret-long-enough' });
    expect(set.status).toBe(200);
    expect((await elevenPost(h, org.token, 'checkAvailability', { date: localDate(4) })).status).toBe(200);
    const vapi = await h.http
      .post('/api/vapi/tools')
      .set('Authorization', `Bearer ${org.token}`)
      .send({ message: { type: 'status-update' } });
    expect(vapi.status).toBe(401);
  });
});

describe('the ElevenLabs tool JSON in docs/platforms.md', () => {
  const doc = fs.readFileSync(new URL('../docs/platforms.md', import.meta.url), 'utf8');
  const section = doc.slice(doc.indexOf('## ElevenLabs'), doc.indexOf('\n## ', doc.indexOf('## ElevenLabs') + 5));
  const blocks = [...section.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => JSON.parse(m[1]!) as Record<string, any>);
  const tools = blocks.filter((b) => b.tool_config?.type === 'webhook').map((b) => b.tool_config);

  it('has one webhook tool per tool the server offers', () => {
    expect(tools.map((t) => t.name).sort()).toEqual([...TOOLS.keys()].sort());
  });

  for (const name of TOOLS.keys()) {
    it(`${name}: our URL, POST JSON, the OAuth connection, the two system variables mapped, every model parameter one the tool takes`, () => {
      const t = tools.find((x) => x.name === name)!;
      const api = t.api_schema;
      expect(api.url).toBe(`https://YOUR-SERVER/api/elevenlabs/tools/${name}`);
      expect(api.method).toBe('POST');
      expect(api.content_type).toBe('application/json');
      expect(api.auth_connection).toEqual({ auth_connection_id: 'YOUR_AUTH_CONNECTION_ID' });
      const props = api.request_body_schema.properties as Record<string, Record<string, unknown>>;
      expect(props.callerNumber).toEqual({ type: 'string', dynamic_variable: 'system__caller_id' });
      expect(props.conversationId).toEqual({ type: 'string', dynamic_variable: 'system__conversation_id' });
      const shape = (TOOLS.get(name)!.schema as z.ZodObject).shape as Record<string, z.ZodType>;
      const modelParams = Object.keys(props).filter((k) => k !== 'callerNumber' && k !== 'conversationId');
      for (const k of modelParams) {
        expect(Object.keys(shape), k).toContain(k);
        expect(props[k]!.type).toBe('string');
        expect(typeof props[k]!.description, k).toBe('string');
      }
      // Every argument the tool requires is required of the model too, and nothing else is; the
      // conversation id is required so that ElevenLabs always sends it (it keys idempotency).
      const required = Object.keys(shape).filter((k) => !shape[k]!.safeParse(undefined).success);
      expect([...api.request_body_schema.required].sort()).toEqual([...required, 'conversationId'].sort());
      expect(modelParams).not.toContain('organizationId');
    });
  }
});
