// The clinic's failover switch: default, PUT and PATCH, audit, effect in this process and in another; migration 010; log redaction.
import { Writable } from 'node:stream';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import postgres from 'postgres';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadMigrations, migrate } from '../src/db/migrate.js';
import { loggerOptions, redactDeep } from '../src/log.js';
import { DEFAULT_SNS_ACCOUNT } from './fakes/fake-sns.js';
import { FAKE_RELAY_SECRET } from './fakes/fake-relay.js';
import { DEFAULT_TELNYX_API_KEY, startFakeTelnyx, type FakeTelnyx } from './fakes/fake-telnyx.js';
import { DEFAULT_TWILIO_ACCOUNT, startFakeTwilio, type FakeTwilio } from './fakes/fake-twilio.js';
import { ADMIN_TOKEN, createOrg, freshDatabase, startHarness, type Harness } from './helpers/harness.js';
import {
  attemptsFor,
  book,
  freshPhone,
  providerEnv,
  relayLink,
  snsLink,
  telnyxLink,
  twilioLink,
  waitFor,
  type Link,
} from './helpers/sms.js';

let twilio: FakeTwilio;
let telnyx: FakeTelnyx;
let h: Harness;
const lines: string[] = [];
const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };

const env = () => ({
  ...providerEnv(twilio.url, telnyx.url),
  SMS_WORKER_ENABLED: 'true',
  SMS_WORKER_POLL_MS: '50',
  SMS_ATTEMPT_TIMEOUT_MS: '400',
  SMS_SDK_TIMEOUT_MARGIN_MS: '300',
  SMS_RESPONSE_BUDGET_MS: '2500',
  SMS_RETRY_BASE_MS: '50',
  SMS_RETRY_MAX_MS: '200',
  SMS_MAX_ATTEMPTS: '30',
  SMS_BREAKER_THRESHOLD: '100',
});

beforeAll(async () => {
  twilio = await startFakeTwilio();
  telnyx = await startFakeTelnyx();
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  h = await startHarness(env(), { log: pino(loggerOptions('debug'), sink) });
});
afterEach(async () => {
  await twilio.setFault(null);
});
afterAll(async () => {
  await h?.close();
  await twilio?.close();
  await telnyx?.close();
});

/** PUT straight through the API, without the suites' helper that switches failover on. */
const put = (orgId: string, body: Record<string, unknown>) => h.http.put(`/api/admin/orgs/${orgId}/sms`).set(admin).send(body);
const patch = (orgId: string, body: unknown) =>
  h.http
    .patch(`/api/admin/orgs/${orgId}/sms`)
    .set(admin)
    .send(body as object);
const changes = (orgId: string) =>
  h.owner<{ actor: string; from_enabled: boolean | null; to_enabled: boolean; at: Date }[]>`
    SELECT actor, from_enabled, to_enabled, at FROM sms_failover_changes WHERE org_id = ${orgId} ORDER BY id`;
const chain: Link[] = [twilioLink(), telnyxLink()];

describe('failoverEnabled', () => {
  it('a clinic configured without the field starts off: its messages retry on the primary alone', async () => {
    const org = await createOrg(h);
    const res = await put(org.id, { rateLimitPerHour: 100, providers: chain });
    expect(res.status).toBe(200);
    expect(res.body.failoverEnabled).toBe(false);
    expect(res.body.providers).toHaveLength(2);
    expect((await h.http.get(`/api/admin/orgs/${org.id}/sms`).set(admin)).body.failoverEnabled).toBe(false);

    await twilio.setFault({ kind: 'status', status: 401, code: 20003 });
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result.smsStatus).toBe('queued');
    const attempts = await attemptsFor(h, result.appointmentId);
    expect(attempts.length).toBeGreaterThan(0);
    expect(attempts.every((a) => a.provider === 'twilio')).toBe(true);
    expect(telnyx.messages.filter((m) => m.to === phone)).toHaveLength(0);

    // Switched on: the next run of the same message fails over at once in this process.
    const on = await patch(org.id, { failoverEnabled: true });
    expect(on.status).toBe(200);
    expect(on.body.failoverEnabled).toBe(true);
    await waitFor('the queued message to go out through Telnyx', async () => telnyx.messages.some((m) => m.to === phone));
  });

  it('PATCH off: a clinic with two links sends through position 0 only, even when it fails', async () => {
    const org = await createOrg(h);
    expect((await put(org.id, { rateLimitPerHour: 100, failoverEnabled: true, providers: chain })).body.failoverEnabled).toBe(true);
    await twilio.setFault({ kind: 'status', status: 401, code: 20003 });
    expect((await book(h, org)).result.smsProvider).toBe('telnyx');

    expect((await patch(org.id, { failoverEnabled: false })).body.failoverEnabled).toBe(false);
    const phone = freshPhone();
    const { result } = await book(h, org, { patientPhone: phone });
    expect(result.smsStatus).toBe('queued');
    expect((await attemptsFor(h, result.appointmentId)).every((a) => a.provider === 'twilio')).toBe(true);
    expect(telnyx.messages.filter((m) => m.to === phone)).toHaveLength(0);

    await twilio.setFault(null);
    await waitFor('the primary to take it once it recovers', async () => twilio.messages.some((m) => m.to === phone));
  });

  it('PUT without the field keeps what is stored; PUT with it sets it', async () => {
    const org = await createOrg(h);
    await put(org.id, { providers: chain, failoverEnabled: true });
    expect((await put(org.id, { providers: chain })).body.failoverEnabled).toBe(true);
    expect((await put(org.id, { providers: chain, failoverEnabled: false })).body.failoverEnabled).toBe(false);
    expect((await put(org.id, { providers: [twilioLink()] })).body.failoverEnabled).toBe(false);
  });

  it('every change is an audit row: who, when, from and to; a PATCH that changes nothing adds none', async () => {
    const org = await createOrg(h);
    const t0 = new Date(Date.now() - 1000);
    await put(org.id, { providers: chain });
    await patch(org.id, { failoverEnabled: true });
    await patch(org.id, { failoverEnabled: true });
    await put(org.id, { providers: chain, failoverEnabled: false });
    await put(org.id, { providers: chain });
    const rows = await changes(org.id);
    expect(rows.map((r) => [r.actor, r.from_enabled, r.to_enabled])).toEqual([
      ['admin', null, false],
      ['admin', false, true],
      ['admin', true, false],
    ]);
    for (const r of rows) expect(r.at.getTime()).toBeGreaterThan(t0.getTime());
    expect(lines.some((l) => l.includes('"failoverFrom":false') && l.includes('"failoverTo":true') && l.includes(org.id))).toBe(true);
  });

  it('the audit table is tenant-scoped with forced RLS', async () => {
    const [t] = await h.owner<{ on: boolean; forced: boolean }[]>`
      SELECT relrowsecurity AS on, relforcerowsecurity AS forced FROM pg_class WHERE relname = 'sms_failover_changes'`;
    expect(t).toEqual({ on: true, forced: true });
    const [n] = await h.runtime.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM sms_failover_changes`;
    expect(n!.n).toBe(0);
    expect((await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM sms_failover_changes`)[0]!.n).toBeGreaterThan(0);
  });

  it('PATCH takes exactly {failoverEnabled: boolean}, on a clinic that has SMS, with the admin token', async () => {
    const org = await createOrg(h);
    expect((await patch(org.id, { failoverEnabled: true })).status).toBe(404);
    await put(org.id, { providers: chain });
    expect((await patch(org.id, { failoverEnabled: 'yes' })).status).toBe(400);
    expect((await patch(org.id, {})).status).toBe(400);
    expect((await patch(org.id, { failoverEnabled: true, enabled: false })).status).toBe(400);
    expect((await h.http.patch(`/api/admin/orgs/${org.id}/sms`).send({ failoverEnabled: true })).status).toBe(401);
    expect((await patch('00000000-0000-4000-8000-000000000000', { failoverEnabled: true })).status).toBe(404);
    expect(await changes(org.id)).toHaveLength(1);
  });

  it('another process sees a flip within ORG_CACHE_TTL_MS', async () => {
    const other = await startHarness(
      { ...env(), SMS_WORKER_ENABLED: 'false', ORG_CACHE_TTL_MS: '300', CREDENTIALS_KEY: h.secrets.credentialsKey },
      { ownerUrl: h.ownerUrl },
    );
    try {
      const org = await createOrg(h);
      await put(org.id, { providers: chain, failoverEnabled: true });
      expect((await other.runtime.sms.chains.load(org.id))!.failoverEnabled).toBe(true);
      const flipped = Date.now();
      await patch(org.id, { failoverEnabled: false });
      await waitFor(
        'the other process to read the switch',
        async () => (await other.runtime.sms.chains.load(org.id))!.failoverEnabled === false,
        2000,
        20,
      );
      expect(Date.now() - flipped).toBeLessThan(300 + 250);
    } finally {
      await other.close();
    }
  });
});

describe('migration 010', () => {
  it('keeps failover on for clinics configured before it, and lets the chain hold sns and relay links', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'migrations-010-'));
    const sql = postgres(await freshDatabase(), { max: 2, onnotice: () => {} });
    try {
      const all = await loadMigrations();
      expect(all.map((m) => m.name)).toContain('010_providers.sql');
      for (const m of all.filter((x) => x.version < 10)) await fs.writeFile(path.join(dir, m.name), m.sql);
      await migrate(sql, dir);
      const [org] = await sql<{ id: string }[]>`
        INSERT INTO orgs (id, name, time_zone, opening_hours) VALUES (gen_random_uuid(), 'Before 010', 'America/New_York', '{}') RETURNING id`;
      await sql`INSERT INTO sms_settings (org_id) VALUES (${org!.id})`;
      await expect(sql`INSERT INTO sms_providers (org_id, position, kind) VALUES (${org!.id}, 0, 'sns')`).rejects.toMatchObject({
        code: '23514',
      });

      await fs.writeFile(path.join(dir, '010_providers.sql'), all.find((m) => m.version === 10)!.sql);
      expect((await migrate(sql, dir)).applied).toEqual(['010_providers.sql']);
      const [s] = await sql<{ failover_enabled: boolean }[]>`SELECT failover_enabled FROM sms_settings WHERE org_id = ${org!.id}`;
      expect(s!.failover_enabled).toBe(true);
      await sql`INSERT INTO sms_providers (org_id, position, kind, attempt_timeout_ms) VALUES (${org!.id}, 0, 'sns', 5000), (${org!.id}, 1, 'relay', NULL)`;
      await expect(sql`INSERT INTO sms_providers (org_id, position, kind) VALUES (${org!.id}, 2, 'carrier-pigeon')`).rejects.toMatchObject({
        code: '23514',
      });
      await expect(sql`UPDATE sms_providers SET attempt_timeout_ms = 50 WHERE org_id = ${org!.id} AND position = 0`).rejects.toMatchObject({
        code: '23514',
      });
    } finally {
      await sql.end();
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('secrets of the new links never reach a log line', () => {
  it('deep redaction blanks secretAccessKey and signingSecret at any depth', () => {
    const out = JSON.stringify(
      redactDeep({
        body: {
          providers: [
            { kind: 'sns', secretAccessKey: 'S3CRET-aws' },
            { kind: 'relay', nested: { signingSecret: 'S3CRET-relay' } },
          ],
        },
      }),
    );
    expect(out).not.toContain('S3CRET');
    expect(out.match(/\[redacted\]/g)).toHaveLength(2);
  });

  it('configuring and using SNS and relay links never logs their secrets', async () => {
    const org = await createOrg(h);
    const secretUrl = 'https://edge.example.org/sms?key=url-secret-part';
    const res = await put(org.id, {
      failoverEnabled: true,
      providers: [twilioLink(), snsLink(), relayLink(secretUrl)],
    });
    expect(res.status).toBe(200);
    h.runtime.deps.log.info({ providers: [snsLink(), relayLink(secretUrl)] }, 'an object that holds the links');
    await book(h, org);
    const all = lines.join('\n');
    for (const secret of [DEFAULT_SNS_ACCOUNT.secretAccessKey, FAKE_RELAY_SECRET, DEFAULT_TWILIO_ACCOUNT.token, DEFAULT_TELNYX_API_KEY]) {
      expect(all).not.toContain(secret);
    }
    expect(lines.some((l) => l.includes('an object that holds the links'))).toBe(true);
  });
});
