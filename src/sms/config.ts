import { createHash } from 'node:crypto';
import type { Sql } from 'postgres';
import { z } from 'zod';
import { parsePhoneNumberFromString } from 'libphonenumber-js/max';
import { withOperator, withOrg, type Tx } from '../db/pool.js';
import type { Config } from '../config.js';
import { decryptSecret, encryptSecret, needsReencrypt, type Keyring } from '../crypto.js';
import { LRUCache } from 'lru-cache';
import { createProvider, type Credentials, type LinkSettings } from './providers/index.js';
import { relayUrlProblem } from './providers/relay.js';
import { createSandboxProvider } from './providers/sandbox.js';
import type { ProviderKind, SmsProvider } from './types.js';

/**
 * Per-clinic SMS configuration: an ordered provider chain, each link with its own
 * credentials (AES-256-GCM at rest, bound to org + position + kind) and its own
 * pool of sender numbers. Credentials go in through the admin API and never
 * come back out of it.
 */

const e164 = z
  .string()
  .max(20)
  .refine((n) => /^\+[1-9]\d{6,14}$/.test(n) && parsePhoneNumberFromString(n)?.isValid() === true, {
    message: 'must be a valid E.164 number',
  });
const pool = z.array(e164).min(1).max(100);

/** Per link: how long one attempt may take before it counts as timed out (default SMS_ATTEMPT_TIMEOUT_MS). */
const attemptTimeoutMs = z.number().int().min(100).max(60_000).optional();
/** An Ed25519 public key as the Telnyx portal shows it: standard base64 of exactly 32 bytes. */
const ed25519PublicKey = z
  .string()
  .max(64)
  .refine((v) => /^[A-Za-z0-9+/]{43}=$/.test(v) && Buffer.from(v, 'base64').length === 32, {
    message: 'must be the base64 of a 32-byte Ed25519 public key (Telnyx portal: Keys & Credentials > Public Key)',
  });

const twilioLink = z.object({
  kind: z.literal('twilio'),
  accountSid: z.string().regex(/^AC[0-9a-fA-F]{32}$/, 'must be a Twilio Account SID (AC + 32 hex)'),
  authToken: z.string().min(16).max(128),
  senderNumbers: pool,
  attemptTimeoutMs,
  keywordReplies: z
    .enum(['twilio', 'ours'])
    .optional()
    .describe(
      "Who answers STOP/START/HELP texted to this account: `twilio` (default: Twilio's own keyword handling or a Messaging " +
        "Service's Advanced Opt-Out replies) or `ours` (Twilio keyword handling is switched off for the account, or a standalone short code).",
    ),
});
const telnyxLink = z.object({
  kind: z.literal('telnyx'),
  apiKey: z.string().min(8).max(512),
  messagingProfileId: z.string().max(100).optional(),
  senderNumbers: pool,
  attemptTimeoutMs,
  webhookPublicKey: ed25519PublicKey
    .optional()
    .describe("The account's webhook signing key (base64, 32 bytes). Without it every Telnyx webhook for this clinic is refused."),
});
/** The sandbox sends nothing, so its sender is only a label: Twilio's test number unless one is given. */
const SANDBOX_SENDER = '+15005550006';
const sandboxLink = z.object({
  kind: z.literal('sandbox'),
  senderNumbers: pool.default([SANDBOX_SENDER]),
  attemptTimeoutMs,
});
const snsLink = z.object({
  kind: z.literal('sns'),
  accessKeyId: z.string().regex(/^[A-Z0-9]{16,128}$/, 'must be an AWS access key id'),
  secretAccessKey: z.string().min(16).max(128),
  region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'must be an AWS region such as us-east-1'),
  // SNS's rule for sender IDs: 1-11 letters and digits, at least one letter.
  senderId: z
    .string()
    .regex(/^(?=.*[A-Za-z])[A-Za-z0-9]{1,11}$/, 'must be 1-11 letters and digits, at least one letter')
    .optional(),
  originationNumber: e164.optional(),
  attemptTimeoutMs,
});
const relayLink = z.object({
  kind: z.literal('relay'),
  url: z
    .string()
    .max(2000)
    .superRefine((u, ctx) => {
      // https-only in production is checked by the route, which knows NODE_ENV (relayUrlProblem).
      const problem = relayUrlProblem(u, false);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    }),
  signingSecret: z.string().min(32).max(256),
  senderNumbers: pool.optional(),
  /** The receiver posts signed delivery receipts back (docs/sms.md). */
  receipts: z.boolean().optional(),
  attemptTimeoutMs,
});

const hhmm = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'must be HH:mm, 00:00-23:59');
const minutesOf = (t: string) => Number(t.slice(0, 2)) * 60 + Number(t.slice(3, 5));

/** What a clinic's reminders are until it says otherwise (the migration's defaults). */
export const REMINDER_DEFAULTS = {
  reminderOffsetsMinutes: [1440],
  sendingWindow: { start: '08:00', end: '21:00' },
  quietHoursZone: 'patient' as const,
  cancelByReply: false,
};

export const smsConfigSchema = z.object({
  enabled: z.boolean().default(true),
  rateLimitPerHour: z.number().int().min(1).max(1000).optional(),
  /** Use links after position 0. Omitted: unchanged, and NEW_CLINIC_FAILOVER for a clinic's first configuration. */
  failoverEnabled: z.boolean().optional(),
  contactPhone: e164.optional().describe('The number HELP answers name (with the clinic name), in E.164.'),
  // Reminders (sql/011_reminders.sql). Each omitted: unchanged, and the default for a clinic's first configuration.
  reminderOffsetsMinutes: z
    .array(z.number().int().min(1).max(43_200))
    .max(3)
    .refine((a) => new Set(a).size === a.length, { message: 'offsets must differ' })
    .optional()
    .describe('Minutes before the appointment each reminder goes out, e.g. [1440, 120]; [] for none. Default [1440] (24 h before).'),
  sendingWindow: z
    .object({ start: hhmm, end: hhmm })
    .strict()
    .refine((w) => minutesOf(w.end) - minutesOf(w.start) >= 60, { message: 'the window must be at least an hour long, start before end' })
    .optional()
    .describe('When reminders may go out, wall-clock start <= t < end. Default {"start":"08:00","end":"21:00"}.'),
  quietHoursZone: z
    .enum(['patient', 'clinic'])
    .optional()
    .describe(
      "Whose clock the window is read on: `patient` (default: the patient's zone when their number tells it, else the clinic's) or `clinic`.",
    ),
  cancelByReply: z.boolean().optional().describe('Patients may cancel by replying X, asked to confirm once. Default false.'),
  providers: z
    .array(z.discriminatedUnion('kind', [twilioLink, telnyxLink, sandboxLink, snsLink, relayLink]))
    .min(1)
    .max(5),
});
export type SmsConfigInput = z.infer<typeof smsConfigSchema>;

const aad = (orgId: string, position: number, kind: string) => `org:${orgId}:sms:${position}:${kind}`;

/**
 * Whether a clinic configured for the first time uses its failover links.
 * Off: a second provider is a second vendor that sees the clinic's patients'
 * phone numbers and appointment texts, under its own agreement and from other
 * sender numbers, so the clinic switches it on when it has agreed to that.
 * Clinics configured before the switch existed keep failing over (the
 * migration's default).
 */
export const NEW_CLINIC_FAILOVER = false;

export interface SmsLinkView {
  position: number;
  kind: ProviderKind;
  senderNumbers: string[];
  credentials: 'configured' | 'none';
  /** A masked hint to tell accounts apart: `AC1234…abcd`, `AKIA…WXYZ`, a relay's host. Never a secret. */
  account?: string;
  region?: string;
  receipts?: boolean;
  attemptTimeoutMs?: number;
}

export interface SmsConfigView {
  enabled: boolean;
  rateLimitPerHour: number;
  failoverEnabled: boolean;
  contactPhone: string | null;
  reminderOffsetsMinutes: number[];
  sendingWindow: { start: string; end: string };
  quietHoursZone: 'patient' | 'clinic';
  cancelByReply: boolean;
  providers: Array<SmsLinkView & LinkSettings>;
}

/** The settings of a link that are not secret, as stored in sms_providers.link_settings. */
function linkSettingsOf(link: SmsConfigInput['providers'][number]): LinkSettings {
  if (link.kind === 'twilio') return { keywordReplies: link.keywordReplies ?? 'twilio' };
  if (link.kind === 'telnyx') return link.webhookPublicKey ? { webhookPublicKey: link.webhookPublicKey } : {};
  if (link.kind === 'relay') return { receipts: link.receipts === true };
  return {};
}

function credentialsOf(link: SmsConfigInput['providers'][number]): Credentials {
  switch (link.kind) {
    case 'twilio':
      return { kind: 'twilio', accountSid: link.accountSid, authToken: link.authToken };
    case 'telnyx':
      return { kind: 'telnyx', apiKey: link.apiKey, messagingProfileId: link.messagingProfileId };
    case 'sns':
      return {
        kind: 'sns',
        accessKeyId: link.accessKeyId,
        secretAccessKey: link.secretAccessKey,
        region: link.region,
        senderId: link.senderId,
      };
    case 'relay':
      return { kind: 'relay', url: link.url, signingSecret: link.signingSecret, receipts: link.receipts };
    case 'sandbox':
      return { kind: 'sandbox' };
  }
}

/** The numbers a link sends from: SNS's one origination number, a relay's optional pool. */
function senderPool(link: SmsConfigInput['providers'][number]): string[] {
  if (link.kind === 'sns') return link.originationNumber ? [link.originationNumber] : [];
  return [...new Set(link.senderNumbers ?? [])];
}

/** What the route must refuse beyond the schema: in production a relay is reached over https only. */
export function smsConfigProblem(input: SmsConfigInput, production: boolean): string | null {
  for (const [i, link] of input.providers.entries()) {
    if (link.kind !== 'relay') continue;
    const problem = relayUrlProblem(link.url, production);
    if (problem) return `providers.${i}.url: ${problem}`;
  }
  return null;
}

type ReminderView = Pick<SmsConfigView, 'reminderOffsetsMinutes' | 'sendingWindow' | 'quietHoursZone' | 'cancelByReply'>;

/** The reminder settings of an sms_settings row, as the API shows them. */
const remindersView = (tx: Tx) => tx`
  jsonb_build_object('reminderOffsetsMinutes', to_jsonb(reminder_offsets_minutes),
                     'sendingWindow', jsonb_build_object('start', to_char(sending_window_start, 'HH24:MI'),
                                                         'end', to_char(sending_window_end, 'HH24:MI')),
                     'quietHoursZone', quiet_hours_zone, 'cancelByReply', cancel_by_reply)`;

/** Records a change of the failover switch; `from` is null when the clinic's settings are new. */
async function auditFailover(tx: Tx, orgId: string, from: boolean | null, to: boolean, actor: string) {
  if (from === to) return;
  await tx`INSERT INTO sms_failover_changes (org_id, actor, from_enabled, to_enabled) VALUES (${orgId}, ${actor}, ${from}, ${to})`;
}

export async function putSmsConfig(
  sql: Sql,
  keyring: Keyring,
  orgId: string,
  input: SmsConfigInput,
  defaultLimit: number,
  actor = 'admin',
) {
  return withOrg(sql, orgId, async (tx) => {
    const [org] = await tx`SELECT id FROM orgs WHERE id = ${orgId} FOR UPDATE`;
    if (!org) return false;
    const [prior] = await tx<{ failover_enabled: boolean; reminders: ReminderView }[]>`
      SELECT failover_enabled, ${remindersView(tx)} AS reminders FROM sms_settings WHERE org_id = ${orgId} FOR UPDATE`;
    const failover = input.failoverEnabled ?? prior?.failover_enabled ?? NEW_CLINIC_FAILOVER;
    const kept = prior?.reminders ?? REMINDER_DEFAULTS;
    const offsets = input.reminderOffsetsMinutes ?? kept.reminderOffsetsMinutes;
    const window = input.sendingWindow ?? kept.sendingWindow;
    await tx`
      INSERT INTO sms_settings (org_id, enabled, rate_limit_per_hour, failover_enabled, contact_phone,
                                reminder_offsets_minutes, sending_window_start, sending_window_end, quiet_hours_zone, cancel_by_reply)
      VALUES (${orgId}, ${input.enabled}, ${input.rateLimitPerHour ?? defaultLimit}, ${failover}, ${input.contactPhone ?? null},
              ${offsets}::int[], ${window.start}::time, ${window.end}::time, ${input.quietHoursZone ?? kept.quietHoursZone},
              ${input.cancelByReply ?? kept.cancelByReply})
      ON CONFLICT (org_id) DO UPDATE
        SET enabled = EXCLUDED.enabled, rate_limit_per_hour = EXCLUDED.rate_limit_per_hour,
            failover_enabled = EXCLUDED.failover_enabled, contact_phone = EXCLUDED.contact_phone,
            reminder_offsets_minutes = EXCLUDED.reminder_offsets_minutes, sending_window_start = EXCLUDED.sending_window_start,
            sending_window_end = EXCLUDED.sending_window_end, quiet_hours_zone = EXCLUDED.quiet_hours_zone,
            cancel_by_reply = EXCLUDED.cancel_by_reply, updated_at = now()`;
    await auditFailover(tx, orgId, prior?.failover_enabled ?? null, failover, actor);
    await tx`DELETE FROM sms_providers WHERE org_id = ${orgId}`;
    for (const [position, link] of input.providers.entries()) {
      const enc =
        link.kind === 'sandbox' ? null : encryptSecret(keyring, JSON.stringify(credentialsOf(link)), aad(orgId, position, link.kind));
      await tx`
        INSERT INTO sms_providers (org_id, position, kind, credentials_enc, sender_numbers, attempt_timeout_ms, link_settings)
        VALUES (${orgId}, ${position}, ${link.kind}, ${enc}, ${senderPool(link)}, ${link.attemptTimeoutMs ?? null},
                ${tx.json(linkSettingsOf(link) as Record<string, string>)})`;
    }
    return true;
  });
}

/**
 * PATCH's one switch: flips failover on or off, with an audit row when it
 * changes. Null when the clinic has no SMS settings (or does not exist).
 */
export async function setFailoverEnabled(
  sql: Sql,
  orgId: string,
  enabled: boolean,
  actor = 'admin',
): Promise<{ from: boolean; to: boolean } | null> {
  return withOrg(sql, orgId, async (tx) => {
    const [prior] = await tx<{ failover_enabled: boolean }[]>`SELECT failover_enabled FROM sms_settings WHERE org_id = ${orgId} FOR UPDATE`;
    if (!prior) return null;
    if (prior.failover_enabled !== enabled) {
      await tx`UPDATE sms_settings SET failover_enabled = ${enabled}, updated_at = now() WHERE org_id = ${orgId}`;
      await auditFailover(tx, orgId, prior.failover_enabled, enabled, actor);
    }
    return { from: prior.failover_enabled, to: enabled };
  });
}

/**
 * Every configured clinic's switches, for operator views (the console's
 * overview, the status API): read through the worker role in operator scope.
 */
export async function listSmsSwitches(workerSql: Sql): Promise<Map<string, { enabled: boolean; failoverEnabled: boolean }>> {
  const rows = await withOperator(
    workerSql,
    (tx) => tx<{ org_id: string; enabled: boolean; failover_enabled: boolean }[]>`
    SELECT org_id, enabled, failover_enabled FROM sms_settings`,
  );
  return new Map(rows.map((r) => [r.org_id, { enabled: r.enabled, failoverEnabled: r.failover_enabled }]));
}

/** A stored chain link as the loader needs it to build the link's client. */
export interface StoredLink {
  position: number;
  kind: ProviderKind;
  credentials_enc: string | null;
  attempt_timeout_ms: number | null;
  link_settings: LinkSettings;
}

interface ProviderRow {
  position: number;
  kind: ProviderKind;
  credentials_enc: string | null;
  sender_numbers: string[];
  attempt_timeout_ms: number | null;
  link_settings: LinkSettings;
}

const mask = (s: string) => `${s.slice(0, 4)}…${s.slice(-4)}`;

/** Only a masked account hint is shown: enough to tell accounts apart. */
function hintOf(c: Credentials | null): Pick<SmsLinkView, 'account' | 'region' | 'receipts'> {
  switch (c?.kind) {
    case 'twilio':
      return { account: `${c.accountSid.slice(0, 6)}…${c.accountSid.slice(-4)}` };
    case 'sns':
      return { account: mask(c.accessKeyId), region: c.region };
    case 'relay':
      return { account: new URL(c.url).host, receipts: c.receipts === true };
    default:
      return {};
  }
}

export async function getSmsConfig(sql: Sql, keyring: Keyring, orgId: string): Promise<SmsConfigView | null> {
  return withOrg(sql, orgId, async (tx) => {
    const [settings] = await tx<
      { enabled: boolean; rate_limit_per_hour: number; failover_enabled: boolean; contact_phone: string | null; reminders: ReminderView }[]
    >`
      SELECT enabled, rate_limit_per_hour, failover_enabled, contact_phone, ${remindersView(tx)} AS reminders FROM sms_settings`;
    if (!settings) return null;
    const rows = await tx<ProviderRow[]>`
      SELECT position, kind, credentials_enc, sender_numbers, attempt_timeout_ms, link_settings FROM sms_providers ORDER BY position`;
    return {
      enabled: settings.enabled,
      rateLimitPerHour: settings.rate_limit_per_hour,
      failoverEnabled: settings.failover_enabled,
      contactPhone: settings.contact_phone,
      ...settings.reminders,
      providers: rows.map((r) => {
        let hint: ReturnType<typeof hintOf>;
        try {
          hint = hintOf(
            r.credentials_enc
              ? (JSON.parse(decryptSecret(keyring, r.credentials_enc, aad(orgId, r.position, r.kind))) as Credentials)
              : null,
          );
        } catch {
          hint = { account: 'undecryptable' };
        }
        return {
          position: r.position,
          kind: r.kind,
          senderNumbers: r.sender_numbers,
          credentials: r.credentials_enc ? ('configured' as const) : ('none' as const),
          ...hint,
          ...(r.attempt_timeout_ms !== null ? { attemptTimeoutMs: r.attempt_timeout_ms } : {}),
          ...r.link_settings,
        };
      }),
    };
  });
}

/** One link of a loaded chain: a ready provider client and its sender pool. */
export interface ChainLink {
  position: number;
  kind: ProviderKind;
  provider: SmsProvider;
  pool: string[];
  /** This link's own per-attempt timeout; unset: the engine's (SMS_ATTEMPT_TIMEOUT_MS). */
  attemptTimeoutMs?: number;
  /** The key of this link's shared health record (health.ts); absent on dry runs. */
  healthKey?: string;
  settings: LinkSettings;
}

export interface LoadedChain {
  enabled: boolean;
  /** Off: only position 0 is used, however many links are configured. */
  failoverEnabled: boolean;
  links: ChainLink[];
  /** Links whose credentials could not be decrypted (wrong key, tampering). */
  broken: Array<{ position: number; kind: ProviderKind; reason: string }>;
}

/**
 * Builds provider clients from an org's own credentials, for that org only.
 * Cached briefly per org so a burst of messages does not decrypt and rebuild
 * SDK clients per message; blobs under a retired key are re-encrypted on the way.
 */
export class ChainLoader {
  private readonly cache: LRUCache<string, LoadedChain> | null;
  /** Loads under way, so that a burst of messages for one clinic reads its chain once. */
  private readonly loading = new Map<string, Promise<LoadedChain | null>>();
  private built = new Map<string, { blob: string; provider: SmsProvider; healthKey: string }>();
  private sandbox = createSandboxProvider({ name: 'dry-run' });

  constructor(
    private readonly workerSql: Sql,
    private readonly keyring: Keyring,
    private readonly cfg: Config,
    ttlMs = 5_000,
  ) {
    // lru-cache reads a ttl of 0 as "forever"; here it means "do not cache".
    this.cache = ttlMs > 0 ? new LRUCache({ max: 10_000, ttl: ttlMs }) : null;
  }

  /** The provider used for dry runs and for clinics configured with `sandbox`. */
  get sandboxProvider() {
    return this.sandbox;
  }

  invalidate(orgId: string): void {
    this.cache?.delete(orgId);
    this.loading.delete(orgId);
  }

  async load(orgId: string): Promise<LoadedChain | null> {
    const hit = this.cache?.get(orgId);
    if (hit) return hit;
    let pending = this.loading.get(orgId);
    if (!pending) {
      pending = this.read(orgId);
      this.loading.set(orgId, pending);
      const mine = pending;
      void mine.then(
        (loaded) => {
          // Not cached when the clinic's chain was replaced while it was being read.
          if (this.loading.get(orgId) !== mine) return;
          this.loading.delete(orgId);
          if (loaded) this.cache?.set(orgId, loaded);
        },
        () => {
          if (this.loading.get(orgId) === mine) this.loading.delete(orgId);
        },
      );
    }
    return pending;
  }

  private async read(orgId: string): Promise<LoadedChain | null> {
    return withOrg(this.workerSql, orgId, async (tx) => {
      const [settings] = await tx<{ enabled: boolean; failover_enabled: boolean }[]>`SELECT enabled, failover_enabled FROM sms_settings`;
      if (!settings) return null;
      const rows = await tx<ProviderRow[]>`
        SELECT position, kind, credentials_enc, sender_numbers, attempt_timeout_ms, link_settings FROM sms_providers ORDER BY position`;
      const chain: LoadedChain = { enabled: settings.enabled, failoverEnabled: settings.failover_enabled, links: [], broken: [] };
      for (const r of rows) {
        try {
          const { provider, healthKey } = this.client(orgId, r);
          chain.links.push({
            position: r.position,
            kind: r.kind,
            provider,
            pool: r.sender_numbers,
            healthKey,
            settings: r.link_settings,
            ...(r.attempt_timeout_ms !== null ? { attemptTimeoutMs: r.attempt_timeout_ms } : {}),
          });
          if (r.credentials_enc && needsReencrypt(this.keyring, r.credentials_enc)) {
            const plain = decryptSecret(this.keyring, r.credentials_enc, aad(orgId, r.position, r.kind));
            const fresh = encryptSecret(this.keyring, plain, aad(orgId, r.position, r.kind));
            // Compare-and-swap: an admin PUT that replaced this link meanwhile must not
            // be overwritten with the old credentials.
            await tx`
              UPDATE sms_providers SET credentials_enc = ${fresh}
               WHERE org_id = ${orgId} AND position = ${r.position} AND credentials_enc = ${r.credentials_enc}`;
          }
        } catch (err) {
          chain.broken.push({ position: r.position, kind: r.kind, reason: (err as Error).name || 'error' });
        }
      }
      return chain;
    });
  }

  /**
   * The client of one stored link, and the key of its shared health record:
   * the adapter's account key plus a hash prefix of the decrypted credentials,
   * so that clinics share a probe verdict only when they hold the same
   * credentials. Throws when the credentials do not decrypt.
   *
   * Provider clients are kept for as long as their credentials blob is
   * unchanged: rebuilding them on every settings reload would decrypt again and
   * throw away the SDK's keep-alive connections.
   */
  client(orgId: string, r: StoredLink): { provider: SmsProvider; healthKey: string } {
    const slot = `${orgId}|${r.position}`;
    const blob = `${r.kind}|${r.attempt_timeout_ms ?? ''}|${r.credentials_enc ?? ''}|${JSON.stringify(r.link_settings)}`;
    const kept = this.built.get(slot);
    if (kept && kept.blob === blob) return kept;
    const built = { blob, ...this.build(orgId, r) };
    this.built.set(slot, built);
    return built;
  }

  private build(orgId: string, r: StoredLink): { provider: SmsProvider; healthKey: string } {
    if (r.kind === 'sandbox') return { provider: this.sandbox, healthKey: healthKeyOf(this.sandbox.accountKey, '-') };
    if (!r.credentials_enc) throw new Error('missing credentials');
    const plain = decryptSecret(this.keyring, r.credentials_enc, aad(orgId, r.position, r.kind));
    const creds = JSON.parse(plain) as Credentials;
    if (creds.kind === 'sandbox' || creds.kind !== r.kind) throw new Error(`credentials do not match provider kind ${String(r.kind)}`);
    // Stored before NODE_ENV said production, or written around the API: still never sent in clear.
    if (creds.kind === 'relay' && relayUrlProblem(creds.url, this.cfg.NODE_ENV === 'production')) throw new Error('relay url refused');
    const provider = createProvider(
      creds,
      {
        // The SDK's own timeout only backstops the engine's per-attempt timeout, the link's own when it has one.
        timeoutMs: r.attempt_timeout_ms ?? this.cfg.SMS_ATTEMPT_TIMEOUT_MS,
        sdkTimeoutMarginMs: this.cfg.SMS_SDK_TIMEOUT_MARGIN_MS,
        baseUrls: { twilio: this.cfg.TWILIO_API_BASE_URL, telnyx: this.cfg.TELNYX_API_BASE_URL, sns: this.cfg.AWS_ENDPOINT_URL_SNS },
        orgId,
        telnyxWebhookToleranceSeconds: this.cfg.TELNYX_WEBHOOK_TOLERANCE_SECONDS,
      },
      r.link_settings,
    );
    const fp = createHash('sha256').update(`sms-health:${plain}`).digest('hex').slice(0, 16);
    return { provider, healthKey: healthKeyOf(provider.accountKey, fp) };
  }
}

/** `account key#credentials fingerprint`; the fingerprint is 16 hex digits, or `-` for a link without credentials. */
export function healthKeyOf(accountKey: string, credentialsFp: string): string {
  return `${accountKey}#${credentialsFp}`;
}

export function splitHealthKey(key: string): { accountKey: string; credentialsFp: string } {
  const i = key.lastIndexOf('#');
  return { accountKey: key.slice(0, i), credentialsFp: key.slice(i + 1) };
}
