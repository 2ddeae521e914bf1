/**
 * The GSM-7 codec: which characters GSM 03.38 can carry, how to make any text
 * fit it, and how a carrier counts its segments. Message wording lives in
 * texts.ts.
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

const BASIC_CHARS: ReadonlySet<string> = new Set([...GSM7_BASIC_TABLE].filter((_, septet) => septet !== GSM7_ESCAPE));
const EXTENSION_CHARS: ReadonlySet<string> = new Set(Object.values(GSM7_EXTENSION_TABLE));

/** Septets a GSM-7 character costs: extension-table characters are sent as ESC + septet. */
export function septetCost(ch: string): number {
  return EXTENSION_CHARS.has(ch) ? 2 : 1;
}

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
/** Septets per part of a concatenated GSM-7 message. */
export const GSM7_PART = 153;
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
    const costs = [...text].map(septetCost);
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
