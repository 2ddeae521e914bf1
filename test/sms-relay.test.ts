// The relay adapter against a recording receiver; receipt verification and parsing; URL rules.
import { createHmac } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRelayProvider, relayUrlProblem, relayWebhooks, signRelay } from '../src/sms/providers/relay.js';
import { ProviderSendError, type SendRequest, type SmsProvider, type WebhookRequest } from '../src/sms/types.js';
import { startFakeRelay, type FakeRelay } from './fakes/fake-relay.js';

const ORG = '5eed0000-0000-4000-8000-0000000000aa';
let seq = 0;
function request(over: Partial<SendRequest> = {}): SendRequest {
  seq += 1;
  return {
    to: `+1415555${String(4000 + seq).slice(-4)}`,
    from: '+14155550101',
    body: `Relay confirmation #${seq}`,
    idempotencyKey: `sms-relay-${seq}`,
    messageId: `00000000-0000-4000-8000-${String(seq).padStart(12, '0')}`,
    orgId: ORG,
    attempt: 1,
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

let relay: FakeRelay;
let provider: SmsProvider;
const make = (over: Partial<Parameters<typeof createRelayProvider>[0]> = {}) =>
  createRelayProvider({ url: relay.url, signingSecret: relay.secret, orgId: ORG, timeoutMs: 1000, sdkTimeoutMarginMs: 200, ...over });

beforeAll(async () => {
  relay = await startFakeRelay();
  provider = make();
});
afterEach(async () => {
  relay.answer(null);
  await relay.setFault(null);
});
afterAll(async () => {
  await relay?.close();
});

describe('relay adapter: the request', () => {
  it('POSTs {id, to, from, text, orgId, attempt, idempotencyKey}, signed over `${timestamp}.${rawBody}`', async () => {
    const req = request({ attempt: 3 });
    const res = await provider.send(req);
    const wire = relay.log.at(-1)!;
    expect(wire.verified).toBe(true);
    expect(JSON.parse(wire.raw)).toEqual({
      id: req.messageId,
      to: req.to,
      from: req.from,
      text: req.body,
      orgId: ORG,
      attempt: 3,
      idempotencyKey: req.idempotencyKey,
    });
    expect(wire.headers['content-type']).toBe('application/json');
    const ts = String(wire.headers['x-relay-timestamp']);
    expect(Math.abs(Number(ts) - Date.now() / 1000)).toBeLessThan(5);
    expect(wire.headers['x-relay-signature']).toBe(createHmac('sha256', relay.secret).update(`${ts}.${wire.raw}`).digest('hex'));
    expect(wire.headers['idempotency-key']).toBe(req.idempotencyKey);
    // Nothing of the clinic's travels but the signature: no secret, no credentials.
    expect(JSON.stringify(wire.headers) + wire.raw).not.toContain(relay.secret);
    expect(res).toEqual({ providerMessageId: relay.messages.at(-1)!.messageId, status: 'accepted' });
    expect(provider.capabilities).toEqual({ receipts: 'none', idempotentSend: true, ownSender: true });
    expect(make({ receipts: true }).capabilities.receipts).toBe('webhook');
  });

  it('omits from when the link has no sender numbers', async () => {
    await provider.send(request({ from: '' }));
    expect(JSON.parse(relay.log.at(-1)!.raw)).not.toHaveProperty('from');
  });

  it('a retry under the same idempotency key is answered with the same messageId', async () => {
    const req = request();
    const a = await provider.send(req);
    const b = await provider.send({ ...req, attempt: 2 });
    expect(b.providerMessageId).toBe(a.providerMessageId);
    expect(relay.messages.filter((m) => m.idempotencyKey === req.idempotencyKey)).toHaveLength(1);
  });
});

describe('relay adapter: the answers', () => {
  it.each([
    {
      name: '4xx with a known code',
      answer: { status: 400, json: { code: 'opted_out', message: 'STOP' } },
      want: { errorClass: 'recipient', code: 'opted_out', optOut: true },
    },
    {
      name: '4xx known code wins over a contrary hint',
      answer: { status: 422, json: { code: 'invalid_recipient', message: 'landline', class: 'provider' } },
      want: { errorClass: 'recipient', code: 'invalid_recipient', optOut: false },
    },
    {
      name: '4xx unknown code with a recipient hint',
      answer: { status: 422, json: { code: 'landline', message: 'not mobile', class: 'recipient' } },
      want: { errorClass: 'recipient', code: 'landline', optOut: false },
    },
    {
      name: '4xx unknown code with a transient hint',
      answer: { status: 409, json: { code: 'busy', message: 'later', class: 'transient' } },
      want: { errorClass: 'transient', code: 'busy' },
    },
    {
      name: '4xx unknown code, no hint: the generic rule (provider)',
      answer: { status: 400, json: { code: 'nope', message: 'no' } },
      want: { errorClass: 'provider', code: 'nope' },
    },
    {
      name: '4xx with a hint we do not take from a refusal (ambiguous)',
      answer: { status: 400, json: { code: 'odd', message: 'x', class: 'ambiguous' } },
      want: { errorClass: 'provider', code: 'odd' },
    },
    { name: '4xx that is not JSON', answer: { status: 403, raw: 'Forbidden' }, want: { errorClass: 'provider', code: undefined } },
    {
      name: '429, whatever its body says',
      answer: { status: 429, json: { code: 'opted_out', class: 'recipient' } },
      want: { errorClass: 'transient', optOut: false },
    },
    { name: '5xx', answer: { status: 503, json: { code: 'upstream_failed' } }, want: { errorClass: 'transient', code: 'upstream_failed' } },
    { name: '5xx that is not JSON', answer: { status: 502, raw: '<html>bad gateway</html>' }, want: { errorClass: 'transient' } },
    {
      name: '2xx without a messageId',
      answer: { status: 200, json: { ok: true } },
      want: { errorClass: 'ambiguous', code: 'NO_MESSAGE_ID' },
    },
    { name: '2xx that is not JSON', answer: { status: 200, raw: 'OK' }, want: { errorClass: 'ambiguous', code: 'NO_MESSAGE_ID' } },
    { name: 'a redirect, not followed', answer: { status: 307, raw: '' }, want: { errorClass: 'ambiguous', code: undefined } },
  ])('$name', async ({ answer, want }) => {
    relay.answer({ ...answer, times: 1 });
    const err = await sendError(provider.send(request()));
    expect(err).toMatchObject({ provider: 'relay', httpStatus: answer.status, ...want });
  });

  it('a receiver with another signing secret refuses us: fail over (provider)', async () => {
    const err = await sendError(make({ signingSecret: 'not-the-receivers-secret-0123456789abcdef' }).send(request()));
    expect(err).toMatchObject({ errorClass: 'provider', code: 'bad_signature', httpStatus: 401 });
  });

  it('connection refused is transient', async () => {
    await relay.setFault({ kind: 'down' });
    const err = await sendError(provider.send(request()));
    expect(err).toMatchObject({ errorClass: 'transient', code: 'ECONNREFUSED' });
  });

  it("a hang aborted by the engine's signal is ambiguous and returns at once", async () => {
    await relay.setFault({ kind: 'hang' });
    const started = Date.now();
    const err = await sendError(provider.send(request({ signal: AbortSignal.timeout(150) })));
    expect(err).toMatchObject({ errorClass: 'ambiguous', code: 'TIMEOUT' });
    expect(Date.now() - started).toBeLessThan(600);
  });

  it('the backstop timeout (attempt timeout + margin) ends a hang nobody aborts', async () => {
    await relay.setFault({ kind: 'hang', records: false });
    const p = make({ timeoutMs: 150, sdkTimeoutMarginMs: 100 });
    const started = Date.now();
    const err = await sendError(p.send(request()));
    expect(err).toMatchObject({ errorClass: 'ambiguous', code: 'TIMEOUT' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(240);
    expect(Date.now() - started).toBeLessThan(1500);
  });
});

describe('relay receipts: webhooks.verify and parse', () => {
  const secret = 'receipt-secret-0123456789abcdef0123456789';
  const now = 1_800_000_000_000;
  const hooks = relayWebhooks(secret, { now: () => now });
  const signed = (rawBody: string, ts = Math.floor(now / 1000), sig?: string): WebhookRequest => ({
    url: `https://tools.example.org/webhooks/relay/${ORG}`,
    headers: { 'x-relay-timestamp': String(ts), 'x-relay-signature': sig ?? signRelay(secret, ts, rawBody) },
    rawBody,
  });
  const receipt = JSON.stringify({ messageId: 'rly_1', status: 'delivered', at: '2026-12-01T10:00:00.000Z' });

  it('accepts a receipt signed with the link secret, within the tolerance', async () => {
    expect(await hooks.verify(signed(receipt))).toEqual({ ok: true });
    expect(await hooks.verify(signed(receipt, Math.floor(now / 1000) - 299))).toEqual({ ok: true });
  });

  it('refuses a wrong signature, another secret, an altered body, a stale or future timestamp, missing headers', async () => {
    const ts = Math.floor(now / 1000);
    expect((await hooks.verify(signed(receipt, ts, signRelay('another-secret', ts, receipt)))).ok).toBe(false);
    expect((await hooks.verify({ ...signed(receipt), rawBody: receipt.replace('delivered', 'failed') })).ok).toBe(false);
    expect(await hooks.verify(signed(receipt, ts - 301))).toEqual({ ok: false, reason: 'stale' });
    expect((await hooks.verify(signed(receipt, ts + 301))).ok).toBe(false);
    expect((await hooks.verify(signed(receipt, ts, 'A'.repeat(64)))).ok).toBe(false);
    expect((await hooks.verify(signed(receipt, ts, 'abc'))).ok).toBe(false);
    expect(await hooks.verify({ url: '', headers: {}, rawBody: receipt })).toEqual({ ok: false, reason: 'missing' });
  });

  it('reads headers whatever their case', async () => {
    const r = signed(receipt);
    expect(
      await hooks.verify({
        ...r,
        headers: { 'X-Relay-Timestamp': r.headers['x-relay-timestamp'], 'X-Relay-Signature': r.headers['x-relay-signature'] },
      }),
    ).toEqual({ ok: true });
  });

  it('parses {messageId, status, code?, at?} into a receipt event and refuses anything else', () => {
    expect(hooks.parse(signed(receipt), 'receipt')).toEqual({
      kind: 'receipt',
      key: 'rly_1:delivered',
      receipt: { providerMessageId: 'rly_1', status: 'delivered' },
    });
    expect(
      hooks.parse(signed(JSON.stringify({ messageId: 'rly_2', status: 'undelivered', code: 'invalid_recipient' })), 'receipt'),
    ).toEqual({
      kind: 'receipt',
      key: 'rly_2:undelivered',
      receipt: { providerMessageId: 'rly_2', status: 'undelivered', code: 'invalid_recipient' },
    });
    for (const bad of [
      'not json',
      '{}',
      JSON.stringify({ messageId: 'x', status: 'read' }),
      JSON.stringify({ messageId: 7, status: 'sent' }),
      '[]',
    ]) {
      expect(hooks.parse(signed(bad), 'receipt'), bad).toBeNull();
    }
  });
});

describe('relay URLs', () => {
  it('https always; http only outside production; never credentials or other schemes', () => {
    expect(relayUrlProblem('https://edge.example.org/sms', true)).toBeNull();
    expect(relayUrlProblem('http://127.0.0.1:8787/sms', false)).toBeNull();
    expect(relayUrlProblem('http://edge.example.org/sms', true)).toMatch(/https/);
    expect(relayUrlProblem('https://user:pass@edge.example.org/sms', false)).toMatch(/credentials/);
    expect(relayUrlProblem('https://token@edge.example.org/sms', false)).toMatch(/credentials/);
    expect(relayUrlProblem('ftp://edge.example.org/sms', false)).toMatch(/http/);
    expect(relayUrlProblem('edge.example.org/sms', false)).toMatch(/absolute/);
  });
});
