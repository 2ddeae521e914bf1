/**
 * The provider adapters, in one list: a new provider is a new file here plus
 * one entry below. Everything that needs "all codes" or "a client for these
 * credentials" (the chain loader, docs/sms.md's code table) reads it from here.
 */
import { NETWORK_CODES } from '../classify.js';
import type { CodeRule, CodeTable, ProviderKind, SmsProvider } from '../types.js';
import { RELAY_CODES, createRelayProvider } from './relay.js';
import { SNS_CODES, createSnsProvider } from './sns.js';
import { TELNYX_CODES, createTelnyxProvider } from './telnyx.js';
import { TWILIO_CODES, createTwilioProvider } from './twilio.js';

/** Decrypted credentials of one chain link. */
export type Credentials =
  | { kind: 'twilio'; accountSid: string; authToken: string }
  | { kind: 'telnyx'; apiKey: string; messagingProfileId?: string | undefined }
  | { kind: 'sandbox' }
  | { kind: 'sns'; accessKeyId: string; secretAccessKey: string; region: string; senderId?: string | undefined }
  | { kind: 'relay'; url: string; signingSecret: string; receipts?: boolean | undefined };

/** Per-process settings every adapter gets: its timeouts and, for local testing, its API base URL. */
export interface AdapterSettings {
  timeoutMs: number;
  sdkTimeoutMarginMs: number;
  baseUrls: { twilio?: string | undefined; telnyx?: string | undefined; sns?: string | undefined };
  /** The clinic the link belongs to (the relay names it on the wire). */
  orgId: string;
  /** TELNYX_WEBHOOK_TOLERANCE_SECONDS. */
  telnyxWebhookToleranceSeconds?: number;
}

/** A link's settings that are not secret (sms_providers.link_settings; returned by GET .../sms). */
export interface LinkSettings {
  /** Telnyx: the account's webhook signing key, base64 of 32 raw bytes. */
  webhookPublicKey?: string | undefined;
  /** Twilio: who answers STOP / START / HELP on the account's numbers. */
  keywordReplies?: 'twilio' | 'ours' | undefined;
  /** Relay: its receiver posts delivery receipts (the status figures count what still waits for one). */
  receipts?: boolean | undefined;
}

/**
 * The provider kinds that report delivery by webhook. Their accepted
 * messages wait for a receipt (and are looked up once when it does not come);
 * any other kind's accepted message is final as accepted.
 */
export const RECEIPT_KINDS: readonly ProviderKind[] = ['twilio', 'telnyx'];

/** Each adapter's own code table, by the name its codes are namespaced under; `net` holds the socket-level codes. */
export const CODE_TABLES: Readonly<Record<'twilio' | 'telnyx' | 'sns' | 'relay' | 'net', CodeTable>> = {
  twilio: TWILIO_CODES,
  telnyx: TELNYX_CODES,
  sns: SNS_CODES,
  relay: RELAY_CODES,
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
    case 'sns':
      return createSnsProvider({
        accessKeyId: creds.accessKeyId,
        secretAccessKey: creds.secretAccessKey,
        region: creds.region,
        senderId: creds.senderId,
        endpoint: s.baseUrls.sns,
        ...timing,
      });
    case 'relay':
      return createRelayProvider({
        url: creds.url,
        signingSecret: creds.signingSecret,
        receipts: creds.receipts === true,
        orgId: s.orgId,
        ...timing,
      });
  }
}
