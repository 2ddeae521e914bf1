/**
 * The route table, held against the registry and /openapi.json: every route
 * Express serves was declared through the registry (so it carries its access
 * check), every clinic route refuses dead tokens, and the API description
 * lists exactly the routes there are, with worked examples the server accepts.
 */
import { randomUUID } from 'node:crypto';
import { Validator } from '@seriousme/openapi-schema-validator';
import { SignJWT } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { REGISTERED, type RouteSpec } from '../src/http/registry.js';
import { ADMIN_TOKEN, JWT_SECRET, createOrg, localDate, vapiMessage, type TestOrg } from './helpers/harness.js';
import { useHarness } from './helpers/fixture.js';
import { retellBody, retellCall, retellPost, setRetellKey } from './helpers/platforms.js';

const h = useHarness();

interface ServedRoute {
  method: string;
  path: string;
  spec: RouteSpec | undefined;
}

/** Walks Express's own routing table, nested routers included. */
function servedRoutes(): ServedRoute[] {
  type Layer = {
    route?: { path: string; methods: Record<string, boolean>; stack: Array<{ handle: unknown }> };
    handle?: { stack?: Layer[] };
  };
  const out: ServedRoute[] = [];
  const walk = (stack: Layer[]) => {
    for (const layer of stack) {
      if (layer.route) {
        const last = layer.route.stack[layer.route.stack.length - 1]?.handle as Record<symbol, RouteSpec> | undefined;
        for (const method of Object.keys(layer.route.methods)) {
          out.push({ method, path: layer.route.path, spec: last?.[REGISTERED] });
        }
      } else if (layer.handle?.stack) {
        walk(layer.handle.stack);
      }
    }
  };
  walk((h.runtime.app as unknown as { router: { stack: Layer[] } }).router.stack);
  return out;
}

const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };

describe('the route table', () => {
  it('every served route was declared through the registry, with an access kind', () => {
    const routes = servedRoutes();
    expect(routes.length).toBeGreaterThan(10);
    const undeclared = routes.filter((r) => !r.spec).map((r) => `${r.method.toUpperCase()} ${r.path}`);
    expect(undeclared).toEqual([]);
    for (const r of routes) {
      expect(r.spec!.method).toBe(r.method);
      expect(r.spec!.path).toBe(r.path);
      expect(['public', 'admin', 'clinic', 'metrics', 'provider', 'session']).toContain(r.spec!.access);
    }
    // The registry knows exactly the served routes: nothing declared and left unmounted.
    expect(h.runtime.app.registry.routes.map((s) => `${s.method} ${s.path}`).sort()).toEqual(
      routes.map((r) => `${r.method} ${r.path}`).sort(),
    );
  });

  it('every /api/admin route is admin-only, and every other /api route takes a clinic token or a provider signature', () => {
    for (const r of servedRoutes()) {
      if (r.path.startsWith('/api/admin')) expect(r.spec!.access, r.path).toBe('admin');
      else if (r.path.startsWith('/api/')) expect(['clinic', 'provider'], r.path).toContain(r.spec!.access);
    }
  });
});

describe('dead tokens on every clinic route', () => {
  let revoked: TestOrg;
  let deactivated: TestOrg;
  let ghostToken: string;
  let control: TestOrg;

  // Token-identified clinic routes; those a platform signature identifies are checked below.
  const clinicRoutes = () => servedRoutes().filter((r) => r.spec!.access === 'clinic' && (r.spec!.clinicIdentity ?? 'bearer') === 'bearer');

  /** A request to a clinic route that would do real work if it were let through: a booking. */
  let seq = 0;
  function request(r: ServedRoute, token: string) {
    const path = r.path.replace(':toolName', 'bookClinicAppointment');
    seq += 1;
    const at = `${String(8 + Math.floor(seq / 4)).padStart(2, '0')}:${String((seq % 4) * 15).padStart(2, '0')}`;
    const args = {
      patientName: 'Dead Token',
      patientPhone: '+14155550123',
      appointmentDate: localDate(30),
      appointmentTime: at,
      serviceType: 'short',
    };
    const req = (h.http as unknown as Record<string, (p: string) => import('supertest').Test>)[r.method]!(path).set(
      'Authorization',
      `Bearer ${token}`,
    );
    if (r.method === 'get') return req;
    // ElevenLabs: the flat arguments plus the mapped system variables.
    if (r.path.startsWith('/api/elevenlabs/')) return req.send({ ...args, conversationId: `conv_${randomUUID()}` });
    return r.path.includes(':toolName')
      ? req.send({ toolCallId: `t_${randomUUID()}`, tool: { arguments: args } })
      : req.send(vapiMessage([{ name: 'bookClinicAppointment', args }]));
  }

  /** A second, live client of the `revoked` clinic: it re-warms that clinic's settings cache. */
  let sibling: { token: string };

  beforeAll(async () => {
    [revoked, deactivated, control] = await Promise.all([createOrg(h), createOrg(h), createOrg(h)]);
    const c = await h.http.post(`/api/admin/orgs/${revoked.id}/clients`).set(admin).send({ name: 'sibling' });
    const t = await h.http
      .post('/oauth/token')
      .type('form')
      .send({ grant_type: 'client_credentials', client_id: c.body.clientId, client_secret: c.body.clientSecret });
    sibling = { token: t.body.access_token };
    // As another server process's admin API would: this process's settings cache is not told.
    await h.owner`UPDATE oauth_clients SET revoked_at = now() WHERE client_id = ${revoked.clientId}`;
    ghostToken = await new SignJWT({ org_id: randomUUID() })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuer('clinic-voice-tools')
      .setAudience('voice-tools')
      .setSubject('cli_ghost')
      .setIssuedAt()
      .setExpirationTime('10m')
      .sign(new TextEncoder().encode(JWT_SECRET));
  });

  const booked = async (orgId: string) => {
    const [r] = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM appointments WHERE org_id = ${orgId}`;
    return r!.n;
  };

  it('there are clinic routes to check', () => {
    expect(clinicRoutes().map((r) => r.path)).toEqual(
      expect.arrayContaining(['/api/vapi/tools', '/api/vapi/tools/:toolName', '/api/sms/diagnostics']),
    );
  });

  it("a revoked client's token is refused with 401 on every clinic route, and nothing is done", async () => {
    const before = await booked(revoked.id);
    for (const r of clinicRoutes()) {
      // The clinic's settings are cached, by a request of its live client, when the dead token arrives.
      expect((await request(r, sibling.token)).status, `warm ${r.path}`).toBe(200);
      const res = await request(r, revoked.token);
      expect(res.status, `${r.method} ${r.path}`).toBe(401);
      expect(res.body.error).toBe('invalid_token');
    }
    // Only the live client's warm-up bookings exist.
    expect(await booked(revoked.id)).toBe(before + clinicRoutes().filter((r) => r.method === 'post').length);
  });

  it("a deactivated clinic's token is refused with 403 on every clinic route, and nothing is done", async () => {
    const before = await booked(deactivated.id);
    const warmBookings = clinicRoutes().filter((r) => r.method === 'post').length;
    for (const r of clinicRoutes()) {
      await h.owner`UPDATE orgs SET active = true WHERE id = ${deactivated.id}`;
      expect((await request(r, deactivated.token)).status, `warm ${r.path}`).toBe(200);
      await h.owner`UPDATE orgs SET active = false WHERE id = ${deactivated.id}`;
      const res = await request(r, deactivated.token);
      expect(res.status, `${r.method} ${r.path}`).toBe(403);
      expect(res.body.error).toBe('org_inactive');
    }
    expect(await booked(deactivated.id)).toBe(before + warmBookings);
  });

  it('a well-signed token naming no existing clinic is refused with 403 on every clinic route', async () => {
    for (const r of clinicRoutes()) {
      const res = await request(r, ghostToken);
      expect(res.status, `${r.method} ${r.path}`).toBe(403);
    }
  });

  it('a missing or malformed token is 401 on every clinic route', async () => {
    for (const r of clinicRoutes()) {
      expect((await request(r, 'not-a-jwt')).status, r.path).toBe(401);
      const bare = (h.http as unknown as Record<string, (p: string) => import('supertest').Test>)[r.method]!(
        r.path.replace(':toolName', 'checkAvailability'),
      );
      expect((await bare).status, r.path).toBe(401);
    }
  });

  it('the live clinic still works on every clinic route (control)', async () => {
    for (const r of clinicRoutes()) expect((await request(r, control.token)).status, r.path).toBe(200);
  });
});

describe('dead credentials on every signature-identified clinic route', () => {
  let live: TestOrg;
  let key: string;
  const signedRoutes = () => servedRoutes().filter((r) => r.spec!.access === 'clinic' && r.spec!.clinicIdentity === 'retell-signature');

  beforeAll(async () => {
    live = await createOrg(h);
    key = await setRetellKey(h, live.id);
  });

  /** A signed request that would book if it were let through. */
  let seq = 0;
  function signed(r: ServedRoute, orgId: string, signKey: string | null, opts: { at?: number; signature?: string } = {}) {
    seq += 1;
    const at = `${String(8 + Math.floor(seq / 4)).padStart(2, '0')}:${String((seq % 4) * 15).padStart(2, '0')}`;
    const args = {
      patientName: 'Dead Signature',
      patientPhone: '+14155550124',
      appointmentDate: localDate(31),
      appointmentTime: at,
      serviceType: 'short',
    };
    const path = r.path.replace(':orgId', orgId).replace(':toolName', 'bookClinicAppointment');
    if (r.path.includes(':toolName')) {
      return retellPost(h, path, JSON.stringify(args), signKey, { ...opts, headers: { 'X-Retell-Call-Id': `call_${randomUUID()}` } });
    }
    return retellPost(h, path, retellBody('bookClinicAppointment', args, retellCall()), signKey, opts);
  }

  const booked = async (orgId: string) => {
    const [r] = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM appointments WHERE org_id = ${orgId}`;
    return r!.n;
  };

  it('there are signature routes to check', () => {
    expect(
      signedRoutes()
        .map((r) => r.path)
        .sort(),
    ).toEqual(['/api/retell/:orgId/tools', '/api/retell/:orgId/tools/:toolName']);
  });

  it('a good signature works on every one (control)', async () => {
    for (const r of signedRoutes()) {
      const res = await signed(r, live.id, key);
      expect(res.status, r.path).toBe(200);
      expect(res.body.success, r.path).toBe(true);
    }
  });

  it('a missing, wrong-key, forged or stale signature is 401 on every one, and nothing is done', async () => {
    const before = await booked(live.id);
    for (const r of signedRoutes()) {
      for (const [label, res] of [
        ['missing', await signed(r, live.id, null)],
        ['wrong key', await signed(r, live.id, 'key_not_the_clinics_000000')],
        ['forged', await signed(r, live.id, key, { signature: `v=${Date.now()},d=${'ab'.repeat(32)}` })],
        ['stale', await signed(r, live.id, key, { at: Date.now() - 10 * 60_000 })],
      ] as const) {
        expect(res.status, `${label} ${r.path}`).toBe(401);
        expect(res.body.error).toBe('invalid_signature');
      }
    }
    expect(await booked(live.id)).toBe(before);
  });

  it('a deactivated clinic is 403 on every one with its settings cached, and nothing is done', async () => {
    const org = await createOrg(h);
    const orgKey = await setRetellKey(h, org.id);
    const warm = signedRoutes().filter((r) => r.method === 'post').length;
    const before = await booked(org.id);
    for (const r of signedRoutes()) {
      await h.owner`UPDATE orgs SET active = true WHERE id = ${org.id}`;
      expect((await signed(r, org.id, orgKey)).status, `warm ${r.path}`).toBe(200);
      await h.owner`UPDATE orgs SET active = false WHERE id = ${org.id}`;
      const res = await signed(r, org.id, orgKey);
      expect(res.status, r.path).toBe(403);
      expect(res.body.error).toBe('org_inactive');
    }
    expect(await booked(org.id)).toBe(before + warm);
  });

  it('a path naming no existing clinic is 401 on every one (nobody holds its key)', async () => {
    for (const r of signedRoutes()) expect((await signed(r, randomUUID(), key)).status, r.path).toBe(401);
  });
});

describe('/openapi.json', () => {
  const docPromise = () =>
    h.http.get('/openapi.json').then((r) => r.body as { openapi: string; paths: Record<string, Record<string, { 'x-access': string }>> });

  it('is a valid OpenAPI 3.1 document', async () => {
    const doc = await docPromise();
    expect(doc.openapi).toBe('3.1.0');
    const result = await new Validator().validate(doc as unknown as Parameters<Validator['validate']>[0]);
    expect(result.errors ?? [], JSON.stringify(result.errors)).toEqual([]);
    expect(result.valid).toBe(true);
  });

  it('describes exactly the served routes, with their access kind', async () => {
    const doc = await docPromise();
    const described = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m} ${p}`));
    const served = servedRoutes().map((r) => `${r.method} ${r.path.replace(/:([A-Za-z0-9_]+)/g, '{$1}')}`);
    expect(described.sort()).toEqual(served.sort());
    for (const r of servedRoutes()) {
      expect(doc.paths[r.path.replace(/:([A-Za-z0-9_]+)/g, '{$1}')]![r.method]!['x-access']).toBe(r.spec!.access);
    }
  });

  it('every worked example is accepted by the schema that validates the route', () => {
    for (const spec of h.runtime.app.registry.routes) {
      if (spec.example?.body !== undefined && spec.body && !spec.bodyValidatedByHandler) {
        const parsed = spec.body.safeParse(spec.example.body);
        expect(parsed.success, `${spec.method} ${spec.path}: ${JSON.stringify(parsed.error?.issues)}`).toBe(true);
      }
      if (spec.example?.query && spec.query) {
        expect(spec.query.safeParse(spec.example.query).success, `${spec.method} ${spec.path}`).toBe(true);
      }
    }
  });

  it('replaying every admin example against the server gets one of the statuses the route documents', async () => {
    // The examples name the demo clinic's id.
    await h.http
      .post('/api/admin/orgs')
      .set(admin)
      .send({ ...(await import('./helpers/harness.js')).orgPayload(), id: '5eed0000-0000-4000-8000-000000000001' });
    for (const spec of h.runtime.app.registry.routes.filter((s) => s.access === 'admin' && s.example)) {
      let path = spec.path;
      for (const [k, v] of Object.entries(spec.example!.params ?? {})) path = path.replace(`:${k}`, encodeURIComponent(v));
      const qs = new URLSearchParams(spec.example!.query ?? {}).toString();
      const req = (h.http as unknown as Record<string, (p: string) => import('supertest').Test>)[spec.method]!(
        qs ? `${path}?${qs}` : path,
      ).set(admin);
      const res = spec.example!.body !== undefined ? await req.send(spec.example!.body as object) : await req;
      expect(
        Object.keys(spec.responses).map(Number),
        `${spec.method} ${spec.path} answered ${res.status} ${JSON.stringify(res.body)}`,
      ).toContain(res.status);
      expect(res.status, `${spec.method} ${spec.path}`).toBeLessThan(500);
    }
  });

  it('a body the schema refuses is a 400 naming the field, before anything is written', async () => {
    const before = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM orgs`;
    const res = await h.http
      .post('/api/admin/orgs')
      .set(admin)
      .send({ name: 'No zone', openingHours: {}, services: [], practitioners: [] });
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_request');
    expect(res.body.message).toMatch(/timeZone/);
    const after = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM orgs`;
    expect(after[0]!.n).toBe(before[0]!.n);
  });
});

describe("Vapi's informational messages go through the same check as tool calls", () => {
  const info = (type: string, extra: Record<string, unknown> = {}) => ({ message: { type, call: { id: `c_${randomUUID()}` }, ...extra } });

  it('a live token gets 200 {} for status-update and end-of-call-report (control)', async () => {
    const org = await createOrg(h);
    for (const type of ['status-update', 'end-of-call-report', 'transcript']) {
      const res = await h.http.post('/api/vapi/tools').set('Authorization', `Bearer ${org.token}`).send(info(type));
      expect(res.status, type).toBe(200);
      expect(res.body).toEqual({});
    }
  });

  it('no token, another clinic named in the metadata, a revoked client, or a missing HMAC: refused', async () => {
    const [org, other] = await Promise.all([createOrg(h), createOrg(h)]);
    expect((await h.http.post('/api/vapi/tools').send(info('status-update'))).status).toBe(401);
    const mismatch = await h.http
      .post('/api/vapi/tools')
      .set('Authorization', `Bearer ${org.token}`)
      .send(info('end-of-call-report', { assistant: { metadata: { org_id: other.id } } }));
    expect(mismatch.status).toBe(403);
    expect(mismatch.body.error).toBe('org_mismatch');

    const hmac = await h.http.patch(`/api/admin/orgs/${other.id}`).set(admin).send({ vapiHmacSecret: 'an-hmac-secret-of-enough-length' });
    expect(hmac.status).toBe(200);
    const unsigned = await h.http.post('/api/vapi/tools').set('Authorization', `Bearer ${other.token}`).send(info('status-update'));
    expect(unsigned.status).toBe(401);
    expect(unsigned.body.error).toBe('invalid_signature');

    await h.owner`UPDATE oauth_clients SET revoked_at = now() WHERE client_id = ${org.clientId}`;
    const dead = await h.http.post('/api/vapi/tools').set('Authorization', `Bearer ${org.token}`).send(info('status-update'));
    expect(dead.status).toBe(401);
  });
});

describe('docs/api.md', () => {
  it('documents every route with the example request the registry holds (regenerate with npm run docs:api)', async () => {
    const { readFile } = await import('node:fs/promises');
    const { requestSection } = await import('../src/http/api-doc.js');
    const doc = await readFile(new URL('../docs/api.md', import.meta.url), 'utf8');
    const stale = h.runtime.app.registry.routes.filter((spec) => !doc.includes(requestSection(spec))).map((s) => `${s.method} ${s.path}`);
    expect(stale, 'docs/api.md is out of date: run npm run docs:api').toEqual([]);
    const headings = [...doc.matchAll(/^### (GET|POST|PUT|PATCH|DELETE) (\S+)$/gm)].map((m) => `${m[1]!.toLowerCase()} ${m[2]}`);
    expect(headings.sort()).toEqual(h.runtime.app.registry.routes.map((s) => `${s.method} ${s.path}`).sort());
  });
});
