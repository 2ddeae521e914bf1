// Provider health (src/sms/health.ts): the adapters' probes through the real SDKs against the fakes.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTelnyxProvider } from '../src/sms/providers/telnyx.js';
import { createTwilioProvider } from '../src/sms/providers/twilio.js';
import { startFakeTelnyx, type FakeTelnyx } from './fakes/fake-telnyx.js';
import { startFakeTwilio, type FakeTwilio } from './fakes/fake-twilio.js';
import type { Fault } from './fakes/faults.js';
import { newTwilioAccount } from './helpers/sms.js';

let twilio: FakeTwilio;
let telnyx: FakeTelnyx;

const PROBE_TIMEOUT_MS = 150;

beforeAll(async () => {
  twilio = await startFakeTwilio();
  telnyx = await startFakeTelnyx();
});
afterEach(async () => {
  await twilio.setFault(null);
  await telnyx.setFault(null);
});
afterAll(async () => {
  await twilio?.close();
  await telnyx?.close();
});

const twilioProbes = (sid: string) => twilio.log.filter((r) => r.method === 'GET' && r.path === `/2010-04-01/Accounts/${sid}.json`).length;

describe('probes through the real SDKs', () => {
  const twilioClient = (sid: string, token: string) =>
    createTwilioProvider({ accountSid: sid, authToken: token, baseUrl: twilio.url, timeoutMs: 1000, sdkTimeoutMarginMs: 300 });
  const telnyxClient = (apiKey: string, messagingProfileId?: string) =>
    createTelnyxProvider({
      apiKey,
      baseUrl: `${telnyx.url}/v2`,
      timeoutMs: 1000,
      sdkTimeoutMarginMs: 300,
      ...(messagingProfileId ? { messagingProfileId } : {}),
    });

  it('Twilio: fetches the account; auth failure is provider, 5xx and refused connections transient, a hang ambiguous; suspended is not ok', async () => {
    const account = newTwilioAccount(twilio);
    const p = twilioClient(account.sid, account.token);
    expect(await p.probe!()).toMatchObject({ reachable: true, ok: true });
    expect(twilioProbes(account.sid)).toBe(1);

    const cases: Array<[Fault, { reachable: boolean; errorClass: string; code: string | undefined }]> = [
      [
        { kind: 'status', status: 401, code: 20003 },
        { reachable: true, errorClass: 'provider', code: '20003' },
      ],
      [
        { kind: 'http5xx', status: 500 },
        { reachable: true, errorClass: 'transient', code: '20500' },
      ],
      [
        { kind: 'http5xx', status: 503 },
        { reachable: true, errorClass: 'transient', code: undefined },
      ],
      [{ kind: 'down' }, { reachable: false, errorClass: 'transient', code: 'ECONNREFUSED' }],
    ];
    for (const [fault, want] of cases) {
      await twilio.setFault(fault);
      const r = await p.probe!();
      expect({ reachable: r.reachable, ok: r.ok, errorClass: r.error?.errorClass, code: r.error?.code }, JSON.stringify(fault)).toEqual({
        ...want,
        ok: false,
      });
    }
    await twilio.setFault({ kind: 'hang', scope: 'probe' });
    const started = Date.now();
    const hung = await p.probe!({ timeoutMs: PROBE_TIMEOUT_MS });
    expect(Date.now() - started).toBeLessThan(PROBE_TIMEOUT_MS + 200);
    expect(hung).toMatchObject({ reachable: false, ok: false, error: { errorClass: 'ambiguous', code: 'TIMEOUT' } });

    await twilio.setFault(null);
    // A wrong token is refused by Twilio itself, not by an injected fault.
    expect((await twilioClient(account.sid, 'not-the-token-0123456789').probe!()).error).toMatchObject({
      errorClass: 'provider',
      code: '20003',
    });
    twilio.setAccountStatus(account.sid, 'suspended');
    expect(await p.probe!()).toMatchObject({ reachable: true, ok: false, error: { errorClass: 'provider', code: 'ACCOUNT_SUSPENDED' } });
  });

  it('Telnyx: reads the messaging profile, or lists one without; a disabled or unknown profile and a refused key are not ok', async () => {
    const key = `KEY_probe_${Date.now()}`;
    telnyx.addApiKey(key);
    telnyx.addMessagingProfile('prof-on', { apiKey: key });
    telnyx.addMessagingProfile('prof-off', { apiKey: key, enabled: false });
    const probes = () =>
      telnyx.log.filter((r) => r.method === 'GET' && r.path.startsWith('/v2/messaging_profiles') && r.authorization === `Bearer ${key}`);

    expect(await telnyxClient(key, 'prof-on').probe!()).toMatchObject({ reachable: true, ok: true });
    expect(await telnyxClient(key).probe!()).toMatchObject({ reachable: true, ok: true });
    expect(probes().map((r) => r.path)).toEqual(['/v2/messaging_profiles/prof-on', '/v2/messaging_profiles']);
    expect(await telnyxClient(key, 'prof-off').probe!()).toMatchObject({ ok: false, error: { errorClass: 'provider', code: '40312' } });
    expect(await telnyxClient(key, 'no-such-profile').probe!()).toMatchObject({
      reachable: true,
      ok: false,
      error: { errorClass: 'provider', httpStatus: 404 },
    });
    expect(await telnyxClient('KEY_nobody_knows_this').probe!()).toMatchObject({
      ok: false,
      error: { errorClass: 'provider', code: '10009' },
    });

    // Faults scoped to sends leave probes alone, and the other way round.
    await telnyx.setFault({ kind: 'http5xx', scope: 'create' });
    expect(await telnyxClient(key).probe!()).toMatchObject({ ok: true });
    await telnyx.setFault({ kind: 'http5xx', scope: 'probe' });
    expect(await telnyxClient(key).probe!()).toMatchObject({ ok: false, error: { errorClass: 'transient', code: '10007' } });
    await telnyx.setFault({ kind: 'hang', scope: 'probe' });
    const started = Date.now();
    expect(await telnyxClient(key).probe!({ timeoutMs: PROBE_TIMEOUT_MS })).toMatchObject({
      reachable: false,
      error: { errorClass: 'ambiguous', code: 'TIMEOUT' },
    });
    expect(Date.now() - started).toBeLessThan(PROBE_TIMEOUT_MS + 200);
    await telnyx.setFault({ kind: 'down' });
    expect(await telnyxClient(key).probe!()).toMatchObject({ reachable: false, error: { errorClass: 'transient', code: 'ECONNREFUSED' } });
  });
});
