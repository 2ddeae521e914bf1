/**
 * Patients' answers to reminders, on the inbound pipeline (src/sms/inbound.ts)
 * after STOP / START / HELP and before "everything else goes to the inbox":
 *
 *   C, 1, CONFIRM      confirms the appointment (appointments.confirmed_at)
 *   R, 2, RESCHEDULE   marks it "reschedule requested", puts it in the inbox
 *   X, 3               only where the clinic allows it: asks once ("Reply X
 *                      again to cancel ..."), and a second X within a day cancels
 *
 * Case and surrounding punctuation are ignored ("c.", " Confirm! "); a text of
 * more than one word is no keyword. CANCEL is never one of ours: carriers and
 * providers read it (like STOP, END, QUIT) as an opt-out, and YES as an opt-in.
 *
 * Which appointment: the phone's upcoming live appointment at this clinic that
 * the last reminder sent to it was about; else the soonest. Everything else
 * (no keyword, or no upcoming appointment) goes to the inbox and is answered
 * with "call us at ..." at most once a clinic-local day per phone.
 *
 * Each text gets one short reply, which the caller sends through the
 * provider's own reply path (TwiML for Twilio, a message from the number the
 * patient texted for Telnyx), as for keyword answers: a reply answers the
 * patient's own text, so it neither counts toward the reminder caps nor waits
 * for the sending window. A phone that opted out gets no reply at all; what it
 * asked for is still done. Replies are at most once per provider message: the
 * pipeline has already set aside a redelivered webhook.
 */
import { DateTime } from 'luxon';
import type { TransactionSql } from 'postgres';
import type { Locale } from '../booking/time.js';
import { addInboxMessage } from '../inbox/inbox.js';
import { oneWordOf, renderReply, type ReplyKind } from './texts.js';

export type ReplyKeyword = 'confirm' | 'reschedule' | 'cancel';

const CONFIRM = new Set(['C', '1', 'CONFIRM']);
const RESCHEDULE = new Set(['R', '2', 'RESCHEDULE']);
const CANCEL = new Set(['X', '3']);

/** How long the first X of a cancel by reply waits for the second. */
export const CANCEL_CONFIRM_WINDOW_HOURS = 24;

/** The reply keyword a text is, if any: one word, case and punctuation around it ignored. */
export function replyKeywordOf(text: string, cancelByReply: boolean): ReplyKeyword | null {
  const word = oneWordOf(text);
  if (!word) return null;
  if (CONFIRM.has(word)) return 'confirm';
  if (RESCHEDULE.has(word)) return 'reschedule';
  if (cancelByReply && CANCEL.has(word)) return 'cancel';
  return null;
}

export type ReplyOutcome = 'confirmed' | 'already_confirmed' | 'reschedule_requested' | 'cancel_asked' | 'cancelled' | 'inbox';

export interface ReplyResult {
  outcome: ReplyOutcome;
  /** The appointment acted on, if any. */
  appointmentId: string | null;
  /** Our one answer, or null (opted out, or "call us" already sent today). */
  reply: string | null;
}

export interface InboundText {
  orgId: string;
  from: string;
  text: string;
  provider: string;
  providerMessageId: string | null;
}

interface ClinicRow {
  name: string;
  time_zone: string;
  locale: Locale;
  default_region: string;
  contact_phone: string | null;
  cancel_by_reply: boolean;
  opted_out: boolean;
}

interface TargetRow {
  id: string;
  starts_at: Date;
  confirmed_at: Date | null;
  reschedule_requested_at: Date | null;
  cancel_requested_at: Date | null;
}

const E164 = /^\+[1-9]\d{6,14}$/;

/**
 * Acts on one inbound text that is not STOP / START / HELP, inside the
 * pipeline's transaction (scoped to the clinic, worker role).
 */
export async function handleReply(tx: TransactionSql, m: InboundText): Promise<ReplyResult> {
  const [clinic] = await tx<ClinicRow[]>`
    SELECT o.name, o.time_zone, o.locale, o.default_region,
           COALESCE(s.contact_phone, o.front_desk_phone) AS contact_phone,
           COALESCE(s.cancel_by_reply, false) AS cancel_by_reply,
           EXISTS (SELECT 1 FROM sms_opt_outs x WHERE x.org_id = o.id AND x.phone = ${m.from}) AS opted_out
      FROM orgs o LEFT JOIN sms_settings s ON s.org_id = o.id
     WHERE o.id = ${m.orgId}`;
  if (!clinic) throw new Error(`clinic ${m.orgId} not found`);
  const keyword = E164.test(m.from) ? replyKeywordOf(m.text, clinic.cancel_by_reply) : null;
  // One text per phone at a time: two texts at once must not both confirm,
  // both ask, or both get today's "call us".
  await tx`SELECT pg_advisory_xact_lock(hashtextextended(${`sms-reply|${m.orgId}|${m.from}`}, 0))`;

  const target = keyword ? await targetAppointment(tx, m.orgId, m.from) : null;
  const say = (kind: ReplyKind, appt: TargetRow | null) =>
    clinic.opted_out
      ? null
      : renderReply(kind, {
          clinicName: clinic.name,
          contactPhone: clinic.contact_phone,
          timeZone: clinic.time_zone,
          locale: clinic.locale,
          region: clinic.default_region,
          startsAt: appt ? DateTime.fromJSDate(appt.starts_at).toISO()! : undefined,
        });

  if (!keyword || !target) return toInbox(tx, m, clinic, target, say);

  switch (keyword) {
    case 'confirm': {
      if (target.confirmed_at) {
        if (target.cancel_requested_at)
          await tx`UPDATE appointments SET cancel_requested_at = NULL, updated_at = now() WHERE id = ${target.id}`;
        return { outcome: 'already_confirmed', appointmentId: target.id, reply: say('already_confirmed', target) };
      }
      await tx`UPDATE appointments SET confirmed_at = now(), cancel_requested_at = NULL, updated_at = now() WHERE id = ${target.id}`;
      return { outcome: 'confirmed', appointmentId: target.id, reply: say('confirmed', target) };
    }
    case 'reschedule': {
      if (!target.reschedule_requested_at) {
        await tx`UPDATE appointments SET reschedule_requested_at = now(), cancel_requested_at = NULL, updated_at = now() WHERE id = ${target.id}`;
        await addInboxMessage(tx, {
          orgId: m.orgId,
          channel: 'sms',
          kind: 'reschedule_request',
          body: m.text.trim().slice(0, 2000) || '(no text)',
          fromPhone: m.from,
          appointmentId: target.id,
          provider: m.provider,
          providerMessageId: m.providerMessageId,
        });
      }
      return { outcome: 'reschedule_requested', appointmentId: target.id, reply: say('reschedule_requested', target) };
    }
    case 'cancel': {
      const asked =
        target.cancel_requested_at && Date.now() - target.cancel_requested_at.getTime() < CANCEL_CONFIRM_WINDOW_HOURS * 3_600_000;
      if (!asked) {
        await tx`UPDATE appointments SET cancel_requested_at = now(), updated_at = now() WHERE id = ${target.id}`;
        return { outcome: 'cancel_asked', appointmentId: target.id, reply: say('cancel_ask', target) };
      }
      await tx`
        UPDATE appointments SET status = 'cancelled', cancelled_at = now(), cancel_requested_at = NULL, updated_at = now()
         WHERE id = ${target.id}`;
      // The cancel transaction voids the appointment's waiting reminders (as the cancel tool does).
      await tx`
        UPDATE sms_outbox SET status = 'cancelled', failure_reason = 'appointment_cancelled', last_error = 'appointment_cancelled', updated_at = now()
         WHERE appointment_id = ${target.id} AND status = 'pending' AND kind LIKE 'reminder:%'`;
      await addInboxMessage(tx, {
        orgId: m.orgId,
        channel: 'sms',
        kind: 'sms_cancellation',
        body: m.text.trim().slice(0, 2000) || '(no text)',
        fromPhone: m.from,
        appointmentId: target.id,
        provider: m.provider,
        providerMessageId: m.providerMessageId,
      });
      return { outcome: 'cancelled', appointmentId: target.id, reply: say('cancelled', target) };
    }
  }
}

/**
 * The phone's upcoming live appointment a reply is about, locked for the
 * change: the one the last reminder sent to this phone was about, when it is
 * still upcoming and live; else the soonest.
 */
async function targetAppointment(tx: TransactionSql, orgId: string, phone: string): Promise<TargetRow | null> {
  const [row] = await tx<TargetRow[]>`
    WITH last AS (
      SELECT o.appointment_id FROM sms_outbox o
       WHERE o.org_id = ${orgId} AND o.to_phone = ${phone} AND o.status = 'sent' AND o.kind LIKE 'reminder:%'
       ORDER BY o.sent_at DESC LIMIT 1
    )
    SELECT a.id, a.starts_at, a.confirmed_at, a.reschedule_requested_at, a.cancel_requested_at
      FROM appointments a
     WHERE a.org_id = ${orgId} AND a.patient_phone = ${phone} AND a.status = 'booked' AND a.starts_at > now()
     ORDER BY (a.id IN (SELECT appointment_id FROM last)) DESC, a.starts_at, a.id
     LIMIT 1
       FOR UPDATE OF a`;
  return row ?? null;
}

/** Everything else: the inbox, and "call us at ..." at most once a clinic-local day per phone. */
async function toInbox(
  tx: TransactionSql,
  m: InboundText,
  clinic: ClinicRow,
  target: TargetRow | null,
  say: (kind: ReplyKind, appt: TargetRow | null) => string | null,
): Promise<ReplyResult> {
  const from = E164.test(m.from) ? m.from : null;
  const [today] = from
    ? await tx<{ answered: boolean }[]>`
        SELECT EXISTS (
          SELECT 1 FROM inbox_messages
           WHERE org_id = ${m.orgId} AND from_phone = ${from} AND auto_reply IS NOT NULL
             AND created_at >= (date_trunc('day', now() AT TIME ZONE ${clinic.time_zone}) AT TIME ZONE ${clinic.time_zone})
        ) AS answered`
    : [{ answered: true }];
  const reply = today!.answered ? null : say('call_us', null);
  const id = await addInboxMessage(tx, {
    orgId: m.orgId,
    channel: 'sms',
    kind: 'sms_reply',
    body: m.text.trim().slice(0, 2000) || '(no text)',
    fromPhone: from,
    appointmentId: target?.id ?? null,
    provider: m.provider,
    providerMessageId: m.providerMessageId,
    autoReply: reply ? 'call_us' : null,
  });
  return { outcome: 'inbox', appointmentId: target?.id ?? null, reply: id ? reply : null };
}
