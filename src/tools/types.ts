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
  prepare(org: OrgContext, appt: { patientName: string; start: DateTime; kind: 'booked' | 'rescheduled' }): {
    kind: string;
    body: string;
  } | null;
  /**
   * Waits for the first send attempt of that outbox row, until the response
   * budget counted from `startedAt` (when the request arrived, epoch ms) runs out.
   */
  outcome(orgId: string, appointmentId: string, kind: string, startedAt?: number): Promise<SmsOutcome>;
}

export interface ToolDeps {
  sql: Sql;
  sms: ConfirmationNotifier;
  now: () => DateTime;
  log: Logger;
}

/** One normalised tool invocation, whatever the platform's envelope looked like. */
export interface ToolInvocation {
  name: string;
  args: Record<string, unknown>;
  /** Platform-unique id of this invocation (Vapi toolCallId). */
  toolCallId?: string | undefined;
  platform: 'vapi' | 'legacy';
  /** The phone call this came from; part of the semantic duplicate check. */
  callId?: string | undefined;
  /** Caller id from signalling, used when the model gives no phone. */
  customerNumber?: string | undefined;
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
