/**
 * The texts patients receive. Every one is rendered in the clinic's time zone
 * and locale, forced into GSM-7 (gsm7.ts) and kept to ONE segment (160
 * septets): the FCC's healthcare exemption for texts a clinic starts asks for
 * at most 160 characters, with the clinic's name and a number to call in
 * every one, and "Reply STOP to opt out". When a text is too long the clinic
 * name is shortened, never the time or the number to call.
 *
 * No text asks the patient to reply with a carrier or provider opt-out or
 * opt-in keyword (CANCEL, STOP, END, QUIT, YES ...) to confirm, cancel or
 * reschedule: those words unsubscribe the patient at the carrier, whatever we
 * meant by them. The reply keywords are C / R / X (and 1 / 2 / 3); STOP is
 * only ever taught as the opt-out it is.
 */
import { DateTime } from 'luxon';
import { parsePhoneNumberFromString } from 'libphonenumber-js/max';
import { isValidZone, type Locale } from '../booking/time.js';
import { segmentInfo, septetCost, toGsm7 } from './gsm7.js';

/** What every patient text names: the clinic, a number to call, and its wall clock and locale. */
export interface TextClinic {
  clinicName: string;
  /** E.164. Written the way patients in the clinic's region dial it. */
  contactPhone?: string | null | undefined;
  /** IANA zone of the clinic; the time is always shown in this zone. */
  timeZone: string;
  /** en-US (default): "Thu, Mar 4 at 3:00 PM EST"; en-GB: "Thu 4 Mar at 15:00 GMT". */
  locale?: Locale | undefined;
  /** The clinic's default phone region: numbers of that country are written nationally. */
  region?: string | undefined;
}

export interface ConfirmationInput extends TextClinic {
  patientName: string;
  /** ISO 8601 instant with an explicit offset or Z. */
  startsAt: string;
  kind?: 'booked' | 'rescheduled';
  /** Append "Reply STOP to opt out." (default true). */
  optOutHint?: boolean;
}

/** One segment: what a single text may cost, and what the exemption allows. */
export const SINGLE_SEGMENT_SEPTETS = 160;
// A first "name" longer than this is almost certainly a transcription error; the
// cap also guarantees the fixed parts of the message leave room for the clinic.
const MAX_FIRST_NAME_SEPTETS = 32;
const SHORT_FIRST_NAME_SEPTETS = 12;
// Below this a truncated clinic name stops being recognisable, so a shorter
// wording is tried before the name is cut further.
const MIN_CLINIC_SEPTETS = 20;
const OPT_OUT_HINT = ' Reply STOP to opt out.';

/** One wording of a text, given the clinic name (possibly shortened, possibly empty). */
interface Wording {
  build: (clinic: string) => string;
  /** The shortest clinic name this wording accepts before the next wording is tried. */
  minClinic: number;
}

/**
 * The first wording that fits one segment with the clinic name whole or cut
 * down to no less than its minimum. Escape sequences make the septet budget
 * off by one at most, so the walk down settles in a step or two.
 */
function fitOneSegment(clinic: string, wordings: Wording[], what: string): string {
  for (const w of wordings) {
    const full = toGsm7(w.build(clinic));
    if (fits(full)) return full;
    const overhead = septets(toGsm7(w.build('X'))) - 1;
    for (let budget = Math.min(septets(clinic) - 1, SINGLE_SEGMENT_SEPTETS - overhead); budget >= w.minClinic; budget--) {
      const message = toGsm7(w.build(truncateClinic(clinic, budget)));
      if (fits(message)) return message;
    }
  }
  throw new Error(`${what} text cannot fit in one SMS segment`);
}

const fits = (message: string): boolean => {
  const info = segmentInfo(message);
  return info.encoding === 'GSM-7' && info.units <= SINGLE_SEGMENT_SEPTETS;
};

/** " Call (415) 555-0100." — or nothing when the clinic has no number. */
function callPart(c: TextClinic, lead = 'Call'): string {
  const phone = formatContactPhone(c.contactPhone, c.region);
  return phone ? ` ${lead} ${phone}.` : '';
}

/**
 * The clinic's number the way its patients dial it: national format for a
 * number of the clinic's own country ("(415) 555-0100", "020 7946 0018"),
 * international otherwise ("+44 20 7946 0018"). Never shortened.
 */
export function formatContactPhone(e164: string | null | undefined, region: string | undefined): string | null {
  if (!e164) return null;
  const parsed = parsePhoneNumberFromString(e164);
  if (!parsed?.isValid()) return e164;
  return region && parsed.country === region ? parsed.formatNational() : parsed.formatInternational();
}

/**
 * Renders the confirmation SMS, e.g. "Hi Ana, your appointment at Maple Street
 * Clinic is confirmed for Thu, Aug 20 at 3:00 PM EDT. Call (415) 555-0100.
 * Reply STOP to opt out."
 *
 * The result is GSM-7 and one segment: an over-long clinic name is truncated
 * first (down to MIN_CLINIC_SEPTETS), then the greeting shortened, then the
 * clinic put first ("Clinic: your appointment ..."); the time, the number to
 * call and the opt-out hint are never cut. Throws on an invalid instant,
 * missing offset or unknown zone rather than ever sending "Invalid DateTime"
 * to a patient.
 */
export function renderConfirmation(input: ConfirmationInput): string {
  const kind = input.kind ?? 'booked';
  if (kind !== 'booked' && kind !== 'rescheduled') {
    throw new Error(`kind must be "booked" or "rescheduled", got ${JSON.stringify(kind)}`);
  }
  const when = formatWhen(input.startsAt, input.timeZone, input.locale);
  const first = firstName(input.patientName, MAX_FIRST_NAME_SEPTETS);
  const short = firstName(input.patientName, SHORT_FIRST_NAME_SEPTETS);
  const clinic = cleanField(input.clinicName);
  const verb = kind === 'rescheduled' ? 'has been moved to' : 'is confirmed for';
  const tail = `${callPart(input)}${(input.optOutHint ?? true) ? OPT_OUT_HINT : ''}`;
  const greeting = (name: string) => (c: string) => `Hi ${name}, your appointment${c ? ` at ${c}` : ''} ${verb} ${when}.${tail}`;
  return fitOneSegment(
    clinic,
    [
      { build: greeting(first), minClinic: MIN_CLINIC_SEPTETS },
      { build: greeting(short), minClinic: MIN_CLINIC_SEPTETS },
      { build: (c) => `${c ? `${c}: y` : 'Y'}our appointment ${verb} ${when}.${tail}`, minClinic: 1 },
    ],
    'confirmation',
  );
}

export interface ReminderInput extends TextClinic {
  /** ISO 8601 instant with an explicit offset or Z. */
  startsAt: string;
  /** The clinic lets patients cancel by replying X. */
  cancelByReply?: boolean;
}

/**
 * The reminder a clinic starts, e.g. "Maple Street Clinic: reminder of your
 * visit on Thu, Mar 4 at 3:00 PM EST. Reply C to confirm or R to reschedule.
 * Call (415) 555-0100. Reply STOP to opt out." One segment, GSM-7.
 */
export function renderReminder(input: ReminderInput): string {
  const when = formatWhen(input.startsAt, input.timeZone, input.locale);
  const keys = input.cancelByReply ? 'Reply C to confirm, R to reschedule, X to cancel.' : 'Reply C to confirm or R to reschedule.';
  const tail = `${callPart(input)}${OPT_OUT_HINT}`;
  return fitOneSegment(
    cleanField(input.clinicName),
    [
      { build: (c) => `${lead(c)}reminder of your visit on ${when}. ${keys}${tail}`, minClinic: MIN_CLINIC_SEPTETS },
      { build: (c) => `${lead(c)}visit ${when}. ${keys}${tail}`, minClinic: 1 },
    ],
    'reminder',
  );
}

/** What a reply answers (src/sms/replies.ts). */
export type ReplyKind = 'confirmed' | 'already_confirmed' | 'reschedule_requested' | 'cancel_ask' | 'cancelled' | 'call_us';

export interface ReplyInput extends TextClinic {
  /** The appointment the reply is about; not used by `call_us`. */
  startsAt?: string | undefined;
}

/**
 * Our one answer to a patient's text. Each names the clinic, the number to
 * call and the opt-out, in one segment. Two wordings each: the second, terser,
 * keeps more of a long clinic name.
 */
export function renderReply(kind: ReplyKind, input: ReplyInput): string {
  const clinic = cleanField(input.clinicName);
  const tail = `${callPart(input)}${OPT_OUT_HINT}`;
  if (kind === 'call_us') {
    const phone = formatContactPhone(input.contactPhone, input.region);
    const call = phone ? `please call us at ${phone}.` : 'please call the clinic.';
    return fitOneSegment(
      clinic,
      [
        {
          build: (c) => `${lead(c)}thanks for your message. For anything about your visit ${call}${OPT_OUT_HINT}`,
          minClinic: MIN_CLINIC_SEPTETS,
        },
        { build: (c) => `${lead(c)}thanks, ${call}${OPT_OUT_HINT}`, minClinic: 1 },
      ],
      'reply',
    );
  }
  if (!input.startsAt) throw new Error(`a ${kind} reply needs the appointment's startsAt`);
  const when = formatWhen(input.startsAt, input.timeZone, input.locale);
  const [long, short]: [string, string] = (() => {
    switch (kind) {
      case 'confirmed':
        return [`thanks, your visit on ${when} is confirmed.`, `visit ${when} confirmed.`];
      case 'already_confirmed':
        return [`your visit on ${when} is already confirmed.`, `visit ${when} already confirmed.`];
      case 'reschedule_requested':
        return [`we'll be in touch to move your visit on ${when}.`, `we'll call to move your visit ${when}.`];
      case 'cancel_ask':
        return [`Reply X again to cancel your visit on ${when}.`, `Reply X again to cancel visit ${when}.`];
      case 'cancelled':
        return [`your visit on ${when} is cancelled.`, `visit ${when} cancelled.`];
    }
  })();
  return fitOneSegment(
    clinic,
    [
      { build: (c) => `${lead(c)}${long}${tail}`, minClinic: MIN_CLINIC_SEPTETS },
      { build: (c) => `${lead(c)}${short}${tail}`, minClinic: 1 },
    ],
    'reply',
  );
}

/** "Clinic: " in front, or nothing when nothing of the name is representable. */
const lead = (clinic: string): string => (clinic ? `${clinic}: ` : '');

const HAS_OFFSET = /(?:Z|[+-]\d{2}(?::?\d{2})?)$/i;
const ABBREVIATION_LOCALES = ['en-US', 'en-CA', 'en-GB', 'en-IE', 'en-AU', 'en-NZ', 'en-IN', 'en-ZA'] as const;
const OFFSET_STYLE_NAME = /^(?:GMT|UTC)[+\-\u2212]/;

// A booking renders its confirmation and then its reminders for the same
// instant, zone and locale: the last answer is kept for the next call.
let lastWhen: { key: string; text: string } | undefined;

function formatWhen(startsAt: string, timeZone: string, locale: Locale | undefined): string {
  const key = `${startsAt}|${timeZone}|${locale ?? ''}`;
  if (lastWhen?.key === key) return lastWhen.text;
  const text = formatWhenUncached(startsAt, timeZone, locale);
  lastWhen = { key, text };
  return text;
}

function formatWhenUncached(startsAt: string, timeZone: string, locale: Locale | undefined): string {
  if (typeof startsAt !== 'string' || !HAS_OFFSET.test(startsAt.trim())) {
    // A naive local time would be read in the server's zone: refuse to guess.
    throw new Error(
      `startsAt must be an ISO 8601 timestamp with an offset or Z (e.g. 2026-08-20T15:00:00-04:00), got ${JSON.stringify(startsAt)}`,
    );
  }
  const instant = DateTime.fromISO(startsAt.trim(), { setZone: true });
  if (!instant.isValid) {
    throw new Error(
      `startsAt is not a valid ISO 8601 timestamp: ${JSON.stringify(startsAt)} (${instant.invalidExplanation ?? instant.invalidReason ?? 'unparseable'})`,
    );
  }
  // isValidZone rejects luxon's "local"/"system" aliases, which would silently
  // use the server's zone instead of the clinic's.
  if (typeof timeZone !== 'string' || !isValidZone(timeZone)) {
    throw new Error(`timeZone must be an IANA time zone name (e.g. America/New_York), got ${JSON.stringify(timeZone)}`);
  }
  // Pin locale, numbering system and calendar so global luxon Settings or the
  // machine locale can never change the wording.
  const local = instant.setZone(timeZone).reconfigure({ locale: 'en-US', numberingSystem: 'latn', outputCalendar: 'gregory' });
  if (!local.isValid) throw new Error(`cannot express startsAt in time zone ${JSON.stringify(timeZone)}`);
  const pattern = locale === 'en-GB' ? "ccc d LLL 'at' HH:mm" : "ccc, LLL d 'at' h:mm a";
  return `${local.toFormat(pattern)} ${zoneAbbreviation(local)}`;
}

/**
 * en-US only has abbreviations for North American zones (London summer time is
 * "GMT+1", Sydney is "GMT+11"), so other English locales are consulted for the
 * name patients there actually use (BST, AEDT). Each locale only names zones of
 * its own region, so the first named result is the right one; if none names the
 * zone, the offset form is still unambiguous.
 */
function zoneAbbreviation(local: DateTime): string {
  let fallback: string | null = null;
  for (const locale of ABBREVIATION_LOCALES) {
    const name = shortZoneName(local.toMillis(), local.zoneName!, locale);
    if (!name) continue;
    if (!OFFSET_STYLE_NAME.test(name)) return name;
    fallback ??= name;
  }
  return fallback ?? `UTC${local.toFormat('ZZ')}`;
}

// luxon's offsetNameShort builds a new Intl.DateTimeFormat on every call
// (about 0.14 ms each, up to eight per text), which made rendering a text cost
// more than the booking it confirms. The formatters are kept instead, one per
// locale and zone: at most the eight locales above times the IANA zones.
const zoneNameFormats = new Map<string, Intl.DateTimeFormat>();

/** The zone's short name at an instant in one locale, exactly as luxon's offsetNameShort reads it. */
function shortZoneName(ms: number, timeZone: string, locale: string): string | null {
  const key = `${locale}|${timeZone}`;
  let format = zoneNameFormats.get(key);
  if (!format) {
    format = new Intl.DateTimeFormat(locale, {
      timeZoneName: 'short',
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      timeZone,
    });
    zoneNameFormats.set(key, format);
  }
  return format.formatToParts(ms).find((p) => p.type === 'timeZoneName')?.value ?? null;
}

function cleanField(raw: string | undefined): string {
  return toGsm7(raw ?? '')
    .replace(/\s+/g, ' ')
    .trim();
}

function firstName(patientName: string | undefined, max: number): string {
  const token = (cleanField(patientName).split(' ')[0] ?? '').replace(/[,;:]+$/, '');
  return token ? truncateSeptets(token, max) : 'there';
}

function truncateClinic(clinic: string, budget: number): string {
  // Trailing separators left by the cut ("Smith &", "Dental -") read as broken.
  return truncateSeptets(clinic, budget).replace(/[\s,;:&/\\|-]+$/, '');
}

function truncateSeptets(text: string, max: number): string {
  let used = 0;
  let out = '';
  for (const ch of text) {
    const cost = septetCost(ch);
    if (used + cost > max) break;
    used += cost;
    out += ch;
  }
  return out;
}

function septets(gsmText: string): number {
  return segmentInfo(gsmText).units;
}

/**
 * A patient's text as one keyword, upper case, if it is a single word:
 * case-insensitive, with punctuation and symbols around it ignored ("Stop.",
 * " c! ", "STOP"). Two words ("Stop please") are no keyword: null.
 */
export function oneWordOf(text: string): string | null {
  const word = text
    .normalize('NFKC')
    .trim()
    .replace(/^[\p{P}\p{S}\s]+|[\p{P}\p{S}\s]+$/gu, '')
    .toUpperCase();
  return word && !/\s/.test(word) ? word : null;
}

/** What a keyword texted to a clinic number does (src/sms/inbound.ts). */
export type KeywordAction = 'opt_out' | 'opt_in' | 'help';

/**
 * Our answer to STOP / START / HELP, sent only when the provider does not
 * answer keywords itself: the clinic's name first (so the patient knows who
 * this is), GSM-7, one segment wherever the clinic name allows.
 */
export function renderKeywordReply(action: KeywordAction, clinicName: string, contactPhone: string | null): string {
  const clinic = truncateClinic(cleanField(clinicName), 60) || 'Clinic';
  switch (action) {
    case 'opt_out':
      return toGsm7(`${clinic}: you will get no more texts from us. Reply START to receive them again.`);
    case 'opt_in':
      return toGsm7(`${clinic}: you will get appointment texts from us again. Reply STOP to opt out, HELP for help.`);
    case 'help':
      return toGsm7(
        contactPhone
          ? `${clinic}: appointment texts. For help call ${contactPhone}. Reply STOP to opt out.`
          : `${clinic}: appointment texts. For help please call the clinic. Reply STOP to opt out.`,
      );
  }
}
