/**
 * The shared setup of the SMS engine suites (test/sms-engine-*.test.ts): fake
 * Twilio and Telnyx, one runtime with its outbox worker on and every wait of
 * the engine set small, so that failure paths run in well under a second each.
 * Each test file runs in its own process, so these bindings are per file.
 */
import { afterAll, afterEach, beforeAll } from 'vitest';
import { startFakeTelnyx, type FakeTelnyx } from '../fakes/fake-telnyx.js';
import { startFakeTwilio, type FakeTwilio } from '../fakes/fake-twilio.js';
import { createOrg, startHarness, type Harness, type TestOrg } from './harness.js';
import { providerEnv, putSms, telnyxLink, twilioLink, type Link } from './sms.js';

export let twilio: FakeTwilio;
export let telnyx: FakeTelnyx;
export let h: Harness;

export const ATTEMPT_MS = 400;
export const COOLDOWN_MS = 400;
/** The SDKs' own timeout lies this far beyond ATTEMPT_MS; a late answer gets this plus 250 ms. */
export const SDK_MARGIN_MS = 500;

/** Small timeouts so failure paths run in well under a second each. */
export const smsEnv = (): Record<string, string> => ({
  ...providerEnv(twilio.url, telnyx.url),
  SMS_WORKER_ENABLED: 'true',
  SMS_WORKER_POLL_MS: '50',
  SMS_ATTEMPT_TIMEOUT_MS: String(ATTEMPT_MS),
  SMS_SDK_TIMEOUT_MARGIN_MS: String(SDK_MARGIN_MS),
  SMS_RESPONSE_BUDGET_MS: '2500',
  SMS_RETRY_BASE_MS: '50',
  SMS_RETRY_MAX_MS: '200',
  SMS_MAX_ATTEMPTS: '30',
  SMS_LEASE_MS: '2000',
  SMS_BREAKER_THRESHOLD: '3',
  SMS_BREAKER_COOLDOWN_MS: String(COOLDOWN_MS),
});

/** Registers the suite's hooks; call once at the top of a test file. */
export function useSmsEngineSuite(): void {
  beforeAll(async () => {
    twilio = await startFakeTwilio();
    telnyx = await startFakeTelnyx();
    h = await startHarness(smsEnv());
  });
  afterEach(async () => {
    await twilio.setFault(null);
    await telnyx.setFault(null);
  });
  afterAll(async () => {
    await h?.close();
    await twilio?.close();
    await telnyx?.close();
  });
}

/** A clinic with breakers of its own, chained Twilio then Telnyx unless told otherwise. */
export async function clinic(
  providers: Link[] = [twilioLink(), telnyxLink()],
  extra: Record<string, unknown> = { rateLimitPerHour: 100 },
  orgOver: Record<string, unknown> = {},
): Promise<TestOrg> {
  const org = await createOrg(h, orgOver);
  await putSms(h, org.id, providers, extra);
  return org;
}

export const sentTo = (phone: string) => ({
  twilio: twilio.messages.filter((m) => m.to === phone),
  telnyx: telnyx.messages.filter((m) => m.to === phone),
});
