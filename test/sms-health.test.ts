// Provider health shared by every process (src/sms/health.ts): probes through
// the real SDKs against the fakes, results in Postgres, breakers that act on them.
import supertest from 'supertest';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CircuitState } from 'cockatiel';
import { loadConfig } from '../src/config.js';
import { healthSettings, readHealth } from '../src/sms/health.js';
import { createTelnyxProvider } from '../src/sms/providers/telnyx.js';
import { createTwilioProvider } from '../src/sms/providers/twilio.js';
import { DEFAULT_TELNYX_API_KEY, startFakeTelnyx, type FakeTelnyx } from './fakes/fake-telnyx.js';
import { startFakeRelay } from './fakes/fake-relay.js';
import { startFakeTwilio, type FakeTwilio } from './fakes/fake-twilio.js';
import type { Fault } from './fakes/faults.js';
import { startChild, type Child } from './helpers/child.js';
import { createOrg, startHarness, type Harness, type TestOrg } from './helpers/harness.js';
import {
  attemptsFor,
  book,
  newTwilioAccount,
  providerEnv,
  putSms,
  relayLink,
  telnyxLink,
  twilioCreates,
  twilioLink,
  waitFor,
  type Link,
} from './helpers/sms.js';

let twilio: FakeTwilio;
let telnyx: FakeTelnyx;
const open = new Set<Harness>();
const children = new Set<Child>();

const INTERVAL_MS = 300;
const PROBE_TIMEOUT_MS = 150;

/** Small intervals instead of sleeps: a probe round every 300 ms, a read every 150 ms. */
const healthEnv = (over: Record<string, string> = {}): Record<string, string> => ({
  ...providerEnv(twilio.url, telnyx.url),
  SMS_HEALTH_ENABLED: 'true',
  SMS_HEALTH_INTERVAL_MS: String(INTERVAL_MS),
  SMS_HEALTH_PROBE_TIMEOUT_MS: String(PROBE_TIMEOUT_MS),
  SMS_ATTEMPT_TIMEOUT_MS: '1000',
  SMS_SDK_TIMEOUT_MARGIN_MS: '300',
  SMS_RESPONSE_BUDGET_MS: '3000',
  SMS_RETRY_BASE_MS: '50',
  SMS_RETRY_MAX_MS: '200',
  SMS_MAX_ATTEMPTS: '30',
  SMS_BREAKER_THRESHOLD: '3',
  // Long: any half-open trial seen here comes from the shared health, not from a cool-down.
  SMS_BREAKER_COOLDOWN_MS: '60000',
  ...over,
});
/** A process that reads the shared health but never probes. */
const readerEnv = (over: Record<string, string> = {}) => healthEnv({ SMS_HEALTH_ENABLED: 'false', ...over });

/** A runtime on a fresh database, or another process on `peer`'s (same credentials key, as in production). */
async function runtime(env: Record<string, string>, peer?: Harness): Promise<Harness> {
  const h = peer
    ? await startHarness({ ...env, CREDENTIALS_KEY: peer.secrets.credentialsKey }, { ownerUrl: peer.ownerUrl })
    : await startHarness(env);
  open.add(h);
  return h;
}

async function close(h: Harness) {
  open.delete(h);
  await h.close();
}

/** The real server in a child process on the harness's database. */
async function child(h: Harness, env: Record<string, string>): Promise<Child> {
  const c = await startChild(h, { SMS_RESPONSE_BUDGET_MS: '3000', ...env });
  children.add(c);
  return c;
}

/** Bookings through another process's HTTP API, with the helpers written for a harness. */
const via = (url: string) => ({ http: supertest(url) }) as unknown as Harness;

beforeAll(async () => {
  twilio = await startFakeTwilio();
  telnyx = await startFakeTelnyx();
});
afterEach(async () => {
  for (const c of [...children]) {
    children.delete(c);
    await c.kill('SIGKILL');
  }
  for (const h of [...open]) await close(h);
  await twilio.setFault(null);
  await telnyx.setFault(null);
});
afterAll(async () => {
  await twilio?.close();
  await telnyx?.close();
});

/** A clinic on its own Twilio account (so the fake's counts are its own), failing over to Telnyx. */
async function clinicOnOwnTwilio(h: Harness, account = newTwilioAccount(twilio), extra: Link[] = [telnyxLink()]) {
  const org = await createOrg(h);
  await putSms(h, org.id, [twilioLink({ accountSid: account.sid, authToken: account.token }), ...extra], { rateLimitPerHour: 100 });
  return { org, account };
}

const twilioProbes = (sid: string) => twilio.log.filter((r) => r.method === 'GET' && r.path === `/2010-04-01/Accounts/${sid}.json`).length;

interface HealthRowView {
  account_key: string;
  kind: string;
  ok: boolean | null;
  error_class: string | null;
  error_code: string | null;
  consecutive_failures: number;
  latency_ms: number | null;
  probed_at: Date | null;
  leased_by: string | null;
}

async function healthOf(h: Harness, accountKey: string): Promise<HealthRowView[]> {
  return h.owner<HealthRowView[]>`
    SELECT account_key, kind, ok, error_class, error_code, consecutive_failures, latency_ms, probed_at, leased_by
      FROM sms_provider_health WHERE account_key = ${accountKey}`;
}

/** Waits until the one row of this account satisfies `pred`. */
async function untilHealth(h: Harness, accountKey: string, pred: (r: HealthRowView) => boolean, what: string, timeoutMs = 5_000) {
  return waitFor(
    `${accountKey}: ${what}`,
    async () => {
      const [r] = await healthOf(h, accountKey);
      return r && pred(r) ? r : null;
    },
    timeoutMs,
  );
}

const isDown = (r: HealthRowView) => r.ok === false;
const isUp = (r: HealthRowView) => r.ok === true;

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

describe('shared health', () => {
  it('two processes on one database probe each distinct account once per interval, however many clinics use it', async () => {
    const a = await runtime(healthEnv());
    await runtime(healthEnv(), a);
    const shared = newTwilioAccount(twilio);
    // An agency: two clinics on one account and one token; a third clinic on its own account.
    await clinicOnOwnTwilio(a, shared);
    await clinicOnOwnTwilio(a, shared);
    const { account: single } = await clinicOnOwnTwilio(a);
    await waitFor('both accounts probed', async () => twilioProbes(shared.sid) > 0 && twilioProbes(single.sid) > 0);
    expect(await healthOf(a, `twilio:${shared.sid}`)).toHaveLength(1);

    const from = { shared: twilioProbes(shared.sid), single: twilioProbes(single.sid), at: Date.now() };
    const ROUNDS = 5;
    await waitFor('five more probes of the shared account', async () => twilioProbes(shared.sid) >= from.shared + ROUNDS);
    const elapsed = Date.now() - from.at;
    // The lease spaces the probes at least an interval apart whichever process makes them;
    // two processes probing on their own would have made these in half the time.
    expect(elapsed).toBeGreaterThanOrEqual((ROUNDS - 1) * INTERVAL_MS);
    expect(elapsed).toBeLessThan(ROUNDS * INTERVAL_MS * 2.5);
    // The account two clinics share costs what the account of one clinic costs.
    expect(Math.abs(twilioProbes(shared.sid) - from.shared - (twilioProbes(single.sid) - from.single))).toBeLessThanOrEqual(1);
    // Both processes take part: whoever's lease ran out first probed.
    const probers = new Set<string>();
    await waitFor(
      'probes by both processes',
      async () => {
        const [r] = await healthOf(a, `twilio:${shared.sid}`);
        if (r?.leased_by) probers.add(r.leased_by);
        return probers.size === 2;
      },
      10_000,
      20,
    );
  });

  it('an agency clinic with a stale token gets its own verdict: the account stays up for the clinics whose token works', async () => {
    const h = await runtime(healthEnv());
    const account = newTwilioAccount(twilio);
    const { org: good } = await clinicOnOwnTwilio(h, account);
    const { org: stale } = await clinicOnOwnTwilio(h, { sid: account.sid, token: 'a-token-rotated-away-0123' });
    const rows = await waitFor('both credential sets probed', async () => {
      const r = await healthOf(h, `twilio:${account.sid}`);
      return r.length === 2 && r.every((x) => x.probed_at) ? r : null;
    });
    expect(rows.map((r) => [r.ok, r.error_code]).sort()).toEqual([
      [false, '20003'],
      [true, null],
    ]);
    expect((await book(h, good)).result.smsProvider).toBe('twilio');
    // The stale clinic's own link is down for every process: skipped without a request.
    const before = twilioCreates(twilio, account.sid);
    expect((await book(h, stale)).result.smsProvider).toBe('telnyx');
    expect(twilioCreates(twilio, account.sid)).toBe(before);
    const view = await readHealth(h.runtime.workerSql, h.runtime.sms.chains, { staleMs: INTERVAL_MS * 3 });
    const first = (orgId: string) => view.find((c) => c.orgId === orgId)!.providers[0];
    expect(first(good.id)).toMatchObject({ breaker: 'closed', ok: true });
    expect(first(stale.id)).toMatchObject({ breaker: 'open', ok: false, errorCode: '20003' });
    expect(first(good.id)!.account).toBe(first(stale.id)!.account);
  });

  it('Twilio down (auth refused, 5xx, connection refused): marked down, and a second process that never sent skips it at once', async () => {
    const h = await runtime(healthEnv());
    const { org, account } = await clinicOnOwnTwilio(h);
    const key = `twilio:${account.sid}`;
    await untilHealth(h, key, isUp, 'probed ok');
    // The second process: the real server, reading the shared health, never probing.
    const second = await child(h, readerEnv());
    const gauge = async () =>
      (await fetch(`${second.url}/metrics`).then((r) => r.text()))
        .split('\n')
        .find((l) => l.startsWith('sms_health_accounts_down{provider="twilio"}'));
    await waitFor('the second process to read the shared health', async () => (await gauge())?.endsWith(' 0'));

    const faults: Array<[string, Fault, { error_class: string; error_code: string }]> = [
      ['auth refused', { kind: 'status', status: 401, code: 20003 }, { error_class: 'provider', error_code: '20003' }],
      ['5xx', { kind: 'http5xx', status: 500 }, { error_class: 'transient', error_code: '20500' }],
      ['connection refused', { kind: 'down' }, { error_class: 'transient', error_code: 'ECONNREFUSED' }],
    ];
    // The first round is a process that has never sent a message; later rounds, one whose breaker a good send closed.
    for (const [name, fault, want] of faults) {
      const sentBefore = twilioCreates(twilio, account.sid);
      await twilio.setFault(fault);
      expect(await untilHealth(h, key, isDown, `down (${name})`), name).toMatchObject({ kind: 'twilio', ...want });
      const seenAt = Date.now();
      await waitFor(`the second process to see it down (${name})`, async () => (await gauge())?.endsWith(' 1'));
      // It reads twice an interval; the slack is for a loaded machine.
      expect(Date.now() - seenAt, name).toBeLessThan(INTERVAL_MS + 250);

      const started = Date.now();
      const { result } = await book(via(second.url), org);
      // Straight past Twilio: no attempt timeout, no retries, no request at all.
      expect(Date.now() - started, name).toBeLessThan(1000);
      expect(result, name).toMatchObject({ smsStatus: 'sent', smsProvider: 'telnyx' });
      expect(twilioCreates(twilio, account.sid), name).toBe(sentBefore);
      expect(
        (await attemptsFor(h, result.appointmentId)).map((x) => [x.provider, x.outcome, x.error_code]),
        name,
      ).toEqual([
        ['twilio', 'skipped', 'BREAKER_OPEN'],
        ['telnyx', 'accepted', null],
      ]);
      const metrics = (await fetch(`${second.url}/metrics`).then((r) => r.text())).split('\n');
      expect(metrics, name).toContain(`sms_breaker_open{org="${org.id}",provider="twilio"} 1`);

      // Recovered: the second process's next message is its one trial, and Twilio takes it.
      await twilio.setFault(null);
      await untilHealth(h, key, isUp, `recovered (${name})`);
      await waitFor(`the second process to see it up (${name})`, async () => (await gauge())?.endsWith(' 0'));
      expect((await book(via(second.url), org)).result.smsProvider, name).toBe('twilio');
      expect(twilioCreates(twilio, account.sid), name).toBe(sentBefore + 1);
    }
  });

  it('a process started after the failure skips the account at once, without relearning', async () => {
    const prober = await runtime(healthEnv());
    const { org, account } = await clinicOnOwnTwilio(prober);
    const key = `twilio:${account.sid}`;
    // Only the probes fail: a process that did not know would send through Twilio, and succeed.
    await twilio.setFault({ kind: 'status', status: 401, code: 20003, scope: 'probe' });
    await untilHealth(prober, key, isDown, 'marked down');

    const late = await runtime(readerEnv(), prober);
    const { result } = await book(late, org);
    expect(result.smsProvider).toBe('telnyx');
    expect(twilioCreates(twilio, account.sid)).toBe(0);
    expect(late.runtime.sms.engine.breaker(org.id, key).state).toBe(CircuitState.Open);
  });

  it('recovery: each process makes one half-open trial; a failed trial opens for the cool-down, a good one closes', async () => {
    const prober = await runtime(healthEnv());
    const { org, account } = await clinicOnOwnTwilio(prober);
    const key = `twilio:${account.sid}`;
    const other = await runtime(readerEnv(), prober);
    await twilio.setFault({ kind: 'status', status: 401, code: 20003, scope: 'probe' });
    await untilHealth(prober, key, isDown, 'marked down');
    await waitFor('the reader sees it down', async () => seesDown(other, org));
    for (const h of [other, prober]) {
      expect((await book(h, org)).result.smsProvider).toBe('telnyx');
      expect(h.runtime.sms.engine.breaker(org.id, key).state).toBe(CircuitState.Open);
    }
    expect(twilioCreates(twilio, account.sid)).toBe(0);

    // The account answers probes again, but its sends are still refused: the one trial fails and
    // the breaker stays open for the ordinary cool-down, although the shared health says ok.
    await twilio.setFault({ kind: 'status', status: 400, code: 21606, scope: 'create' });
    await untilHealth(prober, key, isUp, 'recovered');
    await waitFor('the reader sees it up', async () => !(await seesDown(other, org)));
    expect((await book(other, org)).result.smsProvider).toBe('telnyx');
    expect(twilioCreates(twilio, account.sid)).toBe(1);
    expect((await book(other, org)).result.smsProvider).toBe('telnyx');
    expect(twilioCreates(twilio, account.sid)).toBe(1);

    // The prober's own breaker, opened by the shared health alone, makes its own single trial.
    // Sends are slow, so the trial is still running while the next messages arrive: they skip.
    await twilio.setFault({ kind: 'slow', ms: 700, scope: 'create' });
    const burst = await Promise.all([0, 1, 2].map((i) => new Promise((r) => setTimeout(r, i * 50)).then(() => book(prober, org))));
    expect(prober.runtime.sms.engine.breaker(org.id, key).state).toBe(CircuitState.Closed);
    expect(burst.map((b) => b.result.smsProvider).sort()).toEqual(['telnyx', 'telnyx', 'twilio']);
    expect(twilioCreates(twilio, account.sid)).toBe(2);
    const skipped = burst.find((b) => b.result.smsProvider === 'telnyx')!;
    expect((await attemptsFor(prober, skipped.result.appointmentId)).map((x) => [x.provider, x.outcome, x.error_code])).toEqual([
      ['twilio', 'skipped', 'BREAKER_OPEN'],
      ['telnyx', 'accepted', null],
    ]);
    expect((await book(prober, org)).result.smsProvider).toBe('twilio');
    expect(twilioCreates(twilio, account.sid)).toBe(3);
  });

  it('a record nobody renews goes stale and is ignored: the next message is a trial, not another skip', async () => {
    const prober = await runtime(healthEnv());
    const { org, account } = await clinicOnOwnTwilio(prober);
    const key = `twilio:${account.sid}`;
    const other = await runtime(readerEnv(), prober);
    await twilio.setFault({ kind: 'status', status: 401, code: 20003, scope: 'probe' });
    await untilHealth(prober, key, isDown, 'marked down');
    await waitFor('the reader sees it down', async () => seesDown(other, org));
    expect((await book(other, org)).result.smsProvider).toBe('telnyx');

    // Every prober stops; the last verdict stays in the table, saying down.
    await close(prober);
    const [row] = await healthOf(other, key);
    expect(row).toMatchObject({ ok: false });
    const before = await readHealth(other.runtime.workerSql, other.runtime.sms.chains, { staleMs: INTERVAL_MS * 3, orgId: org.id });
    expect(before[0]!.providers[0]).toMatchObject({ kind: 'twilio', ok: false, fresh: true, breaker: 'open' });
    await waitFor('the reader to stop believing it', async () => !(await seesDown(other, org)), 5_000);
    const after = await readHealth(other.runtime.workerSql, other.runtime.sms.chains, { staleMs: INTERVAL_MS * 3, orgId: org.id });
    expect(after[0]!.providers[0]).toMatchObject({ kind: 'twilio', ok: false, fresh: false, breaker: 'unknown' });
    expect((await book(other, org)).result.smsProvider).toBe('twilio');
    expect(other.runtime.sms.engine.breaker(org.id, key).state).toBe(CircuitState.Closed);
  });

  it('a breaker opened by real sends has its account probed at once, not an interval later', async () => {
    const LONG = 3000;
    const setup = await runtime(readerEnv());
    const { org, account } = await clinicOnOwnTwilio(setup);
    // Started after the clinic exists, so its first round finds and probes the account.
    const h = await runtime(healthEnv({ SMS_HEALTH_INTERVAL_MS: String(LONG) }), setup);
    const key = `twilio:${account.sid}`;
    const first = await untilHealth(h, key, isUp, 'probed ok');
    await twilio.setFault({ kind: 'status', status: 401, code: 20003 });
    for (let i = 0; i < 3; i++) expect((await book(h, org)).result.smsProvider).toBe('telnyx');
    expect(h.runtime.sms.engine.breaker(org.id, key).state).toBe(CircuitState.Open);
    const down = await untilHealth(h, key, isDown, 'marked down', LONG);
    // The lease keeps the next scheduled probe a whole interval after the first.
    expect(down.probed_at!.getTime() - first.probed_at!.getTime()).toBeLessThan(LONG - 500);
    expect(down).toMatchObject({ error_class: 'provider', error_code: '20003' });
  });

  it('an adapter whose probe only checks reachability (the relay) is down when nothing answers', async () => {
    const relay = await startFakeRelay();
    try {
      const h = await runtime(healthEnv());
      const org = await createOrg(h);
      await putSms(h, org.id, [relayLink(relay.url), telnyxLink()], { rateLimitPerHour: 100 });
      const key = (await h.runtime.sms.chains.load(org.id))!.links[0]!.provider.accountKey;
      await untilHealth(h, key, isUp, 'answered');
      await relay.setFault({ kind: 'down' });
      expect(await untilHealth(h, key, isDown, 'silent')).toMatchObject({
        kind: 'relay',
        error_class: 'transient',
        error_code: 'UNREACHABLE',
      });
      expect((await book(h, org)).result.smsProvider).toBe('telnyx');
      expect(relay.messages).toHaveLength(0);
    } finally {
      await relay.close();
    }
  });

  it('the sandbox is always healthy and costs no request', async () => {
    const h = await runtime(healthEnv());
    const org = await createOrg(h);
    await putSms(h, org.id, [{ kind: 'sandbox', senderNumbers: ['+15005550006'] }]);
    const before = twilio.log.length + telnyx.log.length;
    await twilio.setFault({ kind: 'down' });
    await telnyx.setFault({ kind: 'down' });
    const row = await untilHealth(h, 'sandbox:dry-run', (r) => r.probed_at !== null, 'probed');
    expect(row).toMatchObject({ kind: 'sandbox', ok: true, latency_ms: 0, error_class: null, consecutive_failures: 0 });
    expect(twilio.log.length + telnyx.log.length).toBe(before);
    const [clinic] = await readHealth(h.runtime.workerSql, h.runtime.sms.chains, { staleMs: INTERVAL_MS * 3, orgId: org.id });
    expect(clinic).toMatchObject({
      orgId: org.id,
      enabled: true,
      providers: [{ position: 0, kind: 'sandbox', ok: true, fresh: true, breaker: 'closed' }],
    });
  });
});

describe('what operators see', () => {
  it('readHealth: per clinic and account, last probe, latency, error class, failures and the shared breaker, no secrets', async () => {
    const h = await runtime(healthEnv());
    const { org, account } = await clinicOnOwnTwilio(h);
    const bystander = await createOrg(h);
    await twilio.setFault({ kind: 'status', status: 401, code: 20003, scope: 'probe' });
    await untilHealth(h, `twilio:${account.sid}`, (r) => r.consecutive_failures >= 2, 'failed twice');
    await untilHealth(h, 'telnyx:' + telnyxKeyFp(), isUp, 'telnyx probed');

    const mine = await readHealth(h.runtime.workerSql, h.runtime.sms.chains, { staleMs: INTERVAL_MS * 3, orgId: org.id });
    expect(mine).toHaveLength(1);
    expect(mine[0]).toMatchObject({ orgId: org.id, enabled: true });
    const [tw, tx] = mine[0]!.providers;
    expect(tw).toMatchObject({
      position: 0,
      kind: 'twilio',
      account: `twilio:${account.sid.slice(0, 6)}…${account.sid.slice(-4)}`,
      credentials: 'ok',
      ok: false,
      errorClass: 'provider',
      errorCode: '20003',
      fresh: true,
      breaker: 'open',
    });
    expect(tw!.consecutiveFailures).toBeGreaterThanOrEqual(2);
    expect(Date.parse(tw!.probedAt!)).toBeGreaterThan(Date.now() - 5_000);
    expect(Date.parse(tw!.downSince!)).toBeLessThanOrEqual(Date.parse(tw!.probedAt!));
    expect(tx).toMatchObject({
      position: 1,
      kind: 'telnyx',
      ok: true,
      errorClass: null,
      consecutiveFailures: 0,
      downSince: null,
      breaker: 'closed',
    });
    expect(tx!.latencyMs).toEqual(expect.any(Number));
    const text = JSON.stringify(mine);
    expect(text).not.toContain(account.sid);
    expect(text).not.toContain(account.token);
    expect(text).not.toContain(DEFAULT_TELNYX_API_KEY);

    // The operator view lists every clinic with a chain; a clinic without one is not there.
    const all = await readHealth(h.runtime.workerSql, h.runtime.sms.chains, { staleMs: INTERVAL_MS * 3 });
    expect(all.map((c) => c.orgId)).toContain(org.id);
    expect(all.map((c) => c.orgId)).not.toContain(bystander.id);
    // A clinic's own view is read under its org: another clinic's chain is invisible.
    expect(await readHealth(h.runtime.workerSql, h.runtime.sms.chains, { staleMs: INTERVAL_MS * 3, orgId: bystander.id })).toEqual([]);
  });

  it('probe latency and results on /metrics, by provider kind only: no account, key or clinic in any label', async () => {
    const h = await runtime(healthEnv());
    const { org, account } = await clinicOnOwnTwilio(h);
    await untilHealth(h, `twilio:${account.sid}`, isUp, 'probed ok');
    await twilio.setFault({ kind: 'status', status: 401, code: 20003, scope: 'probe' });
    await untilHealth(h, `twilio:${account.sid}`, isDown, 'marked down');
    await waitFor('the gauge to follow', async () =>
      (await h.http.get('/metrics')).text.includes('sms_health_accounts_down{provider="twilio"} 1'),
    );

    const text = (await h.http.get('/metrics')).text;
    const lines = text.split('\n').filter((l) => l.startsWith('sms_health_'));
    expect(lines).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^sms_health_probes_total\{provider="twilio",result="ok",error_class="none"\} [1-9]/),
        expect.stringMatching(/^sms_health_probes_total\{provider="twilio",result="failed",error_class="provider"\} [1-9]/),
        expect.stringMatching(/^sms_health_probes_total\{provider="telnyx",result="ok",error_class="none"\} [1-9]/),
        expect.stringMatching(/^sms_health_probe_duration_seconds_bucket\{le="0\.5",provider="twilio"\} [1-9]/),
        expect.stringMatching(/^sms_health_probe_duration_seconds_count\{provider="telnyx"\} [1-9]/),
        'sms_health_accounts_down{provider="twilio"} 1',
        'sms_health_accounts_down{provider="telnyx"} 0',
      ]),
    );
    for (const l of lines) {
      const labels = /\{(.*)\}/.exec(l)?.[1] ?? '';
      expect(labels, l).toMatch(/^((provider|result|error_class|le)="[a-z0-9.+_]*",?)*$/i);
    }
    for (const secret of [account.sid, account.token, DEFAULT_TELNYX_API_KEY, telnyxKeyFp(), org.id]) {
      expect(lines.join('\n')).not.toContain(secret);
    }
    expect(text).not.toContain(account.sid);
    expect(text).not.toContain(account.token);
  });

  it('/api/sms/diagnostics still answers reachable from the probe: true on any HTTP answer, false when nothing answers', async () => {
    const h = await runtime(readerEnv());
    const { org } = await clinicOnOwnTwilio(h, undefined, [telnyxLink(), { kind: 'sandbox', senderNumbers: ['+15005550006'] }]);
    const diagnose = async () =>
      (await h.http.get('/api/sms/diagnostics').set('Authorization', `Bearer ${org.token}`)).body as {
        providers: Array<{ kind: string; reachable: boolean | null; decrypts: boolean }>;
      };
    expect((await diagnose()).providers.map((p) => [p.kind, p.decrypts, p.reachable])).toEqual([
      ['twilio', true, true],
      ['telnyx', true, true],
      ['sandbox', true, null],
    ]);
    await twilio.setFault({ kind: 'status', status: 401, code: 20003 });
    expect((await diagnose()).providers[0]!.reachable).toBe(true);
    await twilio.setFault({ kind: 'down' });
    await telnyx.setFault({ kind: 'down' });
    expect((await diagnose()).providers.map((p) => p.reachable)).toEqual([false, false, null]);
  });
});

/** Whether that process's breakers would take the clinic's first link for down, by its shared health key. */
async function seesDown(h: Harness, org: TestOrg): Promise<boolean> {
  const key = (await h.runtime.sms.chains.load(org.id))?.links[0]?.healthKey;
  if (!key) throw new Error('no health key');
  return h.runtime.sms.health.isDown(key);
}

/** The Telnyx account key of the default test key, as the adapter computes it. */
function telnyxKeyFp(): string {
  return createTelnyxProvider({ apiKey: DEFAULT_TELNYX_API_KEY, timeoutMs: 1000 }).accountKey.split(':')[1]!;
}

describe('configuration', () => {
  const base = { NODE_ENV: 'test' };
  it('defaults: every 30 s, 2 s probes, stale after three intervals, probing where the worker runs', () => {
    const cfg = loadConfig(base);
    expect(healthSettings(cfg)).toEqual({ probing: true, intervalMs: 30_000, probeTimeoutMs: 2000, staleMs: 90_000 });
    expect(healthSettings(loadConfig({ ...base, SMS_WORKER_ENABLED: 'false' })).probing).toBe(false);
    expect(healthSettings(loadConfig({ ...base, SMS_WORKER_ENABLED: 'false', SMS_HEALTH_ENABLED: 'true' })).probing).toBe(true);
    expect(healthSettings(loadConfig({ ...base, SMS_HEALTH_ENABLED: 'false' })).probing).toBe(false);
    expect(healthSettings(loadConfig({ ...base, SMS_HEALTH_INTERVAL_MS: '1000' }))).toMatchObject({ staleMs: 3000, probeTimeoutMs: 500 });
  });

  it('refuses a probe timeout as long as the interval, and a staleness a late probe would outlive', () => {
    expect(() => loadConfig({ ...base, SMS_HEALTH_INTERVAL_MS: '1000', SMS_HEALTH_PROBE_TIMEOUT_MS: '1000' })).toThrow(
      /SMS_HEALTH_PROBE_TIMEOUT_MS/,
    );
    expect(() => loadConfig({ ...base, SMS_HEALTH_INTERVAL_MS: '1000', SMS_HEALTH_STALE_MS: '1500' })).toThrow(/SMS_HEALTH_STALE_MS/);
    expect(healthSettings(loadConfig({ ...base, SMS_HEALTH_INTERVAL_MS: '1000', SMS_HEALTH_STALE_MS: '1600' })).staleMs).toBe(1600);
  });
});
