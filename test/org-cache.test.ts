import { describe, expect, it } from 'vitest';
import { callTools, createOrg, localDate, resultOf, vapiMessage, type TestOrg } from './helpers/harness.js';
import { useHarness } from './helpers/fixture.js';

/**
 * Clinic settings are cached between tool calls, but the database layer of the
 * org check is not: every tool's own statement re-verifies the org and client.
 * These tests change the database behind the cache's back (as another process
 * or an operator with psql would) and expect the very next call to be refused.
 */
const h = useHarness({ ORG_CACHE_TTL_MS: '300000' });

const bookArgs = (time: string) => ({
  patientName: 'Cache Test',
  patientPhone: '+14155552671',
  appointmentDate: localDate(9),
  appointmentTime: time,
});

async function warm(org: TestOrg) {
  const r = resultOf(await callTools(h, org.token, vapiMessage([{ name: 'checkAvailability', args: { date: localDate(9) } }])));
  expect(r.success).toBe(true);
}

async function appointments(orgId: string) {
  const [r] = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM appointments WHERE org_id = ${orgId}`;
  return r!.n;
}

describe('database layer of the org check with warm settings', () => {
  it('an org deactivated in the database is refused at once by every tool, nothing booked', async () => {
    const org = await createOrg(h);
    await warm(org);
    const booked = resultOf(await callTools(h, org.token, vapiMessage([{ name: 'bookClinicAppointment', args: bookArgs('10:00') }])));
    expect(booked.success).toBe(true);
    await h.owner`UPDATE orgs SET active = false WHERE id = ${org.id}`;

    const before = await appointments(org.id);
    const book = await callTools(h, org.token, vapiMessage([{ name: 'bookClinicAppointment', args: bookArgs('11:00') }]));
    expect(book.status).toBe(403);
    expect(book.body.error).toBe('org_inactive');
    const avail = await callTools(h, org.token, vapiMessage([{ name: 'checkAvailability', args: { date: localDate(9) } }]));
    expect(avail.status).toBe(403);
    const cancel = await callTools(
      h,
      org.token,
      vapiMessage([{ name: 'cancelAppointment', args: { appointmentId: booked.appointmentId } }]),
    );
    expect(cancel.status).toBe(403);
    expect(await appointments(org.id)).toBe(before);
    const [row] = await h.owner`SELECT status FROM appointments WHERE id = ${booked.appointmentId}`;
    expect(row!.status).toBe('booked');
  });

  it('a client revoked in the database is refused at once (401), nothing booked', async () => {
    const org = await createOrg(h);
    await warm(org);
    await h.owner`UPDATE oauth_clients SET revoked_at = now() WHERE client_id = ${org.clientId}`;
    const before = await appointments(org.id);
    const res = await callTools(h, org.token, vapiMessage([{ name: 'bookClinicAppointment', args: bookArgs('12:00') }]));
    expect(res.status).toBe(401);
    expect(res.body.error).toBe('invalid_token');
    expect(await appointments(org.id)).toBe(before);
  });

  it('the legacy route is refused the same way', async () => {
    const org = await createOrg(h);
    await warm(org);
    await h.owner`UPDATE orgs SET active = false WHERE id = ${org.id}`;
    const res = await h.http
      .post('/api/vapi/tools/bookClinicAppointment')
      .set('Authorization', `Bearer ${org.token}`)
      .send({ toolCallId: 'legacy-cache', tool: { arguments: bookArgs('13:00') } });
    expect(res.status).toBe(403);
    expect(await appointments(org.id)).toBe(0);
  });

  it('reactivating the org works again without waiting for the cache', async () => {
    const org = await createOrg(h);
    await warm(org);
    await h.owner`UPDATE orgs SET active = false WHERE id = ${org.id}`;
    expect((await callTools(h, org.token, vapiMessage([{ name: 'checkAvailability', args: { date: localDate(9) } }]))).status).toBe(403);
    await h.owner`UPDATE orgs SET active = true WHERE id = ${org.id}`;
    const again = await callTools(h, org.token, vapiMessage([{ name: 'checkAvailability', args: { date: localDate(9) } }]));
    expect(again.status).toBe(200);
    expect(resultOf(again).success).toBe(true);
  });
});
