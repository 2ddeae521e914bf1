/**
 * The texts patients receive. Every one is rendered in the clinic's time zone
 * and forced into GSM-7 (gsm7.ts), within a fixed number of segments.
 */
import { DateTime, IANAZone } from 'luxon';
import { GSM7_PART, segmentInfo, septetCost, toGsm7 } from './gsm7.js';

export interface ConfirmationInput {
  clinicName: string;
  patientName: string;
  /** ISO 8601 instant with an explicit offset or Z. */
  startsAt: string;
  /** IANA zone of the clinic; the time is always shown in this zone. */
  timeZone: string;
  kind?: 'booked' | 'rescheduled';
  /** Append "Reply STOP to opt out." (default true). */
  optOutHint?: boolean;
}

const MAX_SEGMENTS = 2;
// A first "name" longer than this is almost certainly a transcription error; the
// cap also guarantees the fixed parts of the message leave room for the clinic.
const MAX_FIRST_NAME_SEPTETS = 32;
// Below this a truncated clinic name stops being recognisable, so the opt-out
// hint is sacrificed first.
const MIN_CLINIC_SEPTETS = 20;
const OPT_OUT_HINT = ' Reply STOP to opt out.';

/**
 * Renders the confirmation SMS in the clinic's time zone, e.g.
 * "Hi Ana, your appointment at Maple Street Clinic is confirmed for Thu, Aug 20
 * at 3:00 PM EDT. Reply STOP to opt out."
 *
 * The result is GSM-7 and at most two segments: an over-long clinic name is
 * truncated first (down to MIN_CLINIC_SEPTETS), and only then is the opt-out
 * hint dropped. Throws on an invalid instant, missing offset or unknown zone
 * rather than ever sending "Invalid DateTime" to a patient.
 */
export function renderConfirmation(input: ConfirmationInput): string {
  const kind = input.kind ?? 'booked';
  if (kind !== 'booked' && kind !== 'rescheduled') {
    throw new Error(`kind must be "booked" or "rescheduled", got ${JSON.stringify(kind)}`);
  }
  const when = formatWhen(input.startsAt, input.timeZone);
  const first = firstName(input.patientName);
  const clinic = cleanField(input.clinicName);
  const verb = kind === 'rescheduled' ? 'has been moved to' : 'is confirmed for';

  const build = (clinicPart: string, hint: boolean): string =>
    toGsm7(
      `Hi ${first}, your appointment${clinicPart ? ` at ${clinicPart}` : ''} ${verb} ${when}.` +
        (hint ? OPT_OUT_HINT : ''),
    );
  const fits = (message: string): boolean => segmentInfo(message).segments <= MAX_SEGMENTS;

  const wantHint = input.optOutHint ?? true;
  for (const hint of wantHint ? [true, false] : [false]) {
    const full = build(clinic, hint);
    if (fits(full)) return full;
    const overhead = septets(build('X', hint)) - 1;
    const minClinic = hint ? MIN_CLINIC_SEPTETS : 1;
    // Escape sequences cannot straddle segments, so the septet budget can be off
    // by one; walking down settles it in at most a couple of steps.
    for (let budget = MAX_SEGMENTS * GSM7_PART - overhead; budget >= minClinic; budget--) {
      const message = build(truncateClinic(clinic, budget), hint);
      if (fits(message)) return message;
    }
  }
  const bare = build('', false);
  if (!fits(bare)) throw new Error('confirmation text cannot fit in two SMS segments');
  return bare;
}

const HAS_OFFSET = /(?:Z|[+-]\d{2}(?::?\d{2})?)$/i;
const ABBREVIATION_LOCALES = ['en-US', 'en-CA', 'en-GB', 'en-IE', 'en-AU', 'en-NZ', 'en-IN', 'en-ZA'] as const;
const OFFSET_STYLE_NAME = /^(?:GMT|UTC)[+\-\u2212]/;

function formatWhen(startsAt: string, timeZone: string): string {
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
  if (typeof timeZone !== 'string' || !IANAZone.isValidZone(timeZone)) {
    throw new Error(`timeZone must be an IANA time zone name (e.g. America/New_York), got ${JSON.stringify(timeZone)}`);
  }
  // Pin locale, numbering system and calendar so global luxon Settings or the
  // machine locale can never change the wording.
  const local = instant
    .setZone(timeZone)
    .reconfigure({ locale: 'en-US', numberingSystem: 'latn', outputCalendar: 'gregory' });
  if (!local.isValid) throw new Error(`cannot express startsAt in time zone ${JSON.stringify(timeZone)}`);
  return `${local.toFormat("ccc, LLL d 'at' h:mm a")} ${zoneAbbreviation(local)}`;
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
    const name = local.reconfigure({ locale }).offsetNameShort;
    if (!name) continue;
    if (!OFFSET_STYLE_NAME.test(name)) return name;
    fallback ??= name;
  }
  return fallback ?? `UTC${local.toFormat('ZZ')}`;
}

function cleanField(raw: string | undefined): string {
  return toGsm7(raw ?? '')
    .replace(/\s+/g, ' ')
    .trim();
}

function firstName(patientName: string | undefined): string {
  const token = (cleanField(patientName).split(' ')[0] ?? '').replace(/[,;:]+$/, '');
  return token ? truncateSeptets(token, MAX_FIRST_NAME_SEPTETS) : 'there';
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
