/**
 * The transition-table zone (src/booking/zone.ts) must answer exactly what
 * luxon's IANAZone answers, for every instant: checked around every change
 * and at random instants, in zones with unusual rules.
 */
import { DateTime, IANAZone } from 'luxon';
import { describe, expect, it } from 'vitest';
import { clinicZone } from '../src/booking/zone.js';

const ZONES = [
  'America/New_York',
  'America/St_Johns',
  'America/Havana',
  'America/Santiago',
  'America/Sao_Paulo',
  'Europe/London',
  'Europe/Dublin',
  'Africa/Casablanca',
  'Asia/Kathmandu',
  'Asia/Tehran',
  'Australia/Lord_Howe',
  'Australia/Sydney',
  'Pacific/Chatham',
  'Pacific/Apia',
  'Antarctica/Troll',
  'Asia/Kolkata',
  'UTC',
];

describe('clinicZone', () => {
  // IANAZone.offset asks Intl each time: each instant's offset is computed once, and the
  // comparisons are collected and checked once, rather than an expect() per instant.
  const STEP = 6 * 3_600_000;

  it('gives the same offset as IANAZone a minute and a millisecond either side of every change, 2025-2028', () => {
    const wrong: string[] = [];
    for (const name of ZONES) {
      const iana = IANAZone.create(name);
      const table = clinicZone(name);
      let changes = 0;
      let here = iana.offset(Date.UTC(2025, 0, 1));
      for (let ts = Date.UTC(2025, 0, 1); ts < Date.UTC(2029, 0, 1); ts += STEP) {
        const next = iana.offset(ts + STEP);
        const before = here;
        here = next;
        if (before === next) continue;
        // Find the exact change, then compare around it.
        let lo = ts;
        let hi = ts + STEP;
        while (hi - lo > 1) {
          const mid = lo + Math.floor((hi - lo) / 2);
          if (iana.offset(mid) === before) lo = mid;
          else hi = mid;
        }
        changes += 1;
        for (const t of [lo - 60_000, lo, hi, hi + 60_000]) {
          const got = table.offset(t);
          const want = iana.offset(t);
          if (got !== want) wrong.push(`${name} at ${new Date(t).toISOString()}: ${got}, IANAZone ${want}`);
        }
      }
      if (!['Asia/Kathmandu', 'Asia/Kolkata', 'UTC', 'America/Sao_Paulo', 'Asia/Tehran', 'Pacific/Apia'].includes(name))
        expect(changes, name).toBeGreaterThan(0);
    }
    expect(wrong).toEqual([]);
  });

  it('gives the same offset at 2,000 random instants in each zone', () => {
    let seed = 7;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const wrong: string[] = [];
    let checked = 0;
    for (const name of ZONES) {
      const iana = IANAZone.create(name);
      const table = clinicZone(name);
      for (let i = 0; i < 2000; i++) {
        const t = Date.UTC(2020, 0, 1) + Math.floor(rand() * 15 * 365 * 86_400_000);
        const got = table.offset(t);
        const want = iana.offset(t);
        checked += 1;
        if (got !== want) wrong.push(`${name} at ${new Date(t).toISOString()}: ${got}, IANAZone ${want}`);
      }
    }
    expect(checked).toBe(2000 * ZONES.length);
    expect(wrong).toEqual([]);
  });

  it('formats, names and compares like the IANA zone it stands for', () => {
    const t = Date.UTC(2027, 6, 1, 15);
    const a = DateTime.fromMillis(t, { zone: clinicZone('Europe/London') });
    const b = DateTime.fromMillis(t, { zone: 'Europe/London' });
    expect(a.toISO()).toBe(b.toISO());
    expect(a.zoneName).toBe('Europe/London');
    expect(a.offsetNameShort).toBe(b.offsetNameShort);
    expect(a.zone.equals(b.zone)).toBe(true);
    expect(a.hasSame(b, 'day')).toBe(true);
    expect(clinicZone('Not/AZone').isValid).toBe(false);
  });
});
