import { describe, it, expect } from 'vitest';
import { GSM7_BASIC_TABLE, GSM7_EXTENSION_TABLE, isGsm7, segmentInfo, toGsm7 } from '../src/sms/gsm7.js';
import { renderConfirmation } from '../src/sms/texts.js';

const NY = 'America/New_York';

function render(overrides: Partial<Parameters<typeof renderConfirmation>[0]> = {}): string {
  return renderConfirmation({
    clinicName: 'Maple Street Clinic',
    patientName: 'Ana Lopez',
    startsAt: '2026-08-20T19:00:00Z',
    timeZone: NY,
    ...overrides,
  });
}

describe('GSM-7 tables', () => {
  it('holds the full 128-position basic table and the 10 extension characters', () => {
    expect([...GSM7_BASIC_TABLE]).toHaveLength(128);
    expect(new Set(GSM7_BASIC_TABLE).size).toBe(128);
    expect(GSM7_BASIC_TABLE[0x00]).toBe('@');
    expect(GSM7_BASIC_TABLE[0x09]).toBe('Ç');
    expect(GSM7_BASIC_TABLE[0x1b]).toBe('\u001b');
    expect(GSM7_BASIC_TABLE[0x24]).toBe('¤');
    expect(GSM7_BASIC_TABLE[0x40]).toBe('¡');
    expect(GSM7_BASIC_TABLE[0x60]).toBe('¿');
    expect(GSM7_BASIC_TABLE[0x7f]).toBe('à');
    expect(Object.values(GSM7_EXTENSION_TABLE).sort().join('')).toBe(['\f', '^', '{', '}', '\\', '[', '~', ']', '|', '€'].sort().join(''));
  });

  it('treats the escape code itself as not representable', () => {
    expect(isGsm7('a\u001bb')).toBe(false);
  });
});

describe('toGsm7', () => {
  it('leaves every GSM-7 character untouched', () => {
    const all = [...GSM7_BASIC_TABLE].filter((c) => c !== '\u001b').join('') + Object.values(GSM7_EXTENSION_TABLE).join('');
    expect(toGsm7(all)).toBe(all);
  });

  it('keeps accented letters that are in the GSM-7 set', () => {
    const kept = 'é è ù ì ò Ç Ø ø Å å Ä Ö Ñ Ü ä ö ñ ü à É Æ æ ß Δ Φ Γ Λ Ω Π Ψ Σ Θ Ξ';
    expect(toGsm7(kept)).toBe(kept);
  });

  it('replaces smart quotes, primes and dashes with ASCII', () => {
    expect(toGsm7('‘a’ ‚b‛ “c” „d‟ 5′ 6″')).toBe(`'a' 'b' "c" "d" 5' 6"`);
    expect(toGsm7('a–b—c‒d―e')).toBe('a-b-c-d-e');
  });

  it('replaces ellipsis, unicode spaces, bullets and symbols', () => {
    expect(toGsm7('Wait…')).toBe('Wait...');
    expect(toGsm7('a\u00A0b\u2009c\u202Fd\u3000e\tf')).toBe('a b c d e f');
    expect(toGsm7('• one · two')).toBe('- one - two');
    expect(toGsm7('Acme™ ® ©')).toBe('AcmeTM (R) (C)');
    expect(toGsm7('line\u2028next')).toBe('line\nnext');
  });

  it('strips accents that are not in the set but keeps the base letter', () => {
    expect(toGsm7('Zoë Ángel ção Çelik Łódź Œuvre naïve')).toBe('Zoe Angel cao Çelik Lodz OEuvre naive');
  });

  it('composes decomposed input before deciding, so e + combining acute stays é', () => {
    expect(toGsm7('Jose\u0301')).toBe('José');
  });

  it('folds compatibility forms', () => {
    expect(toGsm7('ｆｕｌｌ ﬁle ½')).toBe('full file 1/2');
  });

  it('drops emoji, joiners, variation selectors and unrepresentable scripts', () => {
    expect(toGsm7('Hi 😀👨‍👩‍👧 ❤️ there')).toBe('Hi   there');
    expect(toGsm7('Привет 你好')).toBe(' ');
    expect(toGsm7('🦷')).toBe('');
  });

  it('always yields GSM-7 and is idempotent, for arbitrary code points', () => {
    let seed = 42;
    const next = (): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed;
    };
    for (let i = 0; i < 300; i++) {
      let s = '';
      for (let j = 0; j < 20; j++) {
        let cp = next() % 0x1fbff;
        if (cp >= 0xd800 && cp <= 0xdfff) cp = 0x41;
        s += String.fromCodePoint(cp);
      }
      const out = toGsm7(s);
      expect(isGsm7(out)).toBe(true);
      expect(toGsm7(out)).toBe(out);
    }
  });
});

describe('segmentInfo', () => {
  it('GSM-7: 160 septets is one segment, 161 is two', () => {
    expect(segmentInfo('a'.repeat(160))).toEqual({ encoding: 'GSM-7', units: 160, segments: 1 });
    expect(segmentInfo('a'.repeat(161))).toEqual({ encoding: 'GSM-7', units: 161, segments: 2 });
    expect(segmentInfo('a'.repeat(306))).toEqual({ encoding: 'GSM-7', units: 306, segments: 2 });
    expect(segmentInfo('a'.repeat(307))).toEqual({ encoding: 'GSM-7', units: 307, segments: 3 });
  });

  it('GSM-7: extension characters count as two septets', () => {
    expect(segmentInfo('€'.repeat(80))).toEqual({ encoding: 'GSM-7', units: 160, segments: 1 });
    expect(segmentInfo('€'.repeat(80) + 'a')).toEqual({ encoding: 'GSM-7', units: 161, segments: 2 });
    expect(segmentInfo('a'.repeat(159) + '[')).toEqual({ encoding: 'GSM-7', units: 161, segments: 2 });
    expect(segmentInfo('^{}\\[~]|€\f')).toEqual({ encoding: 'GSM-7', units: 20, segments: 1 });
  });

  it('GSM-7: an escape sequence never straddles two parts', () => {
    // 152 + 2 + 152 = 306 septets, but the € cannot start in the last septet of part 1.
    const text = 'a'.repeat(152) + '€' + 'a'.repeat(152);
    expect(segmentInfo(text)).toEqual({ encoding: 'GSM-7', units: 306, segments: 3 });
  });

  it('GSM-7: accented GSM letters do not force UCS-2', () => {
    expect(segmentInfo('é'.repeat(160))).toEqual({ encoding: 'GSM-7', units: 160, segments: 1 });
  });

  it('UCS-2: 70 code units is one segment, 71 is two, 134/135 at the next boundary', () => {
    expect(segmentInfo('ж'.repeat(70))).toEqual({ encoding: 'UCS-2', units: 70, segments: 1 });
    expect(segmentInfo('ж'.repeat(71))).toEqual({ encoding: 'UCS-2', units: 71, segments: 2 });
    expect(segmentInfo('ж'.repeat(134))).toEqual({ encoding: 'UCS-2', units: 134, segments: 2 });
    expect(segmentInfo('ж'.repeat(135))).toEqual({ encoding: 'UCS-2', units: 135, segments: 3 });
  });

  it('UCS-2: one non-GSM character switches the whole text and emoji count two units', () => {
    expect(segmentInfo('a'.repeat(69) + '’')).toEqual({ encoding: 'UCS-2', units: 70, segments: 1 });
    expect(segmentInfo('😀'.repeat(35))).toEqual({ encoding: 'UCS-2', units: 70, segments: 1 });
    expect(segmentInfo('😀'.repeat(35) + 'a')).toEqual({ encoding: 'UCS-2', units: 71, segments: 2 });
    // 66 + 2 + 66 = 134 units, but the surrogate pair cannot be split after unit 67.
    expect(segmentInfo('ж'.repeat(66) + '😀' + 'ж'.repeat(66))).toEqual({ encoding: 'UCS-2', units: 134, segments: 3 });
  });

  it('empty text has no segments', () => {
    expect(segmentInfo('')).toEqual({ encoding: 'GSM-7', units: 0, segments: 0 });
  });
});

describe('renderConfirmation', () => {
  it('renders a booking in New York summer time (EDT)', () => {
    const text = render();
    expect(text).toBe(
      'Hi Ana, your appointment at Maple Street Clinic is confirmed for Thu, Aug 20 at 3:00 PM EDT. Reply STOP to opt out.',
    );
    expect(segmentInfo(text)).toEqual({ encoding: 'GSM-7', units: 115, segments: 1 });
  });

  it('renders New York winter time as EST', () => {
    expect(render({ startsAt: '2026-01-15T15:30:00Z' })).toBe(
      'Hi Ana, your appointment at Maple Street Clinic is confirmed for Thu, Jan 15 at 10:30 AM EST. Reply STOP to opt out.',
    );
  });

  it('switches the abbreviation across the DST change at the same wall-clock time', () => {
    // US clocks sprang forward on 2026-03-08 and fall back on 2026-11-01.
    expect(render({ startsAt: '2026-03-07T17:00:00Z' })).toContain('for Sat, Mar 7 at 12:00 PM EST.');
    expect(render({ startsAt: '2026-03-09T16:00:00Z' })).toContain('for Mon, Mar 9 at 12:00 PM EDT.');
    expect(render({ startsAt: '2026-10-31T16:00:00Z' })).toContain('for Sat, Oct 31 at 12:00 PM EDT.');
    expect(render({ startsAt: '2026-11-02T17:00:00Z' })).toContain('for Mon, Nov 2 at 12:00 PM EST.');
  });

  it('uses the clinic zone, not the offset the instant was written in', () => {
    expect(render({ startsAt: '2026-08-20T21:00:00+02:00' })).toContain('for Thu, Aug 20 at 3:00 PM EDT.');
    expect(render({ startsAt: '2026-08-21T04:00:00+09:00' })).toContain('for Thu, Aug 20 at 3:00 PM EDT.');
  });

  it('renders midnight and noon unambiguously', () => {
    expect(render({ startsAt: '2026-08-20T04:00:00Z' })).toContain('for Thu, Aug 20 at 12:00 AM EDT.');
    expect(render({ startsAt: '2026-08-20T16:05:00Z' })).toContain('for Thu, Aug 20 at 12:05 PM EDT.');
  });

  it('renders Europe/London as BST in summer and GMT in winter', () => {
    expect(render({ clinicName: 'Harley Health', timeZone: 'Europe/London', startsAt: '2026-07-01T08:00:00Z' })).toBe(
      'Hi Ana, your appointment at Harley Health is confirmed for Wed, Jul 1 at 9:00 AM BST. Reply STOP to opt out.',
    );
    expect(render({ clinicName: 'Harley Health', timeZone: 'Europe/London', startsAt: '2026-01-15T09:00:00Z' })).toBe(
      'Hi Ana, your appointment at Harley Health is confirmed for Thu, Jan 15 at 9:00 AM GMT. Reply STOP to opt out.',
    );
  });

  it('renders Australia/Sydney as AEDT/AEST, including the date roll-over from UTC', () => {
    expect(render({ clinicName: 'Bondi Care', timeZone: 'Australia/Sydney', startsAt: '2026-01-14T22:00:00Z' })).toBe(
      'Hi Ana, your appointment at Bondi Care is confirmed for Thu, Jan 15 at 9:00 AM AEDT. Reply STOP to opt out.',
    );
    expect(render({ clinicName: 'Bondi Care', timeZone: 'Australia/Sydney', startsAt: '2026-07-14T23:00:00Z' })).toBe(
      'Hi Ana, your appointment at Bondi Care is confirmed for Wed, Jul 15 at 9:00 AM AEST. Reply STOP to opt out.',
    );
  });

  it('shows UTC only when the clinic zone is UTC', () => {
    expect(render({ timeZone: 'UTC' })).toContain('for Thu, Aug 20 at 7:00 PM UTC.');
    expect(render()).not.toContain('UTC');
  });

  it('says "has been moved to" for a reschedule', () => {
    expect(render({ kind: 'rescheduled' })).toBe(
      'Hi Ana, your appointment at Maple Street Clinic has been moved to Thu, Aug 20 at 3:00 PM EDT. Reply STOP to opt out.',
    );
  });

  it('omits the opt-out hint when asked', () => {
    expect(render({ optOutHint: false })).toBe(
      'Hi Ana, your appointment at Maple Street Clinic is confirmed for Thu, Aug 20 at 3:00 PM EDT.',
    );
  });

  it('greets by first name only, falling back to "there"', () => {
    expect(render({ patientName: '  Ana María   López ' })).toMatch(/^Hi Ana, your/);
    expect(render({ patientName: 'José' })).toMatch(/^Hi José, your/);
    expect(render({ patientName: 'Zoë Smith' })).toMatch(/^Hi Zoe, your/);
    expect(render({ patientName: '' })).toMatch(/^Hi there, your/);
    expect(render({ patientName: '   ' })).toMatch(/^Hi there, your/);
    expect(render({ patientName: '😀' })).toMatch(/^Hi there, your/);
    expect(render({ patientName: '🙂 Ana' })).toMatch(/^Hi Ana, your/);
  });

  it('turns a smart-quoted clinic name into ASCII', () => {
    const text = render({ clinicName: 'O’Brien’s Clinic' });
    expect(text).toBe("Hi Ana, your appointment at O'Brien's Clinic is confirmed for Thu, Aug 20 at 3:00 PM EDT. Reply STOP to opt out.");
    expect(segmentInfo(text).encoding).toBe('GSM-7');
  });

  it('keeps an emoji-laden clinic name GSM-7 and within one segment', () => {
    const text = render({ clinicName: '🦷✨ Bright   Smiles 😁 Dental 🪥🪥🪥', patientName: 'Ana 💖' });
    expect(text).toBe(
      'Hi Ana, your appointment at Bright Smiles Dental is confirmed for Thu, Aug 20 at 3:00 PM EDT. Reply STOP to opt out.',
    );
    const info = segmentInfo(text);
    expect(info.encoding).toBe('GSM-7');
    expect(info.segments).toBe(1);
  });

  it('truncates a very long clinic name but keeps the opt-out hint and one segment', () => {
    const clinicName = 'Greater Metropolitan Family Medicine and Pediatric Associates '.repeat(10);
    const text = render({ clinicName });
    const info = segmentInfo(text);
    expect(info).toEqual({ encoding: 'GSM-7', units: info.units, segments: 1 });
    expect(info.units).toBeGreaterThan(150);
    expect(text.startsWith('Hi Ana, your appointment at Greater Metropolitan Family Medicine')).toBe(true);
    expect(text.endsWith(' is confirmed for Thu, Aug 20 at 3:00 PM EDT. Reply STOP to opt out.')).toBe(true);
    expect(text).not.toContain('…');
  });

  it('keeps one segment when the clinic name is full of two-septet characters', () => {
    const text = render({ clinicName: '[Care]{€}|'.repeat(60), kind: 'rescheduled' });
    expect(segmentInfo(text).encoding).toBe('GSM-7');
    expect(segmentInfo(text).segments).toBe(1);
    expect(text).toContain('Reply STOP to opt out.');
  });

  it('caps an absurdly long first name and still fits', () => {
    const text = render({ patientName: 'A'.repeat(500), clinicName: 'Clinic '.repeat(60) });
    expect(text.startsWith(`Hi ${'A'.repeat(32)}, your`)).toBe(true);
    expect(segmentInfo(text).segments).toBe(1);
    expect(text).toContain('Reply STOP to opt out.');
  });

  it('leaves out the clinic phrase when nothing of the name is representable', () => {
    expect(render({ clinicName: '🏥🏥' })).toBe(
      'Hi Ana, your appointment is confirmed for Thu, Aug 20 at 3:00 PM EDT. Reply STOP to opt out.',
    );
  });

  it('throws a clear error for invalid or offset-less startsAt instead of rendering "Invalid DateTime"', () => {
    expect(() => render({ startsAt: 'not a date' })).toThrow(/startsAt/);
    expect(() => render({ startsAt: '2026-02-30T10:00:00-05:00' })).toThrow(/startsAt is not a valid ISO 8601/);
    expect(() => render({ startsAt: '2026-08-20T15:00:00' })).toThrow(/with an offset/);
    expect(() => render({ startsAt: '' })).toThrow(/startsAt/);
  });

  it('throws a clear error for an unknown or non-IANA zone', () => {
    expect(() => render({ timeZone: 'Mars/Olympus_Mons' })).toThrow(/IANA time zone/);
    expect(() => render({ timeZone: 'local' })).toThrow(/IANA time zone/);
    expect(() => render({ timeZone: '' })).toThrow(/IANA time zone/);
  });

  it('does not depend on the process default time zone', () => {
    const before = process.env.TZ;
    try {
      process.env.TZ = 'Asia/Tokyo';
      expect(render()).toContain('3:00 PM EDT');
    } finally {
      if (before === undefined) delete process.env.TZ;
      else process.env.TZ = before;
    }
  });
});

describe('scrubPhones (provider text on its way to logs and admin lists)', () => {
  it('masks E.164 numbers like phoneForLog, and bare or formatted phone numbers to their last four digits', async () => {
    const { phoneForLog, scrubPhones } = await import('../src/log.js');
    expect(scrubPhones('twilio HTTP 500 code 20500: Unable to list messages To=+14155550177')).toBe(
      `twilio HTTP 500 code 20500: Unable to list messages To=${phoneForLog('+14155550177')}`,
    );
    expect(scrubPhones('call 4155550177, (415) 555-0177 or +1 415 555 0177')).toBe('call …0177, …0177 or …0177');
    expect(scrubPhones('+44 20 7946 0958')).toBe('…0958');
  });

  it('leaves codes, statuses, dates, ids and UUIDs alone', async () => {
    const { scrubPhones } = await import('../src/log.js');
    const text =
      'code 21211 HTTP 400 after 2000 ms on 2026-12-01, SM1234567890abcdef1234567890abcdef, 123e4567-e89b-12d3-a456-426614174000';
    expect(scrubPhones(text)).toBe(text);
    expect(scrubPhones(undefined)).toBeUndefined();
  });
});
