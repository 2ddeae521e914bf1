import { createHmac, createPublicKey, randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, UnsecuredJWT, exportJWK, exportSPKI, generateKeyPair, jwtVerify, type CryptoKey } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ADMIN_TOKEN,
  JWT_SECRET,
  callTools,
  createOrg,
  localDate,
  resultOf,
  startHarness,
  vapiMessage,
  type Harness,
  type TestOrg,
} from './helpers/harness.js';
import { useHarness, useClinics } from './helpers/fixture.js';

const ISSUER = 'clinic-voice-tools';
const AUDIENCE = 'voice-tools';

const h = useHarness();
const [orgA, orgB] = useClinics(h, 2) as [TestOrg, TestOrg];

const admin = <T extends { set(k: string, v: string): T }>(req: T): T => req.set('Authorization', `Bearer ${ADMIN_TOKEN}`);

async function countAll(sqlOwner: Harness['owner'] = h.owner): Promise<number> {
  const [r] = await sqlOwner<{ n: number }[]>`SELECT count(*)::int AS n FROM appointments`;
  return r!.n;
}

async function countOrg(orgId: string): Promise<number> {
  const [r] = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM appointments WHERE org_id = ${orgId} AND status = 'booked'`;
  return r!.n;
}

let slot = 0;
/** Valid booking arguments at a fresh time, so an unexpected success would really book a row. */
function bookingArgs(over: Record<string, unknown> = {}) {
  slot += 1;
  const day = 20 + Math.floor(slot / 40);
  const minutes = (slot % 40) * 15;
  const hh = String(8 + Math.floor(minutes / 60)).padStart(2, '0');
  const mm = String(minutes % 60).padStart(2, '0');
  return {
    patientName: 'Auth Test Patient',
    patientPhone: `+1415555${String(1000 + slot).slice(-4)}`,
    appointmentDate: localDate(day),
    appointmentTime: `${hh}:${mm}`,
    serviceType: 'short',
    ...over,
  };
}

const bookMessage = (over: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) =>
  vapiMessage([{ name: 'bookClinicAppointment', args: bookingArgs(over) }], extra);

function legacyBody(orgId: string, over: Record<string, unknown> = {}) {
  return {
    toolCallId: `legacy_${randomUUID()}`,
    message: { call: { id: `legacy-call-${randomUUID()}`, metadata: { org_id: orgId } } },
    tool: { arguments: bookingArgs(over) },
  };
}

async function localToken(
  claims: Record<string, unknown>,
  opts: { secret?: string; iss?: string; aud?: string; exp?: number; iat?: number; sub?: string | null } = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  let jwt = new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer(opts.iss ?? ISSUER)
    .setAudience(opts.aud ?? AUDIENCE)
    .setIssuedAt(opts.iat ?? now)
    .setExpirationTime(opts.exp ?? now + 600);
  if (opts.sub !== null) jwt = jwt.setSubject(opts.sub ?? orgA.clientId);
  return jwt.sign(new TextEncoder().encode(opts.secret ?? JWT_SECRET));
}

function basic(id: string, secret: string) {
  return `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
}

describe('/oauth/token', () => {
  it('issues a token with client_secret_basic', async () => {
    const res = await h.http
      .post('/oauth/token')
      .set('Authorization', basic(orgA.clientId, orgA.clientSecret))
      .type('form')
      .send({ grant_type: 'client_credentials' });
    expect(res.status).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.body.token_type).toBe('Bearer');
    expect(typeof res.body.access_token).toBe('string');
    expect(res.body.expires_in).toBe(h.cfg.TOKEN_TTL_SECONDS);
    const { payload, protectedHeader } = await jwtVerify(res.body.access_token, new TextEncoder().encode(JWT_SECRET), {
      issuer: ISSUER,
      audience: AUDIENCE,
    });
    expect(protectedHeader.alg).toBe('HS256');
    expect(payload.org_id).toBe(orgA.id);
    expect(payload.sub).toBe(orgA.clientId);
    // iat and exp are taken from two clock reads, so allow a one-second tick between them.
    expect(payload.exp! - payload.iat!).toBeGreaterThanOrEqual(h.cfg.TOKEN_TTL_SECONDS);
    expect(payload.exp! - payload.iat!).toBeLessThanOrEqual(h.cfg.TOKEN_TTL_SECONDS + 1);
  });

  it('issues a token with client_secret_post, and the token works on the tools endpoint', async () => {
    const res = await h.http
      .post('/oauth/token')
      .type('form')
      .send({ grant_type: 'client_credentials', client_id: orgB.clientId, client_secret: orgB.clientSecret });
    expect(res.status).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.body).toMatchObject({ token_type: 'Bearer', expires_in: h.cfg.TOKEN_TTL_SECONDS });
    const call = await callTools(h, res.body.access_token, vapiMessage([{ name: 'checkAvailability', args: { date: localDate(3) } }]));
    expect(call.status).toBe(200);
    expect(resultOf(call).success).toBe(true);
  });

  it('refuses a wrong secret over Basic with 401 invalid_client and a Basic challenge', async () => {
    const res = await h.http
      .post('/oauth/token')
      .set('Authorization', basic(orgA.clientId, `${orgA.clientSecret}x`))
      .type('form')
      .send({ grant_type: 'client_credentials' });
    expect(res.status).toBe(401);
    expect(res.body.error).toBe('invalid_client');
    expect(res.headers['www-authenticate']).toMatch(/^Basic/);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.body.access_token).toBeUndefined();
  });

  it('refuses a wrong secret in the form with 401 invalid_client', async () => {
    const res = await h.http
      .post('/oauth/token')
      .type('form')
      .send({ grant_type: 'client_credentials', client_id: orgA.clientId, client_secret: 'cs_wrong' });
    expect(res.status).toBe(401);
    expect(res.body.error).toBe('invalid_client');
    expect(res.body.access_token).toBeUndefined();
  });

  it('refuses an unknown client with 401', async () => {
    const res = await h.http
      .post('/oauth/token')
      .type('form')
      .send({ grant_type: 'client_credentials', client_id: 'cli_does_not_exist', client_secret: orgA.clientSecret });
    expect(res.status).toBe(401);
    expect(res.body.error).toBe('invalid_client');
  });

  it('refuses a client id without a secret with 401', async () => {
    const res = await h.http.post('/oauth/token').type('form').send({ grant_type: 'client_credentials', client_id: orgA.clientId });
    expect(res.status).toBe(401);
    expect(res.body.error).toBe('invalid_client');
  });

  it('requires grant_type (400 invalid_request)', async () => {
    const res = await h.http.post('/oauth/token').type('form').send({ client_id: orgA.clientId, client_secret: orgA.clientSecret });
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_request');
    expect(res.body.access_token).toBeUndefined();
  });

  it('refuses grant_type=password (400 unsupported_grant_type)', async () => {
    const res = await h.http
      .post('/oauth/token')
      .type('form')
      .send({ grant_type: 'password', username: 'x', password: 'y', client_id: orgA.clientId, client_secret: orgA.clientSecret });
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('unsupported_grant_type');
    expect(res.body.access_token).toBeUndefined();
  });

  it('refuses two different client identities in one request', async () => {
    const res = await h.http
      .post('/oauth/token')
      .set('Authorization', basic(orgA.clientId, orgA.clientSecret))
      .type('form')
      .send({ grant_type: 'client_credentials', client_id: orgB.clientId, client_secret: orgB.clientSecret });
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_request');
  });

  const tokenAttempts = async (id: string) => {
    const form = await h.http
      .post('/oauth/token')
      .type('form')
      .send({ grant_type: 'client_credentials', client_id: id, client_secret: 's' });
    const viaBasic = await h.http
      .post('/oauth/token')
      .set('Authorization', `Basic ${Buffer.from(`${id}:secret`).toString('base64')}`)
      .type('form')
      .send({ grant_type: 'client_credentials' });
    return { form: form.status, basic: viaBasic.status, formBody: form.body, basicBody: viaBasic.body };
  };

  it('answers odd client ids with 401 invalid_client, never 500', async () => {
    const odd = ['x'.repeat(201), "'; DROP TABLE oauth_clients;--", '\uD83D\uDE00', '%', '\uD800', ' ', 'cli_' + 'ä'.repeat(50)];
    for (const id of odd) {
      const r = await tokenAttempts(id);
      expect(r.form, `form client_id ${JSON.stringify(id)}`).toBe(401);
      expect(r.formBody.error).toBe('invalid_client');
      expect(r.basic, `basic client_id ${JSON.stringify(id)}`).toBe(401);
    }
    const [r] = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM oauth_clients`;
    expect(r!.n).toBeGreaterThanOrEqual(2);
  });

  // Known bug: a NUL character in client_id reaches set_config() and PostgreSQL
  // rejects it (SQLSTATE 22021), which surfaces as an unhandled 500.
  it('answers a client id containing NUL with 401 invalid_client, not 500', async () => {
    for (const id of ['a\u0000b', '\u0000']) {
      const r = await tokenAttempts(id);
      expect({ id, form: r.form, basic: r.basic }).toEqual({ id, form: 401, basic: 401 });
    }
  });

  it('revoking a client stops both new tokens and tokens minted before the revocation', async () => {
    const client = await admin(h.http.post(`/api/admin/orgs/${orgA.id}/clients`)).send({ name: 'to-revoke' });
    expect(client.status).toBe(201);
    const mint = await h.http
      .post('/oauth/token')
      .type('form')
      .send({ grant_type: 'client_credentials', client_id: client.body.clientId, client_secret: client.body.clientSecret });
    expect(mint.status).toBe(200);
    const early: string = mint.body.access_token;
    const ok = await callTools(h, early, vapiMessage([{ name: 'checkAvailability', args: { date: localDate(3) } }]));
    expect(ok.status).toBe(200);

    const del = await admin(h.http.delete(`/api/admin/orgs/${orgA.id}/clients/${client.body.clientId}`));
    expect(del.status).toBe(204);

    const again = await h.http
      .post('/oauth/token')
      .set('Authorization', basic(client.body.clientId, client.body.clientSecret))
      .type('form')
      .send({ grant_type: 'client_credentials' });
    expect(again.status).toBe(401);
    expect(again.body.error).toBe('invalid_client');

    const before = await countAll();
    const refused = await callTools(h, early, bookMessage());
    expect(refused.status).toBe(401);
    expect(refused.body.results).toBeUndefined();
    const legacy = await h.http
      .post('/api/vapi/tools/bookClinicAppointment')
      .set('Authorization', `Bearer ${early}`)
      .send(legacyBody(orgA.id));
    expect(legacy.status).toBe(401);
    expect(await countAll()).toBe(before);

    // The org's other client is unaffected.
    const other = await callTools(h, orgA.token, vapiMessage([{ name: 'checkAvailability', args: { date: localDate(3) } }]));
    expect(other.status).toBe(200);

    const list = await admin(h.http.get(`/api/admin/orgs/${orgA.id}/clients`));
    const revoked = list.body.clients.find((c: { clientId: string }) => c.clientId === client.body.clientId);
    expect(revoked.revokedAt).not.toBeNull();
  });

  it('revoking a client of another org or an unknown client is a 404 and revokes nothing', async () => {
    const cross = await admin(h.http.delete(`/api/admin/orgs/${orgA.id}/clients/${orgB.clientId}`));
    expect(cross.status).toBe(404);
    const unknown = await admin(h.http.delete(`/api/admin/orgs/${orgA.id}/clients/cli_nope`));
    expect(unknown.status).toBe(404);
    const [row] = await h.owner`SELECT revoked_at FROM oauth_clients WHERE client_id = ${orgB.clientId}`;
    expect(row!.revoked_at).toBeNull();
    const still = await callTools(h, orgB.token, vapiMessage([{ name: 'checkAvailability', args: { date: localDate(3) } }]));
    expect(still.status).toBe(200);
  });
});

describe('JWT layer', () => {
  const cases: Array<[string, () => Promise<string | undefined>]> = [
    ['no Authorization header', async () => undefined],
    ['garbage token', async () => 'not-a-jwt'],
    ['three garbage segments', async () => 'aaa.bbb.ccc'],
    ['signed with another HS256 secret', () => localToken({ org_id: orgA.id }, { secret: 'another-secret-0123456789abcdefghijklmnop' })],
    [
      'expired',
      () => {
        const now = Math.floor(Date.now() / 1000);
        return localToken({ org_id: orgA.id }, { exp: now - 600, iat: now - 1200 });
      },
    ],
    ['wrong audience', () => localToken({ org_id: orgA.id }, { aud: 'some-other-api' })],
    ['wrong issuer', () => localToken({ org_id: orgA.id }, { iss: 'https://evil.example' })],
    [
      "alg 'none'",
      async () =>
        new UnsecuredJWT({ org_id: orgA.id })
          .setIssuer(ISSUER)
          .setAudience(AUDIENCE)
          .setSubject(orgA.clientId)
          .setIssuedAt()
          .setExpirationTime('10m')
          .encode(),
    ],
    ['org_id not a UUID', () => localToken({ org_id: 'clinic-42' })],
    ['org_id missing', () => localToken({})],
    ['org_id as a number', () => localToken({ org_id: 42 })],
    ['no sub', () => localToken({ org_id: orgA.id }, { sub: null })],
  ];

  for (const [label, make] of cases) {
    it(`${label}: 401 on both routes, nothing booked`, async () => {
      const token = await make();
      const before = await countAll();
      const withAuth = <T extends { set(k: string, v: string): T }>(r: T) =>
        token === undefined ? r : r.set('Authorization', `Bearer ${token}`);

      const modern = await withAuth(h.http.post('/api/vapi/tools')).send(bookMessage());
      expect(modern.status).toBe(401);
      expect(modern.headers['www-authenticate']).toMatch(/^Bearer/);
      expect(modern.body.results).toBeUndefined();
      expect(modern.body.error).toMatch(/unauthorized|invalid_token/);

      const legacy = await withAuth(h.http.post('/api/vapi/tools/bookClinicAppointment')).send(legacyBody(orgA.id));
      expect(legacy.status).toBe(401);
      expect(legacy.headers['www-authenticate']).toMatch(/^Bearer/);
      expect(legacy.body.result).toBeUndefined();

      expect(await countAll()).toBe(before);
    });
  }

  it('a correctly signed token for an org that does not exist is refused by the database layer', async () => {
    const token = await localToken({ org_id: randomUUID() });
    const before = await countAll();
    const res = await callTools(h, token, bookMessage());
    expect(res.status).toBe(403);
    expect(res.body.error).toBe('org_inactive');
    expect(await countAll()).toBe(before);
  });

  it('a correctly signed token naming a client of a different org is refused', async () => {
    // org_id says A, but the client belongs to B: the client lookup runs under A's RLS and finds nothing.
    const token = await localToken({ org_id: orgA.id }, { sub: orgB.clientId });
    const before = await countAll();
    const res = await callTools(h, token, bookMessage());
    expect(res.status).toBe(401);
    expect(await countAll()).toBe(before);
  });

  it('a self-signed token with the right secret and claims is accepted (control)', async () => {
    const token = await localToken({ org_id: orgA.id });
    const before = await countOrg(orgA.id);
    const res = await callTools(h, token, bookMessage());
    expect(res.status).toBe(200);
    expect(resultOf(res).success).toBe(true);
    expect(await countOrg(orgA.id)).toBe(before + 1);
  });

  it('a non-Bearer Authorization scheme is refused', async () => {
    const res = await h.http.post('/api/vapi/tools').set('Authorization', basic(orgA.clientId, orgA.clientSecret)).send(bookMessage());
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toMatch(/^Bearer/);
  });
});

describe('external identity provider (JWKS)', () => {
  let idp: http.Server;
  let h2: Harness;
  let org2: TestOrg;
  let idpKey: CryptoKey;
  let publicPem: string;
  let jwksHits = 0;
  const KID = 'idp-key-1';

  beforeAll(async () => {
    const pair = await generateKeyPair('RS256', { extractable: true });
    idpKey = pair.privateKey;
    publicPem = await exportSPKI(pair.publicKey);
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: KID, alg: 'RS256', use: 'sig' };
    idp = http.createServer((req, res) => {
      if (req.url === '/jwks') {
        jwksHits += 1;
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ keys: [jwk] }));
        return;
      }
      res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => idp.listen(0, '127.0.0.1', resolve));
    const port = (idp.address() as AddressInfo).port;
    h2 = await startHarness({
      JWT_JWKS_URL: `http://127.0.0.1:${port}/jwks`,
      JWT_JWKS_ISSUER: 'https://idp.example',
      JWT_JWKS_AUDIENCE: 'voice-tools',
      JWT_ORG_CLAIM: 'org_id',
    });
    org2 = await createOrg(h2);
  });
  afterAll(async () => {
    await h2?.close();
    await new Promise<void>((resolve) => (idp ? idp.close(() => resolve()) : resolve()));
  });

  const idpToken = (
    key: CryptoKey | Uint8Array,
    claims: Record<string, unknown>,
    opts: { alg?: string; iss?: string; aud?: string; exp?: string | number } = {},
  ) =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: opts.alg ?? 'RS256', kid: KID, typ: 'JWT' })
      .setIssuer(opts.iss ?? 'https://idp.example')
      .setAudience(opts.aud ?? 'voice-tools')
      .setIssuedAt()
      .setExpirationTime(opts.exp ?? '10m')
      .sign(key);

  const check = (token: string) => callTools(h2, token, vapiMessage([{ name: 'checkAvailability', args: { date: localDate(4) } }]));

  it('accepts a token signed by the IdP key for an org of this deployment', async () => {
    const res = await check(await idpToken(idpKey, { org_id: org2.id, sub: 'idp-user-1' }));
    expect(res.status).toBe(200);
    const r = resultOf(res);
    expect(r.success).toBe(true);
    expect(Array.isArray(r.slots)).toBe(true);
    expect(jwksHits).toBeGreaterThan(0);
  });

  it('refuses a token signed by a different RSA key with the same kid', async () => {
    const other = await generateKeyPair('RS256');
    const res = await check(await idpToken(other.privateKey, { org_id: org2.id }));
    expect(res.status).toBe(401);
    expect(res.body.results).toBeUndefined();
  });

  it('refuses an HS256 token keyed with the public key material (algorithm confusion)', async () => {
    for (const material of [publicPem, JSON.stringify(await exportJWK(createPublicKey(publicPem)))]) {
      const res = await check(await idpToken(new TextEncoder().encode(material), { org_id: org2.id }, { alg: 'HS256' }));
      expect(res.status).toBe(401);
    }
  });

  it('refuses IdP tokens with the wrong issuer, wrong audience, no org claim or expired', async () => {
    const now = Math.floor(Date.now() / 1000);
    const tokens = [
      await idpToken(idpKey, { org_id: org2.id }, { iss: 'https://other-idp.example' }),
      await idpToken(idpKey, { org_id: org2.id }, { aud: 'another-api' }),
      await idpToken(idpKey, { tenant: org2.id }),
      await idpToken(idpKey, { org_id: org2.id }, { exp: now - 600 }),
    ];
    for (const t of tokens) expect((await check(t)).status).toBe(401);
  });

  it('an IdP token for an org unknown to this deployment reaches the database layer and is refused', async () => {
    const res = await check(await idpToken(idpKey, { org_id: randomUUID() }));
    expect(res.status).toBe(403);
    expect(res.body.error).toBe('org_inactive');
  });

  it('local tokens keep working next to the IdP', async () => {
    const res = await check(org2.token);
    expect(res.status).toBe(200);
  });
});

describe('request layer: the request may only name the token org', () => {
  const mismatch = async (res: { status: number; body: Record<string, unknown> }, before: number) => {
    expect(res.status).toBe(403);
    expect(res.body.error).toBe('org_mismatch');
    expect(res.body.results).toBeUndefined();
    expect(await countAll()).toBe(before);
  };

  it('organizationId of another org in the tool arguments', async () => {
    const before = await countAll();
    await mismatch(await callTools(h, orgA.token, bookMessage({ organizationId: orgB.id })), before);
  });

  it('message.assistant.metadata.org_id of another org', async () => {
    const before = await countAll();
    await mismatch(await callTools(h, orgA.token, bookMessage({}, { assistant: { metadata: { org_id: orgB.id } } })), before);
  });

  it('message.call.assistantOverrides.metadata.org_id of another org', async () => {
    const before = await countAll();
    const res = await callTools(
      h,
      orgA.token,
      bookMessage({}, { call: { id: `c-${randomUUID()}`, assistantOverrides: { metadata: { org_id: orgB.id } } } }),
    );
    await mismatch(res, before);
  });

  it('legacy body.message.call.metadata.org_id of another org', async () => {
    const before = await countAll();
    const res = await h.http
      .post('/api/vapi/tools/bookClinicAppointment')
      .set('Authorization', `Bearer ${orgA.token}`)
      .send(legacyBody(orgB.id));
    await mismatch(res, before);
  });

  it('legacy organizationId argument of another org', async () => {
    const before = await countAll();
    const body = legacyBody(orgA.id, { organizationId: orgB.id });
    const res = await h.http.post('/api/vapi/tools/bookClinicAppointment').set('Authorization', `Bearer ${orgA.token}`).send(body);
    await mismatch(res, before);
  });

  it('a non-string or malformed org id counts as a mismatch', async () => {
    for (const bad of [42, { id: orgA.id }, [orgA.id], `${orgA.id}\u0000`, 'not-a-uuid']) {
      const before = await countAll();
      const res = await callTools(h, orgA.token, bookMessage({}, { assistant: { metadata: { org_id: bad } } }));
      await mismatch(res, before);
    }
  });

  it('when only the second of two calls names another org, the first is not executed either', async () => {
    const before = await countAll();
    const first = { name: 'bookClinicAppointment', args: bookingArgs(), id: `call_${randomUUID()}` };
    const second = { name: 'checkAvailability', args: { date: localDate(5), organizationId: orgB.id } };
    const res = await callTools(h, orgA.token, vapiMessage([first, second]));
    await mismatch(res, before);
    // Control: the first call alone is valid and does book.
    const alone = await callTools(h, orgA.token, vapiMessage([first]));
    expect(resultOf(alone).success).toBe(true);
    expect(await countAll()).toBe(before + 1);
  });

  // Known bug: orgFrom() takes the first of org_id ?? orgId ?? organizationId,
  // so a second key naming another org is never compared with the token.
  it('metadata naming the token org under one key and another org under a second key is refused', async () => {
    const before = await countAll();
    const res = await callTools(h, orgA.token, bookMessage({}, { assistant: { metadata: { org_id: orgA.id, organizationId: orgB.id } } }));
    await mismatch(res, before);
  });

  it('a null organizationId names no org on the modern route', async () => {
    const res = await callTools(
      h,
      orgA.token,
      vapiMessage([{ name: 'checkAvailability', args: { date: localDate(5), organizationId: null } }]),
    );
    expect(res.status).toBe(200);
    expect(resultOf(res).success).toBe(true);
  });

  // Known bug: the legacy route only skips an undefined organizationId, so a
  // null one (which the tool schemas accept as "not given") is a 403 there.
  it('a null organizationId names no org on the legacy route either', async () => {
    const res = await h.http
      .post('/api/vapi/tools/checkAvailability')
      .set('Authorization', `Bearer ${orgA.token}`)
      .send({ toolCallId: 'legacy_null_org', tool: { arguments: { date: localDate(5), organizationId: null } } });
    expect(res.status).toBe(200);
    expect(res.body.result?.success).toBe(true);
  });

  it('matching org ids are accepted, whatever their case', async () => {
    const before = await countOrg(orgA.id);
    const a = await callTools(
      h,
      orgA.token,
      bookMessage({ organizationId: orgA.id.toUpperCase() }, { assistant: { metadata: { org_id: orgA.id } } }),
    );
    expect(a.status).toBe(200);
    expect(resultOf(a).success).toBe(true);
    const b = await callTools(
      h,
      orgA.token,
      bookMessage({}, { call: { id: `c-${randomUUID()}`, assistantOverrides: { metadata: { orgId: orgA.id } } } }),
    );
    expect(resultOf(b).success).toBe(true);
    const legacy = await h.http
      .post('/api/vapi/tools/bookClinicAppointment')
      .set('Authorization', `Bearer ${orgA.token}`)
      .send(legacyBody(orgA.id));
    expect(legacy.status).toBe(200);
    expect(legacy.body.result.success).toBe(true);
    expect(await countOrg(orgA.id)).toBe(before + 3);
  });
});

describe('database layer: inactive org', () => {
  it('a valid token of a deactivated org gets 403 org_inactive until the org is reactivated', async () => {
    const org = await createOrg(h);
    const off = await admin(h.http.patch(`/api/admin/orgs/${org.id}`)).send({ active: false });
    expect(off.status).toBe(200);
    expect(off.body.active).toBe(false);

    const before = await countAll();
    const res = await callTools(h, org.token, bookMessage());
    expect(res.status).toBe(403);
    expect(res.body.error).toBe('org_inactive');
    const legacy = await h.http
      .post('/api/vapi/tools/bookClinicAppointment')
      .set('Authorization', `Bearer ${org.token}`)
      .send(legacyBody(org.id));
    expect(legacy.status).toBe(403);
    expect(await countAll()).toBe(before);

    const on = await admin(h.http.patch(`/api/admin/orgs/${org.id}`)).send({ active: true });
    expect(on.status).toBe(200);
    const again = await callTools(h, org.token, bookMessage());
    expect(again.status).toBe(200);
    expect(resultOf(again).success).toBe(true);
    expect(await countOrg(org.id)).toBe(1);
  });
});

describe('optional per-org Vapi layers', () => {
  const HMAC_SECRET = 'hmac-secret-for-tests-0123456789';
  let org: TestOrg;
  const rawBody = () => JSON.stringify(vapiMessage([{ name: 'checkAvailability', args: { date: localDate(6) } }]));
  const sign = (ts: string, body: string, secret = HMAC_SECRET) => createHmac('sha256', secret).update(`${ts}.${body}`).digest('hex');
  const nowSec = () => String(Math.floor(Date.now() / 1000));

  const post = (body: string, headers: Record<string, string>) => {
    let req = h.http.post('/api/vapi/tools').set('Authorization', `Bearer ${org.token}`).set('Content-Type', 'application/json');
    for (const [k, v] of Object.entries(headers)) req = req.set(k, v);
    return req.send(body);
  };

  beforeAll(async () => {
    org = await createOrg(h);
    const res = await admin(h.http.patch(`/api/admin/orgs/${org.id}`)).send({ vapiHmacSecret: HMAC_SECRET });
    expect(res.status).toBe(200);
    expect(res.body.vapiHmacConfigured).toBe(true);
  });

  it('HMAC: missing signature is 401', async () => {
    const res = await post(rawBody(), {});
    expect(res.status).toBe(401);
    expect(res.body.error).toBe('invalid_signature');
    const noTs = await post(rawBody(), { 'x-signature': sign(nowSec(), rawBody()) });
    expect(noTs.status).toBe(401);
  });

  it('HMAC: a correct signature over the exact raw body is accepted', async () => {
    const body = rawBody();
    const ts = nowSec();
    const res = await post(body, { 'x-signature': sign(ts, body), 'x-timestamp': ts });
    expect(res.status).toBe(200);
    expect(resultOf(res).success).toBe(true);
  });

  it('HMAC: body whitespace is covered by the MAC', async () => {
    const body = JSON.stringify(JSON.parse(rawBody()), null, 2);
    const ts = nowSec();
    const res = await post(body, { 'x-signature': sign(ts, body), 'x-timestamp': ts });
    expect(res.status).toBe(200);
    const reformatted = JSON.stringify(JSON.parse(body));
    const tampered = await post(reformatted, { 'x-signature': sign(ts, body), 'x-timestamp': ts });
    expect(tampered.status).toBe(401);
  });

  it('HMAC: a millisecond timestamp is accepted', async () => {
    const body = rawBody();
    const ts = String(Date.now());
    const res = await post(body, { 'x-signature': sign(ts, body), 'x-timestamp': ts });
    expect(res.status).toBe(200);
  });

  it('HMAC: forged signatures are 401', async () => {
    const body = rawBody();
    const ts = nowSec();
    const forged = [
      sign(ts, body, 'the-wrong-secret-0123456789abcdef'),
      sign(ts, `${body} `),
      sign(String(Number(ts) - 1), body),
      '00'.repeat(32),
      'zz',
      sign(ts, body).slice(0, 62),
    ];
    for (const sig of forged) {
      const res = await post(body, { 'x-signature': sig, 'x-timestamp': ts });
      expect(res.status, sig).toBe(401);
      expect(res.body.results).toBeUndefined();
    }
  });

  it('HMAC: a stale timestamp is 401 even with a valid MAC', async () => {
    const body = rawBody();
    for (const ts of [String(Math.floor(Date.now() / 1000) - 3600), String(Math.floor(Date.now() / 1000) + 3600)]) {
      const res = await post(body, { 'x-signature': sign(ts, body), 'x-timestamp': ts });
      expect(res.status).toBe(401);
    }
    const bogus = await post(body, { 'x-signature': sign('abc', body), 'x-timestamp': 'abc' });
    expect(bogus.status).toBe(401);
  });

  it('HMAC: a valid signature cannot be replayed over a different body', async () => {
    const body = JSON.stringify(bookMessage());
    const ts = nowSec();
    const before = await countOrg(org.id);
    const res = await post(body, { 'x-signature': sign(ts, body), 'x-timestamp': ts });
    expect(resultOf(res).success).toBe(true);
    const other = JSON.stringify(bookMessage());
    const replay = await post(other, { 'x-signature': sign(ts, body), 'x-timestamp': ts });
    expect(replay.status).toBe(401);
    expect(await countOrg(org.id)).toBe(before + 1);
  });

  it('shared secret: right x-vapi-secret is 200, wrong or missing is 401', async () => {
    const secretOrg = await createOrg(h);
    const SECRET = 'vapi-shared-secret-for-tests-42';
    const patch = await admin(h.http.patch(`/api/admin/orgs/${secretOrg.id}`)).send({ vapiSecret: SECRET });
    expect(patch.status).toBe(200);
    expect(patch.body.vapiSecretConfigured).toBe(true);
    const msg = () => vapiMessage([{ name: 'checkAvailability', args: { date: localDate(6) } }]);
    const call = (headers: Record<string, string>) => {
      let req = h.http.post('/api/vapi/tools').set('Authorization', `Bearer ${secretOrg.token}`);
      for (const [k, v] of Object.entries(headers)) req = req.set(k, v);
      return req.send(msg());
    };

    const right = await call({ 'x-vapi-secret': SECRET });
    expect(right.status).toBe(200);
    expect(resultOf(right).success).toBe(true);
    expect((await call({ 'x-vapi-secret': `${SECRET}x` })).status).toBe(401);
    expect((await call({ 'x-vapi-secret': SECRET.toUpperCase() })).status).toBe(401);
    const missing = await call({});
    expect(missing.status).toBe(401);
    expect(missing.body.error).toBe('invalid_signature');

    const before = await countOrg(secretOrg.id);
    const legacy = await h.http
      .post('/api/vapi/tools/bookClinicAppointment')
      .set('Authorization', `Bearer ${secretOrg.token}`)
      .send(legacyBody(secretOrg.id));
    expect(legacy.status).toBe(401);
    expect(await countOrg(secretOrg.id)).toBe(before);

    // Clearing the secret switches the layer off again.
    const clear = await admin(h.http.patch(`/api/admin/orgs/${secretOrg.id}`)).send({ vapiSecret: null });
    expect(clear.body.vapiSecretConfigured).toBe(false);
    expect((await call({})).status).toBe(200);
  });
});

describe('admin API authentication', () => {
  it('missing admin bearer is 401 with a challenge', async () => {
    const res = await h.http.get(`/api/admin/orgs/${orgA.id}`);
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toMatch(/^Bearer/);
    expect(res.body.id).toBeUndefined();
  });

  it('wrong admin bearer, an org token or a Basic header are 401', async () => {
    for (const auth of [
      `Bearer ${ADMIN_TOKEN}x`,
      `Bearer ${orgA.token}`,
      `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}`,
      ADMIN_TOKEN,
    ]) {
      const res = await h.http.get(`/api/admin/orgs/${orgA.id}`).set('Authorization', auth);
      expect(res.status).toBe(401);
      expect(res.body.name).toBeUndefined();
    }
  });

  it('writes without the admin token change nothing', async () => {
    const before = await h.owner`SELECT name, active FROM orgs WHERE id = ${orgA.id}`;
    const patch = await h.http.patch(`/api/admin/orgs/${orgA.id}`).send({ active: false, name: 'Hijacked' });
    expect(patch.status).toBe(401);
    const create = await h.http.post('/api/admin/orgs').send({ name: 'x' });
    expect(create.status).toBe(401);
    const client = await h.http.post(`/api/admin/orgs/${orgA.id}/clients`).set('Authorization', `Bearer ${orgA.token}`).send({});
    expect(client.status).toBe(401);
    const after = await h.owner`SELECT name, active FROM orgs WHERE id = ${orgA.id}`;
    expect(after).toEqual(before);
  });

  it('the right admin token works (control)', async () => {
    const res = await admin(h.http.get(`/api/admin/orgs/${orgA.id}`));
    expect(res.status).toBe(200);
    expect(res.body.id).toBe(orgA.id);
  });
});
