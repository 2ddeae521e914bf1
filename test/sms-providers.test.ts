import { createHash } from 'node:crypto';
import { inspect } from 'node:util';
import { TimeoutError } from 'p-timeout';
import { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError } from 'telnyx';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { classifyUnknown } from '../src/sms/classify.js';
import { CODE_TABLE } from '../src/sms/providers/index.js';
import { createSandboxProvider } from '../src/sms/providers/sandbox.js';
import { classifyTelnyxError, createTelnyxProvider } from '../src/sms/providers/telnyx.js';
import { classifyTwilioError, createTwilioProvider } from '../src/sms/providers/twilio.js';
import { ProviderSendError, type SendRequest, type SmsProvider } from '../src/sms/types.js';
import { DEFAULT_TELNYX_API_KEY, startFakeTelnyx, type FakeTelnyx } from './fakes/fake-telnyx.js';
import { DEFAULT_TWILIO_ACCOUNT, startFakeTwilio, type FakeTwilio } from './fakes/fake-twilio.js';

const FROM = '+15005550006';
let seq = 0;

/** Unique recipient/body per call so tests sharing one fake never see each other's messages. */
function request(over: Partial<SendRequest> = {}): SendRequest {
  seq += 1;
  return {
    to: `+1415555${String(1000 + seq).slice(-4)}`,
    from: FROM,
    body: `Your appointment is confirmed (#${seq}). Reply STOP to opt out.`,
    idempotencyKey: `outbox-${seq}-${Date.now()}`,
    ...over,
  };
}

async function sendError(p: Promise<unknown>): Promise<ProviderSendError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ProviderSendError);
    return err as ProviderSendError;
  }
  throw new Error('expected the send to fail');
}

const MAGIC_TO = [
  { to: '+15005550001', twilio: ['recipient', '21211'], telnyx: ['recipient', '40310'], optOut: false },
  { to: '+15005550002', twilio: ['provider', '21612'], telnyx: ['provider', '40301'], optOut: false },
  { to: '+15005550003', twilio: ['provider', '21408'], telnyx: ['provider', '40309'], optOut: false },
  { to: '+15005550004', twilio: ['recipient', '21610'], telnyx: ['recipient', '40300'], optOut: true },
  { to: '+15005550009', twilio: ['recipient', '21614'], telnyx: ['recipient', '40001'], optOut: false },
] as const;

const MAGIC_FROM = [
  { from: '+15005550001', twilio: '21212', telnyx: '40305' },
  { from: '+15005550007', twilio: '21606', telnyx: '40013' },
  { from: '+15005550008', twilio: '21611', telnyx: '40318' },
] as const;

describe('twilio adapter against the fake Twilio API', () => {
  let fake: FakeTwilio;
  let provider: SmsProvider;

  beforeAll(async () => {
    fake = await startFakeTwilio();
    provider = createTwilioProvider({ ...creds(), baseUrl: fake.url, timeoutMs: 2000 });
  });
  afterEach(async () => {
    await fake.setFault(null);
  });
  afterAll(async () => {
    await fake.close();
  });

  function creds() {
    return { accountSid: DEFAULT_TWILIO_ACCOUNT.sid, authToken: DEFAULT_TWILIO_ACCOUNT.token };
  }

  it('sends with Basic auth and the exact to/from/body', async () => {
    const req = request({ body: 'Hi Ana, see you Tue 9:30 — Dr. Ruiz ✓' });
    const res = await provider.send(req);

    expect(res.providerMessageId).toMatch(/^SM[0-9a-f]{32}$/);
    expect(res.status).toBe('queued');
    const stored = fake.messages.filter((m) => m.sid === res.providerMessageId);
    expect(stored).toHaveLength(1);
    expect(stored[0]).toMatchObject({
      to: req.to,
      from: req.from,
      body: req.body,
      accountSid: DEFAULT_TWILIO_ACCOUNT.sid,
      status: 'queued',
    });
    const post = fake.log.filter((l) => l.method === 'POST').at(-1);
    expect(post?.path).toBe(`/2010-04-01/Accounts/${DEFAULT_TWILIO_ACCOUNT.sid}/Messages.json`);
    const basic = Buffer.from(`${DEFAULT_TWILIO_ACCOUNT.sid}:${DEFAULT_TWILIO_ACCOUNT.token}`).toString('base64');
    expect(post?.authorization).toBe(`Basic ${basic}`);
    expect(provider.accountKey).toBe(`twilio:${DEFAULT_TWILIO_ACCOUNT.sid}`);
  });

  it.each(MAGIC_TO)('magic To $to is classified from its Twilio code', async ({ to, twilio, optOut }) => {
    const before = fake.messages.length;
    const err = await sendError(provider.send(request({ to })));
    expect(err).toMatchObject({ provider: 'twilio', errorClass: twilio[0], code: twilio[1], httpStatus: 400, optOut });
    expect(fake.messages.length).toBe(before);
  });

  it.each(MAGIC_FROM)('magic From $from means this sender is broken: fail over', async ({ from, twilio }) => {
    const err = await sendError(provider.send(request({ from })));
    expect(err).toMatchObject({ errorClass: 'provider', code: twilio, httpStatus: 400, optOut: false });
  });

  it('429 is transient', async () => {
    await fake.setFault({ kind: 'http429' });
    const err = await sendError(provider.send(request()));
    expect(err).toMatchObject({ errorClass: 'transient', code: '20429', httpStatus: 429 });
  });

  it('5xx is transient, with a JSON body or with an HTML gateway page', async () => {
    await fake.setFault({ kind: 'http5xx' });
    const json = await sendError(provider.send(request()));
    expect(json).toMatchObject({ errorClass: 'transient', code: '20500', httpStatus: 500 });

    await fake.setFault({ kind: 'http5xx', status: 503 });
    const html = await sendError(provider.send(request()));
    expect(html).toMatchObject({ errorClass: 'transient', code: undefined, httpStatus: 503 });
  });

  it('connection refused is transient ECONNREFUSED, and the fake comes back on the same port', async () => {
    await fake.setFault({ kind: 'down' });
    const err = await sendError(provider.send(request()));
    expect(err).toMatchObject({ errorClass: 'transient', code: 'ECONNREFUSED', httpStatus: undefined });
    // The axios error holds the Basic auth header; it must not leak through `cause`.
    expect(inspect(err, { depth: 10 })).not.toContain(
      Buffer.from(`${DEFAULT_TWILIO_ACCOUNT.sid}:${DEFAULT_TWILIO_ACCOUNT.token}`).toString('base64'),
    );

    await fake.restart();
    await expect(provider.send(request())).resolves.toMatchObject({ status: 'queued' });
  });

  it('a hang aborted by the caller after 200 ms is ambiguous and returns promptly', async () => {
    await fake.setFault({ kind: 'hang' });
    const req = request({ signal: AbortSignal.timeout(200) });
    const started = Date.now();
    const err = await sendError(provider.send(req));
    const elapsed = Date.now() - started;

    expect(err).toMatchObject({ errorClass: 'ambiguous', code: 'TIMEOUT' });
    expect(elapsed).toBeGreaterThanOrEqual(150);
    expect(elapsed).toBeLessThan(1000);
    // The fake accepted it before going silent: exactly the case reconciliation exists for.
    expect(fake.messages.filter((m) => m.body === req.body)).toHaveLength(1);
  });

  it('findRecent finds the message a hang accepted, and only that one', async () => {
    const since = new Date();
    await fake.setFault({ kind: 'hang', times: 1 });
    const req = request();
    await sendError(provider.send({ ...req, signal: AbortSignal.timeout(200) }));
    const stored = fake.messages.find((m) => m.body === req.body);
    expect(stored).toBeDefined();

    const found = await provider.findRecent!({ to: req.to, from: req.from, body: req.body, since });
    expect(found).toEqual({ providerMessageId: stored!.sid, status: 'queued' });

    expect(await provider.findRecent!({ to: req.to, from: req.from, body: `${req.body} (edited)`, since })).toBeNull();
    // Twilio filters DateSent by day, so the adapter must drop same-day messages older than `since`.
    expect(await provider.findRecent!({ to: req.to, from: req.from, body: req.body, since: new Date(Date.now() + 5000) })).toBeNull();

    const list = fake.log.filter((l) => l.method === 'GET').at(-1);
    expect(list?.query.get('To')).toBe(req.to);
    expect(list?.query.get('From')).toBe(req.from);
    expect(list?.query.get('PageSize')).toBe('20');
    expect(list?.query.get('DateSent>')).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  });

  it('findRecent ignores failed messages', async () => {
    const since = new Date();
    const req = request();
    const sent = await provider.send(req);
    const stored = fake.messages.find((m) => m.sid === sent.providerMessageId)!;
    stored.status = 'failed';
    expect(await provider.findRecent!({ to: req.to, from: req.from, body: req.body, since })).toBeNull();
  });

  it('a socket hang-up after the request was sent is ambiguous', async () => {
    await fake.setFault({ kind: 'hang', records: false });
    const pending = sendError(provider.send(request()));
    await new Promise((r) => setTimeout(r, 100));
    await fake.stop();
    const err = await pending;
    expect(err).toMatchObject({ errorClass: 'ambiguous', code: 'ECONNRESET' });
  });

  it('wrong credentials mean fail over, without the token in the message', async () => {
    const wrongToken = createTwilioProvider({
      accountSid: DEFAULT_TWILIO_ACCOUNT.sid,
      authToken: 'not-the-token',
      baseUrl: fake.url,
      timeoutMs: 2000,
    });
    const err = await sendError(wrongToken.send(request()));
    expect(err).toMatchObject({ errorClass: 'provider', code: '20003', httpStatus: 401 });
    expect(err.message).not.toContain('not-the-token');

    const unknownAccount = createTwilioProvider({ accountSid: 'AC' + 'f'.repeat(32), authToken: 'x', baseUrl: fake.url, timeoutMs: 2000 });
    await expect(unknownAccount.send(request())).rejects.toMatchObject({ errorClass: 'provider', code: '20003' });
  });

  it('accounts added later are accepted', async () => {
    const sid = 'AC' + '2b'.repeat(16);
    fake.addAccount(sid, 'second-token');
    const p = createTwilioProvider({ accountSid: sid, authToken: 'second-token', baseUrl: fake.url, timeoutMs: 2000 });
    const res = await p.send(request());
    expect(fake.messages.find((m) => m.sid === res.providerMessageId)?.accountSid).toBe(sid);
  });

  it('a `times` fault clears after N requests', async () => {
    const before = fake.requests;
    await fake.setFault({ kind: 'http429', times: 2 });
    await expect(provider.send(request())).rejects.toMatchObject({ errorClass: 'transient' });
    await expect(provider.send(request())).rejects.toMatchObject({ errorClass: 'transient' });
    await expect(provider.send(request())).resolves.toMatchObject({ status: 'queued' });
    expect(fake.requests - before).toBe(3);
  });

  it('a slow answer within the signal succeeds; beyond it, it is ambiguous', async () => {
    await fake.setFault({ kind: 'slow', ms: 100, times: 1 });
    await expect(provider.send(request({ signal: AbortSignal.timeout(1000) }))).resolves.toMatchObject({ status: 'queued' });

    await fake.setFault({ kind: 'slow', ms: 800, times: 1 });
    const err = await sendError(provider.send(request({ signal: AbortSignal.timeout(200) })));
    expect(err.errorClass).toBe('ambiguous');
  });

  it('an already-aborted signal never reaches the provider', async () => {
    const before = fake.requests;
    const ctl = new AbortController();
    ctl.abort();
    const err = await sendError(provider.send(request({ signal: ctl.signal })));
    expect(err).toMatchObject({ errorClass: 'transient', code: 'ABORTED' });
    expect(fake.requests).toBe(before);
  });

  it('an injected status with a code is classified by that code', async () => {
    await fake.setFault({ kind: 'status', status: 400, code: 30034, times: 1 });
    await expect(provider.send(request())).rejects.toMatchObject({ errorClass: 'provider', code: '30034' });
  });

  it('the SDK rejects account SIDs that do not start with AC', () => {
    expect(() => createTwilioProvider({ accountSid: 'SK123', authToken: 'x', timeoutMs: 1000 })).toThrow(/AC/);
  });
});

describe('telnyx adapter against the fake Telnyx API', () => {
  let fake: FakeTelnyx;
  let provider: SmsProvider;

  beforeAll(async () => {
    fake = await startFakeTelnyx();
    provider = createTelnyxProvider({ apiKey: DEFAULT_TELNYX_API_KEY, baseUrl: fake.url, timeoutMs: 2000 });
  });
  afterEach(async () => {
    await fake.setFault(null);
  });
  afterAll(async () => {
    await fake.close();
  });

  it('sends with the Bearer key, the Idempotency-Key and the exact to/from/body', async () => {
    const req = request({ body: 'Hola Ana, cita confirmada mañana 9:30 ✓' });
    const res = await provider.send(req);

    expect(res.providerMessageId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(res.status).toBe('queued');
    const stored = fake.messages.filter((m) => m.id === res.providerMessageId);
    expect(stored).toHaveLength(1);
    expect(stored[0]).toMatchObject({
      to: req.to,
      from: req.from,
      body: req.body,
      idempotencyKey: req.idempotencyKey,
      apiKey: DEFAULT_TELNYX_API_KEY,
    });
    const post = fake.log.filter((l) => l.method === 'POST').at(-1);
    expect(post).toMatchObject({
      path: '/v2/messages',
      authorization: `Bearer ${DEFAULT_TELNYX_API_KEY}`,
      idempotencyKey: req.idempotencyKey,
    });
  });

  it('hashes the API key into accountKey and has no findRecent', () => {
    const hash = createHash('sha256').update(DEFAULT_TELNYX_API_KEY).digest('hex').slice(0, 8);
    expect(provider.accountKey).toBe(`telnyx:${hash}`);
    expect(provider.accountKey).not.toContain(DEFAULT_TELNYX_API_KEY);
    expect(provider.findRecent).toBeUndefined();
  });

  it('accepts a base URL that already ends in /v2 and passes the messaging profile', async () => {
    const p = createTelnyxProvider({
      apiKey: DEFAULT_TELNYX_API_KEY,
      baseUrl: `${fake.url}/v2/`,
      timeoutMs: 2000,
      messagingProfileId: 'prof-123',
    });
    const res = await p.send(request());
    expect(fake.messages.find((m) => m.id === res.providerMessageId)?.messagingProfileId).toBe('prof-123');
  });

  it.each(MAGIC_TO)('magic To $to is classified from its Telnyx code', async ({ to, telnyx, optOut }) => {
    const before = fake.messages.length;
    const err = await sendError(provider.send(request({ to })));
    expect(err).toMatchObject({ provider: 'telnyx', errorClass: telnyx[0], code: telnyx[1], httpStatus: 400, optOut });
    expect(fake.messages.length).toBe(before);
  });

  it.each(MAGIC_FROM)('magic From $from means this sender is broken: fail over', async ({ from, telnyx }) => {
    const err = await sendError(provider.send(request({ from })));
    expect(err).toMatchObject({ errorClass: 'provider', code: telnyx, httpStatus: 400 });
  });

  it('429 is transient and the SDK does not retry it', async () => {
    const before = fake.requests;
    await fake.setFault({ kind: 'http429' });
    const err = await sendError(provider.send(request()));
    expect(err).toMatchObject({ errorClass: 'transient', code: '10011', httpStatus: 429 });
    expect(fake.requests - before).toBe(1);
  });

  it('5xx is transient and the SDK does not retry it', async () => {
    const before = fake.requests;
    await fake.setFault({ kind: 'http5xx', status: 503 });
    const err = await sendError(provider.send(request()));
    expect(err).toMatchObject({ errorClass: 'transient', code: '10007', httpStatus: 503 });
    expect(fake.requests - before).toBe(1);
  });

  it('connection refused is transient ECONNREFUSED', async () => {
    await fake.setFault({ kind: 'down' });
    const err = await sendError(provider.send(request()));
    expect(err).toMatchObject({ errorClass: 'transient', code: 'ECONNREFUSED', httpStatus: undefined });
    await fake.restart();
    await expect(provider.send(request())).resolves.toMatchObject({ status: 'queued' });
  });

  it('a hang aborted by the caller after 200 ms is ambiguous and returns promptly', async () => {
    await fake.setFault({ kind: 'hang' });
    const started = Date.now();
    const err = await sendError(provider.send(request({ signal: AbortSignal.timeout(200) })));
    const elapsed = Date.now() - started;
    expect(err).toMatchObject({ errorClass: 'ambiguous', code: 'TIMEOUT' });
    expect(elapsed).toBeGreaterThanOrEqual(150);
    expect(elapsed).toBeLessThan(1000);
  });

  it('a socket hang-up after the request was sent is ambiguous', async () => {
    await fake.setFault({ kind: 'hang', records: false });
    const pending = sendError(provider.send(request()));
    await new Promise((r) => setTimeout(r, 100));
    await fake.stop();
    const err = await pending;
    expect(err).toMatchObject({ errorClass: 'ambiguous', code: 'UND_ERR_SOCKET' });
  });

  it('a wrong API key means fail over, without the key in the message', async () => {
    const p = createTelnyxProvider({ apiKey: 'KEY_wrong_secret', baseUrl: fake.url, timeoutMs: 2000 });
    const err = await sendError(p.send(request()));
    expect(err).toMatchObject({ errorClass: 'provider', code: '10009', httpStatus: 401 });
    expect(err.message).not.toContain('KEY_wrong_secret');
  });

  it('a `times` fault clears after N requests', async () => {
    const before = fake.requests;
    await fake.setFault({ kind: 'http5xx', times: 1 });
    await expect(provider.send(request())).rejects.toMatchObject({ errorClass: 'transient', httpStatus: 500 });
    await expect(provider.send(request())).resolves.toMatchObject({ status: 'queued' });
    expect(fake.requests - before).toBe(2);
  });

  it('replays the same Idempotency-Key instead of sending twice', async () => {
    const req = request();
    const first = await provider.send(req);
    const second = await provider.send(req);
    expect(second.providerMessageId).toBe(first.providerMessageId);
    expect(fake.messages.filter((m) => m.idempotencyKey === req.idempotencyKey)).toHaveLength(1);

    const reused = await sendError(provider.send({ ...req, body: `${req.body} v2` }));
    expect(reused).toMatchObject({ httpStatus: 422, errorClass: 'provider' });
    expect(fake.messages.filter((m) => m.idempotencyKey === req.idempotencyKey)).toHaveLength(1);
  });

  it('a resend after "accepted, response lost" is answered from the idempotency record', async () => {
    const req = request();
    await fake.setFault({ kind: 'hang', times: 1 });
    await expect(provider.send({ ...req, signal: AbortSignal.timeout(200) })).rejects.toMatchObject({ errorClass: 'ambiguous' });
    const original = fake.messages.find((m) => m.idempotencyKey === req.idempotencyKey);
    expect(original).toBeDefined();

    const retry = await provider.send(req);
    expect(retry.providerMessageId).toBe(original!.id);
    expect(fake.messages.filter((m) => m.body === req.body)).toHaveLength(1);
  });
});

describe('sandbox provider', () => {
  it('records instead of sending and can be reconciled', async () => {
    const sb = createSandboxProvider({ name: 'clinic-7' });
    expect(sb).toMatchObject({ kind: 'sandbox', accountKey: 'sandbox:clinic-7' });
    const since = new Date(Date.now() - 1);
    const req = request();
    const res = await sb.send(req);
    expect(res.providerMessageId).toMatch(/^SB[0-9a-f]{32}$/);
    expect(sb.sent.at(-1)).toMatchObject({ id: res.providerMessageId, to: req.to, from: req.from, body: req.body });
    expect(await sb.findRecent!({ to: req.to, from: req.from, body: req.body, since })).toEqual({
      providerMessageId: res.providerMessageId,
      status: 'queued',
    });
    expect(await sb.findRecent!({ to: req.to, from: req.from, body: 'other', since })).toBeNull();
    expect(createSandboxProvider().accountKey).toBe('sandbox:default');
  });

  it.each([
    ['+15005550001', 'recipient', '21211', false],
    ['+15005550004', 'recipient', '21610', true],
    ['+15005550009', 'recipient', '21614', false],
    ['+15005550003', 'provider', '21408', false],
  ] as const)('honours magic To %s', async (to, errorClass, code, optOut) => {
    const sb = createSandboxProvider();
    const err = await sendError(sb.send(request({ to })));
    expect(err).toMatchObject({ provider: 'sandbox', errorClass, code, optOut });
    expect(sb.sent).toHaveLength(0);
  });

  it('keeps only the last 1000 messages', async () => {
    const sb = createSandboxProvider();
    for (let i = 0; i < 1005; i++) await sb.send({ to: '+14155550100', from: FROM, body: `m${i}`, idempotencyKey: `k${i}` });
    expect(sb.sent).toHaveLength(1000);
    expect(sb.sent[0]?.body).toBe('m5');
    expect(sb.sent.at(-1)?.body).toBe('m1004');
  });
});

describe('classify', () => {
  const telnyxError = (status: number, errors: unknown[]) => APIError.generate(status, { errors }, undefined, new Headers());

  it('unknown 4xx codes fail over: the provider rejected it, so nothing was sent', () => {
    expect(classifyTwilioError({ status: 400, code: 99999, message: 'new thing' })).toMatchObject({
      errorClass: 'provider',
      code: '99999',
      httpStatus: 400,
    });
    expect(classifyTelnyxError(telnyxError(422, [{ code: '49999', title: 'new thing' }]))).toMatchObject({
      errorClass: 'provider',
      code: '49999',
      httpStatus: 422,
    });
  });

  it('401/403 without a code fail over; 429 and 5xx without a code are transient', () => {
    expect(classifyTwilioError({ status: 401 })).toMatchObject({ errorClass: 'provider', code: undefined });
    expect(classifyTelnyxError(telnyxError(403, []))).toMatchObject({ errorClass: 'provider', code: undefined, httpStatus: 403 });
    expect(classifyTwilioError({ status: 429 })).toMatchObject({ errorClass: 'transient' });
    expect(classifyTelnyxError(telnyxError(502, []))).toMatchObject({ errorClass: 'transient', httpStatus: 502 });
  });

  it('unknown errors without an HTTP answer are ambiguous', () => {
    expect(classifyTwilioError(new Error('something odd'))).toMatchObject({ errorClass: 'ambiguous', code: undefined });
    expect(classifyTelnyxError('a string was thrown')).toMatchObject({ errorClass: 'ambiguous' });
    expect(classifyUnknown('sandbox', undefined)).toMatchObject({ errorClass: 'ambiguous', provider: 'sandbox' });
  });

  it('matches codes whether the SDK gives numbers or strings', () => {
    const asNumber = classifyTwilioError({ status: 400, code: 21610 });
    const asString = classifyTwilioError({ status: 400, code: '21610' });
    for (const e of [asNumber, asString]) expect(e).toMatchObject({ errorClass: 'recipient', code: '21610', optOut: true });
    expect(classifyTelnyxError(telnyxError(400, [{ code: 40300 }]))).toMatchObject({
      errorClass: 'recipient',
      code: '40300',
      optOut: true,
    });
    // Telnyx codes are not Twilio codes: the table is namespaced.
    expect(classifyTelnyxError(telnyxError(400, [{ code: '21610' }]))).toMatchObject({ errorClass: 'provider', optOut: false });
  });

  it('a known code beats the HTTP status, and STOP wins among several errors', () => {
    expect(classifyTelnyxError(telnyxError(403, [{ code: '40300' }]))).toMatchObject({
      errorClass: 'recipient',
      optOut: true,
      httpStatus: 403,
    });
    expect(
      classifyTelnyxError(telnyxError(400, [{ code: '10015' }, { code: '40300', title: 'Blocked due to STOP message' }])),
    ).toMatchObject({
      errorClass: 'recipient',
      code: '40300',
      optOut: true,
    });
  });

  it('network errors before sending are transient; after sending, ambiguous', () => {
    const axios = (code: string, message: string) =>
      Object.assign(new Error(message), { isAxiosError: true, code, config: { headers: { Authorization: 'Basic c2VjcmV0OnRva2Vu' } } });
    expect(classifyTwilioError(axios('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:1'))).toMatchObject({
      errorClass: 'transient',
      code: 'ECONNREFUSED',
    });
    expect(classifyTwilioError(axios('ENOTFOUND', 'getaddrinfo ENOTFOUND api.twilio.com'))).toMatchObject({
      errorClass: 'transient',
      code: 'ENOTFOUND',
    });
    expect(classifyTwilioError(axios('EAI_AGAIN', 'getaddrinfo EAI_AGAIN'))).toMatchObject({ errorClass: 'transient', code: 'EAI_AGAIN' });
    const timedOut = classifyTwilioError(axios('ECONNABORTED', 'timeout of 3000ms exceeded'));
    expect(timedOut).toMatchObject({ errorClass: 'ambiguous', code: 'TIMEOUT' });
    expect(inspect(timedOut, { depth: 10 })).not.toContain('c2VjcmV0OnRva2Vu');
    expect(classifyTwilioError(axios('ETIMEDOUT', 'timeout'))).toMatchObject({ errorClass: 'ambiguous', code: 'TIMEOUT' });
    expect(classifyTwilioError(axios('ECONNRESET', 'socket hang up'))).toMatchObject({ errorClass: 'ambiguous', code: 'ECONNRESET' });
  });

  it('timeouts and aborts of our own are ambiguous', () => {
    expect(classifyTwilioError(new TimeoutError('Promise timed out'))).toMatchObject({ errorClass: 'ambiguous', code: 'TIMEOUT' });
    expect(classifyTwilioError(new DOMException('aborted', 'AbortError'))).toMatchObject({ errorClass: 'ambiguous', code: 'TIMEOUT' });
    expect(classifyTelnyxError(new APIUserAbortError())).toMatchObject({ errorClass: 'ambiguous', code: 'TIMEOUT' });
    expect(classifyTelnyxError(new APIConnectionTimeoutError())).toMatchObject({ errorClass: 'ambiguous', code: 'TIMEOUT' });
  });

  it('reads the refused connection out of a Telnyx APIConnectionError cause chain', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' });
    const viaFetch = new APIConnectionError({ cause: new TypeError('fetch failed', { cause: refused }) });
    expect(classifyTelnyxError(viaFetch)).toMatchObject({ errorClass: 'transient', code: 'ECONNREFUSED' });

    const aggregate = Object.assign(new AggregateError([refused], 'connect failed'), { code: 'ECONNREFUSED' });
    expect(classifyTelnyxError(new APIConnectionError({ cause: new TypeError('fetch failed', { cause: aggregate }) }))).toMatchObject({
      errorClass: 'transient',
      code: 'ECONNREFUSED',
    });

    const reset = new APIConnectionError({
      cause: new TypeError('fetch failed', { cause: Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' }) }),
    });
    expect(classifyTelnyxError(reset)).toMatchObject({ errorClass: 'ambiguous', code: 'UND_ERR_SOCKET' });
    expect(classifyTelnyxError(new APIConnectionError({ message: 'no cause' }))).toMatchObject({
      errorClass: 'ambiguous',
      code: undefined,
    });
  });

  it('passes an existing ProviderSendError through untouched', () => {
    const e = new ProviderSendError({ message: 'x', errorClass: 'recipient', provider: 'twilio', code: '21211' });
    expect(classifyTwilioError(e)).toBe(e);
    expect(classifyTelnyxError(e)).toBe(e);
  });

  it('every STOP code in the table is a recipient opt-out', () => {
    const optOuts = Object.entries(CODE_TABLE).filter(([, r]) => r.optOut);
    expect(optOuts.map(([k]) => k).sort()).toEqual(['relay:opted_out', 'sns:OptedOut', 'telnyx:40300', 'twilio:21610']);
    for (const [, r] of optOuts) expect(r.errorClass).toBe('recipient');
  });
});
