import type { DateTime } from 'luxon';
import type { Logger } from 'pino';
import type { Sql } from 'postgres';
import type { z } from 'zod';
import type { OrgContext } from '../booking/org.js';
import type { Tenant } from '../db/pool.js';

export type SmsStatus = 'sent' | 'queued' | 'failed_but_booked' | 'error_but_booked';

export interface SmsOutcome {
  smsStatus: SmsStatus;
  /** Why it was not sent, for failed_but_booked / error_but_booked. */
  smsReason?: string;
  /** Which provider accepted it, for sent. */
  smsProvider?: string;
}

/** What booking needs from the SMS side: text to enqueue, then the first attempt's outcome. */
export interface ConfirmationNotifier {
  /** The outbox row to write in the booking's transaction, or null when SMS is off for the clinic. */
  prepare(
    org: OrgContext,
    appt: { patientName: string; start: DateTime; kind: 'booked' | 'rescheduled' },
  ): {
    kind: string;
    body: string;
  } | null;
  /**
   * The reminder rows to write in the same transaction (src/sms/reminders.ts):
   * none when SMS is off, the clinic has no reminders or no number to call.
   */
  reminders(org: OrgContext, appt: { start: DateTime; patientPhone: string }, now: DateTime): ReminderRow[];
  /**
   * Waits for the first send attempt of that outbox row, until the response
   * budget counted from `startedAt` (when the request arrived, epoch ms) runs out.
   */
  outcome(orgId: string, appointmentId: string, kind: string, startedAt?: number): Promise<SmsOutcome>;
}

/** One reminder as the booking transaction writes it. */
export interface ReminderRow {
  kind: string;
  /** ISO instants: when it goes out, and the end of the sending window it was planned in. */
  due: string;
  sendBy: string;
  body: string;
}

export interface ToolDeps {
  sql: Sql;
  sms: ConfirmationNotifier;
  now: () => DateTime;
  log: Logger;
}

/** The doors a tool call can come through; part of the idempotency key, nothing more. */
export type Platform = 'vapi' | 'legacy' | 'retell' | 'elevenlabs';

/**
 * One normalised tool invocation, whatever the platform's envelope looked like
 * (each adapter in src/platforms/ builds it). Tools read the fields below and
 * never which platform sent them: `platform` only prefixes the idempotency key.
 */
export interface ToolInvocation {
  platform: Platform;
  /**
   * Unique per invocation on its platform: Vapi's toolCallId; for Retell and
   * ElevenLabs, which send none, call id + function name + a hash of the
   * canonical arguments. Absent: no idempotency key.
   */
  invocationId?: string | undefined;
  /** The phone call this came from; part of the semantic duplicate check. */
  callId?: string | undefined;
  name: string;
  args: Record<string, unknown>;
  /** Caller id from signalling (never from model arguments), used when the model gives no phone. */
  callerNumber?: string | undefined;
  /** The clinic the platform says this is for (path, metadata); already checked against the credentials. */
  tenantHint?: string | undefined;
  /** Dry run (x-dry-run header): the confirmation goes only to the sandbox provider. */
  dryRun?: boolean | undefined;
  /** When the HTTP request arrived (epoch ms): the SMS budget counts from here. */
  receivedAt?: number | undefined;
}

export interface ToolContext extends ToolDeps {
  org: OrgContext;
  /** Passed to every statement, which re-verifies it in the database. */
  tenant: Tenant;
  call: ToolInvocation;
}

/** Every result has a success flag and one speakable sentence; the rest is tool-specific. */
export type ToolResult = { success: boolean; message: string } & Record<string, unknown>;

export interface Tool<S extends z.ZodType = z.ZodType> {
  name: string;
  schema: S;
  run(ctx: ToolContext, args: z.infer<S>): Promise<ToolResult>;
}
