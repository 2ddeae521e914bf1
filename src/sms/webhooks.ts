/**
 * Where providers reach us: the webhook URLs a clinic pastes into the Twilio
 * console and the Telnyx messaging profile, the status-callback URL named on
 * every send, and the public URL a signature is checked against.
 *
 * The public URL of a request is PUBLIC_URL plus the request's path and query
 * when PUBLIC_URL is set (behind a proxy that rewrites the host or the scheme,
 * or strips a path prefix, PUBLIC_URL is the one thing that stays right).
 * Otherwise it is taken from the request: req.protocol and req.host, which
 * honour X-Forwarded-Proto / X-Forwarded-Host only from the proxies
 * TRUST_PROXY names.
 */
import { createHash } from 'node:crypto';
import type { Request } from 'express';
import type { Sql } from 'postgres';
import { smsWebhookEvents, smsWebhookSignatureFailures } from '../metrics.js';
import { Batcher } from './batch.js';
import type { ChainLink, ChainLoader } from './config.js';
import { OUTBOX_REF_PARAM } from './providers/refs.js';
import type { ProviderKind, WebhookEvent, WebhookRequest, WebhookVerdict } from './types.js';

export const WEBHOOK_PATHS = {
  twilioStatus: (orgId: string) => `/webhooks/twilio/${orgId}/status`,
  twilioInbound: (orgId: string) => `/webhooks/twilio/${orgId}/inbound`,
  telnyx: (orgId: string) => `/webhooks/telnyx/${orgId}`,
};

const trimBase = (base: string) => base.replace(/\/+$/, '');

/** The URL the provider called, as it signed it. */
export function publicRequestUrl(req: Request, publicUrl: string | undefined): string {
  if (publicUrl) return `${trimBase(publicUrl)}${req.originalUrl}`;
  return `${req.protocol}://${req.host}${req.originalUrl}`;
}

/** The base URL providers reach this service at: PUBLIC_URL, or what this request says. */
export function publicBase(req: Request, publicUrl: string | undefined): string {
  return publicUrl ? trimBase(publicUrl) : `${req.protocol}://${req.host}`;
}

/**
 * The status-callback URL of one confirmation, or undefined without PUBLIC_URL
 * (we cannot know where providers would reach us). It names the outbox row, so
 * a receipt for an attempt whose answer was lost can still be matched to it;
 * it is the same for every attempt of the row, so a resend under the same
 * idempotency key (Telnyx) has the same body.
 */
export function statusCallbackUrl(publicUrl: string | undefined, kind: ProviderKind, orgId: string, outboxId: string): string | undefined {
  if (!publicUrl) return undefined;
  const path = kind === 'twilio' ? WEBHOOK_PATHS.twilioStatus(orgId) : kind === 'telnyx' ? WEBHOOK_PATHS.telnyx(orgId) : undefined;
  return path ? `${trimBase(publicUrl)}${path}?${OUTBOX_REF_PARAM}=${outboxId}` : undefined;
}

/** What a clinic pastes into each provider's console, for the kinds in its chain. */
export function webhookUrls(base: string, orgId: string, kinds: readonly ProviderKind[]) {
  return {
    ...(kinds.includes('twilio')
      ? {
          twilio: {
            // Messaging Service or number: "A message comes in".
            inbound: `${base}${WEBHOOK_PATHS.twilioInbound(orgId)}`,
            // Messaging Service "Status callback URL" (every send names it too when PUBLIC_URL is set).
            statusCallback: `${base}${WEBHOOK_PATHS.twilioStatus(orgId)}`,
          },
        }
      : {}),
    ...(kinds.includes('telnyx') ? { telnyx: { webhook: `${base}${WEBHOOK_PATHS.telnyx(orgId)}` } } : {}),
  };
}

/** One webhook request as it arrived, before anything trusts it. */
export interface IncomingWebhook {
  provider: 'twilio' | 'telnyx' | 'relay';
  orgId: string;
  /** Which route it came in on. */
  hint: 'receipt' | 'inbound';
  /** The public URL the provider called (publicRequestUrl). */
  url: string;
  headers: Readonly<Record<string, string | undefined>>;
  rawBody: string;
  /** Our own signed probe (VERIFY_SMS_BRIDGE.sh through /api/sms/diagnostics): stored, never acted on. */
  probe: boolean;
}

/** A verified, stored webhook: what the processors act on. */
export interface StoredWebhook {
  id: string;
  orgId: string;
  provider: ProviderKind;
  accountKey: string;
  kind: 'receipt' | 'inbound' | 'probe' | 'other';
  eventKey: string;
  url: string;
  rawBody: string;
}

export type IntakeAnswer =
  | { ok: true; stored: StoredWebhook; event: WebhookEvent | null; link: ChainLink }
  | { ok: false; reason: 'unknown_clinic' | 'no_link' | 'no_key' | 'replay' | WebhookRefusal };

type WebhookRefusal = Extract<WebhookVerdict, { ok: false }>['reason'];

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * The request path of every provider webhook: pick the key, verify, store.
 * Nothing is trusted before the signature verified: the body is read first
 * only for Twilio's AccountSid, to choose which of the clinic's Twilio links'
 * auth tokens must have signed it. An unknown clinic, a clinic without such a
 * link or without a Telnyx public key, a bad or stale signature, or the exact
 * signature of a request already stored (a replay): refused, nothing stored.
 * Each refusal is counted by provider and reason.
 */
interface StoreItem {
  org: string;
  provider: string;
  account: string;
  kind: string;
  key: string;
  messageId: string | null;
  sig: string;
  url: string;
  raw: string;
}

export class WebhookIntake {
  /** Requests arriving together are stored in one statement: one commit for many receipts. */
  private readonly stores: Batcher<StoreItem, string | null>;

  constructor(
    /** clinic_app: it may only append events (sms_store_webhook_events). */
    sql: Sql,
    private readonly chains: ChainLoader,
  ) {
    this.stores = new Batcher(
      async (items) => {
        const rows = await sql<
          { idx: number; id: string | null }[]
        >`SELECT * FROM sms_store_webhook_events(${sql.json(items as unknown as Record<string, string>[])}::jsonb)`;
        const byIdx = new Map(rows.map((r) => [r.idx, r.id]));
        return items.map((_, i) => (byIdx.get(i) ?? null) as string | null);
      },
      { maxBatch: 200, maxInFlight: 4 },
    );
  }

  async accept(w: IncomingWebhook): Promise<IntakeAnswer> {
    const refuse = (reason: Exclude<IntakeAnswer, { ok: true }>['reason']): IntakeAnswer => {
      smsWebhookSignatureFailures.inc({ provider: w.provider, reason });
      return { ok: false, reason };
    };
    const orgId = w.orgId.toLowerCase();
    if (!UUID.test(orgId)) return refuse('unknown_clinic');
    const chain = await this.chains.load(orgId);
    if (!chain) return refuse('unknown_clinic');
    const req: WebhookRequest = { url: w.url, headers: w.headers, rawBody: w.rawBody };

    let candidates: ChainLink[];
    if (w.provider === 'twilio') {
      // The one field read before verification, and only to choose the key.
      const sid = new URLSearchParams(w.rawBody).get('AccountSid');
      candidates = chain.links.filter((l) => l.kind === 'twilio' && sid !== null && l.provider.accountKey === `twilio:${sid}`);
      if (candidates.length === 0) return refuse('no_link');
    } else if (w.provider === 'telnyx') {
      candidates = chain.links.filter((l) => l.kind === 'telnyx' && l.settings.webhookPublicKey);
      if (candidates.length === 0) return refuse(chain.links.some((l) => l.kind === 'telnyx') ? 'no_key' : 'no_link');
    } else {
      // A relay link posts receipts only when it says so (`receipts: true`); each link has its own signing secret.
      candidates = chain.links.filter((l) => l.kind === 'relay' && l.provider.capabilities.receipts === 'webhook');
      if (candidates.length === 0) return refuse('no_link');
    }
    let link: ChainLink | undefined;
    let refusal: WebhookRefusal = 'mismatch';
    for (const l of candidates) {
      const verdict = (await l.provider.webhooks?.verify(req)) ?? { ok: false, reason: 'mismatch' };
      if (verdict.ok) {
        link = l;
        break;
      }
      refusal = verdict.reason;
    }
    if (!link) return refuse(refusal);

    const event = w.probe ? null : (link.provider.webhooks?.parse(req, w.hint) ?? null);
    const signature =
      w.provider === 'twilio'
        ? w.headers['x-twilio-signature']
        : w.provider === 'telnyx'
          ? w.headers['telnyx-signature-ed25519']
          : w.headers['x-relay-signature'];
    const sigSha = createHash('sha256')
      .update(signature ?? '')
      .digest('hex');
    // A signed request we cannot read is kept (and acknowledged, so it is not retried forever) as 'other'.
    const kind: StoredWebhook['kind'] = w.probe ? 'probe' : (event?.kind ?? 'other');
    const eventKey = event?.key ?? `sig:${sigSha}`;
    const messageId =
      event?.kind === 'receipt'
        ? event.receipt.providerMessageId
        : event?.kind === 'inbound'
          ? event.inbound.providerMessageId
          : (event?.messageId ?? null);
    const id = await this.stores.call({
      org: orgId,
      provider: link.kind,
      account: link.provider.accountKey,
      kind,
      key: eventKey,
      messageId: messageId ?? null,
      sig: sigSha,
      url: w.url,
      raw: w.rawBody,
    });
    if (!id) return refuse('replay');
    smsWebhookEvents.inc({ provider: link.kind, kind });
    return {
      ok: true,
      link,
      event,
      stored: {
        id: String(id),
        orgId,
        provider: link.kind,
        accountKey: link.provider.accountKey,
        kind,
        eventKey,
        url: w.url,
        rawBody: w.rawBody,
      },
    };
  }
}
