/**
 * Texts patients send to a clinic's numbers, on any provider: STOP, START and
 * HELP (and their synonyms) act on the clinic's one opt-out registry at once,
 * for every provider and every process (the gate reads it before each run);
 * then answers to reminders (C / R / X, src/sms/replies.ts); anything else
 * goes to the clinic's inbox for the front desk.
 *
 * Exactly one answer reaches the patient: when the provider answers keywords
 * itself (Twilio's keyword handling or Advanced Opt-Out; a Telnyx messaging
 * profile's autoresponse, which marks the event) we say nothing; otherwise the
 * answer is ours (TwiML in the webhook's response for Twilio, a message of its
 * own for Telnyx). An answer to a reminder is always ours, by the same path;
 * a plain message gets "call us at ..." at most once a day.
 */
import type { Logger } from 'pino';
import pTimeout from 'p-timeout';
import type { Sql } from 'postgres';
import { withOrg } from '../db/pool.js';
import { phoneForLog, scrubPhones } from '../log.js';
import { smsInbound } from '../metrics.js';
import type { ChainLink, ChainLoader } from './config.js';
import { handleReply, type ReplyOutcome, type ReplyResult } from './replies.js';
import { oneWordOf, renderKeywordReply, type KeywordAction } from './texts.js';
import type { InboundMessage } from './types.js';
import type { StoredWebhook } from './webhooks.js';

const OPT_OUT = ['STOP', 'STOPALL', 'UNSUBSCRIBE', 'CANCEL', 'END', 'QUIT', 'OPTOUT', 'REVOKE'];
const OPT_IN = ['START', 'UNSTOP', 'YES'];
const HELP = ['HELP', 'INFO'];

const KEYWORDS: ReadonlyMap<string, KeywordAction> = new Map([
  ...OPT_OUT.map((k) => [k, 'opt_out'] as const),
  ...OPT_IN.map((k) => [k, 'opt_in'] as const),
  ...HELP.map((k) => [k, 'help'] as const),
]);

/** Every keyword and what it does, for docs and tests. */
export const KEYWORD_LIST: ReadonlyArray<{ keyword: string; action: KeywordAction }> = [...KEYWORDS].map(([keyword, action]) => ({
  keyword,
  action,
}));

/**
 * The keyword a text is, if it is one: a single word, case-insensitive, with
 * punctuation around it ignored ("Stop.", " stop! ", "STOP"). "Stop please"
 * is not a keyword: it goes to the inbox.
 */
export function keywordOf(text: string): { keyword: string; action: KeywordAction } | null {
  const word = oneWordOf(text);
  if (!word) return null;
  const action = KEYWORDS.get(word);
  return action ? { keyword: word, action } : null;
}

export interface InboundResult {
  outcome: 'opt_out' | 'opt_in' | 'help' | 'duplicate' | ReplyOutcome;
  /** Our answer to the patient, when it is ours to give. */
  reply: string | null;
}

export class InboundProcessor {
  constructor(
    /** clinic_worker: the opt-out registry and the inbox are written by the worker role. */
    private readonly sql: Sql,
    private readonly chains: ChainLoader,
    private readonly log: Logger,
  ) {}

  /**
   * Acts on one stored inbound text, once per provider message however often
   * it is delivered. Answers what was done and the reply that is ours to send
   * (the caller sends it: in the TwiML response, or through `sendReply`).
   */
  async handle(stored: StoredWebhook, m: InboundMessage): Promise<InboundResult> {
    const kw = keywordOf(m.text);
    const result = await withOrg(this.sql, stored.orgId, async (tx) => {
      // One at a time per provider message: a second delivery waits, then sees the first.
      await tx`SELECT pg_advisory_xact_lock(hashtextextended(${`sms-inbound|${stored.orgId}|${stored.provider}|${stored.eventKey}`}, 0))`;
      const [seen] = await tx<{ n: number }[]>`
        SELECT count(*)::int AS n FROM sms_webhook_events
         WHERE org_id = ${stored.orgId} AND provider = ${stored.provider} AND event_key = ${stored.eventKey}
           AND kind = 'inbound' AND processed_at IS NOT NULL`;
      if (seen!.n > 0) {
        await tx`SELECT sms_webhook_event_done(${stored.orgId}::uuid, ${stored.id}::bigint, 'duplicate')`;
        return { outcome: 'duplicate' as const, clinic: null, replied: null };
      }
      const source = `inbound:${stored.provider}:${kw?.keyword ?? ''}`;
      let outcome: InboundResult['outcome'];
      let replied: ReplyResult | null = null;
      if (kw?.action === 'opt_out') {
        await tx`INSERT INTO sms_opt_outs (org_id, phone, source) VALUES (${stored.orgId}, ${m.from}, ${source}) ON CONFLICT DO NOTHING`;
        outcome = 'opt_out';
      } else if (kw?.action === 'opt_in') {
        // The registry's history trigger records where the opt-in came from.
        await tx`SELECT set_config('app.sms_opt_source', ${source}, true)`;
        await tx`DELETE FROM sms_opt_outs WHERE org_id = ${stored.orgId} AND phone = ${m.from}`;
        outcome = 'opt_in';
      } else if (kw?.action === 'help') {
        outcome = 'help';
      } else {
        // Answers to reminders (C / R / X), else the inbox (src/sms/replies.ts).
        replied = await handleReply(tx, {
          orgId: stored.orgId,
          from: m.from,
          text: m.text,
          provider: stored.provider,
          providerMessageId: m.providerMessageId,
        });
        outcome = replied.outcome;
      }
      await tx`SELECT sms_webhook_event_done(${stored.orgId}::uuid, ${stored.id}::bigint, ${outcome})`;
      const clinic = kw
        ? ((
            await tx<{ name: string; contact_phone: string | null }[]>`
              SELECT o.name, s.contact_phone FROM orgs o LEFT JOIN sms_settings s ON s.org_id = o.id WHERE o.id = ${stored.orgId}`
          )[0] ?? null)
        : null;
      return { outcome, clinic, replied };
    });
    const ours = kw !== null && result.outcome !== 'duplicate' && m.keywordReplies === 'us';
    // A reply to a reminder is always ours: no provider answers C, R or X.
    const reply =
      ours && kw
        ? renderKeywordReply(kw.action, result.clinic?.name ?? '', result.clinic?.contact_phone ?? null)
        : (result.replied?.reply ?? null);
    const action = result.outcome === 'inbox' ? 'message' : result.outcome;
    smsInbound.inc({
      provider: stored.provider,
      action,
      answered_by: reply ? 'us' : !kw || result.outcome === 'duplicate' ? 'none' : 'provider',
    });
    this.log.info(
      {
        orgId: stored.orgId,
        provider: stored.provider,
        from: phoneForLog(m.from),
        outcome: result.outcome,
        answeredBy: reply ? 'us' : kw ? 'provider' : 'none',
      },
      'sms inbound',
    );
    return { outcome: result.outcome, reply };
  }

  /** Sends our answer as a message of its own (providers whose webhooks take no reply), from the number the patient texted. */
  async sendReply(link: ChainLink, stored: StoredWebhook, m: InboundMessage, text: string): Promise<void> {
    try {
      await pTimeout(
        link.provider.send({
          to: m.from,
          from: m.to,
          body: text,
          idempotencyKey: `reply-${stored.provider}-${stored.eventKey}`.slice(0, 200),
        }),
        { milliseconds: 10_000 },
      );
    } catch (err) {
      this.log.warn(
        { err: scrubPhones((err as Error).message), orgId: stored.orgId, provider: stored.provider },
        'sms keyword reply could not be sent',
      );
    }
  }

  /** An inbound event the request path stored but did not finish (the sweep). No reply then: its moment has passed. */
  async processStored(stored: StoredWebhook): Promise<void> {
    const chain = await this.chains.load(stored.orgId);
    const link = chain?.links.find((l) => l.provider.accountKey === stored.accountKey);
    const event = link?.provider.webhooks?.parse({ url: stored.url, headers: {}, rawBody: stored.rawBody }, 'inbound');
    if (event?.kind !== 'inbound') {
      await this.sql`SELECT sms_webhook_event_done(${stored.orgId}::uuid, ${stored.id}::bigint, 'ignored')`;
      return;
    }
    await this.handle(stored, event.inbound);
  }
}
