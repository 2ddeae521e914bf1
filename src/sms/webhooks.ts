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
import type { Request } from 'express';
import { OUTBOX_REF_PARAM } from './providers/refs.js';
import type { ProviderKind } from './types.js';

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
