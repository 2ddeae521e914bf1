/**
 * The shared setup of the webhook suites (test/sms-webhooks-*.test.ts): fake
 * Twilio and Telnyx that call back, and a runtime that really listens on the
 * port its PUBLIC_URL names, so every send names a status callback the fakes
 * can reach, signed as the providers sign. Each test file runs in its own
 * process, so these bindings are per file.
 */
import type { Server } from 'node:http';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { freePort } from '../../src/net.js';
import { startFakeTelnyx, type FakeTelnyx } from '../fakes/fake-telnyx.js';
import { startFakeTwilio, type FakeTwilio } from '../fakes/fake-twilio.js';
import { DELIVERED } from '../fakes/receipts.js';
import { createOrg, startHarness, type Harness, type TestOrg } from './harness.js';
import { TELNYX_POOL, TWILIO_POOL, providerEnv, putSms, telnyxLink, twilioLink, waitFor, type Link } from './sms.js';

export let twilio: FakeTwilio;
export let telnyx: FakeTelnyx;
export let h: Harness;
export let publicUrl: string;

export const ATTEMPT_MS = 400;
export const SDK_MARGIN_MS = 300;

export const webhookEnv = (over: Record<string, string> = {}): Record<string, string> => ({
  ...providerEnv(twilio.url, telnyx.url),
  SMS_WORKER_ENABLED: 'true',
  SMS_WORKER_POLL_MS: '50',
  SMS_ATTEMPT_TIMEOUT_MS: String(ATTEMPT_MS),
  SMS_SDK_TIMEOUT_MARGIN_MS: String(SDK_MARGIN_MS),
  SMS_RESPONSE_BUDGET_MS: '2500',
  SMS_RETRY_BASE_MS: '50',
  SMS_RETRY_MAX_MS: '200',
  SMS_MAX_ATTEMPTS: '6',
  SMS_LEASE_MS: '2000',
  SMS_BREAKER_THRESHOLD: '3',
  SMS_BREAKER_COOLDOWN_MS: '400',
  ...over,
});

/** A runtime listening on the port of its own PUBLIC_URL. */
export async function listeningHarness(
  env: Record<string, string>,
  opts: { ownerUrl?: string } = {},
): Promise<{ h: Harness; publicUrl: string; close(): Promise<void> }> {
  for (let tries = 0; ; tries++) {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const harness = await startHarness({ PUBLIC_URL: url, ...env }, opts);
    const server: Server = harness.runtime.app.listen(port, '127.0.0.1');
    const ok = await new Promise<boolean>((resolve) => {
      server.once('listening', () => resolve(true));
      server.once('error', () => resolve(false));
    });
    if (ok) {
      return {
        h: harness,
        publicUrl: url,
        async close() {
          server.closeAllConnections();
          await new Promise((r) => server.close(r));
          await harness.close();
        },
      };
    }
    await harness.close();
    if (tries >= 3) throw new Error('no free port for the webhook harness');
  }
}

/** Registers the suite's hooks; call once at the top of a test file. */
export function useWebhookSuite(over: Record<string, string> = {}): void {
  let close: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    twilio = await startFakeTwilio();
    telnyx = await startFakeTelnyx();
    const l = await listeningHarness(webhookEnv(over));
    h = l.h;
    publicUrl = l.publicUrl;
    close = l.close;
  });
  afterEach(async () => {
    await twilio.setFault(null);
    await telnyx.setFault(null);
    twilio.setReceipts(DELIVERED);
    telnyx.setReceipts(DELIVERED);
    await Promise.all([twilio.callbacksSettled(), telnyx.callbacksSettled()]);
  });
  afterAll(async () => {
    await close?.();
    await twilio?.close();
    await telnyx?.close();
  });
}

/** The Telnyx link with this fake account's webhook public key. */
export const telnyxSigned = (over: Partial<Extract<Link, { kind: 'telnyx' }>> = {}): Link =>
  telnyxLink({ webhookPublicKey: telnyx.publicKey, ...over });

/** A clinic chained Twilio then Telnyx (with its webhook key) unless told otherwise. */
export async function clinic(
  providers?: Link[],
  extra: Record<string, unknown> = { rateLimitPerHour: 100 },
  harness: Harness = h,
): Promise<TestOrg> {
  const org = await createOrg(harness);
  await putSms(harness, org.id, providers ?? [twilioLink(), telnyxSigned()], extra);
  return org;
}

export const urls = (orgId: string) => ({
  twilioStatus: `${publicUrl}/webhooks/twilio/${orgId}/status`,
  twilioInbound: `${publicUrl}/webhooks/twilio/${orgId}/inbound`,
  telnyx: `${publicUrl}/webhooks/telnyx/${orgId}`,
});

export const sentTo = (phone: string) => ({
  twilio: twilio.messages.filter((m) => m.to === phone),
  telnyx: telnyx.messages.filter((m) => m.to === phone),
});

export interface DeliveryView {
  id: string;
  outbox_id: string;
  kind: string;
  provider: string;
  outcome: string;
  delivery_state: string | null;
  delivery_code: string | null;
  delivery_class: string | null;
  duplicate_delivery: boolean;
  provider_message_id: string | null;
  from_number: string | null;
  failed_over: boolean;
  error_code: string | null;
}

/** Every attempt of an appointment's confirmations (the row and its resend), oldest first. */
export async function deliveries(appointmentId: string, harness: Harness = h): Promise<DeliveryView[]> {
  return harness.owner<DeliveryView[]>`
    SELECT a.id, a.outbox_id, o.kind, a.provider, a.outcome, a.delivery_state, a.delivery_code, a.delivery_class,
           a.duplicate_delivery, a.provider_message_id, a.from_number, a.failed_over, a.error_code
      FROM sms_attempts a JOIN sms_outbox o ON o.id = a.outbox_id
     WHERE o.appointment_id = ${appointmentId} AND a.outcome <> 'skipped' ORDER BY a.id`;
}

/** Waits until some attempt of the appointment reaches `state` (or the predicate holds). */
export async function untilDelivery(
  appointmentId: string,
  ok: (ds: DeliveryView[]) => boolean,
  what = 'the delivery state',
  timeoutMs = 10_000,
): Promise<DeliveryView[]> {
  return waitFor(
    what,
    async () => {
      const ds = await deliveries(appointmentId);
      return ok(ds) ? ds : null;
    },
    timeoutMs,
  );
}

export async function events(orgId: string) {
  return h.owner<
    Array<{ id: string; kind: string; outcome: string | null; processed_at: Date | null; event_key: string; provider: string }>
  >`
    SELECT id, kind, outcome, processed_at, event_key, provider FROM sms_webhook_events WHERE org_id = ${orgId} ORDER BY id`;
}

/** The value of one Prometheus series on /metrics, 0 when absent. */
export async function metric(name: string, labels: Record<string, string>): Promise<number> {
  const text = (await h.http.get('/metrics')).text;
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const inner = line.slice(name.length + 1, line.indexOf('}'));
    const have = inner.split(',');
    if (want.every((w) => have.includes(w))) sum += Number(line.slice(line.indexOf('}') + 1).trim());
  }
  return sum;
}

export { TELNYX_POOL, TWILIO_POOL };
