import { LRUCache } from 'lru-cache';
import type { Sql } from 'postgres';
import type { Locale } from './time.js';

export type OpeningHours = Record<string, Array<[string, string]>>;

export interface Service {
  id: string;
  code: string;
  name: string;
  durationMinutes: number;
}

export interface Practitioner {
  id: string;
  name: string;
  serviceCodes: string[] | null;
}

/** When reminders go out (the clinic's SMS settings, src/sms/reminders.ts). */
export interface ReminderSettings {
  /** Minutes before the appointment, e.g. [1440, 120]; empty: no reminders. */
  offsetsMinutes: number[];
  /** The sending window, "HH:mm" wall-clock times: a reminder goes out at start <= t < end. */
  window: { start: string; end: string };
  /** Whose wall clock the window is read on: the patient's when their number tells it, else the clinic's; or always the clinic's. */
  zoneRule: 'patient' | 'clinic';
  /** Patients may cancel by replying X (asked to confirm once). */
  cancelByReply: boolean;
}

/** A clinic as a tool call sees it; loaded once per request, under RLS. */
export interface OrgContext {
  id: string;
  name: string;
  timeZone: string;
  defaultRegion: string;
  openingHours: OpeningHours;
  slotIntervalMinutes: number;
  active: boolean;
  vapiSecretSha256: string | null;
  vapiHmacSecretEnc: string | null;
  // The voice-platform settings (sql/007_voice.sql) are optional so that a
  // settings object built without them means the safe defaults: results
  // spoken, no transfer, Retell refused, no transcripts kept.
  /** Vapi results carry the sentence to say at once (ToolCallResult.message); absent means true. */
  spokenResults?: boolean;
  /** E.164; where a caller asking for a person is transferred during opening hours. */
  frontDeskPhone?: string | null;
  /** The clinic's Retell API key, encrypted (AAD `org:<id>:retell-api-key`): it signs Retell's requests. */
  retellApiKeyEnc?: string | null;
  /** Keep end-of-call transcripts in the call log. */
  storeTranscripts?: boolean;
  // Reminder and locale settings (sql/011_reminders.sql), optional in the same
  // way: absent means en-US, no contact number, no reminders.
  /** How times are spoken and texted; absent means en-US. */
  locale?: Locale;
  /** The number texts tell patients to call: the SMS settings' contactPhone, else frontDeskPhone. */
  smsContactPhone?: string | null;
  /** The clinic's reminder schedule and sending window; absent: no reminders. */
  reminders?: ReminderSettings | null;
  services: Service[];
  practitioners: Practitioner[];
  clientActive: boolean;
  smsConfigured: boolean;
}

/** One round trip: scopes the statement to the org and returns null when RLS or absence hides it. */
export async function loadOrgContext(sql: Sql, orgId: string, clientId: string | null): Promise<OrgContext | null> {
  const [row] = await sql<{ ctx: OrgContext | null }[]>`SELECT org_context(${orgId}::uuid, ${clientId}) AS ctx`;
  return row?.ctx ?? null;
}

export const WEEKDAYS = ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday'] as const;

/**
 * A clinic's settings, reused for a few seconds between tool calls. Only the
 * settings are cached: whether the org is active and the OAuth client unrevoked
 * is re-checked by the database inside every tool's own statement
 * (tenant_scope / book_appointment), so a deactivation takes effect at once.
 * Admin writes in this process evict the entry; other processes see settings
 * changes after the TTL.
 */
export class OrgContextCache {
  private readonly cache: LRUCache<string, OrgContext> | null;
  constructor(ttlMs: number, max = 5_000) {
    this.cache = ttlMs > 0 ? new LRUCache<string, OrgContext>({ max, ttl: ttlMs }) : null;
  }

  get(orgId: string): OrgContext | undefined {
    return this.cache?.get(orgId);
  }

  set(ctx: OrgContext): void {
    this.cache?.set(ctx.id, ctx);
  }

  invalidate(orgId: string): void {
    this.cache?.delete(orgId);
  }
}
