import { Router, type Request } from 'express';
import twilio from 'twilio';
import { z } from 'zod';
import type { AppDeps } from '../deps.js';
import { AppError } from '../errors.js';
import { scrubPhones } from '../log.js';
import { publicRequestUrl, type IncomingWebhook } from '../sms/webhooks.js';
import type { RouteRegistry } from './registry.js';

/**
 * Provider webhooks: Twilio status callbacks and inbound texts, Telnyx
 * messaging events. Each route's first act is the signature check
 * (WebhookIntake): a forged, unsigned, stale or replayed request gets 403 and
 * nothing is stored or done. A verified request is stored before anything
 * acts on it; a receipt is answered at once and applied after the answer
 * (providers time out fast: Telnyx wants 2xx within 2 s).
 */

/** Marks our own signed probe (GET /api/sms/diagnostics?probe=webhooks): stored, never acted on. */
export const PROBE_HEADER = 'x-clinic-tools-probe';

const forbidden = () => new AppError(403, 'forbidden', 'The webhook signature is missing, wrong, stale or was already used.');

const twilioCommon = {
  MessageSid: z.string().describe('SM… of the message'),
  AccountSid: z
    .string()
    .describe(
      "Chooses which of the clinic's Twilio links must have signed the request; nothing else is read before the signature verified",
    ),
  From: z.string(),
  To: z.string(),
};

const twilioStatus = z
  .object({
    ...twilioCommon,
    MessageStatus: z.enum(['queued', 'sending', 'sent', 'delivered', 'undelivered', 'failed', 'read', 'accepted', 'scheduled', 'canceled']),
    ErrorCode: z.string().optional().describe("Twilio's asynchronous error code (30003–30008, 30032, 30034 …) on undelivered / failed"),
  })
  .loose();

const twilioInbound = z
  .object({
    ...twilioCommon,
    Body: z.string(),
    OptOutType: z.enum(['STOP', 'START', 'HELP']).optional().describe('Present with a Messaging Service that uses Advanced Opt-Out'),
  })
  .loose();

const telnyxEvent = z
  .object({
    data: z
      .object({
        id: z.string().describe('The event id: a redelivery of one event carries the same id'),
        event_type: z.enum(['message.sent', 'message.finalized', 'message.received']).or(z.string()),
        payload: z.object({}).loose(),
      })
      .loose(),
  })
  .loose();

const EMPTY_TWIML = new twilio.twiml.MessagingResponse().toString();

function twiml(reply: string | null): string {
  if (!reply) return EMPTY_TWIML;
  const r = new twilio.twiml.MessagingResponse();
  r.message(reply);
  return r.toString();
}

export function webhooksRouter(deps: AppDeps, registry: RouteRegistry): Router {
  const router = Router();
  const tags = ['webhooks'];
  const { intake, receipts, inbound } = deps.sms;

  const incoming = (req: Request, provider: IncomingWebhook['provider'], hint: IncomingWebhook['hint']): IncomingWebhook => ({
    provider,
    orgId: String(req.params.orgId ?? ''),
    hint,
    url: publicRequestUrl(req, deps.cfg.PUBLIC_URL),
    headers: {
      'x-twilio-signature': req.get('x-twilio-signature'),
      'telnyx-signature-ed25519': req.get('telnyx-signature-ed25519'),
      'telnyx-timestamp': req.get('telnyx-timestamp'),
      'x-relay-signature': req.get('x-relay-signature'),
      'x-relay-timestamp': req.get('x-relay-timestamp'),
    },
    rawBody: Buffer.isBuffer(req.rawBody) ? req.rawBody.toString('utf8') : '',
    probe: req.get(PROBE_HEADER) === '1',
  });

  const responses = (ok: string) => ({
    200: { description: ok },
    403: {
      description:
        'forbidden: no signature, a wrong or stale one, one already used (a replay), an unknown clinic, or no such link or key. Nothing was stored or done.',
    },
    413: { description: 'body_too_large' },
  });

  registry.mount(
    router,
    {
      method: 'post',
      path: '/webhooks/twilio/:orgId/status',
      access: 'provider',
      tags,
      summary: 'Twilio status callbacks (delivery receipts) for one clinic',
      description:
        'Named as `StatusCallback` on every send when PUBLIC_URL is set (with `?m=<outbox id>`). Verified with X-Twilio-Signature ' +
        "under the auth token of the clinic's Twilio link whose AccountSid the body names, over PUBLIC_URL + path + query. Answered " +
        '`200 <Response/>` as soon as the event is stored; applied after the answer. Twilio has no timestamp: a replay is refused because ' +
        'its exact signature is already stored.',
      body: twilioStatus,
      bodyType: 'raw',
      rawContentType: 'application/x-www-form-urlencoded',
      bodyValidatedByHandler: true,
      responses: responses('Stored: `<Response/>` (text/xml).'),
    },
    async (req, res) => {
      const a = await intake.accept(incoming(req, 'twilio', 'receipt'));
      if (!a.ok) throw forbidden();
      res.status(200).type('text/xml').send(EMPTY_TWIML);
      void receipts.process(a.stored);
    },
  );

  registry.mount(
    router,
    {
      method: 'post',
      path: '/webhooks/twilio/:orgId/inbound',
      access: 'provider',
      tags,
      summary: 'Twilio inbound texts for one clinic: STOP / START / HELP, or a message for the inbox',
      description:
        'Set as the number\'s or Messaging Service\'s "A message comes in" webhook. Verified like the status callback. Answered ' +
        'with TwiML: empty `<Response/>` when Twilio answers keywords itself (the link\'s `keywordReplies: "twilio"`, the default, ' +
        'or `OptOutType` present), or `<Response><Message>…</Message></Response>` with our answer to STOP / START / HELP otherwise.',
      body: twilioInbound,
      bodyType: 'raw',
      rawContentType: 'application/x-www-form-urlencoded',
      bodyValidatedByHandler: true,
      responses: responses('TwiML (text/xml): `<Response/>`, or our one answer to a keyword.'),
    },
    async (req, res) => {
      const a = await intake.accept(incoming(req, 'twilio', 'inbound'));
      if (!a.ok) throw forbidden();
      let reply: string | null = null;
      if (a.event?.kind === 'inbound') {
        try {
          reply = (await inbound.handle(a.stored, a.event.inbound)).reply;
        } catch (err) {
          // Stored already: the sweep finishes it (without an answer, whose moment has passed).
          req.log.error({ err: scrubPhones((err as Error).message), eventId: a.stored.id }, 'sms inbound could not be processed yet');
        }
      } else {
        void receipts.process(a.stored);
      }
      res.status(200).type('text/xml').send(twiml(reply));
    },
  );

  registry.mount(
    router,
    {
      method: 'post',
      path: '/webhooks/telnyx/:orgId',
      access: 'provider',
      tags,
      summary: 'Telnyx messaging events for one clinic: message.sent, message.finalized, message.received',
      description:
        "Set as the messaging profile's webhook URL; every send also names it as `webhook_url` when PUBLIC_URL is set. Verified " +
        "with Ed25519 over `telnyx-timestamp|body` (header `telnyx-signature-ed25519`) under the `webhookPublicKey` of the clinic's " +
        'Telnyx link, within TELNYX_WEBHOOK_TOLERANCE_SECONDS. Answered `200` as soon as the event is stored; a redelivery (new ' +
        "signature, same event id) is processed idempotently. Our answer to a keyword, when the profile's autoresponse did not answer " +
        '(no `autoresponse_type`), is sent as a message of its own.',
      body: telnyxEvent,
      bodyType: 'raw',
      rawContentType: 'application/json',
      bodyValidatedByHandler: true,
      responses: responses('Stored: `{"received":true}`.'),
    },
    async (req, res) => {
      const a = await intake.accept(incoming(req, 'telnyx', 'receipt'));
      if (!a.ok) throw forbidden();
      res.status(200).json({ received: true });
      const ev = a.event;
      if (ev?.kind === 'inbound') {
        void (async () => {
          const r = await inbound.handle(a.stored, ev.inbound);
          if (r.reply) await inbound.sendReply(a.link, a.stored, ev.inbound, r.reply);
        })().catch((err: unknown) =>
          req.log.error({ err: scrubPhones((err as Error).message), eventId: a.stored.id }, 'sms inbound could not be processed yet'),
        );
      } else {
        void receipts.process(a.stored);
      }
    },
  );

  const relayReceipt = z.object({
    messageId: z.string().max(200).describe("The relay's message id, as it answered the send"),
    status: z.enum(['sent', 'delivered', 'undelivered', 'failed']),
    code: z
      .string()
      .max(64)
      .optional()
      .describe('A failure code from the relay contract (opted_out, invalid_recipient, …), classified like its 4xx answers'),
    at: z.string().optional(),
  });

  registry.mount(
    router,
    {
      method: 'post',
      path: '/webhooks/relay/:orgId',
      access: 'provider',
      tags,
      summary: "Delivery receipts from a clinic's HTTPS relay (links with `receipts: true`)",
      description:
        'Signed like our sends to the relay: `x-relay-signature` = lowercase hex HMAC-SHA256 over `${x-relay-timestamp}.${rawBody}` ' +
        "under the link's `signingSecret`, within 300 s. Applied through the same forward-only delivery states as the providers' " +
        'receipts; a redelivery of one state is a duplicate and changes nothing. See docs/sms.md, "HTTPS relay".',
      body: relayReceipt,
      bodyType: 'raw',
      rawContentType: 'application/json',
      bodyValidatedByHandler: true,
      responses: responses('Stored: `{"received":true}`.'),
    },
    async (req, res) => {
      const a = await intake.accept(incoming(req, 'relay', 'receipt'));
      if (!a.ok) throw forbidden();
      res.status(200).json({ received: true });
      void receipts.process(a.stored);
    },
  );

  return router;
}
