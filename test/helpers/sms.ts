/**
 * Helpers shared by the SMS engine and outbox suites: configuring a clinic's
 * provider chain through the admin API, booking through the Vapi endpoint, and
 * waiting on database state.
 */
import { randomUUID } from 'node:crypto';
import { expect } from 'vitest';
import { FAKE_RELAY_SECRET } from '../fakes/fake-relay.js';
import { DEFAULT_SNS_ACCOUNT } from '../fakes/fake-sns.js';
import { DEFAULT_TELNYX_API_KEY } from '../fakes/fake-telnyx.js';
import { DEFAULT_TWILIO_ACCOUNT } from '../fakes/fake-twilio.js';
import { ADMIN_TOKEN, callTools, localDate, resultOf, vapiMessage, type Harness, type TestOrg } from './harness.js';

export const TWILIO_POOL = ['+14155550101', '+14155550102', '+14155550103'];
export const TELNYX_POOL = ['+13125550101', '+13125550102'];

export type Link = (
  | { kind: 'twilio'; accountSid: string; authToken: string; senderNumbers: string[]; keywordReplies?: 'twilio' | 'ours' }
  | { kind: 'telnyx'; apiKey: string; senderNumbers: string[]; messagingProfileId?: string; webhookPublicKey?: string }
  | { kind: 'sandbox'; senderNumbers: string[] }
  | { kind: 'sns'; accessKeyId: string; secretAccessKey: string; region: string; senderId?: string; originationNumber?: string }
  | { kind: 'relay'; url: string; signingSecret: string; senderNumbers?: string[]; receipts?: boolean }
) & { attemptTimeoutMs?: number };

export const twilioLink = (over: Partial<Extract<Link, { kind: 'twilio' }>> = {}): Link => ({
  kind: 'twilio',
  accountSid: DEFAULT_TWILIO_ACCOUNT.sid,
  authToken: DEFAULT_TWILIO_ACCOUNT.token,
  senderNumbers: TWILIO_POOL,
  ...over,
});

export const snsLink = (over: Partial<Extract<Link, { kind: 'sns' }>> = {}): Link => ({
  kind: 'sns',
  accessKeyId: DEFAULT_SNS_ACCOUNT.accessKeyId,
  secretAccessKey: DEFAULT_SNS_ACCOUNT.secretAccessKey,
  region: 'us-east-1',
  ...over,
});

export const relayLink = (url: string, over: Partial<Extract<Link, { kind: 'relay' }>> = {}): Link => ({
  kind: 'relay',
  url,
  signingSecret: FAKE_RELAY_SECRET,
  ...over,
});

export const telnyxLink = (over: Partial<Extract<Link, { kind: 'telnyx' }>> = {}): Link => ({
  kind: 'telnyx',
  apiKey: DEFAULT_TELNYX_API_KEY,
  senderNumbers: TELNYX_POOL,
  ...over,
});

/** Fake base URLs the way an operator would set them. */
export function providerEnv(twilioUrl: string, telnyxUrl: string): Record<string, string> {
  return { TWILIO_API_BASE_URL: twilioUrl, TELNYX_API_BASE_URL: `${telnyxUrl}/v2` };
}

/**
 * Configures a chain. Failover is switched on unless `extra` says otherwise: a
 * clinic's first configuration starts with it off, and these suites test the
 * chains they configure.
 */
export async function putSms(h: Harness, orgId: string, providers: Link[], extra: Record<string, unknown> = {}) {
  const res = await h.http
    .put(`/api/admin/orgs/${orgId}/sms`)
    .set('Authorization', `Bearer ${ADMIN_TOKEN}`)
    .send({ failoverEnabled: true, providers, ...extra });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body as { providers: Array<Record<string, unknown>>; rateLimitPerHour: number };
}

let phoneSeq = 0;
/** A valid, never-reused US number per call (each suite has its own database), so rate limits and sticky senders never cross tests. */
export function freshPhone(): string {
  phoneSeq += 1;
  return `+1415555${String(2000 + phoneSeq).padStart(4, '0')}`;
}

let slotSeq = 0;
const SLOTS_PER_DAY = 28;
/**
 * A distinct future slot per call, so bookings in one suite never collide.
 * Daytime only (08:00-21:30): night hours can fall into a DST gap or overlap.
 */
export function nextSlot(): { appointmentDate: string; appointmentTime: string } {
  slotSeq += 1;
  const day = 20 + Math.floor(slotSeq / SLOTS_PER_DAY);
  const minutes = 8 * 60 + (slotSeq % SLOTS_PER_DAY) * 30;
  const hh = String(Math.floor(minutes / 60)).padStart(2, '0');
  const mm = String(minutes % 60).padStart(2, '0');
  return { appointmentDate: localDate(day), appointmentTime: `${hh}:${mm}` };
}

export interface Booked {
  result: Record<string, any>;
  ms: number;
}

/** Books through /api/vapi/tools; returns the parsed tool result and how long the call took. */
export async function book(h: Harness, org: TestOrg, args: Record<string, unknown> = {}): Promise<Booked> {
  const started = Date.now();
  const res = await callTools(
    h,
    org.token,
    vapiMessage([
      {
        name: 'bookClinicAppointment',
        args: { patientName: 'Ana Ruiz', patientPhone: freshPhone(), serviceType: 'short', ...nextSlot(), ...args },
        id: `call_${randomUUID()}`,
      },
    ]),
  );
  const ms = Date.now() - started;
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  const result = resultOf(res);
  expect(result.success, JSON.stringify(result)).toBe(true);
  return { result, ms };
}

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | null | false>,
  timeoutMs = 10_000,
  everyMs = 25,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface OutboxRowView {
  id: string;
  status: string;
  provider: string | null;
  from_number: string | null;
  failure_reason: string | null;
  attempts: number;
}

export async function outboxFor(h: Harness, appointmentId: string): Promise<OutboxRowView> {
  const [row] = await h.owner<OutboxRowView[]>`
    SELECT id, status, provider, from_number, failure_reason, attempts FROM sms_outbox
     WHERE appointment_id = ${appointmentId} AND kind = 'booked'`;
  if (!row) throw new Error(`no outbox row for appointment ${appointmentId}`);
  return row;
}

export interface AttemptView {
  id: string;
  provider: string;
  account_key: string;
  from_number: string | null;
  outcome: string;
  error_class: string | null;
  error_code: string | null;
  error_message: string | null;
  failed_over: boolean;
  latency_ms: number | null;
  provider_message_id: string | null;
}

export async function attemptsFor(h: Harness, appointmentId: string): Promise<AttemptView[]> {
  return h.owner<AttemptView[]>`
    SELECT a.id, a.provider, a.account_key, a.from_number, a.outcome, a.error_class, a.error_code, a.error_message,
           a.failed_over, a.latency_ms, a.provider_message_id
      FROM sms_attempts a JOIN sms_outbox o ON o.id = a.outbox_id
     WHERE o.appointment_id = ${appointmentId} ORDER BY a.id`;
}

/** Waits until the appointment's outbox row reaches a final state. */
export async function settled(h: Harness, appointmentId: string, timeoutMs = 10_000): Promise<OutboxRowView> {
  return waitFor(
    `outbox of ${appointmentId} to settle`,
    async () => {
      const row = await outboxFor(h, appointmentId);
      return ['sent', 'failed', 'cancelled'].includes(row.status) ? row : null;
    },
    timeoutMs,
  );
}

/** A Twilio account of its own on the fake, so a test can count exactly its own requests. */
export function newTwilioAccount(fake: { addAccount(sid: string, token: string): void }) {
  const hex = randomUUID().replace(/-/g, '');
  const account = { sid: `AC${hex}`, token: `token-${hex}` };
  fake.addAccount(account.sid, account.token);
  return account;
}

/** Message-create POSTs the fake Twilio received for one account. */
export function twilioCreates(fake: { log: Array<{ method: string; path: string }> }, sid: string): number {
  return fake.log.filter((r) => r.method === 'POST' && r.path === `/2010-04-01/Accounts/${sid}/Messages.json`).length;
}

export async function appointmentExists(h: Harness, appointmentId: string): Promise<boolean> {
  const [row] = await h.owner<{ status: string }[]>`SELECT status FROM appointments WHERE id = ${appointmentId}`;
  return row?.status === 'booked';
}

let daySeq = 0;
/**
 * Writes appointments and their outbox rows straight into the database (as a
 * booking would, minus the fast path), so a worker elsewhere is the one to pick
 * them up. One practitioner, back-to-back 15-minute slots on days no other
 * helper uses.
 */
export async function enqueue(
  h: Harness,
  org: TestOrg,
  phones: string[],
  body: (i: number) => string = (i) => `Test confirmation ${i} ${randomUUID()}`,
): Promise<Array<{ id: string; appointment_id: string; to_phone: string; body: string }>> {
  daySeq += 1;
  const base = Date.now() + (100 + daySeq * 10) * 86_400_000;
  const starts = phones.map((_, i) => new Date(base + i * 15 * 60_000).toISOString());
  const bodies = phones.map((_, i) => body(i));
  const practitioner = org.practitioners[0]!.id;
  const service = org.services.find((s) => s.durationMinutes === 15)!.id;
  return h.owner<Array<{ id: string; appointment_id: string; to_phone: string; body: string }>>`
    WITH src AS (
      SELECT * FROM unnest(${phones}::text[], ${starts}::timestamptz[], ${bodies}::text[]) AS t(phone, starts_at, body)
    ), appt AS (
      INSERT INTO appointments (org_id, practitioner_id, service_id, patient_name, patient_phone, starts_at, ends_at)
      SELECT ${org.id}, ${practitioner}, ${service}, 'Pat Doe', phone, starts_at, starts_at + interval '15 minutes' FROM src
      RETURNING id, patient_phone, starts_at
    )
    INSERT INTO sms_outbox (org_id, appointment_id, kind, to_phone, body, expires_at)
    SELECT ${org.id}, appt.id, 'booked', appt.patient_phone, src.body, appt.starts_at
      FROM appt JOIN src ON src.phone = appt.patient_phone AND src.starts_at = appt.starts_at
    RETURNING id, appointment_id, to_phone, body`;
}
