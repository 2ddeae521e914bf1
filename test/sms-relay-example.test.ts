// examples/relay/receiver.mjs (the reference receiver) against our real relay sender.
import { createHmac } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createRelayReceiver,
  logForwarder,
  sendReceipt,
  twilioForwarder,
  type ForwardResult,
  type RelayMessage,
} from '../examples/relay/receiver.mjs';
import { createRelayProvider, relayWebhooks } from '../src/sms/providers/relay.js';
import { ProviderSendError, type SendRequest } from '../src/sms/types.js';
import { DEFAULT_TWILIO_ACCOUNT, startFakeTwilio, type FakeTwilio } from './fakes/fake-twilio.js';

const SECRET = 'example-receiver-secret-0123456789abcdef';
const ORG = '5eed0000-0000-4000-8000-0000000000bb';

async function listen(handler: http.RequestListener): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/sms`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

let seq = 0;
const request = (over: Partial<SendRequest> = {}): SendRequest => {
  seq += 1;
  return {
    to: `+1415555${String(6000 + seq)}`,
    from: '+14155550101',
    body: `Example relay #${seq}`,
    idempotencyKey: `sms-example-${seq}`,
    messageId: `00000000-0000-4000-8000-${String(seq).padStart(12, '0')}`,
    orgId: ORG,
    attempt: 1,
    ...over,
  };
};

async function refusal(p: Promise<unknown>): Promise<ProviderSendError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ProviderSendError);
    return err as ProviderSendError;
  }
  throw new Error('expected a refusal');
}

describe('reference receiver, logging', () => {
  const lines: string[] = [];
  const forwarded: RelayMessage[] = [];
  const events: Array<Record<string, unknown>> = [];
  let receiver: Awaited<ReturnType<typeof listen>>;
  const logOnly = logForwarder((l) => lines.push(l));

  beforeAll(async () => {
    receiver = await listen(
      createRelayReceiver({
        signingSecret: SECRET,
        forward: async (m) => {
          forwarded.push(m);
          // Slow enough that concurrent duplicates overlap.
          await new Promise((r) => setTimeout(r, 30));
          return logOnly(m);
        },
        log: (e) => events.push(e),
      }),
    );
  });
  afterAll(async () => receiver?.close());

  const sender = (over: Partial<Parameters<typeof createRelayProvider>[0]> = {}) =>
    createRelayProvider({ url: receiver.url, signingSecret: SECRET, orgId: ORG, timeoutMs: 2000, ...over });

  it('verifies our signature, accepts, and logs without the phone number', async () => {
    const req = request();
    const res = await sender().send(req);
    expect(res.providerMessageId).toMatch(/^log_/);
    expect(forwarded.at(-1)).toEqual({
      id: req.messageId,
      to: req.to,
      from: req.from,
      text: req.body,
      orgId: ORG,
      attempt: 1,
      idempotencyKey: req.idempotencyKey,
    });
    const line = JSON.parse(lines.at(-1)!);
    expect(line).toMatchObject({ messageId: res.providerMessageId, id: req.messageId, to: `…${req.to.slice(-4)}` });
    expect(lines.at(-1)).not.toContain(req.to);
  });

  it('dedupes on the idempotency key: retries, even concurrent ones, forward once and get the same messageId', async () => {
    const req = request();
    const before = forwarded.length;
    const [a, b] = await Promise.all([sender().send(req), sender().send({ ...req, attempt: 2 })]);
    const c = await sender().send({ ...req, attempt: 3 });
    expect(new Set([a.providerMessageId, b.providerMessageId, c.providerMessageId]).size).toBe(1);
    expect(forwarded.length - before).toBe(1);
    expect(events.filter((e) => e.event === 'duplicate' && e.id === req.messageId)).toHaveLength(2);
  });

  it('refuses a signature under another secret (401 bad_signature: we fail over)', async () => {
    const before = forwarded.length;
    const err = await refusal(sender({ signingSecret: 'some-other-secret-0123456789abcdefgh' }).send(request()));
    expect(err).toMatchObject({ httpStatus: 401, code: 'bad_signature', errorClass: 'provider' });
    expect(forwarded.length).toBe(before);
  });

  it('refuses a stale timestamp (401 stale_timestamp)', async () => {
    const err = await refusal(sender({ now: () => Date.now() - 10 * 60_000 }).send(request()));
    expect(err).toMatchObject({ httpStatus: 401, code: 'stale_timestamp', errorClass: 'provider' });
  });

  it('refuses a tampered body and a body that is not JSON', async () => {
    const ts = Math.floor(Date.now() / 1000);
    const raw = JSON.stringify({ id: 'x', to: '+14155550100', text: 'hi', orgId: ORG, attempt: 1, idempotencyKey: 'k-tamper' });
    const sig = createHmac('sha256', SECRET).update(`${ts}.${raw}`).digest('hex');
    const post = (body: string, signature = sig) =>
      fetch(receiver.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-relay-timestamp': String(ts), 'x-relay-signature': signature },
        body,
      });
    expect((await post(raw.replace('hi', 'ho'))).status).toBe(401);
    const notJson = 'not json';
    const res = await post(notJson, createHmac('sha256', SECRET).update(`${ts}.${notJson}`).digest('hex'));
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ code: 'bad_request' });
    expect((await fetch(receiver.url)).status).toBe(405);
  });
});

describe('reference receiver, forwarding to Twilio', () => {
  let twilio: FakeTwilio;
  let receiver: Awaited<ReturnType<typeof listen>>;
  let calls = 0;

  beforeAll(async () => {
    twilio = await startFakeTwilio();
    const toTwilio = twilioForwarder({
      accountSid: DEFAULT_TWILIO_ACCOUNT.sid,
      authToken: DEFAULT_TWILIO_ACCOUNT.token,
      from: '+15005550006',
      baseUrl: twilio.url,
    });
    receiver = await listen(
      createRelayReceiver({
        signingSecret: SECRET,
        forward: (m): Promise<ForwardResult> => {
          calls += 1;
          return toTwilio(m);
        },
      }),
    );
  });
  afterAll(async () => {
    await receiver?.close();
    await twilio?.close();
  });

  const sender = () => createRelayProvider({ url: receiver.url, signingSecret: SECRET, orgId: ORG, timeoutMs: 3000 });

  it('forwards the message, and answers with the upstream id', async () => {
    const req = request();
    const res = await sender().send(req);
    const sent = twilio.messages.find((m) => m.body === req.body);
    expect(sent).toMatchObject({ to: req.to, from: req.from });
    expect(res.providerMessageId).toBe(sent!.sid);
  });

  it("passes the upstream's refusals on in the contract's words", async () => {
    expect(await refusal(sender().send(request({ to: '+15005550004' })))).toMatchObject({
      httpStatus: 400,
      code: 'opted_out',
      errorClass: 'recipient',
      optOut: true,
    });
    expect(await refusal(sender().send(request({ to: '+15005550001' })))).toMatchObject({
      code: 'invalid_recipient',
      errorClass: 'recipient',
      optOut: false,
    });
    expect(await refusal(sender().send(request({ from: '+15005550007' })))).toMatchObject({
      code: 'sender_unavailable',
      errorClass: 'provider',
    });
    await twilio.setFault({ kind: 'http5xx', times: 1 });
    expect(await refusal(sender().send(request()))).toMatchObject({ httpStatus: 502, errorClass: 'transient' });
  });

  it('remembers only acceptances: a message refused upstream is forwarded again on retry', async () => {
    const req = request();
    await twilio.setFault({ kind: 'http429', times: 1 });
    expect(await refusal(sender().send(req))).toMatchObject({ httpStatus: 429, errorClass: 'transient' });
    const before = calls;
    await expect(sender().send({ ...req, attempt: 2 })).resolves.toMatchObject({ status: 'accepted' });
    expect(calls - before).toBe(1);
  });
});

describe("reference receiver's receipts", () => {
  it('are signed the way our relay webhooks verify, and parse to a delivery receipt', async () => {
    const got: Array<{ headers: http.IncomingHttpHeaders; raw: string }> = [];
    const sink = await listen((req, res) => {
      let raw = '';
      req.on('data', (c: Buffer) => (raw += c.toString()));
      req.on('end', () => {
        got.push({ headers: req.headers, raw });
        res.writeHead(204).end();
      });
    });
    try {
      const res = await sendReceipt({
        url: sink.url,
        signingSecret: SECRET,
        messageId: 'SM123',
        status: 'undelivered',
        code: 'invalid_recipient',
      });
      expect(res.status).toBe(204);
      const hooks = relayWebhooks(SECRET);
      const req = { url: sink.url, headers: got[0]!.headers as Record<string, string>, rawBody: got[0]!.raw };
      expect(await hooks.verify(req)).toEqual({ ok: true });
      expect(hooks.parse(req, 'receipt')).toMatchObject({
        kind: 'receipt',
        receipt: { providerMessageId: 'SM123', status: 'undelivered', code: 'invalid_recipient' },
      });
      expect(await relayWebhooks('another-secret-0123456789abcdefghij').verify(req)).toEqual({ ok: false, reason: 'mismatch' });
    } finally {
      await sink.close();
    }
  });
});
