import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { REDACT_PATHS, phoneForLog } from '../src/log.js';
import { callTools, createOrg, localDate, resultOf, startHarness, vapiMessage, type Harness, type TestOrg } from './helpers/harness.js';
import { useHarness, useClinic } from './helpers/fixture.js';

const h = useHarness();
const org = useClinic(h);

async function countAll(): Promise<number> {
  const [r] = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM appointments`;
  return r!.n;
}

let slot = 0;
function bookingArgs(over: Record<string, unknown> = {}) {
  slot += 1;
  const minutes = (slot % 40) * 15;
  const hh = String(8 + Math.floor(minutes / 60)).padStart(2, '0');
  const mm = String(minutes % 60).padStart(2, '0');
  return {
    patientName: 'Envelope Patient',
    patientPhone: `+1415555${String(3000 + slot)}`,
    appointmentDate: localDate(8 + Math.floor(slot / 40)),
    appointmentTime: `${hh}:${mm}`,
    serviceType: 'short',
    ...over,
  };
}

const availability = () => ({ date: localDate(5) });

/** A raw JSON string POSTed as-is. */
const postRaw = (path: string, body: string, token = org.token) =>
  h.http.post(path).set('Authorization', `Bearer ${token}`).set('Content-Type', 'application/json').send(body);

describe('message types', () => {
  for (const type of ['status-update', 'end-of-call-report', 'transcript', 'conversation-update', 'hang', 'function-call']) {
    it(`${type} is acknowledged with 200 {} and nothing runs`, async () => {
      const before = await countAll();
      // Even with a booking attached, only tool-calls messages are acted on.
      const body = vapiMessage([{ name: 'bookClinicAppointment', args: bookingArgs() }]);
      (body.message as Record<string, unknown>).type = type;
      const res = await callTools(h, org.token, body);
      expect(res.status).toBe(200);
      expect(res.body).toEqual({});
      expect(await countAll()).toBe(before);
    });
  }

  it('a message without a type is acknowledged and nothing runs', async () => {
    const before = await countAll();
    const body = vapiMessage([{ name: 'bookClinicAppointment', args: bookingArgs() }]);
    delete (body.message as Record<string, unknown>).type;
    const res = await callTools(h, org.token, body);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({});
    expect(await countAll()).toBe(before);
  });
});

describe('tool-calls envelope variants', () => {
  it('uses message.toolCalls when toolCallList is missing', async () => {
    const res = await callTools(h, org.token, {
      message: {
        type: 'tool-calls',
        toolCalls: [
          { id: 'call_alias', type: 'function', function: { name: 'checkAvailability', arguments: JSON.stringify(availability()) } },
        ],
      },
    });
    expect(res.status).toBe(200);
    expect(res.body.results).toHaveLength(1);
    expect(res.body.results[0]).toMatchObject({ toolCallId: 'call_alias', name: 'checkAvailability' });
    expect(resultOf(res).success).toBe(true);
  });

  it('prefers toolCallList over toolCalls when both are present', async () => {
    const res = await callTools(h, org.token, {
      message: {
        type: 'tool-calls',
        toolCallList: [{ id: 'from_list', function: { name: 'checkAvailability', arguments: availability() } }],
        toolCalls: [{ id: 'from_alias', function: { name: 'checkAvailability', arguments: availability() } }],
      },
    });
    expect(res.body.results.map((r: { toolCallId: string }) => r.toolCallId)).toEqual(['from_list']);
  });

  it('accepts arguments as an object', async () => {
    const before = await countAll();
    const res = await callTools(h, org.token, {
      message: {
        type: 'tool-calls',
        toolCallList: [{ id: 'call_obj', type: 'function', function: { name: 'bookClinicAppointment', arguments: bookingArgs() } }],
      },
    });
    const r = resultOf(res);
    expect(r.success).toBe(true);
    expect(await countAll()).toBe(before + 1);
  });

  it('accepts arguments as a JSON string', async () => {
    const before = await countAll();
    const res = await callTools(h, org.token, vapiMessage([{ name: 'bookClinicAppointment', args: bookingArgs(), id: 'call_str' }]));
    expect(res.body.results[0].toolCallId).toBe('call_str');
    expect(resultOf(res).success).toBe(true);
    expect(await countAll()).toBe(before + 1);
  });

  it('accepts the flattened {id, name, arguments} item shape', async () => {
    const res = await callTools(h, org.token, {
      message: { type: 'tool-calls', toolCallList: [{ id: 'flat_1', name: 'checkAvailability', arguments: availability() }] },
    });
    expect(res.body.results[0]).toMatchObject({ toolCallId: 'flat_1', name: 'checkAvailability' });
    expect(resultOf(res).success).toBe(true);
  });

  it('an unparseable argument string fails only that call; the others still run', async () => {
    const before = await countAll();
    const res = await callTools(h, org.token, {
      message: {
        type: 'tool-calls',
        toolCallList: [
          { id: 'ok_1', function: { name: 'checkAvailability', arguments: JSON.stringify(availability()) } },
          { id: 'bad_json', function: { name: 'bookClinicAppointment', arguments: '{"patientName": "Ana", ' } },
          { id: 'bad_array', function: { name: 'bookClinicAppointment', arguments: '[1,2]' } },
          { id: 'bad_number', function: { name: 'bookClinicAppointment', arguments: 7 } },
          { id: 'ok_2', function: { name: 'bookClinicAppointment', arguments: JSON.stringify(bookingArgs()) } },
        ],
      },
    });
    expect(res.status).toBe(200);
    const results = res.body.results as Array<{ toolCallId: string; result?: string; error?: string }>;
    expect(results.map((r) => r.toolCallId)).toEqual(['ok_1', 'bad_json', 'bad_array', 'bad_number', 'ok_2']);
    for (const i of [1, 2, 3]) {
      expect(results[i]!.result).toBeUndefined();
      expect(results[i]!.error).toMatch(/arguments/);
    }
    expect(resultOf(res, 0).success).toBe(true);
    expect(resultOf(res, 4).success).toBe(true);
    expect(await countAll()).toBe(before + 1);
  });

  it('answers several calls in order with matching toolCallId and name', async () => {
    const calls = [
      { id: 'c1', name: 'checkAvailability', args: availability() },
      { id: 'c2', name: 'bookClinicAppointment', args: bookingArgs() },
      { id: 'c3', name: 'noSuchTool', args: {} },
      { id: 'c4', name: 'cancelAppointment', args: { appointmentId: randomUUID() } },
      { id: 'c5', name: 'checkAvailability', args: { date: localDate(6) } },
    ];
    const res = await callTools(h, org.token, vapiMessage(calls));
    expect(res.status).toBe(200);
    expect(Array.isArray(res.body.results)).toBe(true);
    expect(res.body.results.map((r: { toolCallId: string; name: string }) => [r.toolCallId, r.name])).toEqual(
      calls.map((c) => [c.id, c.name]),
    );
    expect(resultOf(res, 0).success).toBe(true);
    expect(resultOf(res, 1).success).toBe(true);
    expect(res.body.results[2].error).toMatch(/don't have a tool called noSuchTool/);
    expect(res.body.results[3].error).toMatch(/couldn't find an appointment/);
    expect(resultOf(res, 4).success).toBe(true);
  });

  it('an unknown tool name is a per-call error with 200', async () => {
    const res = await callTools(h, org.token, vapiMessage([{ name: 'deleteAllPatients', args: {} }]));
    expect(res.status).toBe(200);
    expect(res.body.results).toHaveLength(1);
    expect(res.body.results[0].result).toBeUndefined();
    expect(res.body.results[0].error).toMatch(/don't have a tool called deleteAllPatients/);
    expect(res.body.results[0].name).toBe('deleteAllPatients');
  });

  it('prototype-ish tool names are unknown tools, not crashes', async () => {
    const names = ['__proto__', 'constructor', 'toString', 'hasOwnProperty'];
    const res = await callTools(h, org.token, vapiMessage(names.map((name) => ({ name, args: {} }))));
    expect(res.status).toBe(200);
    for (const [i, name] of names.entries()) expect(res.body.results[i].error, name).toMatch(/don't have a tool called/);
  });

  it('a call without a name or id still gets an answer in its slot', async () => {
    const res = await callTools(h, org.token, {
      message: { type: 'tool-calls', toolCallList: [{ function: { arguments: '{}' } }, 'not-an-object', null] },
    });
    expect(res.status).toBe(200);
    expect(res.body.results).toHaveLength(3);
    for (const r of res.body.results) {
      expect(typeof r.toolCallId).toBe('string');
      expect(typeof r.name).toBe('string');
      expect(typeof r.error).toBe('string');
    }
  });

  it('legacy route: an unknown tool is a 404 JSON answer', async () => {
    const res = await h.http
      .post('/api/vapi/tools/deleteAllPatients')
      .set('Authorization', `Bearer ${org.token}`)
      .send({ toolCallId: 'x', tool: { arguments: {} } });
    expect(res.status).toBe(404);
    expect(res.headers['content-type']).toMatch(/application\/json/);
    expect(res.body.error).toBe('unknown_tool');
  });

  it('results and errors are single-line strings', async () => {
    const res = await callTools(h, org.token, {
      message: {
        type: 'tool-calls',
        toolCallList: [
          { id: 'nl1', function: { name: 'tool\nwith\r\nbreaks', arguments: {} } },
          { id: 'nl2', function: { name: 'checkAvailability', arguments: { date: 'next\nweek' } } },
          { id: 'nl3', function: { name: 'bookClinicAppointment', arguments: bookingArgs({ patientName: 'Line\nBreak\r\nName' }) } },
          { id: 'nl4', function: { name: 'checkAvailability', arguments: availability() } },
        ],
      },
    });
    expect(res.status).toBe(200);
    expect(Array.isArray(res.body.results)).toBe(true);
    for (const r of res.body.results as Array<{ result?: string; error?: string }>) {
      const text = r.result ?? r.error;
      expect(typeof text).toBe('string');
      expect(text).not.toMatch(/[\r\n]/);
    }
    const booked = resultOf(res, 2);
    expect(booked.success).toBe(true);
    const [row] = await h.owner`SELECT patient_name FROM appointments WHERE id = ${booked.appointmentId}`;
    expect(row!.patient_name).not.toMatch(/[\r\n]/);
    expect(typeof res.body.results[3].result).toBe('string');
  });
});

describe('broken envelopes', () => {
  it('malformed JSON is 400 invalid_json, not 500', async () => {
    for (const raw of ['{"message":', '{message: {}}', "{'message': 1}", '{"a":1}}', 'undefined', '\u0000']) {
      const res = await postRaw('/api/vapi/tools', raw);
      expect(res.status, raw).toBe(400);
      expect(res.headers['content-type']).toMatch(/application\/json/);
      expect(res.body.error).toBe('invalid_json');
    }
  });

  it('legacy route: malformed JSON is 400 invalid_json', async () => {
    const res = await postRaw('/api/vapi/tools/checkAvailability', '{"tool":');
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_json');
  });

  it('[], {}, {message: "x"} and {message: []} are 400 invalid_envelope', async () => {
    for (const raw of ['[]', '{}', '{"message":"x"}', '{"message":[]}', '{"message":null}', '[{"message":{"type":"tool-calls"}}]']) {
      const res = await postRaw('/api/vapi/tools', raw);
      expect(res.status, raw).toBe(400);
      expect(res.body.error).toBe('invalid_envelope');
    }
  });

  it('a tool-calls message with no or an empty tool call list is 400', async () => {
    for (const message of [
      { type: 'tool-calls' },
      { type: 'tool-calls', toolCallList: [] },
      { type: 'tool-calls', toolCallList: null },
      { type: 'tool-calls', toolCallList: { id: 'x' } },
      { type: 'tool-calls', toolCalls: [] },
    ]) {
      const res = await callTools(h, org.token, { message });
      expect(res.status, JSON.stringify(message)).toBe(400);
      expect(res.body.error).toBe('invalid_envelope');
    }
  });

  it('more than 20 calls is 400 and none of them runs; exactly 20 is fine', async () => {
    const before = await countAll();
    const many = Array.from({ length: 25 }, () => ({ name: 'bookClinicAppointment', args: bookingArgs() }));
    const res = await callTools(h, org.token, vapiMessage(many));
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_envelope');
    expect(await countAll()).toBe(before);
    const twentyone = await callTools(
      h,
      org.token,
      vapiMessage(Array.from({ length: 21 }, () => ({ name: 'checkAvailability', args: availability() }))),
    );
    expect(twentyone.status).toBe(400);

    const twenty = await callTools(h, org.token, vapiMessage(Array.from({ length: 20 }, () => ({ name: 'noSuchTool', args: {} }))));
    expect(twenty.status).toBe(200);
    expect(twenty.body.results).toHaveLength(20);
  });

  describe('body limit', () => {
    let small: Harness;
    let smallOrg: TestOrg;
    beforeAll(async () => {
      small = await startHarness({ BODY_LIMIT_BYTES: '2000' });
      smallOrg = await createOrg(small);
    });
    afterAll(async () => small?.close());

    it('a body over the limit is 413 JSON on both routes and nothing runs', async () => {
      const big = vapiMessage([{ name: 'bookClinicAppointment', args: { ...bookingArgs(), padding: 'x'.repeat(5000) } }]);
      const raw = JSON.stringify(big);
      expect(raw.length).toBeGreaterThan(5000);
      const res = await small.http
        .post('/api/vapi/tools')
        .set('Authorization', `Bearer ${smallOrg.token}`)
        .set('Content-Type', 'application/json')
        .send(raw);
      expect(res.status).toBe(413);
      expect(res.headers['content-type']).toMatch(/application\/json/);
      expect(res.body.error).toBe('body_too_large');
      const legacy = await small.http
        .post('/api/vapi/tools/bookClinicAppointment')
        .set('Authorization', `Bearer ${smallOrg.token}`)
        .set('Content-Type', 'application/json')
        .send(JSON.stringify({ tool: { arguments: { ...bookingArgs(), padding: 'x'.repeat(5000) } } }));
      expect(legacy.status).toBe(413);
      const [r] = await small.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM appointments`;
      expect(r!.n).toBe(0);
    });

    it('the token endpoint also answers 413 for a huge body', async () => {
      const res = await small.http
        .post('/oauth/token')
        .type('form')
        .send(`grant_type=client_credentials&x=${'y'.repeat(5000)}`);
      expect(res.status).toBe(413);
    });

    it('a body under the limit still works (control)', async () => {
      const res = await small.http
        .post('/api/vapi/tools')
        .set('Authorization', `Bearer ${smallOrg.token}`)
        .send(vapiMessage([{ name: 'checkAvailability', args: availability() }]));
      expect(res.status).toBe(200);
      expect(resultOf(res).success).toBe(true);
    });

    it('an unauthenticated huge body is refused with 401 before it is read', async () => {
      const res = await small.http
        .post('/api/vapi/tools')
        .set('Content-Type', 'application/json')
        .send(`{"x":"${'y'.repeat(5000)}"}`);
      expect(res.status).toBe(401);
    });
  });

  it('odd inputs never produce a 5xx', async () => {
    const deepArrays = (n: number) => '['.repeat(n) + ']'.repeat(n);
    const deepObjects = (n: number) => '{"a":'.repeat(n) + '1' + '}'.repeat(n);
    const wrapArgs = (argsJson: string, name = 'bookClinicAppointment', id = 'odd') =>
      `{"message":{"type":"tool-calls","toolCallList":[{"id":${JSON.stringify(id)},"function":{"name":${JSON.stringify(name)},"arguments":${argsJson}}}]}}`;
    const msg = (m: unknown) => JSON.stringify({ message: m });
    const bookWith = (over: Record<string, unknown>, extra: Record<string, unknown> = {}, id?: string) =>
      JSON.stringify(vapiMessage([{ name: 'bookClinicAppointment', args: bookingArgs(over), ...(id !== undefined ? { id } : {}) }], extra));

    const inputs: string[] = [
      'null',
      '0',
      '-1',
      '1e999',
      '42',
      '"str"',
      'true',
      'false',
      '""',
      '[null]',
      '[[]]',
      msg(null),
      msg(0),
      msg(true),
      msg({ type: null }),
      msg({ type: 42 }),
      msg({ type: { a: 1 } }),
      msg({ type: ['tool-calls'] }),
      msg({ type: 'tool-calls', toolCallList: [null] }),
      msg({ type: 'tool-calls', toolCallList: [1, 'x', true, []] }),
      msg({ type: 'tool-calls', toolCallList: [{}] }),
      msg({ type: 'tool-calls', toolCallList: [{ function: null }] }),
      msg({ type: 'tool-calls', toolCallList: [{ function: { name: null, arguments: null } }] }),
      msg({ type: 'tool-calls', toolCallList: [{ id: 42, function: { name: 42, arguments: 42 } }] }),
      msg({ type: 'tool-calls', toolCallList: [{ id: { x: 1 }, function: { name: ['checkAvailability'] } }] }),
      msg({ type: 'tool-calls', toolCallList: [{ function: { name: 'checkAvailability', arguments: 'null' } }] }),
      msg({ type: 'tool-calls', toolCallList: [{ function: { name: 'checkAvailability', arguments: '"str"' } }] }),
      msg({ type: 'tool-calls', toolCallList: [{ function: { name: 'checkAvailability', arguments: { date: { $gt: '' } } } }] }),
      msg({ type: 'tool-calls', toolCallList: [{ function: { name: 'checkAvailability', arguments: { date: ['2030-01-01'] } } }] }),
      msg({ type: 'tool-calls', toolCallList: [{ function: { name: 'checkAvailability', arguments: { date: 1e308 } } }] }),
      msg({ type: 'tool-calls', toolCallList: [{ function: { name: 'cancelAppointment', arguments: { appointmentId: `' OR 1=1 --` } } }] }),
      msg({ type: 'tool-calls', toolCallList: [{ function: { name: 'cancelAppointment', arguments: { appointmentId: '\u0000' } } }] }),
      msg({ type: 'tool-calls', call: 'x', customer: 7, assistant: [], toolCallList: [{ function: { name: 'checkAvailability' } }] }),
      '{"__proto__":{"message":{"type":"tool-calls"}}}',
      '{"message":{"type":"tool-calls","__proto__":{"toolCallList":[1]}}}',
      '{"message":{"type":"tool-calls","toolCallList":[{"function":{"name":"checkAvailability","arguments":{"__proto__":{"date":"2030-01-01"}}}}]}}',
      '{"message":{"type":"tool-calls","constructor":{"prototype":{"x":1}},"toolCallList":[{"function":{"name":"checkAvailability"}}]}}',
      // Deep nesting in every layer.
      deepArrays(20_000),
      deepObjects(10_000),
      msg(JSON.parse(deepObjects(2_000))),
      wrapArgs(`{"patientName":"Deep","x":${deepArrays(20_000)}}`),
      wrapArgs(JSON.stringify(`{"patientName":"Deep","x":${deepObjects(5_000)}}`)),
      wrapArgs(`{"patientName":${deepObjects(5_000)}}`),
      // NUL and other control characters everywhere.
      bookWith({ patientName: 'Nul\u0000Name' }),
      bookWith({ patientName: '\u0000' }),
      bookWith({ patientPhone: '+1415555\u00003000' }),
      bookWith({ serviceType: 'short\u0000' }),
      bookWith({ practitioner: '\u0000Dr. Alice Adams' }),
      bookWith({ appointmentDate: `${localDate(8)}\u0000` }),
      bookWith({ patientEmail: 'a\u0000@example.com' }),
      bookWith({}, {}, 'call\u0000id'),
      bookWith({}, { call: { id: 'vapi\u0000call' } }),
      bookWith({}, { customer: { number: '\u0000' } }),
      bookWith({ patientPhone: undefined }, { customer: { number: '+1415\u00005550000' } }),
      bookWith({}, { assistant: { metadata: { org_id: '\u0000' } } }),
      bookWith({ organizationId: '\u0000' }),
      // Emoji and other unicode.
      bookWith({ patientName: '😀 Emoji 👩🏽‍⚕️ Patient' }),
      bookWith({ patientName: '\uD800 lone surrogate' }),
      bookWith({ practitioner: '🩺' }),
      bookWith({ serviceType: '🦷🦷🦷' }),
      bookWith({ appointmentDate: '📅', appointmentTime: '⏰' }),
      bookWith({}, {}, '😀'.repeat(200)),
      bookWith({}, { call: { id: '🔥'.repeat(500) } }),
      JSON.stringify(vapiMessage([{ name: '😀', args: {} }])),
      JSON.stringify(vapiMessage([{ name: 'x'.repeat(50_000), args: {} }])),
      bookWith({ patientName: 'x'.repeat(50_000) }),
      bookWith({}, {}, 'i'.repeat(10_000)),
    ];

    const before = await countAll();
    const failures: string[] = [];
    for (const [i, raw] of inputs.entries()) {
      for (const path of ['/api/vapi/tools', '/api/vapi/tools/bookClinicAppointment']) {
        const res = await postRaw(path, raw);
        if (res.status >= 500) failures.push(`#${i} ${path} -> ${res.status} ${raw.slice(0, 80)}`);
        else if (!/application\/json/.test(String(res.headers['content-type']))) failures.push(`#${i} ${path} -> non-JSON ${res.status}`);
      }
    }
    expect(failures).toEqual([]);
    // Whatever the odd inputs did, the service still books normally afterwards.
    const ok = await callTools(h, org.token, vapiMessage([{ name: 'bookClinicAppointment', args: bookingArgs() }]));
    expect(resultOf(ok).success).toBe(true);
    expect(await countAll()).toBeGreaterThan(before);
  });

  it('per-call failures inside odd inputs are speakable, not stack traces', async () => {
    const res = await callTools(h, org.token, {
      message: {
        type: 'tool-calls',
        toolCallList: [
          { id: 'nul_id\u0000', function: { name: 'bookClinicAppointment', arguments: bookingArgs() } },
          { id: 'n2', function: { name: 'bookClinicAppointment', arguments: bookingArgs({ patientName: 'A\u0000B' }) } },
        ],
      },
    });
    expect(res.status).toBe(200);
    for (const r of res.body.results as Array<{ result?: string; error?: string }>) {
      const text = r.result ?? r.error ?? '';
      expect(text).not.toMatch(/at .*\.(ts|js):\d+|22021|invalid byte sequence|postgres/i);
    }
  });
});

describe('legacy single-call shape', () => {
  it('books and answers {toolCallId, result:{success, appointmentId, smsStatus, message}}', async () => {
    const before = await countAll();
    const res = await h.http
      .post('/api/vapi/tools/bookClinicAppointment')
      .set('Authorization', `Bearer ${org.token}`)
      .send({ toolCallId: 'legacy_ok_1', message: { call: { metadata: { org_id: org.id } } }, tool: { arguments: bookingArgs() } });
    expect(res.status).toBe(200);
    expect(res.body.toolCallId).toBe('legacy_ok_1');
    expect(res.body.result).toMatchObject({ success: true, smsStatus: 'failed_but_booked' });
    expect(typeof res.body.result.appointmentId).toBe('string');
    expect(res.body.result.message).toMatch(/You're booked/);
    expect(await countAll()).toBe(before + 1);
    const [row] = await h.owner`SELECT org_id, status FROM appointments WHERE id = ${res.body.result.appointmentId}`;
    expect(row).toMatchObject({ org_id: org.id, status: 'booked' });
  });

  it('replays a retried legacy toolCallId without booking twice', async () => {
    const body = { toolCallId: 'legacy_retry_1', message: { call: { metadata: { org_id: org.id } } }, tool: { arguments: bookingArgs() } };
    const a = await h.http.post('/api/vapi/tools/bookClinicAppointment').set('Authorization', `Bearer ${org.token}`).send(body);
    const before = await countAll();
    const b = await h.http.post('/api/vapi/tools/bookClinicAppointment').set('Authorization', `Bearer ${org.token}`).send(body);
    expect(b.body.result.appointmentId).toBe(a.body.result.appointmentId);
    expect(b.body.result.alreadyBooked).toBe(true);
    expect(await countAll()).toBe(before);
  });

  it('accepts top-level arguments and a JSON-string tool.arguments', async () => {
    const top = await h.http
      .post('/api/vapi/tools/checkAvailability')
      .set('Authorization', `Bearer ${org.token}`)
      .send({ toolCallId: 't1', arguments: availability() });
    expect(top.status).toBe(200);
    expect(top.body.result.success).toBe(true);
    const str = await h.http
      .post('/api/vapi/tools/checkAvailability')
      .set('Authorization', `Bearer ${org.token}`)
      .send({ toolCallId: 't2', tool: { arguments: JSON.stringify(availability()) } });
    expect(str.body.result.success).toBe(true);
  });

  it('answers toolCallId null when none was given', async () => {
    const res = await h.http
      .post('/api/vapi/tools/checkAvailability')
      .set('Authorization', `Bearer ${org.token}`)
      .send({ tool: { arguments: availability() } });
    expect(res.status).toBe(200);
    expect(res.body.toolCallId).toBeNull();
  });

  it('a tool error is {toolCallId, result:{success:false, error, message}} and books nothing', async () => {
    const before = await countAll();
    const res = await h.http
      .post('/api/vapi/tools/bookClinicAppointment')
      .set('Authorization', `Bearer ${org.token}`)
      .send({ toolCallId: 'legacy_err_1', tool: { arguments: bookingArgs({ patientPhone: '555-0100' }) } });
    expect(res.status).toBe(200);
    expect(res.body.toolCallId).toBe('legacy_err_1');
    expect(res.body.result).toMatchObject({ success: false, error: 'invalid_phone' });
    expect(res.body.result.message).toMatch(/phone number doesn't look right/);
    expect(await countAll()).toBe(before);
  });

  it('unreadable legacy arguments are 400 invalid_arguments', async () => {
    const res = await h.http
      .post('/api/vapi/tools/bookClinicAppointment')
      .set('Authorization', `Bearer ${org.token}`)
      .send({ toolCallId: 'x', tool: { arguments: '{oops' } });
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_arguments');
  });

  it('a non-object legacy body is 400 invalid_envelope', async () => {
    const res = await postRaw('/api/vapi/tools/checkAvailability', '[1,2]');
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_envelope');
  });
});

describe('log redaction (src/log.ts)', () => {
  it('phoneForLog keeps only the last four digits and a hash', () => {
    const out = phoneForLog('+14155552671')!;
    expect(out).not.toContain('4155552671');
    expect(out).not.toContain('415555');
    expect(out).toMatch(/2671#[0-9a-f]{10}$/);
    expect(phoneForLog('+14155552671')).toBe(out);
    expect(phoneForLog('+14155552672')).not.toBe(out);
    expect(phoneForLog(undefined)).toBeUndefined();
    expect(phoneForLog('')).toBeUndefined();
  });

  function capture() {
    const lines: string[] = [];
    const log = pino(
      { level: 'info', redact: { paths: REDACT_PATHS, censor: '[redacted]' } },
      { write: (s: string) => void lines.push(s) },
    );
    return { log, lines, parsed: () => lines.map((l) => JSON.parse(l) as Record<string, any>) };
  }

  it('redacts authorization, Vapi secrets and signature headers', () => {
    const { log, lines, parsed } = capture();
    log.info(
      {
        req: {
          method: 'POST',
          headers: {
            authorization: 'Bearer eyJhbGciOiJIUzI1NiJ9.secret-token',
            'x-vapi-secret': 'shared-vapi-secret',
            'x-vapi-signature': 'sig-secret',
            'x-signature': 'hmac-secret-sig',
            cookie: 'session=cookie-secret',
            'user-agent': 'vapi',
          },
        },
      },
      'request',
    );
    const [entry] = parsed();
    expect(entry!.req.headers.authorization).toBe('[redacted]');
    expect(entry!.req.headers['x-vapi-secret']).toBe('[redacted]');
    expect(entry!.req.headers['x-signature']).toBe('[redacted]');
    expect(entry!.req.headers.cookie).toBe('[redacted]');
    expect(entry!.req.headers['user-agent']).toBe('vapi');
    for (const secret of ['secret-token', 'shared-vapi-secret', 'sig-secret', 'hmac-secret-sig', 'cookie-secret']) {
      expect(lines.join('\n')).not.toContain(secret);
    }
  });

  it('redacts tool server secrets and headers in toolWithToolCallList, and Twilio auth tokens', () => {
    const { log, lines, parsed } = capture();
    log.info(
      {
        message: {
          type: 'tool-calls',
          toolWithToolCallList: [
            {
              type: 'function',
              server: { url: 'https://tools.example/hook', secret: 'tool-secret-one', headers: { Authorization: 'Bearer hdr-secret' } },
            },
            { type: 'function', server: { url: 'https://tools.example/hook2', secret: 'tool-secret-two' } },
          ],
          phoneNumber: { provider: 'twilio', number: '+19254207621', twilioAccountSid: 'AC123', twilioAuthToken: 'twilio-auth-secret' },
        },
      },
      'payload',
    );
    const [entry] = parsed();
    expect(entry!.message.toolWithToolCallList[0].server.secret).toBe('[redacted]');
    expect(entry!.message.toolWithToolCallList[1].server.secret).toBe('[redacted]');
    expect(entry!.message.toolWithToolCallList[0].server.headers).toBe('[redacted]');
    expect(entry!.message.toolWithToolCallList[0].server.url).toBe('https://tools.example/hook');
    expect(entry!.message.phoneNumber.twilioAuthToken).toBe('[redacted]');
    expect(entry!.message.phoneNumber.number).toBe('+19254207621');
    for (const secret of ['tool-secret-one', 'tool-secret-two', 'hdr-secret', 'twilio-auth-secret']) {
      expect(lines.join('\n')).not.toContain(secret);
    }
  });

  it('redacts client secrets and provider credentials one level down', () => {
    const { log, lines } = capture();
    log.info(
      { body: { client_secret: 'cs_form_secret', clientSecret: 'cs_json_secret' }, provider: { authToken: 'tw-token', apiKey: 'tx-key' } },
      'x',
    );
    for (const secret of ['cs_form_secret', 'cs_json_secret', 'tw-token', 'tx-key']) expect(lines.join('\n')).not.toContain(secret);
  });
});

describe('deep log redaction (src/log.ts loggerOptions)', () => {
  it('blanks secret-named keys at any depth, inside arrays and errors, and keeps the rest', async () => {
    const { loggerOptions } = await import('../src/log.js');
    const lines: string[] = [];
    const log = pino(loggerOptions('info'), { write: (s: string) => void lines.push(s) });
    const err = Object.assign(new Error('request failed'), { config: { headers: { Authorization: 'Basic QUM6c2VjcmV0' } }, status: 500 });
    log.info(
      {
        sms: {
          providers: [
            { kind: 'twilio', accountSid: 'AC123', authToken: 'nested-twilio-token' },
            { kind: 'telnyx', apiKey: 'nested-telnyx-key' },
          ],
        },
        deep: { a: { b: { c: { client_secret: 'cs_deep', password: 'pw' } } } },
        err,
      },
      'nested',
    );
    const text = lines.join('\n');
    for (const secret of ['nested-twilio-token', 'nested-telnyx-key', 'cs_deep', 'QUM6c2VjcmV0', '"pw"'])
      expect(text).not.toContain(secret);
    const entry = JSON.parse(lines[0]!) as Record<string, any>;
    expect(entry.sms.providers[0]).toEqual({ kind: 'twilio', accountSid: 'AC123', authToken: '[redacted]' });
    expect(entry.deep.a.b.c.client_secret).toBe('[redacted]');
    expect(entry.err.type).toBe('Error');
    expect(entry.err.message).toBe('request failed');
    expect(entry.err.status).toBe(500);
    expect(entry.err.config.headers.Authorization).toBe('[redacted]');
    // The logged object itself is not changed.
    expect(err.config.headers.Authorization).toBe('Basic QUM6c2VjcmV0');
  });
});

describe('buffered log writes (src/log.ts createLogger)', () => {
  it('a line under light traffic is written within the flush interval, without waiting for more lines or exit', async () => {
    const { spawn } = await import('node:child_process');
    const { LOG_FLUSH_MS } = await import('../src/log.js');
    const child = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        // src/log.ts as compiled once for the run (test/helpers/server-build.ts).
        `const { createLogger } = await import(${JSON.stringify(pathToFileURL(path.join(inject('serverDir'), 'src', 'log.js')).href)}); ` +
          "createLogger('info').info({ n: 1 }, 'one line'); setTimeout(() => {}, 5000);",
      ],
      { cwd: new URL('..', import.meta.url), stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      const started = Date.now();
      const line = await new Promise<string>((resolve, reject) => {
        child.stdout!.on('data', (d: Buffer) => resolve(d.toString()));
        child.once('exit', () => reject(new Error('exited before writing')));
      });
      expect(JSON.parse(line).msg).toBe('one line');
      // The child needs a moment to start; the line then waits at most the flush interval.
      expect(Date.now() - started).toBeLessThan(4000 + LOG_FLUSH_MS);
      expect(child.exitCode).toBeNull();
    } finally {
      child.kill();
    }
  });
});
