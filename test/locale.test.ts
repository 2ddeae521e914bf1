/**
 * The clinic's locale (issue 11): en-US speaks and texts times as before, byte
 * for byte; en-GB says "Thursday 4 March at 15:00".
 */
import { DateTime } from 'luxon';
import { describe, expect, it } from 'vitest';
import { resolveLocal, spokenClock, spokenDate, spokenDateTime, spokenMinutes } from '../src/booking/time.js';

const NY = 'America/New_York';
const LON = 'Europe/London';

describe('spoken times by locale', () => {
  const t = DateTime.fromISO('2027-03-04T15:00:00', { zone: LON });

  it('en-US (and no locale) are what they always were', () => {
    const ny = DateTime.fromISO('2027-03-04T15:00:00', { zone: NY });
    for (const locale of [undefined, 'en-US'] as const) {
      expect(spokenDateTime(ny, locale)).toBe('Thursday, March 4 at 3:00 PM');
      expect(spokenClock(ny.set({ hour: 0, minute: 5 }), locale)).toBe('12:05 AM');
      expect(spokenMinutes(17 * 60 + 30, locale)).toBe('5:30 PM');
      expect(spokenMinutes(1440, locale)).toBe('12:00 AM');
    }
  });

  it('en-GB: day before month, no comma, 24-hour clock', () => {
    expect(spokenDateTime(t, 'en-GB')).toBe('Thursday 4 March at 15:00');
    expect(spokenDate(t, 'en-GB')).toBe('Thursday 4 March');
    expect(spokenClock(t.set({ hour: 9, minute: 5 }), 'en-GB')).toBe('09:05');
    expect(spokenMinutes(9 * 60, 'en-GB')).toBe('09:00');
    expect(spokenMinutes(1440, 'en-GB')).toBe('00:00');
  });

  it('en-GB names the second pass of a repeated hour the British way', () => {
    // UK clocks go back at 02:00 BST on 2027-10-31: 01:30 happens twice.
    const second = DateTime.fromISO('2027-10-31T01:30:00Z', { zone: LON });
    expect(spokenClock(second, 'en-GB')).toBe('01:30 after the clocks go back');
    expect(spokenClock(second, 'en-US')).toBe('1:30 AM after the clocks fall back');
  });

  it('a time the clocks skip is refused in the clinic locale', () => {
    // UK clocks go forward at 01:00 GMT on 2027-03-28.
    expect(() => resolveLocal({ year: 2027, month: 3, day: 28 }, { hour: 1, minute: 30 }, LON, 'en-GB')).toThrow(
      "01:30 doesn't exist on 28 March because the clocks go forward. Could we pick another time?",
    );
    expect(() => resolveLocal({ year: 2027, month: 3, day: 14 }, { hour: 2, minute: 30 }, NY)).toThrow(
      "2:30 AM doesn't exist on March 14 because the clocks spring forward. Could we pick another time?",
    );
  });
});
