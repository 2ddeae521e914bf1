import client from 'prom-client';

/** One registry for the process; /metrics exposes it. Labels never carry patient data. */
export const registry = new client.Registry();
client.collectDefaultMetrics({ register: registry });

export const httpDuration = new client.Histogram({
  name: 'http_request_duration_seconds',
  help: 'HTTP request latency by route and status',
  labelNames: ['method', 'route', 'status'] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  registers: [registry],
});

export const toolCalls = new client.Counter({
  name: 'tool_calls_total',
  help: 'Voice tool calls by tool and result (ok, refused, error, crash)',
  labelNames: ['tool', 'result'] as const,
  registers: [registry],
});

export const toolDuration = new client.Histogram({
  name: 'tool_call_duration_seconds',
  help: 'Voice tool call latency by tool',
  labelNames: ['tool'] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 5],
  registers: [registry],
});

export const authFailures = new client.Counter({
  name: 'auth_failures_total',
  help: 'Rejected requests by layer (jwt, request, database, signature) and reason',
  labelNames: ['layer', 'reason'] as const,
  registers: [registry],
});

export const smsAttempts = new client.Counter({
  name: 'sms_attempts_total',
  help: 'Provider send attempts by provider, outcome and error class',
  labelNames: ['provider', 'outcome', 'error_class'] as const,
  registers: [registry],
});

export const smsAttemptDuration = new client.Histogram({
  name: 'sms_attempt_duration_seconds',
  help: 'Provider send attempt latency',
  labelNames: ['provider'] as const,
  buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5],
  registers: [registry],
});

export const smsFinal = new client.Counter({
  name: 'sms_messages_total',
  help: 'Confirmation messages by final status (sent, failed, cancelled, expired)',
  labelNames: ['status', 'reason'] as const,
  registers: [registry],
});

export const smsFailovers = new client.Counter({
  name: 'sms_failovers_total',
  help: 'Messages that left one provider for the next, by from/to provider and cause',
  labelNames: ['from', 'to', 'cause'] as const,
  registers: [registry],
});

export const breakerState = new client.Gauge({
  name: 'sms_breaker_open',
  help: "1 while the circuit breaker of a clinic's provider account is open or half-open",
  labelNames: ['org', 'provider'] as const,
  registers: [registry],
});

export const healthProbeDuration = new client.Histogram({
  name: 'sms_health_probe_duration_seconds',
  help: 'Provider account health probe latency, by provider kind (probes this process made)',
  labelNames: ['provider'] as const,
  buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5],
  registers: [registry],
});

export const healthProbes = new client.Counter({
  name: 'sms_health_probes_total',
  help: 'Provider account health probes this process made, by provider kind, result (ok, failed) and error class',
  labelNames: ['provider', 'result', 'error_class'] as const,
  registers: [registry],
});

export const healthAccountsDown = new client.Gauge({
  name: 'sms_health_accounts_down',
  help: 'Provider accounts a fresh shared probe found down (every process reports the same), by provider kind',
  labelNames: ['provider'] as const,
  registers: [registry],
});

export const outboxBacklog = new client.Gauge({
  name: 'sms_outbox_due',
  help: 'Outbox rows due for sending at the last poll',
  registers: [registry],
});

export const secretChecks = new client.Counter({
  name: 'oauth_secret_checks_total',
  help: 'scrypt checks of OAuth client secrets (unknown client ids and throttled requests cost none)',
  registers: [registry],
});

export const tokenThrottled = new client.Counter({
  name: 'oauth_throttled_total',
  help: 'Token requests refused by the failed-attempt throttle, by what ran out (source, client)',
  labelNames: ['by'] as const,
  registers: [registry],
});

export const smsReceipts = new client.Counter({
  name: 'sms_receipts_total',
  help: 'Delivery receipts (webhooks and lookups) by provider, the state they report and what came of them (applied, duplicate, stale, unmatched, deferred)',
  labelNames: ['provider', 'state', 'outcome'] as const,
  registers: [registry],
});

export const smsAsyncFailovers = new client.Counter({
  name: 'sms_async_failovers_total',
  help: 'Confirmations sent again elsewhere after the first provider accepted them: a failure receipt (cause receipt) or no evidence within SMS_AMBIGUOUS_MAX_MS (cause ambiguous_timeout), by the provider left',
  labelNames: ['from', 'cause'] as const,
  registers: [registry],
});

export const smsDuplicateDeliveries = new client.Counter({
  name: 'sms_duplicate_deliveries_total',
  help: 'Confirmations delivered twice (both attempts have a delivered receipt), by the provider of the second',
  labelNames: ['provider'] as const,
  registers: [registry],
});

export const smsWebhookSignatureFailures = new client.Counter({
  name: 'sms_webhook_signature_failures_total',
  help: 'Provider webhooks refused with 403 before anything was done, by provider and reason (missing, malformed, mismatch, stale, replay, unknown_clinic, no_link, no_key)',
  labelNames: ['provider', 'reason'] as const,
  registers: [registry],
});

export const smsWebhookEvents = new client.Counter({
  name: 'sms_webhook_events_total',
  help: 'Signed provider webhooks stored, by provider and kind (receipt, inbound, probe, other)',
  labelNames: ['provider', 'kind'] as const,
  registers: [registry],
});

export const smsInbound = new client.Counter({
  name: 'sms_inbound_total',
  help: 'Inbound texts by provider and what they were (opt_out, opt_in, help, message, duplicate), and who answered (provider, us, none)',
  labelNames: ['provider', 'action', 'answered_by'] as const,
  registers: [registry],
});

export const smsReceiptLookups = new client.Counter({
  name: 'sms_receipt_lookups_total',
  help: 'Lookups of accepted messages whose receipt never came (after SMS_RECEIPT_TIMEOUT_MS), by provider and result (answered, no_news, not_found, failed)',
  labelNames: ['provider', 'result'] as const,
  registers: [registry],
});

/**
 * Outbox and opt-out totals, read from the database when /metrics is scraped
 * (at most once a second, whatever the number of scrapers), from the runtime
 * that registered the source. Totals only: the status API has them per clinic.
 */
export interface BacklogFigures {
  pending: number;
  sending: number;
  oldestDueAgeSeconds: number;
  deadLetters: number;
  optOuts: number;
}

/** The registered sources, latest last: a process normally has one runtime, a test file may have several. */
const backlogSources: Array<() => Promise<BacklogFigures>> = [];
let backlogRead: { at: number; source: () => Promise<BacklogFigures>; figures: Promise<BacklogFigures | null> } | undefined;

/** Registers where the backlog gauges read from; returns the function that unregisters it. */
export function setBacklogSource(source: () => Promise<BacklogFigures>): () => void {
  backlogSources.push(source);
  return () => {
    const i = backlogSources.lastIndexOf(source);
    if (i >= 0) backlogSources.splice(i, 1);
  };
}

function backlog(): Promise<BacklogFigures | null> {
  const source = backlogSources[backlogSources.length - 1];
  if (!source) return Promise.resolve(null);
  if (!backlogRead || backlogRead.source !== source || Date.now() - backlogRead.at > 1000) {
    backlogRead = { at: Date.now(), source, figures: source().catch(() => null) };
  }
  return backlogRead.figures;
}

export const outboxDepth = new client.Gauge({
  name: 'sms_outbox_depth',
  help: 'Outbox messages waiting for a run (pending) or in one (sending), across clinics',
  labelNames: ['status'] as const,
  registers: [registry],
  async collect() {
    const b = await backlog();
    if (b) {
      this.set({ status: 'pending' }, b.pending);
      this.set({ status: 'sending' }, b.sending);
    }
  },
});

export const outboxOldestDue = new client.Gauge({
  name: 'sms_outbox_oldest_due_seconds',
  help: 'How long the oldest due outbox message has been waiting for a worker (0 when none is due)',
  registers: [registry],
  async collect() {
    const b = await backlog();
    if (b) this.set(b.oldestDueAgeSeconds);
  },
});

export const deadLetters = new client.Gauge({
  name: 'sms_dead_letters',
  help: 'Dead letters (failed outbox messages) waiting for an operator, across clinics',
  registers: [registry],
  async collect() {
    const b = await backlog();
    if (b) this.set(b.deadLetters);
  },
});

export const optOutsTotal = new client.Gauge({
  name: 'sms_opt_outs',
  help: "Phones on the clinics' opt-out registries, across clinics",
  registers: [registry],
  async collect() {
    const b = await backlog();
    if (b) this.set(b.optOuts);
  },
});
