/**
 * The operator's read views: the list of clinics, a clinic's recent texts as
 * the patient gets them, its inbox, and the no-store rule on patient data.
 */
import { randomUUID } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, callTools, createOrg, localDate, resultOf, vapiMessage, type TestOrg } from './helpers/harness.js';
import { useHarness } from './helpers/fixture.js';

const h = useHarness();
const auth = { Authorization: `Bearer ${ADMIN_TOKEN}` };

describe('GET /api/admin/orgs', () => {
  it('lists every clinic, newest first, in pages that neither skip nor repeat', async () => {
    const made: string[] = [];
    for (let i = 0; i < 5; i++) made.push((await createOrg(h)).id);
    const seen: string[] = [];
    let next: string | null = null;
    do {
      const res: { status: number; body: { items: Array<{ id: string }>; next: string | null } } = await h.http
        .get(`/api/admin/orgs?limit=2${next ? `&before=${next}` : ''}`)
        .set(auth);
      expect(res.status).toBe(200);
      expect(res.body.items.length).toBeLessThanOrEqual(2);
      for (const o of res.body.items) expect(Object.keys(o).sort()).toEqual(['active', 'createdAt', 'id', 'name', 'timeZone']);
      seen.push(...res.body.items.map((o: { id: string }) => o.id));
      next = res.body.next;
    } while (next);
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen).toEqual(expect.arrayContaining(made));
    // Newest first: the last one created comes before the first one.
    expect(seen.indexOf(made[4]!)).toBeLessThan(seen.indexOf(made[0]!));
  });

  it('filters by active, and refuses a bad cursor or limit with 400', async () => {
    const o = await createOrg(h);
    await h.http.patch(`/api/admin/orgs/${o.id}`).set(auth).send({ active: false });
    const inactive = await h.http.get('/api/admin/orgs?active=false&limit=200').set(auth);
    expect(inactive.body.items.map((x: { id: string }) => x.id)).toContain(o.id);
    expect(inactive.body.items.every((x: { active: boolean }) => !x.active)).toBe(true);
    expect((await h.http.get('/api/admin/orgs?before=garbage').set(auth)).status).toBe(400);
    expect((await h.http.get('/api/admin/orgs?limit=0').set(auth)).status).toBe(400);
    expect((await h.http.get('/api/admin/orgs?active=maybe').set(auth)).status).toBe(400);
  });

  it('needs the admin token', async () => {
    const o = await createOrg(h);
    expect((await h.http.get('/api/admin/orgs')).status).toBe(401);
    expect((await h.http.get('/api/admin/orgs').set('Authorization', `Bearer ${o.token}`)).status).toBe(401);
  });
});

describe('GET /api/admin/orgs/:id/messages', () => {
  let org: TestOrg;
  let appointmentId: string;
  const phone = '+14155550177';

  beforeAll(async () => {
    org = await createOrg(h);
    const sms = await h.http
      .put(`/api/admin/orgs/${org.id}/sms`)
      .set(auth)
      .send({ providers: [{ kind: 'sandbox', senderNumbers: ['+15005550006'] }] });
    expect(sms.status).toBe(200);
    const res = await callTools(
      h,
      org.token,
      vapiMessage([
        {
          name: 'bookClinicAppointment',
          args: {
            patientName: 'Ana Ruiz',
            patientPhone: phone,
            appointmentDate: localDate(9),
            appointmentTime: '10:30',
            serviceType: 'short',
          },
        },
      ]),
    );
    const r = resultOf(res);
    expect(r.success).toBe(true);
    appointmentId = r.appointmentId;
  });

  it('shows the sandbox text exactly as the patient would get it, its state, provider and attempts, with the phone masked', async () => {
    const res = await h.http.get(`/api/admin/orgs/${org.id}/messages`).set(auth);
    expect(res.status).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    const [m] = res.body.items;
    const [row] = await h.owner<
      { body: string; status: string }[]
    >`SELECT body, status FROM sms_outbox WHERE appointment_id = ${appointmentId}`;
    expect(m.appointmentId).toBe(appointmentId);
    expect(m.body).toBe(row!.body);
    expect(m.body).toMatch(/^Hi Ana, your appointment at .+ is confirmed for .+ at 10:30 AM E[DS]T\. Reply STOP to opt out\.$/);
    expect(m.status).toBe(row!.status);
    expect(m.provider).toBe('sandbox');
    expect(m.to).not.toContain('4155550177');
    expect(m.to).toMatch(/0177/);
    expect(m.attempts).toEqual([expect.objectContaining({ provider: 'sandbox', outcome: 'accepted', errorClass: null })]);
    expect(JSON.stringify(res.body)).not.toContain(phone);
  });

  it('shows the full phone only when asked', async () => {
    const res = await h.http.get(`/api/admin/orgs/${org.id}/messages?unmask=true`).set(auth);
    expect(res.body.items[0].to).toBe(phone);
  });

  it("never shows another clinic's messages, and is 404 for an unknown clinic", async () => {
    const other = await createOrg(h);
    const res = await h.http.get(`/api/admin/orgs/${other.id}/messages`).set(auth);
    expect(res.status).toBe(200);
    expect(res.body.items).toEqual([]);
    expect((await h.http.get(`/api/admin/orgs/${randomUUID()}/messages`).set(auth)).status).toBe(404);
  });
});

describe('GET /api/admin/orgs/:id/inbox', () => {
  it("lists the clinic's own inbox, newest first, phones masked, never another clinic's", async () => {
    const [a, b] = await Promise.all([createOrg(h), createOrg(h)]);
    await h.owner`
      INSERT INTO inbox_messages (org_id, channel, kind, from_phone, body, created_at) VALUES
        (${a.id}, 'sms', 'sms_reply', '+14155550188', 'Running 10 minutes late', now() - interval '1 minute'),
        (${a.id}, 'voice', 'voice_message', NULL, 'Please call me back about my results', now()),
        (${b.id}, 'sms', 'sms_reply', '+14155550199', 'Other clinic', now())`;
    const res = await h.http.get(`/api/admin/orgs/${a.id}/inbox`).set(auth);
    expect(res.status).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.body.items.map((i: { body: string }) => i.body)).toEqual([
      'Please call me back about my results',
      'Running 10 minutes late',
    ]);
    expect(res.body.items[1].from).toMatch(/0188/);
    expect(res.body.items[1].from).not.toContain('4155550188');
    expect(res.body.next).toBeNull();
    const first = await h.http.get(`/api/admin/orgs/${a.id}/inbox?unmask=true&limit=1`).set(auth);
    expect(first.body.items.map((i: { body: string }) => i.body)).toEqual(['Please call me back about my results']);
    const second = await h.http.get(`/api/admin/orgs/${a.id}/inbox?unmask=true&limit=1&before=${first.body.next}`).set(auth);
    expect(second.body.items.map((i: { from: string }) => i.from)).toEqual(['+14155550188']);
    expect(second.body.next).toBeNull();
  });
});

describe('dead letters', () => {
  it('are never cached: the list carries full phones and texts', async () => {
    const res = await h.http.get('/api/admin/failed-sms').set(auth);
    expect(res.status).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
  });
});

describe('the sandbox chain', () => {
  it('needs nothing but its kind: {"kind":"sandbox"} is a whole chain', async () => {
    const org = await createOrg(h);
    const res = await h.http
      .put(`/api/admin/orgs/${org.id}/sms`)
      .set(auth)
      .send({ providers: [{ kind: 'sandbox' }] });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.providers).toEqual([expect.objectContaining({ kind: 'sandbox', senderNumbers: ['+15005550006'] })]);
    const booked = resultOf(
      await callTools(
        h,
        org.token,
        vapiMessage([
          {
            name: 'bookClinicAppointment',
            args: {
              patientName: 'Sam Lee',
              patientPhone: '+14155550166',
              appointmentDate: localDate(11),
              appointmentTime: '09:15',
              serviceType: 'short',
            },
          },
        ]),
      ),
    );
    expect(booked.smsStatus).toBe('sent');
    expect(booked.smsProvider).toBe('sandbox');
  });
});
