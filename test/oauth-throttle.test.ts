/**
 * The token endpoint under guessing: deactivated clinics get no token, unknown
 * client ids cost no scrypt and take as long as wrong secrets, failures are
 * throttled per source address and per client id, and a client that
 * authenticated before keeps getting tokens through a storm.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_SCRYPT_N } from '../src/auth/clients.js';
import { registry } from '../src/metrics.js';
import { ADMIN_TOKEN, createOrg, startHarness, type Harness, type TestOrg } from './helpers/harness.js';

let h: Harness;
let org: TestOrg;

const LIMIT_SOURCE = 6;
const LIMIT_CLIENT = 4;

beforeAll(async () => {
  h = await startHarness({
    TRUST_PROXY: 'loopback',
    OAUTH_FAILURES_PER_SOURCE: String(LIMIT_SOURCE),
    OAUTH_FAILURES_PER_CLIENT: String(LIMIT_CLIENT),
    OAUTH_THROTTLE_WINDOW_SECONDS: '60',
    OAUTH_THROTTLE_PAUSE_MS: '50',
    // Timed against real secret checks: the production cost, not the suite's cheaper one.
    CLIENT_SECRET_SCRYPT_N: String(DEFAULT_SCRYPT_N),
  });
  org = await createOrg(h);
});
afterAll(async () => h?.close());

let addr = 0;
/** A distinct client address per call, as the proxy in front would report it. */
const freshSource = () => {
  addr += 1;
  return `198.51.100.${addr}`;
};

function token(id: string, secret: string, source: string) {
  return h.http
    .post('/oauth/token')
    .set('X-Forwarded-For', source)
    .type('form')
    .send({ grant_type: 'client_credentials', client_id: id, client_secret: secret });
}

async function metric(name: string, label = ''): Promise<number> {
  const m = await registry.getSingleMetric(name)?.get();
  return (m?.values ?? []).filter((v) => !label || Object.values(v.labels).includes(label)).reduce((a, v) => a + v.value, 0);
}

async function newClient(o: TestOrg = org) {
  const c = await h.http.post(`/api/admin/orgs/${o.id}/clients`).set('Authorization', `Bearer ${ADMIN_TOKEN}`).send({ name: 'extra' });
  expect(c.status).toBe(201);
  return c.body as { clientId: string; clientSecret: string };
}

describe('deactivated clinic', () => {
  it('gets no new token: 400 unauthorized_client; reactivated, it does again', async () => {
    const o = await createOrg(h);
    await h.http.patch(`/api/admin/orgs/${o.id}`).set('Authorization', `Bearer ${ADMIN_TOKEN}`).send({ active: false });
    const refused = await token(o.clientId, o.clientSecret, freshSource());
    expect(refused.status).toBe(400);
    expect(refused.body).toEqual({ error: 'unauthorized_client', error_description: 'The clinic for this client is not active.' });
    expect(refused.body.access_token).toBeUndefined();
    await h.http.patch(`/api/admin/orgs/${o.id}`).set('Authorization', `Bearer ${ADMIN_TOKEN}`).send({ active: true });
    expect((await token(o.clientId, o.clientSecret, freshSource())).status).toBe(200);
  });

  it('a remembered client of a clinic deactivated since gets no token either', async () => {
    const o = await createOrg(h);
    expect((await token(o.clientId, o.clientSecret, freshSource())).status).toBe(200);
    await h.owner`UPDATE orgs SET active = false WHERE id = ${o.id}`;
    expect((await token(o.clientId, o.clientSecret, freshSource())).status).toBe(400);
  });
});

describe('unknown client ids', () => {
  it('cost no scrypt check', async () => {
    const before = await metric('oauth_secret_checks_total');
    for (let i = 0; i < 3; i++) expect((await token(`cli_unknown_${i}`, 'cs_guess', freshSource())).status).toBe(401);
    expect(await metric('oauth_secret_checks_total')).toBe(before);
    // Control: a wrong secret for a real client does cost one.
    const c = await newClient();
    expect((await token(c.clientId, 'cs_wrong', freshSource())).status).toBe(401);
    expect(await metric('oauth_secret_checks_total')).toBe(before + 1);
  });

  it('are answered in about the time a wrong secret takes', async () => {
    const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const time = async (id: string) => {
      const t = performance.now();
      expect((await token(id, 'cs_guess', freshSource())).status).toBe(401);
      return performance.now() - t;
    };
    const unknown: number[] = [];
    const wrong: number[] = [];
    for (let i = 0; i < 5; i++) {
      const c = await newClient();
      unknown.push(await time(`cli_nobody_${i}`));
      wrong.push(await time(c.clientId));
    }
    const ratio = median(unknown) / median(wrong);
    expect(ratio, `unknown ${median(unknown).toFixed(1)} ms, wrong secret ${median(wrong).toFixed(1)} ms`).toBeGreaterThan(0.5);
    expect(ratio).toBeLessThan(2);
  });
});

describe('throttling failed attempts', () => {
  it(`per source address: after ${LIMIT_SOURCE} failures, 429 with Retry-After, without work; other addresses are unaffected`, async () => {
    const source = freshSource();
    for (let i = 0; i < LIMIT_SOURCE; i++) expect((await token(`cli_guess_${i}`, 'x', source)).status).toBe(401);
    const checks = await metric('oauth_secret_checks_total');
    const c = await newClient();
    const blocked = await token(c.clientId, 'wrong', source);
    expect(blocked.status).toBe(429);
    expect(Number(blocked.headers['retry-after'])).toBeGreaterThan(0);
    expect(blocked.headers['cache-control']).toBe('no-store');
    expect(await metric('oauth_secret_checks_total')).toBe(checks);
    // A correct secret from the blocked address is refused too: nothing distinguishes it before checking.
    expect((await token(c.clientId, c.clientSecret, source)).status).toBe(429);
    expect((await token(c.clientId, c.clientSecret, freshSource())).status).toBe(200);
  });

  it(`per client id: after ${LIMIT_CLIENT} failures from many addresses, that id is refused`, async () => {
    const c = await newClient();
    for (let i = 0; i < LIMIT_CLIENT; i++) expect((await token(c.clientId, `wrong-${i}`, freshSource())).status).toBe(401);
    expect((await token(c.clientId, 'wrong-again', freshSource())).status).toBe(429);
    // Another client of the same clinic is not affected.
    const d = await newClient();
    expect((await token(d.clientId, d.clientSecret, freshSource())).status).toBe(200);
  });

  it('a parallel burst of guesses from one address is bounded before any of it finishes', async () => {
    const source = freshSource();
    const before = await metric('oauth_throttled_total', 'source');
    const c = await newClient();
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => token(i % 2 ? c.clientId : `cli_burst_${i}`, 'guess', source)));
    const statuses = results.map((r) => r.status);
    expect(statuses.filter((s) => s === 401).length).toBeLessThanOrEqual(LIMIT_SOURCE);
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThanOrEqual(40 - LIMIT_SOURCE);
    expect(await metric('oauth_throttled_total', 'source')).toBeGreaterThanOrEqual(before + 40 - LIMIT_SOURCE);
  });

  it('a client that authenticated before keeps getting tokens while its address and its id are throttled', async () => {
    const c = await newClient();
    const source = freshSource();
    expect((await token(c.clientId, c.clientSecret, source)).status).toBe(200);
    for (let i = 0; i < LIMIT_CLIENT + LIMIT_SOURCE; i++) await token(c.clientId, `guess-${i}`, source);
    expect((await token(c.clientId, 'guess', source)).status).toBe(429);
    const ok = await token(c.clientId, c.clientSecret, source);
    expect(ok.status).toBe(200);
    expect(ok.body.token_type).toBe('Bearer');
  });

  it('revoking a remembered client stops its tokens at once', async () => {
    const c = await newClient();
    expect((await token(c.clientId, c.clientSecret, freshSource())).status).toBe(200);
    await h.owner`UPDATE oauth_clients SET revoked_at = now() WHERE client_id = ${c.clientId}`;
    expect((await token(c.clientId, c.clientSecret, freshSource())).status).toBe(401);
  });

  it('without TRUST_PROXY, X-Forwarded-For is not believed: a guesser cannot pick a fresh address', async () => {
    const plain = await startHarness(
      { OAUTH_FAILURES_PER_SOURCE: '3', OAUTH_FAILURES_PER_CLIENT: '1000', OAUTH_THROTTLE_PAUSE_MS: '50' },
      { ownerUrl: h.ownerUrl },
    );
    try {
      const statuses = [];
      for (let i = 0; i < 5; i++) {
        const r = await plain.http
          .post('/oauth/token')
          .set('X-Forwarded-For', `203.0.113.${i}`)
          .type('form')
          .send({ grant_type: 'client_credentials', client_id: `cli_x${i}`, client_secret: 'g' });
        statuses.push(r.status);
      }
      expect(statuses).toEqual([401, 401, 401, 429, 429]);
    } finally {
      await plain.close();
    }
  });
});
