import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callTools, createOrg, localDate, resultOf, startHarness, vapiMessage, type Harness } from './helpers/harness.js';

let h: Harness;
let locked: Harness;
beforeAll(async () => {
  h = await startHarness();
  locked = await startHarness({ METRICS_TOKEN: 'metrics-token-0123456789' });
});
afterAll(async () => {
  await h?.close();
  await locked?.close();
});

describe('health, readiness and metrics', () => {
  it('healthz answers without touching the database', async () => {
    const res = await h.http.get('/healthz');
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ status: 'ok' });
  });

  it('readyz is ready when every migration is applied, and 503 when one is missing', async () => {
    expect((await h.http.get('/readyz')).body).toEqual({ status: 'ready', database: 'ok' });
    const [last] = await h.owner<{ version: number }[]>`SELECT max(version) AS version FROM schema_migrations`;
    await h.owner`DELETE FROM schema_migrations WHERE version = ${last!.version}`;
    try {
      const res = await h.http.get('/readyz');
      expect(res.status).toBe(503);
      expect(res.body.status).toBe('migrations_pending');
    } finally {
      await h.owner`INSERT INTO schema_migrations (version, name, checksum) VALUES (${last!.version}, 'restored', 'x')`;
    }
  });

  it('metrics count tool calls and never carry a patient phone or name', async () => {
    const org = await createOrg(h);
    const phone = '+14155552671';
    const booked = await callTools(
      h,
      org.token,
      vapiMessage([
        {
          name: 'bookClinicAppointment',
          args: { patientName: 'Metric Patient', patientPhone: phone, appointmentDate: localDate(11), appointmentTime: '10:00' },
        },
      ]),
    );
    expect(resultOf(booked).success).toBe(true);
    const res = await h.http.get('/metrics');
    expect(res.status).toBe(200);
    expect(res.text).toMatch(/tool_calls_total\{tool="bookClinicAppointment",result="ok"\} [1-9]/);
    expect(res.text).toContain('tool_call_duration_seconds_bucket');
    expect(res.text).not.toContain('4155552671');
    expect(res.text).not.toContain('Metric Patient');
  });

  it('with METRICS_TOKEN set, metrics need that token', async () => {
    expect((await locked.http.get('/metrics')).status).toBe(401);
    expect((await locked.http.get('/metrics').set('Authorization', 'Bearer wrong-token-000000')).status).toBe(401);
    const ok = await locked.http.get('/metrics').set('Authorization', 'Bearer metrics-token-0123456789');
    expect(ok.status).toBe(200);
    expect(ok.text).toContain('http_request_duration_seconds');
  });

  it('unknown paths are a JSON 404, not an HTML page', async () => {
    const res = await h.http.get('/nope');
    expect(res.status).toBe(404);
    expect(res.body.error).toBe('not_found');
  });
});
