import { DateTime } from 'luxon';
import { describe, expect, it } from 'vitest';
import { callTools, createOrg, localDate, resultOf, vapiMessage } from './helpers/harness.js';
import { useHarness, useClinic } from './helpers/fixture.js';

const h = useHarness();
const org = useClinic(h);

const book = (args: Record<string, unknown>, id?: string, extra: Record<string, unknown> = {}) =>
  callTools(h, org.token, vapiMessage([{ name: 'bookClinicAppointment', args, ...(id ? { id } : {}) }], extra));

const base = (over: Record<string, unknown> = {}) => ({
  patientName: 'Ana Ruiz',
  patientPhone: '(415) 555-2671',
  appointmentDate: localDate(10),
  appointmentTime: '10:00',
  serviceType: 'standard',
  practitioner: 'Dr. Alice Adams',
  ...over,
});

async function countAppointments(orgId: string) {
  const [r] = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM appointments WHERE org_id = ${orgId} AND status = 'booked'`;
  return r!.n;
}

describe('bookClinicAppointment', () => {
  it('books in clinic-local time and answers with a speakable time and an offset', async () => {
    const date = localDate(12);
    const res = await book(base({ appointmentDate: date, appointmentTime: '15:00' }));
    expect(res.status).toBe(200);
    expect(res.body.results[0].name).toBe('bookClinicAppointment');
    const r = resultOf(res);
    expect(r.success).toBe(true);
    const expected = DateTime.fromISO(`${date}T15:00`, { zone: 'America/New_York' });
    expect(r.startsAt).toBe(expected.toISO({ suppressMilliseconds: true }));
    expect(r.startsAt).toMatch(/-0[45]:00$/);
    expect(r.spokenTime).toBe(`${expected.setLocale('en-US').toFormat('cccc, MMMM d')} at 3:00 PM`);
    expect(r.practitioner).toBe('Dr. Alice Adams');
    // This clinic has no SMS configured: the booking stands, the SMS is reported as not sent.
    expect(r.smsStatus).toBe('failed_but_booked');
    expect(r.smsReason).toBe('not_configured');
    const [row] = await h.owner`SELECT patient_phone, starts_at, ends_at FROM appointments WHERE id = ${r.appointmentId}`;
    expect(row!.patient_phone).toBe('+14155552671');
    expect((row!.ends_at as Date).getTime() - (row!.starts_at as Date).getTime()).toBe(30 * 60_000);
  });

  it('refuses a taken slot with success:false and nearby alternatives', async () => {
    const date = localDate(13);
    expect(resultOf(await book(base({ appointmentDate: date, appointmentTime: '11:00' }))).success).toBe(true);
    const res = await book(
      base({ appointmentDate: date, appointmentTime: '11:15', patientName: 'Someone Else', patientPhone: '+14155552672' }),
    );
    const r = resultOf(res);
    expect(r.success).toBe(false);
    expect(r.reason).toBe('slot_taken');
    expect(r.alternatives.length).toBeGreaterThan(0);
    expect(r.alternatives.length).toBeLessThanOrEqual(3);
    // 11:00-11:30 is taken for Dr. Adams: the first alternative must not overlap it.
    expect(DateTime.fromISO(r.alternatives[0].startsAt) >= DateTime.fromISO(`${date}T11:30`, { zone: 'America/New_York' })).toBe(true);
    expect(r.message).toMatch(/no longer available/);
  });

  it('books the next free practitioner when none is named', async () => {
    const date = localDate(14);
    const first = resultOf(await book(base({ appointmentDate: date, appointmentTime: '09:00', practitioner: undefined })));
    const second = resultOf(
      await book(base({ appointmentDate: date, appointmentTime: '09:00', practitioner: undefined, patientPhone: '+14155552673' })),
    );
    const third = resultOf(
      await book(base({ appointmentDate: date, appointmentTime: '09:00', practitioner: undefined, patientPhone: '+14155552674' })),
    );
    expect(first.success && second.success).toBe(true);
    expect(new Set([first.practitioner, second.practitioner]).size).toBe(2);
    expect(third.success).toBe(false);
  });

  it('replays a retried toolCallId instead of booking twice', async () => {
    const args = base({ appointmentDate: localDate(15), appointmentTime: '08:00' });
    const before = await countAppointments(org.id);
    const a = resultOf(await book(args, 'call_retry_1'));
    const b = resultOf(await book(args, 'call_retry_1'));
    expect(b.appointmentId).toBe(a.appointmentId);
    expect(b.alreadyBooked).toBe(true);
    expect(await countAppointments(org.id)).toBe(before + 1);
  });

  it('rejects the same toolCallId with different arguments and books nothing', async () => {
    const args = base({ appointmentDate: localDate(15), appointmentTime: '12:00' });
    resultOf(await book(args, 'call_reused_1'));
    const before = await countAppointments(org.id);
    const res = await book({ ...args, appointmentTime: '13:00' }, 'call_reused_1');
    expect(res.body.results[0].error).toMatch(/already used for a different booking/);
    expect(await countAppointments(org.id)).toBe(before);
  });

  it('returns the existing booking when the model re-asks with a new id in the same call', async () => {
    const args = base({ appointmentDate: localDate(16), appointmentTime: '14:00' });
    const call = { id: 'vapi-call-same' };
    const a = resultOf(await book(args, 'call_a', { call }));
    const b = resultOf(await book(args, 'call_b', { call }));
    expect(b.success).toBe(true);
    expect(b.appointmentId).toBe(a.appointmentId);
    expect(b.alreadyBooked).toBe(true);
  });

  it('uses the caller id when the model gives no phone', async () => {
    const args = base({ appointmentDate: localDate(16), appointmentTime: '16:00', patientPhone: undefined });
    const r = resultOf(await book(args, undefined, { customer: { number: '+14155550123' } }));
    expect(r.success).toBe(true);
    const [row] = await h.owner`SELECT patient_phone FROM appointments WHERE id = ${r.appointmentId}`;
    expect(row!.patient_phone).toBe('+14155550123');
  });

  it('stores unicode and SQL-looking text verbatim', async () => {
    const name = "Zoë O'Brien-Łukasz 李; DROP TABLE appointments;--";
    const r = resultOf(await book(base({ appointmentDate: localDate(17), appointmentTime: '09:30', patientName: name })));
    expect(r.success).toBe(true);
    const [row] = await h.owner`SELECT patient_name FROM appointments WHERE id = ${r.appointmentId}`;
    expect(row!.patient_name).toBe(name);
  });
});

describe('bad input gets a speakable error and books nothing', () => {
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['impossible date', { appointmentDate: '2027-02-30' }, /couldn't understand that date/],
    ['unparseable date', { appointmentDate: 'next tuesday' }, /couldn't understand that date/],
    ['unparseable time', { appointmentTime: 'half past' }, /couldn't understand that time/],
    ['hour out of range', { appointmentTime: '25:00' }, /couldn't understand that time/],
    ['invalid phone', { patientPhone: '555-0100' }, /phone number doesn't look right/],
    ['letters as phone', { patientPhone: 'call me maybe' }, /phone number doesn't look right/],
    ['missing name', { patientName: undefined }, /I still need the patient's name/],
    ['empty name', { patientName: '   ' }, /I still need the patient's name/],
    ['wrong type', { patientName: 42 }, /I couldn't use the patient's name/],
    ['time in the past', { appointmentDate: localDate(-1), appointmentTime: '10:00' }, /already passed/],
    ['unknown service', { serviceType: 'brain surgery' }, /couldn't match that visit type/],
    ['unknown practitioner', { practitioner: 'Dr. Nobody' }, /couldn't find that practitioner/],
    ['invalid email', { patientEmail: 'not-an-email' }, /email/],
  ];
  for (const [label, over, pattern] of cases) {
    it(label, async () => {
      const before = await countAppointments(org.id);
      const res = await book(base({ appointmentDate: localDate(20), appointmentTime: '10:00', ...over }));
      expect(res.status).toBe(200);
      const r = res.body.results[0];
      expect(r.result).toBeUndefined();
      expect(r.error).toMatch(pattern);
      expect(r.error).not.toMatch(/Invalid Date|Invalid DateTime|undefined|null|Z\b/);
      expect(r.error).not.toMatch(/[\r\n]/);
      expect(await countAppointments(org.id)).toBe(before);
    });
  }

  it('refuses times outside opening hours and names openings', async () => {
    const closed = await createOrg(h, {
      openingHours: {
        '1': [['09:00', '17:00']],
        '2': [['09:00', '17:00']],
        '3': [['09:00', '17:00']],
        '4': [['09:00', '17:00']],
        '5': [['09:00', '17:00']],
        '6': [['09:00', '17:00']],
        '7': [['09:00', '17:00']],
      },
    });
    const res = await callTools(
      h,
      closed.token,
      vapiMessage([
        {
          name: 'bookClinicAppointment',
          args: base({ appointmentDate: localDate(21), appointmentTime: '18:00', practitioner: undefined }),
        },
      ]),
    );
    expect(res.body.results[0].error).toMatch(/open 9:00 AM to 5:00 PM/);
    expect(res.body.results[0].error).toMatch(/closest openings are 9:00 AM/);
    const [r] = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM appointments WHERE org_id = ${closed.id}`;
    expect(r!.n).toBe(0);
  });
});

describe('daylight saving time', () => {
  // The next spring-forward and fall-back Sundays in New York, found from now,
  // so the test keeps working whatever year it runs in.
  function transition(direction: 'gap' | 'overlap'): string {
    let d = DateTime.now().setZone('America/New_York').startOf('day').plus({ days: 1 });
    for (let i = 0; i < 800; i++, d = d.plus({ days: 1 })) {
      const before = d.set({ hour: 0 }).offset;
      const after = d.set({ hour: 4 }).offset;
      if (direction === 'gap' && after > before) return d.toISODate()!;
      if (direction === 'overlap' && after < before) return d.toISODate()!;
    }
    throw new Error('no transition found');
  }

  it('refuses a time that does not exist (spring forward)', async () => {
    const res = await book(base({ appointmentDate: transition('gap'), appointmentTime: '02:30' }));
    expect(res.body.results[0].error).toMatch(/2:30 AM doesn't exist on .* clocks spring forward/);
  });

  it('books a time that happens twice (fall back) at its first occurrence, on the pre-change offset', async () => {
    const date = transition('overlap');
    const r = resultOf(await book(base({ appointmentDate: date, appointmentTime: '01:30', patientPhone: '+14155552681' })));
    expect(r.success).toBe(true);
    expect(r.startsAt).toBe(`${date}T01:30:00-04:00`);
  });

  it('books the unambiguous hour after the change with the new offset', async () => {
    const date = transition('overlap');
    const r = resultOf(await book(base({ appointmentDate: date, appointmentTime: '03:00', patientPhone: '+14155552680' })));
    expect(r.success).toBe(true);
    expect(r.startsAt).toBe(`${date}T03:00:00-05:00`);
  });
});

describe('checkAvailability', () => {
  it('lists open slots in clinic time, skipping booked ones', async () => {
    const morning = Object.fromEntries(['1', '2', '3', '4', '5', '6', '7'].map((d) => [d, [['09:00', '12:00']]]));
    const small = await createOrg(h, { openingHours: morning, practitioners: [{ name: 'Dr. Solo Smith' }] });
    const date = localDate(30);
    const booked = await callTools(
      h,
      small.token,
      vapiMessage([
        { name: 'bookClinicAppointment', args: base({ appointmentDate: date, appointmentTime: '10:00', practitioner: undefined }) },
      ]),
    );
    expect(resultOf(booked).success).toBe(true);
    const res = await callTools(
      h,
      small.token,
      vapiMessage([{ name: 'checkAvailability', args: { date, serviceType: 'Standard Visit' } }]),
    );
    const r = resultOf(res);
    expect(r.success).toBe(true);
    expect(r.timeZone).toBe('America/New_York');
    // 30-minute visits on a 15-minute grid; 10:00-10:30 is taken, so 9:45, 10:00 and 10:15 cannot start.
    expect(r.slots.map((s: { time: string }) => s.time)).toEqual([
      '9:00 AM',
      '9:15 AM',
      '9:30 AM',
      '10:30 AM',
      '10:45 AM',
      '11:00 AM',
      '11:15 AM',
      '11:30 AM',
    ]);
    for (const s of r.slots) expect(s.startsAt).toMatch(new RegExp(`^${date}T\\d{2}:\\d{2}:00-0[45]:00$`));
    expect(r.spoken).toBe('9:00 AM, 9:15 AM, 9:30 AM, 10:30 AM, 10:45 AM, 11:00 AM, 11:15 AM and 11:30 AM');
    expect(r.openingHours).toBe('9:00 AM to 12:00 PM');
  });

  it('rejects a past date with a speakable error', async () => {
    const res = await callTools(h, org.token, vapiMessage([{ name: 'checkAvailability', args: { date: localDate(-3) } }]));
    expect(res.body.results[0].error).toMatch(/has already passed/);
  });
});
