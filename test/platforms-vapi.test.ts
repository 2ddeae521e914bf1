/**
 * Vapi, fully (issue 12): spoken results, the hand-off to the front desk,
 * message-taking into the clinic's inbox, and end-of-call reports in the call
 * log (stored once, transcript only when the clinic keeps them).
 */
import { randomUUID } from 'node:crypto';
import { DateTime } from 'luxon';
import { describe, expect, it } from 'vitest';
import { callTools, createOrg, localDate, resultOf, vapiMessage } from './helpers/harness.js';
import { useClinic, useHarness } from './helpers/fixture.js';
import { admin } from './helpers/platforms.js';

const h = useHarness();
const org = useClinic(h);

const bookArgs = (time: string, over: Record<string, unknown> = {}) => ({
  patientName: 'Spoken Patient',
  patientPhone: '+14155550191',
  appointmentDate: localDate(12),
  appointmentTime: time,
  serviceType: 'short',
  ...over,
});

describe('spoken results', () => {
  it('each result carries the sentence to say: request-complete for results, request-failed for errors', async () => {
    const res = await callTools(
      h,
      org.token,
      vapiMessage([
        { name: 'bookClinicAppointment', args: bookArgs('09:00') },
        { name: 'checkAvailability', args: { date: 'someday' } },
        { name: 'noSuchTool', args: {} },
      ]),
    );
    expect(res.status).toBe(200);
    const [ok, bad, unknown] = res.body.results;
    expect(ok.message).toEqual({ type: 'request-complete', content: resultOf(res, 0).message });
    expect(ok.message.content).toMatch(/^You're booked for a Short Visit/);
    expect(bad.message).toEqual({ type: 'request-failed', content: bad.error });
    expect(bad.error).toMatch(/couldn't understand that date/);
    expect(unknown.message).toEqual({ type: 'request-failed', content: unknown.error });
    // The result stays the compact JSON for the model.
    expect(typeof ok.result).toBe('string');
    expect(JSON.parse(ok.result).success).toBe(true);
  });

  it('unreadable arguments are a request-failed sentence too', async () => {
    const res = await callTools(h, org.token, {
      message: { type: 'tool-calls', toolCallList: [{ id: 'bad', function: { name: 'checkAvailability', arguments: '{"date":' } }] },
    });
    expect(res.body.results[0].message).toEqual({ type: 'request-failed', content: res.body.results[0].error });
  });

  it('a clinic with spokenResults: false gets results without a message, and can turn it back on', async () => {
    const quiet = await createOrg(h, { spokenResults: false });
    const off = await callTools(
      h,
      quiet.token,
      vapiMessage([
        { name: 'checkAvailability', args: { date: localDate(5) } },
        { name: 'x', args: {} },
      ]),
    );
    expect(off.body.results.map((r: Record<string, unknown>) => 'message' in r)).toEqual([false, false]);
    expect(resultOf(off).success).toBe(true);
    const patched = await h.http.patch(`/api/admin/orgs/${quiet.id}`).set(admin).send({ spokenResults: true });
    expect(patched.body.spokenResults).toBe(true);
    // The settings cache is invalidated by the change: the next call speaks.
    const on = await callTools(h, quiet.token, vapiMessage([{ name: 'checkAvailability', args: { date: localDate(5) } }]));
    expect(on.body.results[0].message.type).toBe('request-complete');
  });

  it('results and spoken messages are single lines', async () => {
    const res = await callTools(
      h,
      org.token,
      vapiMessage([{ name: 'bookClinicAppointment', args: bookArgs('09:15', { patientName: 'Line\nBreak' }) }]),
    );
    expect(res.body.results[0].message.content).not.toMatch(/[\r\n]/);
  });
});

describe('transfer-destination-request', () => {
  const transfer = (token: string, extra: Record<string, unknown> = {}) =>
    h.http
      .post('/api/vapi/tools')
      .set('Authorization', `Bearer ${token}`)
      .send({ message: { type: 'transfer-destination-request', call: { id: `c_${randomUUID()}` }, ...extra } });

  it('during opening hours: the front desk number with a short spoken message', async () => {
    const open = await createOrg(h, { frontDeskPhone: '+14155550100' });
    const res = await transfer(open.token);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ destination: { type: 'number', number: '+14155550100', message: 'Connecting you to the front desk now.' } });
  });

  it('outside opening hours: an error sentence offering a message, naming when the desk opens again', async () => {
    const tomorrow = DateTime.now().setZone('America/New_York').plus({ days: 1 });
    const closed = await createOrg(h, {
      frontDeskPhone: '+14155550100',
      openingHours: { [String(tomorrow.weekday)]: [['09:00', '17:00']] },
    });
    const res = await transfer(closed.token);
    expect(res.status).toBe(200);
    expect(res.body.destination).toBeUndefined();
    expect(res.body.error).toBe(
      `The front desk is closed right now. It opens again ${tomorrow.toFormat('cccc')} at 9:00 AM. I can take a message for them.`,
    );
  });

  it('with no front-desk number: an error sentence offering a message', async () => {
    const res = await transfer(org.token);
    expect(res.body).toEqual({ error: "I'm not able to transfer calls for this clinic, but I can take a message for the front desk." });
  });

  it('is authenticated like tool calls: no token 401, another clinic named 403', async () => {
    const other = await createOrg(h);
    expect((await h.http.post('/api/vapi/tools').send({ message: { type: 'transfer-destination-request' } })).status).toBe(401);
    const res = await transfer(org.token, { assistant: { metadata: { org_id: other.id } } });
    expect(res.status).toBe(403);
  });

  it('a front-desk number must be E.164', async () => {
    const res = await h.http.patch(`/api/admin/orgs/${org.id}`).set(admin).send({ frontDeskPhone: '415 555 0100' });
    expect(res.status).toBe(400);
    expect(res.body.message).toMatch(/frontDeskPhone/);
  });
});

describe('takeMessage', () => {
  it("stores the caller's message in the clinic inbox, beside SMS replies; a retry stores it once", async () => {
    const clinic = await createOrg(h);
    const body = vapiMessage(
      [
        {
          name: 'takeMessage',
          args: { patientName: 'Maria Lopez', message: 'Please call me back about my test results.' },
          id: 'call_msg_1',
        },
      ],
      { customer: { number: '+14155550192' } },
    );
    const first = await callTools(h, clinic.token, body);
    expect(resultOf(first)).toMatchObject({ success: true, alreadyTaken: false });
    expect(resultOf(first).message).toMatch(/ending in 0192/);
    const again = await callTools(h, clinic.token, body);
    expect(resultOf(again)).toMatchObject({ success: true, alreadyTaken: true });
    await h.owner`INSERT INTO inbox_messages (org_id, channel, kind, from_phone, body, created_at)
                  VALUES (${clinic.id}, 'sms', 'sms_reply', '+14155550193', 'Running late', now() - interval '1 minute')`;
    const inbox = await h.http.get(`/api/admin/orgs/${clinic.id}/inbox?unmask=true`).set(admin);
    expect(inbox.status).toBe(200);
    expect(inbox.body.items.map((i: Record<string, unknown>) => [i.channel, i.kind, i.patientName, i.from, i.body])).toEqual([
      ['voice', 'voice_message', 'Maria Lopez', '+14155550192', 'Please call me back about my test results.'],
      ['sms', 'sms_reply', null, '+14155550193', 'Running late'],
    ]);
    expect(inbox.body.items[0].callId).toBe(body.message.call.id);
  });

  it('asks for a number when there is no caller id and none was given, and stores nothing', async () => {
    const clinic = await createOrg(h);
    const res = await callTools(
      h,
      clinic.token,
      vapiMessage([{ name: 'takeMessage', args: { patientName: 'Web Caller', message: 'Hello' } }]),
    );
    expect(res.body.results[0].error).toMatch(/best number/);
    const [n] = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM inbox_messages WHERE org_id = ${clinic.id}`;
    expect(n!.n).toBe(0);
  });

  it('needs a name and a message', async () => {
    const res = await callTools(h, org.token, vapiMessage([{ name: 'takeMessage', args: { patientPhone: '+14155550194' } }]));
    expect(res.body.results[0].error).toBe("I still need the caller's name and the message.");
  });
});

describe('end-of-call reports and the call log', () => {
  const report = (callId: string, extra: Record<string, unknown> = {}) => ({
    message: {
      type: 'end-of-call-report',
      endedReason: 'customer-ended-call',
      startedAt: '2026-12-01T15:00:00.000Z',
      endedAt: '2026-12-01T15:03:12.500Z',
      call: { id: callId, customer: { number: '+14155550195' } },
      customer: { number: '+14155550195' },
      artifact: {
        transcript: 'AI: Maple Street, how can I help?\nUser: I need an appointment.',
        messages: [
          { role: 'bot', message: 'Maple Street, how can I help?' },
          { role: 'tool_calls', toolCalls: [{ id: 't1', type: 'function', function: { name: 'checkAvailability', arguments: '{}' } }] },
          { role: 'tool_call_result', name: 'checkAvailability', result: '…', toolCallId: 't1' },
          {
            role: 'tool_calls',
            toolCalls: [
              { id: 't2', type: 'function', function: { name: 'bookClinicAppointment', arguments: '{}' } },
              { id: 't3', type: 'function', function: { name: 'checkAvailability', arguments: '{}' } },
            ],
          },
        ],
      },
      ...extra,
    },
  });
  const post = (token: string, body: unknown) =>
    h.http
      .post('/api/vapi/tools')
      .set('Authorization', `Bearer ${token}`)
      .send(body as object);
  const rows = async (orgId: string) =>
    (await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE org_id = ${orgId}`)[0]!.n;

  it('is stored once when delivered twice, and read back from the call log', async () => {
    const clinic = await createOrg(h);
    const callId = `vapi-${randomUUID()}`;
    expect((await post(clinic.token, report(callId))).body).toEqual({});
    expect((await post(clinic.token, report(callId, { endedReason: 'silence-timed-out' }))).body).toEqual({});
    expect(await rows(clinic.id)).toBe(1);
    const log = await h.http.get(`/api/admin/orgs/${clinic.id}/calls`).set(admin);
    expect(log.status).toBe(200);
    expect(log.headers['cache-control']).toBe('no-store');
    expect(log.body.items).toHaveLength(1);
    expect(log.body.items[0]).toMatchObject({
      platform: 'vapi',
      callId,
      startedAt: '2026-12-01T15:00:00.000Z',
      endedAt: '2026-12-01T15:03:12.500Z',
      durationSeconds: 192.5,
      endedReason: 'customer-ended-call',
      toolsUsed: ['checkAvailability', 'bookClinicAppointment'],
      transcript: null,
    });
    expect(log.body.items[0].from).toMatch(/0195/);
    expect(log.body.items[0].from).not.toContain('4155550195');
    const unmasked = await h.http.get(`/api/admin/orgs/${clinic.id}/calls?unmask=true`).set(admin);
    expect(unmasked.body.items[0].from).toBe('+14155550195');
  });

  it('keeps the transcript only for a clinic that turned it on', async () => {
    const keeps = await createOrg(h, { storeTranscripts: true });
    await post(keeps.token, report('with-transcript'));
    const [row] = await h.owner`SELECT transcript FROM calls WHERE org_id = ${keeps.id}`;
    expect(row!.transcript).toMatch(/^AI: Maple Street/);
    const log = await h.http.get(`/api/admin/orgs/${keeps.id}/calls`).set(admin);
    expect(log.body.items[0].transcript).toMatch(/I need an appointment/);
  });

  it("Vapi's own durationSeconds wins; odd fields are dropped, not refused", async () => {
    const clinic = await createOrg(h);
    const res = await post(
      clinic.token,
      report('odd', {
        durationSeconds: 61.26,
        startedAt: 'yesterday',
        endedAt: 42,
        customer: { number: 'anonymous' },
        call: { id: 'odd' },
        artifact: { messages: 'nope' },
      }),
    );
    expect(res.status).toBe(200);
    const [row] =
      await h.owner`SELECT duration_seconds::float8 AS d, started_at, caller_phone, tools_used FROM calls WHERE org_id = ${clinic.id}`;
    expect(row).toMatchObject({ d: 61.3, started_at: null, caller_phone: null, tools_used: [] });
  });

  it('the log is paginated newest first, and another clinic sees none of it', async () => {
    const clinic = await createOrg(h);
    const other = await createOrg(h);
    for (const id of ['first', 'second', 'third']) await post(clinic.token, report(id));
    const seen: string[] = [];
    let next: string | null = null;
    do {
      const page: { body: { items: Array<{ callId: string }>; next: string | null } } = await h.http
        .get(`/api/admin/orgs/${clinic.id}/calls?limit=2${next ? `&before=${next}` : ''}`)
        .set(admin);
      seen.push(...page.body.items.map((i) => i.callId));
      next = page.body.next;
    } while (next);
    expect(seen).toEqual(['third', 'second', 'first']);
    expect((await h.http.get(`/api/admin/orgs/${other.id}/calls`).set(admin)).body.items).toEqual([]);
    expect((await h.http.get(`/api/admin/orgs/${randomUUID()}/calls`).set(admin)).status).toBe(404);
    expect((await h.http.get(`/api/admin/orgs/${clinic.id}/calls?before=garbage`).set(admin)).status).toBe(400);
  });

  it('is authenticated like tool calls: no token, a revoked client or another clinic named: refused, nothing stored', async () => {
    const clinic = await createOrg(h);
    const other = await createOrg(h);
    expect((await h.http.post('/api/vapi/tools').send(report('x1'))).status).toBe(401);
    expect((await post(clinic.token, report('x2', { assistant: { metadata: { org_id: other.id } } }))).status).toBe(403);
    await h.owner`UPDATE oauth_clients SET revoked_at = now() WHERE client_id = ${clinic.clientId}`;
    expect((await post(clinic.token, report('x3'))).status).toBe(401);
    expect(await rows(clinic.id)).toBe(0);
    expect(await rows(other.id)).toBe(0);
  });

  it('a report without a call id is acknowledged and not stored', async () => {
    const clinic = await createOrg(h);
    const res = await post(clinic.token, { message: { type: 'end-of-call-report', endedReason: 'x' } });
    expect(res.body).toEqual({});
    expect(await rows(clinic.id)).toBe(0);
  });
});

describe('the calls table is a tenant table', () => {
  it("has row-level security forced, and clinic_app sees no call without its org, nor another clinic's with it", async () => {
    const [rls] = await h.owner<{ on: boolean; forced: boolean }[]>`
      SELECT relrowsecurity AS on, relforcerowsecurity AS forced FROM pg_class WHERE relname = 'calls' AND relnamespace = 'public'::regnamespace`;
    expect(rls).toEqual({ on: true, forced: true });
    const [x, y] = await Promise.all([createOrg(h), createOrg(h)]);
    await h.http
      .post('/api/vapi/tools')
      .set('Authorization', `Bearer ${x.token}`)
      .send({ message: { type: 'end-of-call-report', call: { id: 'rls-call' } } });
    const [owner] = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE org_id = ${x.id}`;
    expect(owner!.n).toBe(1);
    const [none] = await h.runtime.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls`;
    expect(none!.n).toBe(0);
    const asY = await h.runtime.sql.begin(async (tx) => {
      await tx`SELECT set_config('app.org_id', ${y.id}, true)`;
      return tx<{ n: number }[]>`SELECT count(*)::int AS n FROM calls`;
    });
    expect(asY[0]!.n).toBe(0);
    await expect(
      h.runtime.sql.begin(async (tx) => {
        await tx`SELECT set_config('app.org_id', ${y.id}, true)`;
        await tx`INSERT INTO calls (org_id, platform, call_id) VALUES (${x.id}, 'vapi', 'forged')`;
      }),
    ).rejects.toMatchObject({ code: '42501' });
  });
});
