import type { Sql } from 'postgres';
import { z } from 'zod';
import { parsePhoneNumberFromString } from 'libphonenumber-js/max';
import { withOrg } from '../db/pool.js';
import type { Config } from '../config.js';
import { decryptSecret, encryptSecret, needsReencrypt, type Keyring } from '../crypto.js';
import { LRUCache } from 'lru-cache';
import { createProvider, type Credentials, type LinkSettings } from './providers/index.js';
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
  keywordReplies: z
    .enum(['twilio', 'ours'])
    .optional()
    .describe(
      'Who answers STOP/START/HELP texted to this account: `twilio` (default: Twilio\'s own keyword handling or a Messaging ' +
        'Service\'s Advanced Opt-Out replies) or `ours` (Twilio keyword handling is switched off for the account, or a standalone short code).',
    ),
});
const telnyxLink = z.object({
  kind: z.literal('telnyx'),
  apiKey: z.string().min(8).max(512),
  messagingProfileId: z.string().max(100).optional(),
  senderNumbers: pool,
  webhookPublicKey: ed25519PublicKey
    .optional()
    .describe("The account's webhook signing key (base64, 32 bytes). Without it every Telnyx webhook for this clinic is refused."),
});
const sandboxLink = z.object({
  kind: z.literal('sandbox'),
  senderNumbers: pool,
});

export const smsConfigSchema = z.object({
  enabled: z.boolean().default(true),
  rateLimitPerHour: z.number().int().min(1).max(1000).optional(),
  contactPhone: e164.optional().describe('The number HELP answers name (with the clinic name), in E.164.'),
  providers: z.array(z.discriminatedUnion('kind', [twilioLink, telnyxLink, sandboxLink])).min(1).max(5),
});
export type SmsConfigInput = z.infer<typeof smsConfigSchema>;

const aad = (orgId: string, position: number, kind: string) => `org:${orgId}:sms:${position}:${kind}`;

export interface SmsConfigView {
  enabled: boolean;
  rateLimitPerHour: number;
  contactPhone: string | null;
  providers: Array<
    { position: number; kind: ProviderKind; senderNumbers: string[]; credentials: 'configured' | 'none'; account?: string } & LinkSettings
  >;
}

/** The settings of a link that are not secret, as stored in sms_providers.link_settings. */
function linkSettingsOf(link: SmsConfigInput['providers'][number]): LinkSettings {
  if (link.kind === 'twilio') return { keywordReplies: link.keywordReplies ?? 'twilio' };
  if (link.kind === 'telnyx') return link.webhookPublicKey ? { webhookPublicKey: link.webhookPublicKey } : {};
  return {};
}

export async function putSmsConfig(sql: Sql, keyring: Keyring, orgId: string, input: SmsConfigInput, defaultLimit: number) {
  return withOrg(sql, orgId, async (tx) => {
    const [org] = await tx`SELECT id FROM orgs WHERE id = ${orgId} FOR UPDATE`;
    if (!org) return false;
    await tx`
      INSERT INTO sms_settings (org_id, enabled, rate_limit_per_hour, contact_phone)
      VALUES (${orgId}, ${input.enabled}, ${input.rateLimitPerHour ?? defaultLimit}, ${input.contactPhone ?? null})
      ON CONFLICT (org_id) DO UPDATE
        SET enabled = EXCLUDED.enabled, rate_limit_per_hour = EXCLUDED.rate_limit_per_hour,
            contact_phone = EXCLUDED.contact_phone, updated_at = now()`;
    await tx`DELETE FROM sms_providers WHERE org_id = ${orgId}`;
    for (const [position, link] of input.providers.entries()) {
      const creds: Credentials =
        link.kind === 'twilio'
          ? { kind: 'twilio', accountSid: link.accountSid, authToken: link.authToken }
          : link.kind === 'telnyx'
            ? { kind: 'telnyx', apiKey: link.apiKey, messagingProfileId: link.messagingProfileId }
            : { kind: 'sandbox' };
      const enc = link.kind === 'sandbox' ? null : encryptSecret(keyring, JSON.stringify(creds), aad(orgId, position, link.kind));
      await tx`
        INSERT INTO sms_providers (org_id, position, kind, credentials_enc, sender_numbers, link_settings)
        VALUES (${orgId}, ${position}, ${link.kind}, ${enc}, ${[...new Set(link.senderNumbers)]},
                ${tx.json(linkSettingsOf(link) as Record<string, string>)})`;
    }
    return true;
  });
}

interface ProviderRow {
  position: number;
  kind: ProviderKind;
  credentials_enc: string | null;
  sender_numbers: string[];
  link_settings: LinkSettings;
}

export async function getSmsConfig(sql: Sql, keyring: Keyring, orgId: string): Promise<SmsConfigView | null> {
  return withOrg(sql, orgId, async (tx) => {
    const [settings] = await tx<{ enabled: boolean; rate_limit_per_hour: number; contact_phone: string | null }[]>`
      SELECT enabled, rate_limit_per_hour, contact_phone FROM sms_settings`;
    if (!settings) return null;
    const rows = await tx<ProviderRow[]>`
      SELECT position, kind, credentials_enc, sender_numbers, link_settings FROM sms_providers ORDER BY position`;
    return {
      enabled: settings.enabled,
      rateLimitPerHour: settings.rate_limit_per_hour,
      contactPhone: settings.contact_phone,
      providers: rows.map((r) => {
        // Only a masked account hint is shown: enough to tell accounts apart.
        let account: string | undefined;
        try {
          const c = r.credentials_enc ? (JSON.parse(decryptSecret(keyring, r.credentials_enc, aad(orgId, r.position, r.kind))) as Credentials) : null;
          if (c?.kind === 'twilio') account = `${c.accountSid.slice(0, 6)}…${c.accountSid.slice(-4)}`;
        } catch {
          account = 'undecryptable';
        }
        return {
          position: r.position,
          kind: r.kind,
          senderNumbers: r.sender_numbers,
          credentials: r.credentials_enc ? ('configured' as const) : ('none' as const),
          ...(account ? { account } : {}),
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
  settings: LinkSettings;
}

export interface LoadedChain {
  enabled: boolean;
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
  private readonly cache: LRUCache<string, LoadedChain>;
  /** Loads under way, so that a burst of messages for one clinic reads its chain once. */
  private readonly loading = new Map<string, Promise<LoadedChain | null>>();
  private built = new Map<string, { blob: string; provider: SmsProvider }>();
  private sandbox = createSandboxProvider({ name: 'dry-run' });

  constructor(
    private readonly workerSql: Sql,
    private readonly keyring: Keyring,
    private readonly cfg: Config,
    ttlMs = 5_000,
  ) {
    this.cache = new LRUCache({ max: 10_000, ttl: ttlMs });
  }

  /** The provider used for dry runs and for clinics configured with `sandbox`. */
  get sandboxProvider() {
    return this.sandbox;
  }

  invalidate(orgId: string): void {
    this.cache.delete(orgId);
    this.loading.delete(orgId);
  }

  async load(orgId: string): Promise<LoadedChain | null> {
    const hit = this.cache.get(orgId);
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
          if (loaded) this.cache.set(orgId, loaded);
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
      const [settings] = await tx<{ enabled: boolean }[]>`SELECT enabled FROM sms_settings`;
      if (!settings) return null;
      const rows = await tx<ProviderRow[]>`
        SELECT position, kind, credentials_enc, sender_numbers, link_settings FROM sms_providers ORDER BY position`;
      const chain: LoadedChain = { enabled: settings.enabled, links: [], broken: [] };
      for (const r of rows) {
        try {
          const provider = this.providerFor(orgId, r);
          chain.links.push({ position: r.position, kind: r.kind, provider, pool: r.sender_numbers, settings: r.link_settings });
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
   * Provider clients are kept for as long as their credentials blob is
   * unchanged: rebuilding them on every settings reload would decrypt again and
   * throw away the SDK's keep-alive connections.
   */
  private providerFor(orgId: string, r: ProviderRow): SmsProvider {
    const slot = `${orgId}|${r.position}`;
    const blob = `${r.kind}|${r.credentials_enc ?? ''}|${JSON.stringify(r.link_settings)}`;
    const kept = this.built.get(slot);
    if (kept && kept.blob === blob) return kept.provider;
    const provider = this.build(orgId, r);
    this.built.set(slot, { blob, provider });
    return provider;
  }

  private build(orgId: string, r: ProviderRow): SmsProvider {
    if (r.kind === 'sandbox') return this.sandbox;
    if (!r.credentials_enc) throw new Error('missing credentials');
    const creds = JSON.parse(decryptSecret(this.keyring, r.credentials_enc, aad(orgId, r.position, r.kind))) as Credentials;
    if (creds.kind === 'sandbox' || creds.kind !== r.kind) throw new Error(`credentials do not match provider kind ${String(r.kind)}`);
    return createProvider(creds, {
      // The SDK's own timeout only backstops the engine's per-attempt timeout.
      timeoutMs: this.cfg.SMS_ATTEMPT_TIMEOUT_MS,
      sdkTimeoutMarginMs: this.cfg.SMS_SDK_TIMEOUT_MARGIN_MS,
      baseUrls: { twilio: this.cfg.TWILIO_API_BASE_URL, telnyx: this.cfg.TELNYX_API_BASE_URL },
      telnyxWebhookToleranceSeconds: this.cfg.TELNYX_WEBHOOK_TOLERANCE_SECONDS,
    }, r.link_settings);
  }
}
