/**
 * Confirmation SMS text.
 *
 * Everything sent to a patient is forced into the GSM-7 alphabet: a single
 * curly apostrophe in a clinic name would otherwise switch the whole message to
 * UCS-2, cutting a segment from 160 to 70 characters and roughly doubling the
 * per-message cost (and some carriers garble UCS-2 on older handsets).
 *
 * Unrepresentable characters are DROPPED rather than replaced with '?'. In
 * practice they are decoration (emoji, dingbats, zero-width joiners) and a '?'
 * inside a medical appointment confirmation reads like corruption or a question.
 * Callers that need to know whether anything was lost can compare against
 * `isGsm7(original)`.
 */
import { DateTime, IANAZone } from 'luxon';

/**
 * GSM 03.38 default alphabet, indexed by septet value (0x00-0x7F). Position 0x1B
 * is the escape into the extension table, not a printable character, so it is
 * excluded from the set of representable characters below.
 */
export const GSM7_BASIC_TABLE =
  '@£$¥èéùìòÇ\nØø\rÅå' +
  'Δ_ΦΓΛΩΠΨΣΘΞ\u001bÆæßÉ' +
  ' !"#¤%&\'()*+,-./' +
  '0123456789:;<=>?' +
  '¡ABCDEFGHIJKLMNO' +
  'PQRSTUVWXYZÄÖÑÜ§' +
  '¿abcdefghijklmno' +
  'pqrstuvwxyzäöñüà';

const GSM7_ESCAPE = 0x1b;

/** GSM 03.38 extension table (sent as ESC + septet, so each costs two septets). */
export const GSM7_EXTENSION_TABLE: Readonly<Record<number, string>> = Object.freeze({
  0x0a: '\f',
  0x14: '^',
  0x28: '{',
  0x29: '}',
  0x2f: '\\',
  0x3c: '[',
  0x3d: '~',
  0x3e: ']',
  0x40: '|',
  0x65: '€',
});

const BASIC_CHARS: ReadonlySet<string> = new Set(
  [...GSM7_BASIC_TABLE].filter((_, septet) => septet !== GSM7_ESCAPE),
);
const EXTENSION_CHARS: ReadonlySet<string> = new Set(Object.values(GSM7_EXTENSION_TABLE));

function isGsmChar(ch: string): boolean {
  return BASIC_CHARS.has(ch) || EXTENSION_CHARS.has(ch);
}

/** True when every character can be sent in GSM-7 (basic or extension table). */
export function isGsm7(text: string): boolean {
  for (const ch of text) if (!isGsmChar(ch)) return false;
  return true;
}

/**
 * Explicit substitutions, consulted before Unicode decomposition because NFKD
 * either has no answer for these (curly quotes, dashes, Ł) or a worse one
 * (´ decomposes to a space plus a combining accent).
 */
const REPLACEMENTS: ReadonlyMap<string, string> = new Map<string, string>([
  ...charsTo("'", '\u2018\u2019\u201A\u201B\u2032\u2035\u02BB\u02BC\u0060\u00B4\u2039\u203A'),
  ...charsTo('"', '\u201C\u201D\u201E\u201F\u2033\u2036\u00AB\u00BB'),
  ...charsTo('-', '\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2043\uFE58\uFE63'),
  ...charsTo('-', '\u2022\u2023\u2219\u25E6\u25CF\u25AA\u00B7\u30FB'),
  ...charsTo(' ', '\t\u00A0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200A\u202F\u205F\u3000'),
  ...charsTo('\n', '\u000B\u0085\u2028\u2029'),
  ['\u2026', '...'],
  ['\u2122', 'TM'],
  ['\u2120', 'SM'],
  ['\u00AE', '(R)'],
  ['\u00A9', '(C)'],
  ['\u00D7', 'x'],
  ['\u00F7', '/'],
  ['\u2044', '/'],
  ['\u00B1', '+/-'],
  ['\u00A6', '|'],
  ['\u00A2', 'c'],
  // Latin letters with no canonical decomposition to a GSM-7 base letter.
  ['Ł', 'L'],
  ['ł', 'l'],
  ['Đ', 'D'],
  ['đ', 'd'],
  ['Ð', 'D'],
  ['ð', 'd'],
  ['Þ', 'Th'],
  ['þ', 'th'],
  ['Œ', 'OE'],
  ['œ', 'oe'],
  ['ı', 'i'],
  ['Ŋ', 'N'],
  ['ŋ', 'n'],
  // Greek capitals outside the GSM set that are visually identical to Latin ones.
  ...[...'ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ'].map((greek, i): [string, string] => [greek, 'ABEZHIKMNOPTYX'[i] ?? '']),
]);

function charsTo(replacement: string, chars: string): Array<[string, string]> {
  return [...chars].map((ch): [string, string] => [ch, replacement]);
}

const COMBINING_MARKS = /\p{M}/gu;

function mapChar(ch: string): string {
  if (isGsmChar(ch)) return ch;
  const direct = REPLACEMENTS.get(ch);
  if (direct !== undefined) return direct;
  // NFKD (not just NFD) also folds compatibility forms: fullwidth letters,
  // ligatures, superscripts, "½" -> "1⁄2". Accents are then stripped, so "á"
  // becomes "a" while GSM letters like "é" never reach this point.
  const decomposed = ch.normalize('NFKD').replace(COMBINING_MARKS, '');
  if (decomposed === '' || decomposed === ch) return '';
  let out = '';
  for (const part of decomposed) {
    if (isGsmChar(part)) {
      out += part;
      continue;
    }
    const replacement = REPLACEMENTS.get(part);
    // Partial output ("ǅ" -> "D" without "ž") would be misleading; drop it all.
    if (replacement === undefined) return '';
    out += replacement;
  }
  return out;
}

/**
 * Makes text GSM-7 safe. GSM-7 characters pass through unchanged (including
 * é, ñ, Ø, ß, Δ ...); typographic punctuation and spaces become their ASCII
 * equivalents; other accented letters lose their accents; anything left that
 * cannot be represented (emoji, CJK, Cyrillic ...) is dropped. Idempotent.
 */
export function toGsm7(input: string): string {
  let out = '';
  // NFC first so a decomposed "e" + U+0301 is recognised as the GSM letter "é".
  for (const ch of input.normalize('NFC')) out += mapChar(ch);
  return out;
}

export interface SegmentInfo {
  encoding: 'GSM-7' | 'UCS-2';
  /** Septets for GSM-7, UTF-16 code units for UCS-2. */
  units: number;
  /** 0 for empty text. */
  segments: number;
}

const GSM7_SINGLE = 160;
const GSM7_PART = 153;
const UCS2_SINGLE = 70;
const UCS2_PART = 67;

/**
 * Segment count as a carrier bills it. For concatenated messages an escape
 * sequence (GSM-7) or surrogate pair (UCS-2) is never split across parts, so a
 * character that does not fit in the remainder of a part starts the next one;
 * this can make the count one higher than ceil(units / 153).
 */
export function segmentInfo(text: string): SegmentInfo {
  if (isGsm7(text)) {
    const costs = [...text].map((ch) => (EXTENSION_CHARS.has(ch) ? 2 : 1));
    return { encoding: 'GSM-7', ...pack(costs, GSM7_SINGLE, GSM7_PART) };
  }
  const costs = [...text].map((ch) => ch.length);
  return { encoding: 'UCS-2', ...pack(costs, UCS2_SINGLE, UCS2_PART) };
}

function pack(costs: readonly number[], single: number, part: number): { units: number; segments: number } {
  const units = costs.reduce((sum, c) => sum + c, 0);
  if (units === 0) return { units, segments: 0 };
  if (units <= single) return { units, segments: 1 };
  let segments = 1;
  let used = 0;
  for (const cost of costs) {
    if (used + cost > part) {
      segments += 1;
      used = 0;
    }
    used += cost;
  }
  return { units, segments };
}

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
    const cost = EXTENSION_CHARS.has(ch) ? 2 : 1;
    if (used + cost > max) break;
    used += cost;
    out += ch;
  }
  return out;
}

function septets(gsmText: string): number {
  return segmentInfo(gsmText).units;
}
