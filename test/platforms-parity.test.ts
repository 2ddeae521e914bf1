/**
 * One invocation, three doors (issue 12): the same request through Vapi,
 * Retell and ElevenLabs gets the same booking behaviour, the same sentences,
 * the same smsStatus and the same replay, because everything below the
 * adapters is one code path.
 */
import { randomUUID } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { callTools, localDate, resultOf, vapiMessage } from './helpers/harness.js';
import { useClinic, useHarness } from './helpers/fixture.js';
import { admin, elevenPost, retellBody, retellCall, retellPost, setRetellKey } from './helpers/platforms.js';

const h = useHarness();
const org = useClinic(h);
let key: string;

beforeAll(async () => {
  key = await setRetellKey(h, org.id);
  const sms = await h.http
    .put(`/api/admin/orgs/${org.id}/sms`)
    .set(admin)
    .send({ providers: [{ kind: 'sandbox', senderNumbers: ['+15005550006'] }] });
  expect(sms.status).toBe(200);
});

type Door = 'vapi' | 'retell' | 'elevenlabs';
const DOORS: Door[] = ['vapi', 'retell', 'elevenlabs'];

/** One tool call through a door, as that platform sends it; the answer as a plain result object. */
async function through(door: Door, name: string, args: Record<string, unknown>, callId: string): Promise<Record<string, any>> {
  if (door === 'vapi') {
    const res = await callTools(
      h,
      org.token,
      vapiMessage([{ name, args, id: `tc_${callId}` }], { call: { id: callId }, customer: { number: '+14155550161' } }),
    );
    expect(res.status).toBe(200);
    const r = res.body.results[0];
    return r.result !== undefined ? resultOf(res) : { success: false, message: r.error };
  }
  const res =
    door === 'retell'
      ? await retellPost(
          h,
          `/api/retell/${org.id}/tools`,
          retellBody(name, args, retellCall({ call_id: callId, from_number: '+14155550161' })),
          key,
        )
      : await elevenPost(h, org.token, name, args, callId, '+14155550161');
  expect(res.status).toBe(200);
  return res.body;
}

let hour = 8;
describe('the same request through each door', () => {
  for (const door of DOORS) {
    it(`${door}: books with the caller id, confirms by SMS, and a replay returns the same appointment`, async () => {
      hour += 1;
      const callId = `call_${door}_${randomUUID()}`;
      const args = {
        patientName: 'Parity Patient',
        appointmentDate: localDate(14),
        appointmentTime: `${hour}:00`,
        serviceType: 'standard',
      };
      const first = await through(door, 'bookClinicAppointment', args, callId);
      expect(first).toMatchObject({ success: true, smsStatus: 'sent', smsProvider: 'sandbox', service: 'Standard Visit' });
      expect(first.message).toMatch(/^You're booked for a Standard Visit with Dr\. .+ A confirmation text is on its way\.$/);
      const [row] = await h.owner`SELECT patient_phone, call_id FROM appointments WHERE id = ${first.appointmentId}`;
      expect(row).toEqual({ patient_phone: '+14155550161', call_id: callId });
      const again = await through(door, 'bookClinicAppointment', args, callId);
      expect(again.appointmentId).toBe(first.appointmentId);
      expect(again.smsStatus).toBe('sent');
      const [n] = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM sms_outbox WHERE appointment_id = ${first.appointmentId}`;
      expect(n!.n).toBe(1);
    });
  }

  it('every refusal is the same sentence on every door', async () => {
    const cases: Array<[string, Record<string, unknown>]> = [
      ['checkAvailability', { date: '31/12/2030' }],
      ['bookClinicAppointment', { patientName: 'Past', appointmentDate: '2020-01-01', appointmentTime: '09:00' }],
      ['bookClinicAppointment', { appointmentDate: localDate(15) }],
      ['cancelAppointment', { appointmentId: randomUUID() }],
      ['takeMessage', { patientName: 'X' }],
      ['noSuchTool', {}],
    ];
    for (const [name, args] of cases) {
      const said = await Promise.all(DOORS.map((d) => through(d, name, args, `call_${randomUUID()}`)));
      for (const s of said) expect(s.success, name).toBe(false);
      expect(new Set(said.map((s) => s.message)).size, `${name}: ${said.map((s) => s.message).join(' | ')}`).toBe(1);
    }
  });

  it('a slot taken through one door is taken for the others, with the same alternatives', async () => {
    const args = {
      patientName: 'First Come',
      appointmentDate: localDate(16),
      appointmentTime: '10:00',
      serviceType: 'extended',
      practitioner: 'Dr. Alice Adams',
    };
    expect((await through('retell', 'bookClinicAppointment', args, `call_${randomUUID()}`)).success).toBe(true);
    const others = await Promise.all(
      (['vapi', 'elevenlabs'] as const).map((d) =>
        through(d, 'bookClinicAppointment', { ...args, patientName: 'Second' }, `call_${randomUUID()}`),
      ),
    );
    for (const o of others) expect(o).toMatchObject({ success: false, reason: 'slot_taken' });
    expect(others[0]!.message).toBe(others[1]!.message);
  });
});
