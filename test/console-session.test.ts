/**
 * The console's session, against the real server and database: sign-in with
 * the admin token (and what a wrong one, a throttled source, a cross-site or
 * tokenless form gets), the cookie's attributes, CSRF on every POST, sign-out
 * and what a stale or expired cookie gets afterwards.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ADMIN_TOKEN } from './helpers/harness.js';
import { useHarness } from './helpers/fixture.js';

const h = useHarness({ OPS_LOGIN_FAILURES_PER_SOURCE: '3', OPS_LOGIN_WINDOW_SECONDS: '60' });

/** The sign-in page's cookie and its form's CSRF token, as a browser would get them. */
async function loginForm(agent = h.http) {
  const res = await agent.get('/ops/login');
  expect(res.status).toBe(200);
  const cookie = (res.headers['set-cookie'] as unknown as string[]).find((c) => c.startsWith('ops_login='))!;
  const csrf = /name="csrf" value="([^"]+)"/.exec(res.text)![1]!;
  return { cookie: cookie.split(';')[0]!, csrf };
}

async function signIn(token = ADMIN_TOKEN, extra: Record<string, string> = {}) {
  const form = await loginForm();
  return h.http.post('/ops/login').set('Cookie', form.cookie).set(extra).type('form').send({ token, csrf: form.csrf });
}

const sessionCookie = (res: { headers: Record<string, unknown> }) =>
  ((res.headers['set-cookie'] as string[] | undefined) ?? []).find((c) => c.startsWith('ops_session=') && !c.startsWith('ops_session=;'));

/** A signed-in session: its cookie and the CSRF token its pages carry. */
async function session() {
  const res = await signIn();
  expect(res.status).toBe(303);
  const cookie = sessionCookie(res)!.split(';')[0]!;
  const page = await h.http.get('/ops/server').set('Cookie', cookie);
  expect(page.status).toBe(200);
  const csrf = /name="csrf" value="([^"]+)"/.exec(page.text)![1]!;
  return { cookie, csrf };
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

describe('signing in', () => {
  it('the right token gives a session cookie (HttpOnly, SameSite=Strict, Path=/ops, expiring) and the overview; only its hash is stored', async () => {
    const res = await signIn();
    expect(res.status).toBe(303);
    expect(res.headers.location).toBe('/ops');
    const set = sessionCookie(res)!;
    expect(set).toMatch(/HttpOnly/);
    expect(set).toMatch(/SameSite=Strict/);
    expect(set).toMatch(/Path=\/ops(;|$)/);
    expect(set).toMatch(/Max-Age=\d+/);
    // Plain http without PUBLIC_URL on https: no Secure (a browser would drop the cookie).
    expect(set).not.toMatch(/Secure/);
    const id = /^ops_session=([^;]+)/.exec(set)![1]!;
    const rows = await h.owner<{ id_hash: string }[]>`SELECT id_hash FROM ops_sessions`;
    expect(rows.map((r) => r.id_hash)).toContain(sha256(id));
    expect(JSON.stringify(rows)).not.toContain(id);
    // Neither the token nor the session id is in the URL or the page.
    const page = await h.http.get('/ops/server').set('Cookie', `ops_session=${id}`);
    expect(page.status).toBe(200);
    expect(page.text).not.toContain(ADMIN_TOKEN);
    expect(page.text).not.toContain(id);
    expect(page.headers['cache-control']).toBe('no-store');
  });

  it('is Secure over https behind a trusted proxy', async () => {
    const { startHarness } = await import('./helpers/harness.js');
    const proxied = await startHarness({ TRUST_PROXY: 'loopback' }, { ownerUrl: h.ownerUrl });
    try {
      const page = await proxied.http.get('/ops/login').set('X-Forwarded-Proto', 'https');
      const login = (page.headers['set-cookie'] as unknown as string[]).find((c) => c.startsWith('ops_login='))!;
      expect(login).toMatch(/Secure/);
      const csrf = /name="csrf" value="([^"]+)"/.exec(page.text)![1]!;
      const res = await proxied.http
        .post('/ops/login')
        .set('X-Forwarded-Proto', 'https')
        .set('Cookie', login.split(';')[0]!)
        .type('form')
        .send({ token: ADMIN_TOKEN, csrf });
      expect(res.status).toBe(303);
      expect(sessionCookie(res)).toMatch(/Secure/);
    } finally {
      await proxied.close();
    }
  });

  it('a wrong token is 401 and no session is made', async () => {
    const before = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM ops_sessions`;
    const res = await signIn('not-the-admin-token-at-all-000');
    expect(res.status).toBe(401);
    expect(sessionCookie(res)).toBeUndefined();
    expect(res.text).toContain('That is not the admin token.');
    expect(res.text).not.toContain('not-the-admin-token-at-all-000');
    const after = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM ops_sessions`;
    expect(after[0]!.n).toBe(before[0]!.n);
  });

  it('a sign-in form without its CSRF token, or from another site, is refused without checking the token', async () => {
    const form = await loginForm();
    const noCsrf = await h.http.post('/ops/login').set('Cookie', form.cookie).type('form').send({ token: ADMIN_TOKEN });
    expect(noCsrf.status).toBe(403);
    const noCookie = await h.http.post('/ops/login').type('form').send({ token: ADMIN_TOKEN, csrf: form.csrf });
    expect(noCookie.status).toBe(403);
    const crossSite = await h.http
      .post('/ops/login')
      .set('Cookie', form.cookie)
      .set('Origin', 'https://evil.example')
      .type('form')
      .send({ token: ADMIN_TOKEN, csrf: form.csrf });
    expect(crossSite.status).toBe(403);
    expect(sessionCookie(crossSite)).toBeUndefined();
    const fetchSite = await h.http
      .post('/ops/login')
      .set('Cookie', form.cookie)
      .set('Sec-Fetch-Site', 'cross-site')
      .type('form')
      .send({ token: ADMIN_TOKEN, csrf: form.csrf });
    expect(fetchSite.status).toBe(403);
  });

  it('failed sign-ins are throttled per source address: 429 with Retry-After, even for the right token then', async () => {
    const { startHarness } = await import('./helpers/harness.js');
    // Its own process (the throttle is per process), on the same database.
    const other = await startHarness({ OPS_LOGIN_FAILURES_PER_SOURCE: '3', OPS_LOGIN_WINDOW_SECONDS: '60' }, { ownerUrl: h.ownerUrl });
    try {
      const attempt = async (token: string) => {
        const page = await other.http.get('/ops/login');
        const cookie = (page.headers['set-cookie'] as unknown as string[]).find((c) => c.startsWith('ops_login='))!.split(';')[0]!;
        const csrf = /name="csrf" value="([^"]+)"/.exec(page.text)![1]!;
        return other.http.post('/ops/login').set('Cookie', cookie).type('form').send({ token, csrf });
      };
      for (let i = 0; i < 3; i++) expect((await attempt(`wrong-token-${i}-0123456789abcdef`)).status).toBe(401);
      const throttled = await attempt(ADMIN_TOKEN);
      expect(throttled.status).toBe(429);
      expect(Number(throttled.headers['retry-after'])).toBeGreaterThan(0);
      expect(sessionCookie(throttled)).toBeUndefined();
    } finally {
      await other.close();
    }
  });
});

describe('pages without a session', () => {
  it('a page sends the browser to sign in; htmx and API-style requests get 401', async () => {
    for (const path of ['/ops', '/ops/server', '/ops/dead-letters', '/ops/clinics/5eed0000-0000-4000-8000-000000000001']) {
      const res = await h.http.get(path).set('Accept', 'text/html');
      expect(res.status, path).toBe(303);
      expect(res.headers.location).toBe('/ops/login');
    }
    const hx = await h.http.get('/ops').set('HX-Request', 'true');
    expect(hx.status).toBe(401);
    expect(hx.headers['hx-redirect']).toBe('/ops/login');
    expect((await h.http.get('/ops').set('Accept', 'application/json')).status).toBe(401);
  });

  it('a made-up cookie gets nothing', async () => {
    const res = await h.http
      .get('/ops/server')
      .set('Cookie', 'ops_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA')
      .set('Accept', 'text/html');
    expect(res.status).toBe(303);
    expect(res.text).not.toContain('Processes');
  });
});

describe('CSRF on every state change', () => {
  it("a POST without the CSRF token, with another session's, or from another origin is refused (403) and nothing changes", async () => {
    const mine = await session();
    const theirs = await session();
    for (const [label, req] of [
      ['no token', h.http.post('/ops/logout').set('Cookie', mine.cookie).type('form').send({})],
      ["another session's token", h.http.post('/ops/logout').set('Cookie', mine.cookie).type('form').send({ csrf: theirs.csrf })],
      [
        'cross-site Origin',
        h.http.post('/ops/logout').set('Cookie', mine.cookie).set('Origin', 'https://evil.example').type('form').send({ csrf: mine.csrf }),
      ],
      [
        'cross-site fetch',
        h.http.post('/ops/logout').set('Cookie', mine.cookie).set('Sec-Fetch-Site', 'cross-site').type('form').send({ csrf: mine.csrf }),
      ],
    ] as const) {
      const res = await req;
      expect(res.status, label).toBe(403);
    }
    // Still signed in: none of them signed out.
    expect((await h.http.get('/ops/server').set('Cookie', mine.cookie)).status).toBe(200);
    // The same origin with the right token works (control).
    const ok = await h.http
      .post('/ops/logout')
      .set('Cookie', mine.cookie)
      .set('Origin', 'http://127.0.0.1')
      .set('Host', '127.0.0.1')
      .type('form')
      .send({ csrf: mine.csrf });
    expect(ok.status).toBe(303);
  });

  it('a POST without a session is 401', async () => {
    const res = await h.http.post('/ops/logout').type('form').send({ csrf: 'x' });
    expect(res.status).toBe(401);
  });
});

describe('signing out and stale sessions', () => {
  it('sign-out ends the session: the old cookie gets the sign-in page, and its row is gone', async () => {
    const s = await session();
    const out = await h.http.post('/ops/logout').set('Cookie', s.cookie).type('form').send({ csrf: s.csrf });
    expect(out.status).toBe(303);
    expect(out.headers.location).toBe('/ops/login');
    expect((out.headers['set-cookie'] as unknown as string[]).some((c) => /^ops_session=;.*Max-Age=0/.test(c))).toBe(true);
    const id = s.cookie.slice('ops_session='.length);
    expect(await h.owner`SELECT 1 FROM ops_sessions WHERE id_hash = ${sha256(id)}`).toHaveLength(0);
    const stale = await h.http.get('/ops/server').set('Cookie', s.cookie).set('Accept', 'text/html');
    expect(stale.status).toBe(303);
    expect(stale.headers.location).toBe('/ops/login');
    const statePost = await h.http.post('/ops/logout').set('Cookie', s.cookie).type('form').send({ csrf: s.csrf });
    expect(statePost.status).toBe(401);
  });

  it('an expired session gets nothing, and each request slides the expiry up to the absolute cap', async () => {
    const s = await session();
    const id = s.cookie.slice('ops_session='.length);
    const [before] = await h.owner<{ expires_at: Date }[]>`SELECT expires_at FROM ops_sessions WHERE id_hash = ${sha256(id)}`;
    await h.owner`UPDATE ops_sessions SET expires_at = now() + interval '1 minute', created_at = now() - interval '1 hour' WHERE id_hash = ${sha256(id)}`;
    expect((await h.http.get('/ops/server').set('Cookie', s.cookie)).status).toBe(200);
    const [slid] = await h.owner<{ expires_at: Date }[]>`SELECT expires_at FROM ops_sessions WHERE id_hash = ${sha256(id)}`;
    // Moved on to now + OPS_SESSION_TTL_MINUTES (30 by default).
    expect(slid!.expires_at.getTime()).toBeGreaterThan(Date.now() + 29 * 60_000);
    expect(before!.expires_at.getTime()).toBeGreaterThan(Date.now() + 29 * 60_000);
    // Near the absolute cap (OPS_SESSION_MAX_HOURS, 12 by default) it stops sliding.
    await h.owner`UPDATE ops_sessions SET created_at = now() - interval '11 hours 50 minutes' WHERE id_hash = ${sha256(id)}`;
    expect((await h.http.get('/ops/server').set('Cookie', s.cookie)).status).toBe(200);
    const [capped] = await h.owner<{ expires_at: Date }[]>`SELECT expires_at FROM ops_sessions WHERE id_hash = ${sha256(id)}`;
    expect(capped!.expires_at.getTime()).toBeLessThan(Date.now() + 11 * 60_000);
    await h.owner`UPDATE ops_sessions SET expires_at = now() - interval '1 second' WHERE id_hash = ${sha256(id)}`;
    const expired = await h.http.get('/ops/server').set('Cookie', s.cookie).set('Accept', 'text/html');
    expect(expired.status).toBe(303);
    expect(expired.headers.location).toBe('/ops/login');
  });

  it('the request role cannot read or write sessions: only the worker role holds them', async () => {
    await expect(h.runtime.sql`SELECT * FROM ops_sessions`).rejects.toThrow(/permission denied/);
    await expect(
      h.runtime
        .sql`INSERT INTO ops_sessions (id_hash, csrf_hash, expires_at) VALUES (${'0'.repeat(64)}, ${'0'.repeat(64)}, now() + interval '1 hour')`,
    ).rejects.toThrow(/permission denied/);
  });
});

describe('the pages themselves', () => {
  it('a strict content security policy: scripts and styles only from the service, no inline ones', async () => {
    const s = await session();
    const res = await h.http.get('/ops/server').set('Cookie', s.cookie);
    const csp = res.headers['content-security-policy'] as string;
    expect(csp).toMatch(/script-src 'self'(;|$)/);
    expect(csp).toMatch(/style-src 'self'(;|$)/);
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval/);
    expect(csp).toMatch(/frame-ancestors 'none'/);
    expect(res.text).not.toMatch(/<script(?![^>]*\bsrc=)/);
    expect(res.text).not.toMatch(/\sstyle=/);
    expect(res.text).not.toMatch(/\son[a-z]+=/);
  });

  it('serves its own assets (htmx from the package, the stylesheet) and nothing else under /ops/assets', async () => {
    const js = await h.http.get('/ops/assets/htmx.min.js');
    expect(js.status).toBe(200);
    expect(js.headers['content-type']).toMatch(/javascript/);
    expect(js.text).toContain('htmx');
    const css = await h.http.get('/ops/assets/console.css');
    expect(css.status).toBe(200);
    expect(css.headers['content-type']).toMatch(/css/);
    expect((await h.http.get('/ops/assets/..%2Fsession.ts')).status).toBe(404);
    expect((await h.http.get('/ops/assets/secrets.json')).status).toBe(404);
  });

  it('the server page lists this process from its heartbeat, with its worker', async () => {
    const s = await session();
    const res = await h.http.get('/ops/server').set('Cookie', s.cookie);
    expect(res.text).toContain('this one');
    expect(res.text).toMatch(/running/);
    expect(res.text).toContain('ready');
    const rows = await h.owner<{ id: string; worker_enabled: boolean }[]>`SELECT id, worker_enabled FROM ops_processes`;
    expect(rows.map((r) => r.id)).toContain(h.runtime.deps.processId);
  });

  it('a process that stops answering is shown as gone; a clean stop removes its row', async () => {
    const { startHarness } = await import('./helpers/harness.js');
    const other = await startHarness({}, { ownerUrl: h.ownerUrl });
    const otherId = other.runtime.deps.processId;
    await h.owner`UPDATE ops_processes SET last_seen_at = now() - interval '10 minutes' WHERE id = ${otherId}`;
    const s = await session();
    const page = await h.http.get('/ops/server').set('Cookie', s.cookie);
    expect(page.text).toMatch(/GONE/);
    await other.close();
    expect(await h.owner`SELECT 1 FROM ops_processes WHERE id = ${otherId}`).toHaveLength(0);
    const after = await h.http.get('/ops/server').set('Cookie', s.cookie);
    expect(after.text).not.toMatch(/GONE/);
  });
});
