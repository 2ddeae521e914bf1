/**
 * Test fixtures that register their own hooks, so a test file says what it
 * needs in one line instead of copying setup blocks:
 *
 *   const h = useHarness();                 // a server on a fresh migrated database
 *   const org = useClinic(h);               // a clinic with an OAuth client and a token
 *   const [a, b] = useClinics(h, 2);
 *
 * Each returns a stand-in that forwards to the real object once the file's
 * beforeAll has made it; touching it before then is an error, not undefined.
 */
import { afterAll, beforeAll } from 'vitest';
import { createOrg, startHarness, type Harness, type TestOrg } from './harness.js';

function standIn<T extends object>(name: string, get: () => T | undefined): T {
  return new Proxy({} as T, {
    get(_t, prop) {
      const v = get();
      if (!v) throw new Error(`${name} used before its beforeAll ran`);
      // Not bound: the fixtures' functions are own properties that need no
      // `this`, and some (a postgres.js sql) carry methods a bound copy lacks.
      return Reflect.get(v, prop, v) as unknown;
    },
    has: (_t, prop) => Reflect.has(get() ?? {}, prop),
    ownKeys: () => Reflect.ownKeys(get() ?? {}),
    getOwnPropertyDescriptor: (_t, prop) => {
      const d = Reflect.getOwnPropertyDescriptor(get() ?? {}, prop);
      return d ? { ...d, configurable: true } : undefined;
    },
  });
}

type Lazy<T> = T | (() => T);
const value = <T>(v: Lazy<T>): T => (typeof v === 'function' ? (v as () => T)() : v);

/**
 * A harness for this file: started before its tests, closed after. `env` and
 * `opts` may be functions, read when the harness starts, so they can name
 * fakes that an earlier fixture started (hooks run in the order registered).
 */
export function useHarness(env: Lazy<Record<string, string>> = {}, opts: Lazy<Parameters<typeof startHarness>[1]> = {}): Harness {
  let h: Harness | undefined;
  beforeAll(async () => {
    h = await startHarness(value(env), value(opts));
  });
  afterAll(async () => h?.close());
  return standIn('harness', () => h);
}

/** Something with a close(): started before the file's tests, closed after (fake providers). */
export function useServer<T extends { close(): Promise<void> }>(name: string, start: () => Promise<T>): T {
  let server: T | undefined;
  beforeAll(async () => {
    server = await start();
  });
  afterAll(async () => server?.close());
  return standIn(name, () => server);
}

/** A clinic (org, OAuth client, token) on `h`, made before the file's tests. */
export function useClinic(h: Harness, overrides: Record<string, unknown> = {}): TestOrg {
  let org: TestOrg | undefined;
  beforeAll(async () => {
    org = await createOrg(h, overrides);
  });
  return standIn('clinic', () => org);
}

/** `n` clinics on `h`, made in parallel before the file's tests. */
export function useClinics(h: Harness, n: number, overrides: Record<string, unknown> = {}): TestOrg[] {
  const orgs: Array<TestOrg | undefined> = Array.from({ length: n });
  beforeAll(async () => {
    const made = await Promise.all(orgs.map(() => createOrg(h, overrides)));
    made.forEach((o, i) => (orgs[i] = o));
  });
  return orgs.map((_, i) => standIn(`clinic ${i}`, () => orgs[i]));
}
