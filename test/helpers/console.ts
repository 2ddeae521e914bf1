/** Signing in to the console the way a browser does, for suites that drive it over HTTP. */
import { expect } from 'vitest';
import { ADMIN_TOKEN, type Harness } from './harness.js';

export interface ConsoleSession {
  cookie: string;
  csrf: string;
}

const csrfIn = (html: string) => /name="csrf" value="([^"]+)"/.exec(html)?.[1];

export async function consoleSession(h: Harness): Promise<ConsoleSession> {
  const page = await h.http.get('/ops/login');
  const login = (page.headers['set-cookie'] as unknown as string[]).find((c) => c.startsWith('ops_login='))!.split(';')[0]!;
  const res = await h.http
    .post('/ops/login')
    .set('Cookie', login)
    .type('form')
    .send({ token: ADMIN_TOKEN, csrf: csrfIn(page.text) });
  expect(res.status).toBe(303);
  const cookie = (res.headers['set-cookie'] as unknown as string[]).find((c) => /^ops_session=[^;]/.test(c))!.split(';')[0]!;
  const server = await h.http.get('/ops/server').set('Cookie', cookie);
  return { cookie, csrf: csrfIn(server.text)! };
}

/** GET a console page as the signed-in operator. */
export const opsGet = (h: Harness, s: ConsoleSession, path: string) => h.http.get(path).set('Cookie', s.cookie).set('Accept', 'text/html');

/** POST a console form as the signed-in operator (its CSRF token added unless given). */
export const opsPost = (h: Harness, s: ConsoleSession, path: string, form: Record<string, string> = {}) =>
  h.http
    .post(path)
    .set('Cookie', s.cookie)
    .type('form')
    .send({ csrf: s.csrf, ...form });
