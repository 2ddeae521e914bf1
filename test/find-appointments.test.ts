/**
 * findAppointments (issue 11): the caller's upcoming appointments at this
 * clinic, speakable with their status, at most three and the count of the
 * rest; the caller id by default; the same org checks as every tool; its ids
 * are what cancel and reschedule take. Through all three platforms' doors.
 */
import { randomUUID } from 'node:crypto';
import { DateTime } from 'luxon';
import { beforeAll, describe, expect, it } from 'vitest';
import { callTools, localDate, resultOf, vapiMessage } from './helpers/harness.js';
import { useClinic, useHarness } from './helpers/fixture.js';
import { admin, elevenPost, retellBody, retellCall, retellPost, setRetellKey } from './helpers/platforms.js';

const h = useHarness();
const org = useClinic(h);
const other = useClinic(h);
let key: string;

beforeAll(async () => {
  key = await setRetellKey(h, org.id);
});

const CALLER = '+14155550177';

async function find(args: Record<string, unknown>, opts: { token?: string; caller?: string; extra?: Record<string, unknown> } = {}) {
  const res = await callTools(
    h,
    opts.token ?? org.token,
    vapiMessage([{ name: 'findAppointments', args }], {
      call: { id: `call_${randomUUID()}` },
      customer: { number: opts.caller ?? CALLER },
      ...opts.extra,
    }),
  );
  return res;
}

async function bookFor(phone: string, date: string, time: string, serviceType = 'standard') {
  const res = await callTools(
    h,
    org.token,
    vapiMessage([
      {
        name: 'bookClinicAppointment',
        args: {
          patientName: 'Lee Park',
          patientPhone: phone,
          appointmentDate: date,
          appointmentTime: time,
          serviceType,
          practitioner: 'Dr. Alice Adams',
        },
      },
    ]),
  );
  const r = resultOf(res);
  expect(r.success, JSON.stringify(r)).toBe(true);
  return r;
}

describe('findAppointments', () => {
  it('by the caller id: the soonest three with times and statuses, and how many more', async () => {
    const day = localDate(40);
    const booked = [];
    for (const t of ['09:00', '10:00', '11:00', '12:00', '13:00']) booked.push(await bookFor(CALLER, day, t));
    await h.owner`UPDATE appointments SET confirmed_at = now() WHERE id = ${booked[0]!.appointmentId}`;
    await h.owner`UPDATE appointments SET reschedule_requested_at = now() WHERE id = ${booked[1]!.appointmentId}`;
    // Past, cancelled and another clinic's appointments are not the caller's upcoming ones here.
    await h.owner`UPDATE appointments SET status = 'cancelled' WHERE id = ${booked[4]!.appointmentId}`;

    const r = resultOf(await find({}));
    expect(r.success).toBe(true);
    expect(r.appointments).toHaveLength(3);
    expect(r.more).toBe(1);
    expect(r.appointments.map((a: { appointmentId: string }) => a.appointmentId)).toEqual(booked.slice(0, 3).map((b) => b.appointmentId));
    expect(r.appointments.map((a: { status: string; rescheduleRequested: boolean }) => [a.status, a.rescheduleRequested])).toEqual([
      ['confirmed', false],
      ['booked', true],
      ['booked', false],
    ]);
    const spoken = DateTime.fromISO(booked[0]!.startsAt).setZone('America/New_York').toFormat("cccc, MMMM d 'at' h:mm a");
    expect(r.appointments[0].spokenTime).toBe(spoken);
    expect(r.message).toBe(
      `You have 4 upcoming appointments. The next 3 are: a Standard Visit with Dr. Alice Adams on ${spoken}, which you've confirmed; ` +
        `a Standard Visit with Dr. Alice Adams on ${r.appointments[1].spokenTime}, which you've asked to move; ` +
        `and a Standard Visit with Dr. Alice Adams on ${r.appointments[2].spokenTime}. There is 1 more after those.`,
    );
  });

  it('one appointment is one sentence; a date narrows the search; a phone given wins over the caller id', async () => {
    const phone = '+14155550178';
    const a = await bookFor(phone, localDate(41), '15:00');
    await bookFor(phone, localDate(42), '15:00');
    await h.owner`UPDATE appointments SET confirmed_at = now() WHERE id = ${a.appointmentId}`;
    const r = resultOf(await find({ patientPhone: '(415) 555-0178', date: localDate(41) }));
    expect(r.appointments).toHaveLength(1);
    expect(r.more).toBe(0);
    expect(r.message).toBe(
      `You're booked for a Standard Visit with Dr. Alice Adams on ${r.appointments[0].spokenTime}, and you've confirmed it.`,
    );
    // Its id is what cancel takes.
    const cancel = resultOf(
      await callTools(h, org.token, vapiMessage([{ name: 'cancelAppointment', args: { appointmentId: r.appointments[0].appointmentId } }])),
    );
    expect(cancel).toMatchObject({ success: true, status: 'cancelled' });
    expect(resultOf(await find({ patientPhone: phone, date: localDate(41) })).message).toMatch(
      /^I couldn't find any upcoming appointments on .+ for the number ending in 0 1 7 8\.$/,
    );
  });

  it('nothing found, no phone at all, a bad phone, a past date: a sentence each', async () => {
    expect(resultOf(await find({}, { caller: '+14155550179' })).message).toBe(
      "I couldn't find any upcoming appointments for the number ending in 0 1 7 9.",
    );
    const noCaller = await callTools(h, org.token, vapiMessage([{ name: 'findAppointments', args: {} }]));
    expect(noCaller.body.results[0].error).toBe('What phone number were the appointments booked with?');
    expect((await find({ patientPhone: '12' })).body.results[0].error).toMatch(/phone number doesn't look right/);
    expect((await find({ date: '2020-01-01' })).body.results[0].error).toMatch(/has already passed/);
  });

  it('the same org checks as every tool: another clinic sees none of them, and naming another clinic is refused', async () => {
    await bookFor('+14155550180', localDate(43), '09:30');
    expect(resultOf(await find({ patientPhone: '+14155550180' }, { token: other.token })).appointments).toEqual([]);
    const refused = await find({ patientPhone: '+14155550180', organizationId: org.id }, { token: other.token });
    expect(refused.status).toBe(403);
    const viaMeta = await find({}, { extra: { assistant: { metadata: { org_id: other.id } } } });
    expect(viaMeta.status).toBe(403);
    await h.http.patch(`/api/admin/orgs/${other.id}`).set(admin).send({ active: false });
    expect((await find({}, { token: other.token })).status).toBe(403);
  });

  it('speaks the same through Retell and ElevenLabs', async () => {
    const phone = '+14155550181';
    await bookFor(phone, localDate(44), '16:00');
    const vapi = resultOf(await find({}, { caller: phone }));
    const retell = await retellPost(
      h,
      `/api/retell/${org.id}/tools`,
      retellBody('findAppointments', {}, retellCall({ call_id: `call_${randomUUID()}`, from_number: phone })),
      key,
    );
    const eleven = await elevenPost(h, org.token, 'findAppointments', {}, `conv_${randomUUID()}`, phone);
    expect(retell.status).toBe(200);
    expect(eleven.status).toBe(200);
    expect(retell.body.message).toBe(vapi.message);
    expect(eleven.body.message).toBe(vapi.message);
    expect(retell.body.appointments).toEqual(vapi.appointments);
  });
});
