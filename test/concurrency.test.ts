import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { callTools, localDate, vapiMessage } from './helpers/harness.js';
import { useHarness, useClinic } from './helpers/fixture.js';

const h = useHarness({ DB_POOL_MAX: '40' });
const org = useClinic(h, { practitioners: [{ name: 'Dr. Only One' }] });

const SERVICES = ['short', 'standard', 'long', 'extended']; // 15, 30, 45, 60 minutes

async function overlappingPairs(orgId: string): Promise<number> {
  const [r] = await h.owner<{ n: number }[]>`
    SELECT count(*)::int AS n
      FROM appointments a JOIN appointments b
        ON a.org_id = b.org_id AND a.practitioner_id = b.practitioner_id AND a.id < b.id
       AND a.starts_at < b.ends_at AND b.starts_at < a.ends_at
     WHERE a.org_id = ${orgId} AND a.status = 'booked' AND b.status = 'booked'`;
  return r!.n;
}

describe('races', () => {
  it('64 concurrent overlapping bookings of variable length for one practitioner never overlap', async () => {
    const date = localDate(40);
    // Starts every 15 minutes between 09:00 and 12:45 with 15-60 minute lengths:
    // almost every request overlaps several others.
    const requests = Array.from({ length: 64 }, (_, i) => {
      const minutes = 9 * 60 + (i % 16) * 15;
      const time = `${String(Math.floor(minutes / 60)).padStart(2, '0')}:${String(minutes % 60).padStart(2, '0')}`;
      return vapiMessage([
        {
          name: 'bookClinicAppointment',
          args: {
            patientName: `Racer ${i}`,
            patientPhone: `+1415555${String(2000 + i).padStart(4, '0')}`,
            appointmentDate: date,
            appointmentTime: time,
            serviceType: SERVICES[i % 4],
          },
        },
      ]);
    });
    const responses = await Promise.all(requests.map((body) => callTools(h, org.token, body)));
    expect(responses.every((r) => r.status === 200)).toBe(true);
    const results = responses.map((r) => JSON.parse(r.body.results[0].result));
    const booked = results.filter((r) => r.success);
    const refused = results.filter((r) => !r.success);
    expect(booked.length).toBeGreaterThan(0);
    expect(refused.length).toBeGreaterThan(0);
    expect(booked.length + refused.length).toBe(64);
    expect(refused.every((r) => r.reason === 'slot_taken')).toBe(true);

    // The answers agree with each other...
    const intervals = booked.map((r) => [Date.parse(r.startsAt), Date.parse(r.endsAt)] as const).sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < intervals.length; i++) expect(intervals[i]![0]).toBeGreaterThanOrEqual(intervals[i - 1]![1]);
    // ...and with the table: every success is a row, and no two rows overlap.
    const [rows] = await h.owner<
      { n: number }[]
    >`SELECT count(*)::int AS n FROM appointments WHERE org_id = ${org.id} AND status = 'booked'`;
    expect(rows!.n).toBe(booked.length);
    expect(await overlappingPairs(org.id)).toBe(0);
  });

  it('a storm of one toolCallId creates exactly one appointment', async () => {
    const date = localDate(41);
    const body = vapiMessage([
      {
        id: `call_storm_${randomUUID()}`,
        name: 'bookClinicAppointment',
        args: {
          patientName: 'Storm',
          patientPhone: '+14155559999',
          appointmentDate: date,
          appointmentTime: '15:00',
          serviceType: 'standard',
        },
      },
    ]);
    const responses = await Promise.all(Array.from({ length: 40 }, () => callTools(h, org.token, body)));
    const ids = new Set(responses.map((r) => JSON.parse(r.body.results[0].result).appointmentId));
    expect(ids.size).toBe(1);
    expect([...ids][0]).toMatch(/^[0-9a-f-]{36}$/);
    const [rows] = await h.owner<{ n: number }[]>`
      SELECT count(*)::int AS n FROM appointments WHERE org_id = ${org.id} AND patient_phone = '+14155559999'`;
    expect(rows!.n).toBe(1);
    const [keys] = await h.owner<
      { n: number }[]
    >`SELECT count(*)::int AS n FROM idempotency_keys WHERE org_id = ${org.id} AND key = ${`vapi:${body.message.toolCallList[0]!.id}`}`;
    expect(keys!.n).toBe(1);
  });

  it('the exclusion constraint refuses an overlap even from a writer that skips the lock', async () => {
    const [p] = await h.owner<{ id: string }[]>`SELECT id FROM practitioners WHERE org_id = ${org.id}`;
    const [s] = await h.owner<{ id: string }[]>`SELECT id FROM services WHERE org_id = ${org.id} AND code = 'standard'`;
    const insert = (start: string, end: string) => h.owner`
      INSERT INTO appointments (org_id, practitioner_id, service_id, patient_name, patient_phone, starts_at, ends_at)
      VALUES (${org.id}, ${p!.id}, ${s!.id}, 'Direct', '+14155551111', ${start}, ${end})`;
    await insert('2031-01-01T10:00:00Z', '2031-01-01T10:30:00Z');
    await expect(insert('2031-01-01T10:15:00Z', '2031-01-01T10:45:00Z')).rejects.toMatchObject({ code: '23P01' });
    // Back-to-back is fine: ranges are half-open.
    expect((await insert('2031-01-01T10:30:00Z', '2031-01-01T11:00:00Z')).count).toBe(1);
  });
});
