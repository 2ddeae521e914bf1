/**
 * Reminder and reply texts (issue 11): one GSM-7 segment, the clinic's name and
 * number to call in each, the time never cut, rendered in the clinic's locale,
 * and no text teaching a carrier opt-out or opt-in keyword as a reply.
 */
import { describe, expect, it } from 'vitest';
import { isGsm7, segmentInfo, toGsm7 } from '../src/sms/gsm7.js';
import { formatContactPhone, renderConfirmation, renderReminder, renderReply, type ReplyKind, type TextClinic } from '../src/sms/texts.js';

const AT = '2027-03-04T20:00:00Z';
const US: TextClinic = { clinicName: 'Maple Street Clinic', contactPhone: '+14155550100', timeZone: 'America/New_York', region: 'US' };
const GB: TextClinic = {
  clinicName: 'Harley Street Health',
  contactPhone: '+442079460018',
  timeZone: 'Europe/London',
  region: 'GB',
  locale: 'en-GB',
};
const REPLIES: ReplyKind[] = ['confirmed', 'already_confirmed', 'reschedule_requested', 'cancel_ask', 'cancelled', 'call_us'];

describe('reminder text', () => {
  it('en-US: clinic, time with zone, C/R, the number to call and the opt-out', () => {
    expect(renderReminder({ ...US, startsAt: AT })).toBe(
      'Maple Street Clinic: reminder of your visit on Thu, Mar 4 at 3:00 PM EST. Reply C to confirm or R to reschedule. Call (415) 555-0100. Reply STOP to opt out.',
    );
  });

  it('en-GB: "Thu 4 Mar at 15:00" style, the number in national form', () => {
    expect(renderReminder({ ...GB, startsAt: '2027-03-04T15:00:00Z' })).toBe(
      'Harley Street Health: reminder of your visit on Thu 4 Mar at 15:00 GMT. Reply C to confirm or R to reschedule. Call 020 7946 0018. Reply STOP to opt out.',
    );
    expect(renderReminder({ ...GB, startsAt: '2027-07-01T14:30:00Z' })).toContain('on Thu 1 Jul at 15:30 BST.');
  });

  it('offers X only when the clinic allows cancelling by reply, and never the word CANCEL', () => {
    const on = renderReminder({ ...US, startsAt: AT, cancelByReply: true });
    expect(on).toBe(
      'Maple Street Clinic: visit Thu, Mar 4 at 3:00 PM EST. Reply C to confirm, R to reschedule, X to cancel. Call (415) 555-0100. Reply STOP to opt out.',
    );
    expect(renderReminder({ ...US, startsAt: AT })).not.toMatch(/\bX\b/);
  });

  it('writes a number of another country internationally', () => {
    expect(formatContactPhone('+442079460018', 'US')).toBe('+44 20 7946 0018');
    expect(formatContactPhone('+14155550100', 'US')).toBe('(415) 555-0100');
    expect(formatContactPhone(null, 'US')).toBeNull();
  });
});

describe('reply texts', () => {
  it('each names the clinic, the appointment time and the number, in both locales', () => {
    expect(renderReply('confirmed', { ...US, startsAt: AT })).toBe(
      'Maple Street Clinic: thanks, your visit on Thu, Mar 4 at 3:00 PM EST is confirmed. Call (415) 555-0100. Reply STOP to opt out.',
    );
    expect(renderReply('cancel_ask', { ...GB, startsAt: AT })).toBe(
      'Harley Street Health: Reply X again to cancel your visit on Thu 4 Mar at 20:00 GMT. Call 020 7946 0018. Reply STOP to opt out.',
    );
    expect(renderReply('call_us', US)).toBe(
      'Maple Street Clinic: thanks for your message. For anything about your visit please call us at (415) 555-0100. Reply STOP to opt out.',
    );
    for (const kind of REPLIES) {
      for (const c of [US, GB]) {
        const text = renderReply(kind, { ...c, startsAt: AT });
        expect(text.startsWith(`${c.clinicName}: `), text).toBe(true);
        expect(text).toContain(formatContactPhone(c.contactPhone, c.region)!);
        if (kind !== 'call_us') expect(text).toContain(c.locale === 'en-GB' ? 'Thu 4 Mar at 20:00 GMT' : 'Thu, Mar 4 at 3:00 PM EST');
      }
    }
  });

  it('without a contact number, says to call the clinic', () => {
    expect(renderReply('call_us', { ...US, contactPhone: null })).toContain('please call the clinic.');
  });

  it('refuses an appointment reply without its time rather than sending a text without one', () => {
    expect(() => renderReply('confirmed', US)).toThrow(/startsAt/);
  });
});

describe('confirmation text with the contact number', () => {
  it('carries the number and stays within one segment', () => {
    const text = renderConfirmation({ ...US, patientName: 'Ana Ruiz', startsAt: AT });
    expect(text).toBe(
      'Hi Ana, your appointment at Maple Street Clinic is confirmed for Thu, Mar 4 at 3:00 PM EST. Call (415) 555-0100. Reply STOP to opt out.',
    );
    expect(segmentInfo(text).segments).toBe(1);
  });

  it('en-GB', () => {
    expect(renderConfirmation({ ...GB, patientName: 'Ana Ruiz', startsAt: AT, kind: 'rescheduled' })).toBe(
      'Hi Ana, your appointment at Harley Street Health has been moved to Thu 4 Mar at 20:00 GMT. Call 020 7946 0018. Reply STOP to opt out.',
    );
  });
});

// A deterministic generator: the same cases every run, so a failure is reproducible.
function rng(seed: number) {
  let x = seed;
  return (n: number) => {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    return x % n;
  };
}

const ZONES = [
  'America/New_York',
  'America/Anchorage',
  'Pacific/Honolulu',
  'Europe/London',
  'Australia/Lord_Howe',
  'Asia/Kolkata',
  'America/St_Johns',
  'Pacific/Chatham',
  'UTC',
];
const PHONES = ['+14155550100', '+442079460018', '+8613800138000', '+61255501234', '+919876543210', null];
const NAME_PIECES = [
  'Greater',
  'Metropolitan',
  'Family',
  'Medicine',
  '&',
  'Pediatric',
  'Associates',
  'O’Brien’s',
  '[Care]',
  '{€}',
  'Zoë',
  'Ünïcødé',
  '🦷',
  'Clinic',
  '—',
  '|',
  'St.',
  'Dr.',
];
const INSTANTS = ['2027-03-04T20:00:00Z', '2027-09-29T23:30:00Z', '2027-12-31T17:45:00Z', '2027-11-07T05:30:00Z', '2027-06-15T16:05:00Z'];

function cases(n: number): Array<TextClinic & { startsAt: string; cancelByReply: boolean; patientName: string }> {
  const r = rng(11);
  return Array.from({ length: n }, (_, i) => {
    const words = Array.from({ length: 1 + r(40) }, () => NAME_PIECES[r(NAME_PIECES.length)]!);
    return {
      clinicName: i % 10 === 0 ? 'A'.repeat(300) : words.join(' '),
      contactPhone: PHONES[r(PHONES.length)]!,
      timeZone: ZONES[r(ZONES.length)]!,
      region: r(2) ? 'US' : 'GB',
      locale: r(2) ? 'en-GB' : 'en-US',
      startsAt: INSTANTS[r(INSTANTS.length)]!,
      cancelByReply: r(2) === 1,
      patientName: r(3) === 0 ? 'B'.repeat(200) : 'Ana Ruiz',
    };
  });
}

/** Rendering is deterministic: each case's texts are rendered once and checked by every test below. */
const rendered = new WeakMap<object, string[]>();
function allTexts(c: ReturnType<typeof cases>[number]): string[] {
  let texts = rendered.get(c);
  if (!texts) {
    texts = [
      renderReminder(c),
      renderConfirmation(c),
      renderConfirmation({ ...c, kind: 'rescheduled' }),
      ...REPLIES.map((k) => renderReply(k, c)),
    ];
    rendered.set(c, texts);
  }
  return texts;
}
/** The reminder and the replies (not the confirmations), from the same rendering. */
const reminderAndReplies = (c: ReturnType<typeof cases>[number]) => [allTexts(c)[0]!, ...allTexts(c).slice(3)];

describe('every text, over long and awkward clinic names, zones, numbers and both locales', () => {
  const all = cases(200);

  it('is GSM-7, one segment, and keeps the time, the number and the opt-out whole', () => {
    for (const c of all) {
      const phone = formatContactPhone(c.contactPhone, c.region);
      for (const text of allTexts(c)) {
        expect(isGsm7(text), text).toBe(true);
        expect(segmentInfo(text), text).toMatchObject({ encoding: 'GSM-7', segments: 1 });
        expect(segmentInfo(text).units, text).toBeLessThanOrEqual(160);
        expect(text.endsWith('Reply STOP to opt out.'), text).toBe(true);
        if (phone) expect(text, text).toContain(phone);
      }
      // The time is never cut: the reminder shows the whole clock and zone abbreviation.
      const reminder = allTexts(c)[0]!;
      expect(reminder, reminder).toMatch(/ at (\d{1,2}:\d{2}( [AP]M)?) [A-Z][A-Za-z]*(?:[+-]\d{1,2}(?::\d{2})?)?\. Reply C/);
    }
  });

  it('keeps a recognisable part of the clinic name (all of it, or at least 10 characters of it)', () => {
    for (const c of all) {
      const clinic = toGsm7(c.clinicName).replace(/\s+/g, ' ').trim();
      // A name of nothing but emoji has nothing to show; the texts then start with the message itself.
      if (!clinic) continue;
      for (const text of reminderAndReplies(c)) {
        const shown = text.slice(0, text.indexOf(': '));
        expect(clinic.startsWith(shown), `${shown} | ${clinic}`).toBe(true);
        // A cut never leaves a dangling separator, so "at least 10" is the first 10 less those.
        const floor = [...clinic]
          .slice(0, 10)
          .join('')
          .replace(/[\s,;:&/\\|-]+$/, '');
        expect(shown.length, text).toBeGreaterThanOrEqual(floor.length);
      }
    }
  });

  it('never asks for a carrier opt-out or opt-in word as a reply; "Reply STOP to opt out" stays', () => {
    const FORBIDDEN = new Set(['CANCEL', 'STOP', 'STOPALL', 'END', 'QUIT', 'YES', 'UNSUBSCRIBE', 'START', 'UNSTOP', 'OPTOUT', 'REVOKE']);
    const ALLOWED = new Set(['C', 'R', 'X', '1', '2', '3']);
    for (const c of all) {
      for (const text of allTexts(c)) {
        // Every instruction to answer: reply / text / send / respond (with) <word>.
        for (const m of text.matchAll(/\b(?:reply|text|send|respond)(?: with)?\s+"?([A-Za-z0-9]+)"?(?:\s+(again))?\s+(\w+(?:\s+\w+)?)/gi)) {
          const word = m[1]!.toUpperCase();
          if (word === 'STOP') {
            expect(m[3], text).toBe('to opt');
            continue;
          }
          expect(FORBIDDEN.has(word), `${word} in: ${text}`).toBe(false);
          expect(ALLOWED.has(word), `${word} in: ${text}`).toBe(true);
        }
        // No keyword is spelled out in quotes or capitals anywhere else either.
        for (const w of FORBIDDEN) if (w !== 'STOP') expect(text, text).not.toMatch(new RegExp(`\\b${w}\\b`));
        expect(text.match(/\bSTOP\b/g) ?? [], text).toHaveLength(1);
        expect(text, text).toContain('Reply STOP to opt out.');
      }
    }
  });
});
