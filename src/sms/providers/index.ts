/**
 * The provider adapters, in one list: a new provider is a new file here plus
 * one entry below. Everything that needs "all codes" or "a client for these
 * credentials" (the chain loader, docs/sms.md's code table) reads it from here.
 */
import { NETWORK_CODES } from '../classify.js';
import type { CodeRule, CodeTable, ProviderKind, SmsProvider } from '../types.js';
import { TELNYX_CODES, createTelnyxProvider } from './telnyx.js';
import { TWILIO_CODES, createTwilioProvider } from './twilio.js';

/** Decrypted credentials of one chain link. */
export type Credentials =
  | { kind: 'twilio'; accountSid: string; authToken: string }
  | { kind: 'telnyx'; apiKey: string; messagingProfileId?: string | undefined }
  | { kind: 'sandbox' };

/** Per-process settings every adapter gets: its timeouts and, for local testing, its API base URL. */
export interface AdapterSettings {
  timeoutMs: number;
  sdkTimeoutMarginMs: number;
  baseUrls: { twilio?: string | undefined; telnyx?: string | undefined };
  /** TELNYX_WEBHOOK_TOLERANCE_SECONDS. */
  telnyxWebhookToleranceSeconds?: number;
}

/** A link's settings that are not secret (sms_providers.link_settings; returned by GET .../sms). */
export interface LinkSettings {
  /** Telnyx: the account's webhook signing key, base64 of 32 raw bytes. */
  webhookPublicKey?: string | undefined;
  /** Twilio: who answers STOP / START / HELP on the account's numbers. */
  keywordReplies?: 'twilio' | 'ours' | undefined;
}

/**
 * The provider kinds that report delivery by webhook. Their accepted
 * messages wait for a receipt (and are looked up once when it does not come);
 * any other kind's accepted message is final as accepted.
 */
export const RECEIPT_KINDS: readonly ProviderKind[] = ['twilio', 'telnyx'];

/** Each adapter's own code table, by the name its codes are namespaced under; `net` holds the socket-level codes. */
export const CODE_TABLES: Readonly<Record<'twilio' | 'telnyx' | 'net', CodeTable>> = {
  twilio: TWILIO_CODES,
  telnyx: TELNYX_CODES,
  net: NETWORK_CODES,
};

/** Every code rule, keyed `provider:code`, for tests and docs that look across providers. */
export const CODE_TABLE: Readonly<Record<string, CodeRule>> = Object.fromEntries(
  Object.entries(CODE_TABLES).flatMap(([ns, table]) => Object.entries(table).map(([code, rule]) => [`${ns}:${code}`, rule])),
);

/** A client for one link's credentials (sandbox links are served by the loader's own sandbox). */
export function createProvider(creds: Exclude<Credentials, { kind: 'sandbox' }>, s: AdapterSettings, link: LinkSettings = {}): SmsProvider {
  const timing = { timeoutMs: s.timeoutMs, sdkTimeoutMarginMs: s.sdkTimeoutMarginMs };
  switch (creds.kind) {
    case 'twilio':
      return createTwilioProvider({
        accountSid: creds.accountSid,
        authToken: creds.authToken,
        ...timing,
        ...(link.keywordReplies ? { keywordReplies: link.keywordReplies } : {}),
        ...(s.baseUrls.twilio ? { baseUrl: s.baseUrls.twilio } : {}),
      });
    case 'telnyx':
      return createTelnyxProvider({
        apiKey: creds.apiKey,
        ...timing,
        ...(creds.messagingProfileId ? { messagingProfileId: creds.messagingProfileId } : {}),
        ...(link.webhookPublicKey ? { webhookPublicKey: link.webhookPublicKey } : {}),
        ...(s.telnyxWebhookToleranceSeconds ? { webhookToleranceSeconds: s.telnyxWebhookToleranceSeconds } : {}),
        ...(s.baseUrls.telnyx ? { baseUrl: s.baseUrls.telnyx } : {}),
      });
  }
}
