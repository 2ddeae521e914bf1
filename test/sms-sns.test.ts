// The SNS adapter, with the real @aws-sdk/client-sns against the fake SNS (awsQuery over HTTP).
import { execFile } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { inspect } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { createSnsProvider, classifySnsError, loadSnsSdk } from '../src/sms/providers/sns.js';
import { ProviderSendError, type SendRequest, type SmsProvider } from '../src/sms/types.js';
import { DEFAULT_SNS_ACCOUNT, startFakeSns, type FakeSns } from './fakes/fake-sns.js';

let seq = 0;
function request(over: Partial<SendRequest> = {}): SendRequest {
  seq += 1;
  return {
    to: `+1415555${String(3000 + seq).slice(-4)}`,
    from: '',
    body: `Your appointment is confirmed (#${seq}). Reply STOP to opt out.`,
    idempotencyKey: `sms-${seq}`,
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

let fake: FakeSns;
let provider: SmsProvider;
const make = (over: Partial<Parameters<typeof createSnsProvider>[0]> = {}) =>
  createSnsProvider({ ...DEFAULT_SNS_ACCOUNT, region: 'us-east-1', endpoint: fake.url, timeoutMs: 2000, sdkTimeoutMarginMs: 500, ...over });

beforeAll(async () => {
  fake = await startFakeSns();
  provider = make();
});
afterEach(async () => {
  await fake.setFault(null);
});
afterAll(async () => {
  await fake?.close();
});

const publishes = () => fake.log.filter((l) => l.action === 'Publish').length;

describe('SNS adapter: Publish over awsQuery with SigV4', () => {
  it('publishes a Transactional SMS signed with the access key, and records the id as sns:<MessageId>', async () => {
    const p = make({ senderId: 'MapleClinic' });
    const req = request({ from: '+14155550199' });
    const res = await p.send(req);
    const stored = fake.messages.find((m) => m.body === req.body);
    expect(stored).toBeDefined();
    expect(res).toEqual({ providerMessageId: `sns:${stored!.messageId}`, status: 'accepted' });
    expect(stored).toMatchObject({ to: req.to, accessKeyId: DEFAULT_SNS_ACCOUNT.accessKeyId });
    expect(stored!.attributes).toEqual({
      'AWS.SNS.SMS.SMSType': 'Transactional',
      'AWS.SNS.SMS.SenderID': 'MapleClinic',
      'AWS.MM.SMS.OriginationNumber': '+14155550199',
    });
    const wire = fake.log.filter((l) => l.action === 'Publish').at(-1)!;
    expect(wire.contentType).toMatch(/^application\/x-www-form-urlencoded/);
    expect(wire.authorization).toMatch(
      new RegExp(`^AWS4-HMAC-SHA256 Credential=${DEFAULT_SNS_ACCOUNT.accessKeyId}/\\d{8}/us-east-1/sns/aws4_request, `),
    );
    expect(wire.authorization).not.toContain(DEFAULT_SNS_ACCOUNT.secretAccessKey);
    expect(p.capabilities).toEqual({ receipts: 'none', idempotentSend: false, ownSender: true });
    expect(p.accountKey).toMatch(/^sns:us-east-1:[0-9a-f]{8}$/);
    expect(p.accountKey).not.toContain(DEFAULT_SNS_ACCOUNT.accessKeyId);
  });

  it('without a sender id or origination number only the SMS type is set', async () => {
    const req = request();
    await provider.send(req);
    expect(fake.messages.find((m) => m.body === req.body)!.attributes).toEqual({ 'AWS.SNS.SMS.SMSType': 'Transactional' });
  });

  it('the fake answers in SNS XML with x-amzn-RequestId, which the SDK reads as the request id', async () => {
    const { SNSClient, PublishCommand } = await loadSnsSdk();
    const client = new SNSClient({ region: 'us-east-1', endpoint: fake.url, credentials: DEFAULT_SNS_ACCOUNT, maxAttempts: 1 });
    const out = await client.send(new PublishCommand({ PhoneNumber: '+14155550100', Message: 'hello' }));
    expect(out.MessageId).toMatch(/^[0-9a-f-]{36}$/);
    expect(out.$metadata.requestId).toMatch(/^[0-9a-f-]{36}$/);
    client.destroy();
  });

  it('AWS_ENDPOINT_URL_SNS in the environment points the SDK at the fake without an endpoint option', async () => {
    const before = process.env.AWS_ENDPOINT_URL_SNS;
    process.env.AWS_ENDPOINT_URL_SNS = fake.url;
    try {
      const p = createSnsProvider({ ...DEFAULT_SNS_ACCOUNT, region: 'eu-west-1', timeoutMs: 2000 });
      const req = request();
      await expect(p.send(req)).resolves.toMatchObject({ status: 'accepted' });
      expect(fake.messages.some((m) => m.body === req.body)).toBe(true);
    } finally {
      if (before === undefined) delete process.env.AWS_ENDPOINT_URL_SNS;
      else process.env.AWS_ENDPOINT_URL_SNS = before;
    }
  });
});

describe('SNS adapter: every error class', () => {
  it.each([
    { fault: { kind: 'http429' as const }, code: 'Throttled', errorClass: 'transient', status: 429 },
    {
      fault: { kind: 'status' as const, status: 400, code: 'Throttling', message: 'Rate exceeded' },
      code: 'Throttling',
      errorClass: 'transient',
      status: 400,
    },
    { fault: { kind: 'http5xx' as const }, code: 'InternalError', errorClass: 'transient', status: 500 },
    {
      fault: { kind: 'status' as const, status: 503, code: 'Unavailable', message: 'try later' },
      code: 'Unavailable',
      errorClass: 'transient',
      status: 503,
    },
    {
      fault: {
        kind: 'status' as const,
        status: 403,
        code: 'AuthorizationError',
        message: 'User is not authorized to perform: SNS:Publish',
      },
      code: 'AuthorizationError',
      errorClass: 'provider',
      status: 403,
    },
    {
      fault: { kind: 'status' as const, status: 400, code: 'InvalidParameter', message: 'Invalid parameter: SenderID Reason: too long' },
      code: 'InvalidParameter',
      errorClass: 'provider',
      status: 400,
    },
    {
      fault: { kind: 'status' as const, status: 400, code: 'ParameterValueInvalid', message: 'bad origination number' },
      code: 'ParameterValueInvalid',
      errorClass: 'provider',
      status: 400,
    },
  ])('$code (HTTP $status) is $errorClass, in exactly one request', async ({ fault, code, errorClass, status }) => {
    await fake.setFault({ ...fault, scope: 'create' });
    const before = publishes();
    const err = await sendError(provider.send(request()));
    expect(err).toMatchObject({ provider: 'sns', code, errorClass, httpStatus: status, optOut: false });
    // maxAttempts: 1: the SDK does not retry behind the engine's back.
    expect(publishes() - before).toBe(1);
  });

  it('InvalidParameter on the phone number is a recipient error, with the number scrubbed from the message', async () => {
    const err = await sendError(provider.send(request({ to: '+15005550001' })));
    expect(err).toMatchObject({ errorClass: 'recipient', code: 'InvalidParameter:PhoneNumber', httpStatus: 400, optOut: false });
    expect(err.message).not.toContain('+15005550001');
  });

  it('OptedOut from Publish is a recipient error that records an opt-out', async () => {
    const p = make({ checkOptOut: false });
    const err = await sendError(p.send(request({ to: '+15005550004' })));
    expect(err).toMatchObject({ errorClass: 'recipient', code: 'OptedOut', optOut: true, httpStatus: 400 });
  });

  it('an unknown access key id is a provider error (fail over)', async () => {
    const p = make({ accessKeyId: 'AKIAUNKNOWN000000000', checkOptOut: false });
    const err = await sendError(p.send(request()));
    expect(err).toMatchObject({ errorClass: 'provider', code: 'InvalidClientTokenId', httpStatus: 403 });
  });

  it('connection refused is transient', async () => {
    await fake.setFault({ kind: 'down' });
    const err = await sendError(make({ checkOptOut: false }).send(request()));
    expect(err).toMatchObject({ errorClass: 'transient', code: 'ECONNREFUSED' });
  });

  it("a hang aborted by the engine's signal is ambiguous and returns promptly", async () => {
    await fake.setFault({ kind: 'hang', scope: 'create' });
    const req = request({ signal: AbortSignal.timeout(200) });
    const started = Date.now();
    const err = await sendError(provider.send(req));
    expect(err).toMatchObject({ errorClass: 'ambiguous', code: 'TIMEOUT' });
    expect(Date.now() - started).toBeLessThan(1000);
    expect(fake.messages.filter((m) => m.body === req.body)).toHaveLength(1);
  });

  it("the SDK's own timeout (attempt timeout + margin) backstops a hang nobody aborts", async () => {
    await fake.setFault({ kind: 'hang', records: false, scope: 'create' });
    const p = make({ timeoutMs: 200, sdkTimeoutMarginMs: 100, checkOptOut: false });
    const started = Date.now();
    const err = await sendError(p.send(request()));
    expect(err).toMatchObject({ errorClass: 'ambiguous', code: 'TIMEOUT' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('an error never carries the secret access key', async () => {
    await fake.setFault({ kind: 'status', status: 403, code: 'AuthorizationError' });
    const err = await sendError(provider.send(request()));
    expect(inspect(err, { depth: 10 })).not.toContain(DEFAULT_SNS_ACCOUNT.secretAccessKey);
  });

  it('anything else is left to the generic rules', () => {
    expect(classifySnsError(Object.assign(new Error('weird'), { name: 'Weird', $metadata: { httpStatusCode: 418 } }))).toMatchObject({
      errorClass: 'provider',
      code: 'Weird',
    });
    expect(classifySnsError(new Error('no idea'))).toMatchObject({ errorClass: 'ambiguous' });
  });
});

describe("SNS adapter: SNS's own opt-out list", () => {
  it('asks CheckIfPhoneNumberIsOptedOut before publishing, once per number, and does not publish to an opted-out one', async () => {
    const p = make();
    const checks = () => fake.log.filter((l) => l.action === 'CheckIfPhoneNumberIsOptedOut').length;
    const c0 = checks();
    const before = publishes();
    const err = await sendError(p.send(request({ to: '+15005550004' })));
    expect(err).toMatchObject({ errorClass: 'recipient', code: 'OptedOut', optOut: true });
    expect(publishes()).toBe(before);
    await sendError(p.send(request({ to: '+15005550004' })));
    expect(checks() - c0).toBe(1);

    const to = '+14155550177';
    await p.send(request({ to }));
    await p.send(request({ to }));
    expect(checks() - c0).toBe(2);
    expect(publishes() - before).toBe(2);
  });

  it('a failing check does not block the send: Publish still decides', async () => {
    const p = make();
    await fake.setFault({ kind: 'http5xx', times: 1 });
    await expect(p.send(request())).resolves.toMatchObject({ status: 'accepted' });
  });
});

describe('SNS SDK loading', () => {
  it('a server whose clinics use no SNS never imports @aws-sdk/client-sns; building an SNS link does', async () => {
    // A resolve hook in the child reports every @aws-sdk module the process asks for. The child
    // loads src/ as compiled once for the run (test/helpers/server-build.ts), so it starts quickly.
    const compiled = (file: string) => JSON.stringify(pathToFileURL(path.join(inject('serverDir'), 'src', file)).href);
    const hook = `let port; export function initialize(d) { port = d.port; }
      export async function resolve(s, c, next) { if (s.includes('@aws-sdk/')) port.postMessage(s); return next(s, c); }`;
    const script = `
      const { register } = await import('node:module');
      const { MessageChannel } = await import('node:worker_threads');
      const { port1, port2 } = new MessageChannel();
      const seen = [];
      port1.on('message', (s) => seen.push(s));
      port1.unref();
      register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(hook)}), import.meta.url, { data: { port: port2 }, transferList: [port2] });
      const settle = () => new Promise((r) => setTimeout(r, 100));
      const { createRuntime } = await import(${compiled('runtime.js')});
      const { snsSdkRequested, loadSnsSdk } = await import(${compiled('sms/providers/sns.js')});
      const { createProvider } = await import(${compiled('sms/providers/index.js')});
      const settings = { timeoutMs: 100, sdkTimeoutMarginMs: 0, baseUrls: {}, orgId: 'o' };
      createProvider({ kind: 'twilio', accountSid: 'AC' + '0'.repeat(32), authToken: 'x'.repeat(20) }, settings);
      await settle();
      const before = { flag: snsSdkRequested(), modules: seen.length };
      createProvider({ kind: 'sns', accessKeyId: 'AKIA0000000000000000', secretAccessKey: 'x'.repeat(20), region: 'us-east-1' }, settings);
      await loadSnsSdk();
      await settle();
      console.log(JSON.stringify({ runtime: typeof createRuntime, before, after: { flag: snsSdkRequested(), sns: seen.includes('@aws-sdk/client-sns') } }));
    `;
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, ['--input-type=module', '-e', script], { cwd: process.cwd() }, (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
      ),
    );
    expect(JSON.parse(out.trim().split('\n').at(-1)!)).toEqual({
      runtime: 'function',
      before: { flag: false, modules: 0 },
      after: { flag: true, sns: true },
    });
  });
});
