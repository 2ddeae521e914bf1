/**
 * Shared vocabulary of the SMS engine. Provider adapters translate their SDK's
 * results and exceptions into these shapes so that the engine never has to know
 * which carrier it is talking to.
 */

export type ProviderKind = 'twilio' | 'telnyx' | 'sandbox' | 'sns' | 'relay';

/**
 * The SDKs' own request timeout is the engine's per-attempt timeout plus this:
 * a backstop, so a request the engine stopped waiting for still ends soon after.
 */
export const SDK_TIMEOUT_MARGIN_MS = 1000;

/**
 * How the engine reacts to a failed attempt:
 * - transient:  nothing was accepted; retry the same provider with backoff.
 * - provider:   this provider/account/sender cannot send; fail over to the next one.
 * - recipient:  the recipient cannot receive (invalid, landline, opted out); stop.
 * - ambiguous:  the request may have been accepted (timeout after sending); reconcile
 *               before any resend, never blindly fail over.
 */
export type ErrorClass = 'transient' | 'provider' | 'recipient' | 'ambiguous';

export interface SendRequest {
  to: string; // E.164
  from: string; // E.164 sender from this provider's pool
  body: string;
  /** Stable per outbox row; sent as an idempotency header where the provider accepts one. */
  idempotencyKey: string;
  /** Aborts the in-flight HTTP request when the per-attempt timeout fires. */
  signal?: AbortSignal;
  /** The outbox row's id and clinic, for providers whose wire names them (the relay). */
  messageId?: string;
  orgId?: string;
  /** The message's delivery run (1 on the first); in-run retries of a transient error repeat it. */
  attempt?: number;
  /**
   * Where the provider should report delivery (Twilio StatusCallback, Telnyx
   * webhook_url); named only when PUBLIC_URL is set. Stable per outbox row, so
   * a resend under the same idempotency key has the same body.
   */
  statusCallbackUrl?: string;
}

export interface SendAccepted {
  providerMessageId: string;
  /** Provider's own status word at acceptance (queued, accepted, sent...). */
  status: string;
}

/** A message found at the provider while reconciling an ambiguous attempt, or looked up by id. */
export interface FoundMessage {
  providerMessageId: string;
  /** The provider's own status word. */
  status: string;
  /** That status in our words, when it says something about delivery (lookups of lost receipts). */
  delivery?: DeliveryState | undefined;
  /** The provider's asynchronous error code, when it failed. */
  code?: string | undefined;
}

export interface ReconcileQuery {
  to: string;
  from: string;
  body: string;
  /** Only messages created at or after this instant count. */
  since: Date;
}

/** How one provider code is handled; `meaning` is what docs/sms.md shows for it. */
export interface CodeRule {
  errorClass: ErrorClass;
  /** The code means the recipient replied STOP: record an opt-out, never fail over. */
  optOut?: true;
  meaning: string;
}

/** A provider's own code table, keyed by its code as a string. */
export type CodeTable = Readonly<Record<string, CodeRule>>;

/** What a provider offers beyond sending, declared so that callers need not branch on its kind. */
export interface ProviderCapabilities {
  /** Whether the provider can report delivery to us (signed webhooks per message), or never does. */
  receipts: 'webhook' | 'none';
  /**
   * A resend under the same idempotency key is answered from the provider's
   * record instead of sending again, so an ambiguous attempt may be retried on
   * the same provider without a lookup.
   */
  idempotentSend: boolean;
  /**
   * The provider picks the sender itself when the link has no sender numbers
   * (an SNS account's default route, a relay that owns its numbers), so an
   * empty pool is no reason to skip the link.
   */
  ownSender?: boolean;
}

/** An HTTP request as a provider delivered it, for signature checks and parsing. */
export interface WebhookRequest {
  url: string;
  headers: Readonly<Record<string, string | undefined>>;
  rawBody: string;
}

/** What became of an accepted message, in our words; only ever moves forward (docs/sms.md). */
export type DeliveryState = 'sent' | 'delivered' | 'undelivered' | 'failed';

/** A delivery receipt for one accepted attempt, in our words; `code` is looked up in the adapter's `codes`. */
export interface DeliveryReceipt {
  providerMessageId: string;
  status: DeliveryState;
  code?: string | undefined;
  /** Our outbox row, when the callback URL we named on the send carried it. */
  outboxRef?: string | undefined;
}

/** A message a patient sent to one of the clinic's numbers. */
export interface InboundMessage {
  providerMessageId: string;
  from: string;
  to: string;
  text: string;
  /**
   * Who answers STOP / START / HELP on this number: 'provider' when the
   * provider replies to keywords itself (Twilio's keyword handling, a Telnyx
   * autoresponse), 'us' when it does not and the reply is ours to send.
   */
  keywordReplies: 'provider' | 'us';
}

/** One verified webhook request, parsed. `key` identifies the event for idempotent processing. */
export type WebhookEvent =
  | { kind: 'receipt'; key: string; receipt: DeliveryReceipt }
  | { kind: 'inbound'; key: string; inbound: InboundMessage }
  | { kind: 'other'; key: string; messageId?: string | undefined };

/** A signature check's answer; the reason is what the refusal metric counts. */
export type WebhookVerdict = { ok: true } | { ok: false; reason: 'missing' | 'malformed' | 'mismatch' | 'stale' };

/**
 * The webhook side of an adapter. `parse` runs only on a request whose
 * signature verified; `hint` says which route it came in on.
 */
export interface ProviderWebhooks {
  verify(req: WebhookRequest): Promise<WebhookVerdict>;
  parse(req: WebhookRequest, hint: 'receipt' | 'inbound'): WebhookEvent | null;
  /** How an answer to an inbound text is sent: in the webhook's response (TwiML), or as a message of its own. */
  replies: 'response' | 'send';
  /**
   * A request to `url` signed exactly as the provider would sign it, for our
   * own reachability probe; absent when only the provider holds the signing
   * key (Telnyx signs with its private key).
   */
  probeRequest?(url: string): { headers: Record<string, string>; body: string };
}

/** A cheap health check that sends nothing: can the provider's API be reached with this account? */
export interface ProbeResult {
  /** An HTTP answer came back from the provider's API, whatever it said (GET /api/sms/diagnostics). */
  reachable: boolean;
  /**
   * The account answered as able to send (an authenticated read succeeded and the
   * account or profile is enabled). Absent from a reachability-only probe, which
   * the health monitor then judges by `reachable`.
   */
  ok?: boolean;
  latencyMs?: number;
  /** Why not ok, classified by the adapter's own `classify` (a timeout is ambiguous). */
  error?: ProviderSendError;
}

export interface ProbeOptions {
  /** Default 2000 ms. */
  timeoutMs?: number;
}

/**
 * One provider account, as the engine sees it. Each adapter owns its wire:
 * the SDK calls, its own code table, and the classification of its own errors
 * into the four classes (the generic rules for HTTP statuses and network
 * errors are in classify.ts).
 */
export interface SmsProvider {
  readonly kind: ProviderKind;
  /**
   * Identifies the credential set (e.g. `twilio:AC123…`), so circuit breakers are
   * per clinic account and one clinic's bad key never trips another's breaker.
   */
  readonly accountKey: string;
  readonly capabilities: ProviderCapabilities;
  /** This provider's codes: API errors on send and, for receipts, asynchronous delivery errors. */
  readonly codes: CodeTable;
  /** Rejects only with a ProviderSendError. */
  send(req: SendRequest): Promise<SendAccepted>;
  /** Turns anything this provider's SDK throws into a ProviderSendError. */
  classify(err: unknown): ProviderSendError;
  /**
   * Looks for a message that an earlier, ambiguous attempt may have created.
   * Returns null when none is found. Providers without a lookup API leave this
   * undefined and the engine treats the outcome as unknown.
   */
  findRecent?(q: ReconcileQuery): Promise<FoundMessage | null>;
  /** Looks one message up by the id the provider gave it (reconciling a receipt that never came). */
  lookup?(providerMessageId: string): Promise<FoundMessage | null>;
  /** Never rejects: every failure is in the result. */
  probe?(opts?: ProbeOptions): Promise<ProbeResult>;
  webhooks?: ProviderWebhooks;
}

/** The one error type adapters throw; `cause` keeps the SDK's original error. */
export class ProviderSendError extends Error {
  readonly errorClass: ErrorClass;
  readonly provider: ProviderKind;
  /** Provider error code as a string (Twilio 21211, Telnyx "40310"), or a network code (ECONNREFUSED, TIMEOUT). */
  readonly code: string | undefined;
  readonly httpStatus: number | undefined;
  /** True when the error means the recipient replied STOP (Twilio 21610, Telnyx 40300). */
  readonly optOut: boolean;
  /**
   * Set when we stopped waiting but the request itself could not be cancelled
   * (twilio-node takes no AbortSignal): how that request eventually ended. An
   * answer that arrives a little late is still an answer; settling on it beats
   * guessing with a lookup the provider may not be able to serve yet.
   */
  readonly lateAnswer: Promise<SendAccepted | ProviderSendError> | undefined;

  constructor(opts: {
    message: string;
    errorClass: ErrorClass;
    provider: ProviderKind;
    code?: string | undefined;
    httpStatus?: number | undefined;
    optOut?: boolean;
    cause?: unknown;
    lateAnswer?: Promise<SendAccepted | ProviderSendError>;
  }) {
    super(opts.message, { cause: opts.cause });
    this.name = 'ProviderSendError';
    this.errorClass = opts.errorClass;
    this.provider = opts.provider;
    this.code = opts.code;
    this.httpStatus = opts.httpStatus;
    this.optOut = opts.optOut ?? false;
    this.lateAnswer = opts.lateAnswer;
  }
}
