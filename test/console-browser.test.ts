/// <reference lib="dom" />
// The callbacks given to page.evaluate() and friends run in the browser: they see the DOM.
/**
 * The console in a real browser: headless Chromium (test/helpers/browser.ts)
 * against the real server, PostgreSQL and the fake providers with the real
 * SDKs. One browser, one page and one server for the whole file, the
 * scenarios in order: sign in; a clinic's Twilio goes red when the fake
 * Twilio goes down; the failover switch decides whether the next booking's
 * text goes through; a dead letter retried is delivered once; sign out, and
 * the stale cookie gets nothing; a form without its CSRF token is refused.
 * No fixed sleeps: every wait is for a selector or a condition.
 */
import fs from 'node:fs/promises';
import type { Server } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeTelnyx } from './fakes/fake-telnyx.js';
import { startFakeTwilio } from './fakes/fake-twilio.js';
import { launchBrowser } from './helpers/browser.js';
import { useHarness, useServer } from './helpers/fixture.js';
import { ADMIN_TOKEN, createOrg, type TestOrg } from './helpers/harness.js';
import { freePort } from '../src/net.js';
import { book, freshPhone, newTwilioAccount, outboxFor, providerEnv, putSms, telnyxLink, twilioLink, waitFor } from './helpers/sms.js';

const ARTIFACTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../test-artifacts');

const twilio = useServer('fake twilio', () => startFakeTwilio());
const telnyx = useServer('fake telnyx', () => startFakeTelnyx());
// The server listens where its PUBLIC_URL says, so the fakes' delivery receipts reach it.
let port = 0;
beforeAll(async () => {
  port = await freePort();
});
const h = useHarness(() => ({
  ...providerEnv(twilio.url, telnyx.url),
  PUBLIC_URL: `http://127.0.0.1:${port}`,
  SMS_HEALTH_ENABLED: 'true',
  SMS_HEALTH_INTERVAL_MS: '300',
  SMS_HEALTH_PROBE_TIMEOUT_MS: '150',
  SMS_ATTEMPT_TIMEOUT_MS: '500',
  SMS_SDK_TIMEOUT_MARGIN_MS: '200',
  // One run: a message the chain cannot send becomes a dead letter at once.
  SMS_MAX_ATTEMPTS: '1',
  OPS_REFRESH_SECONDS: '1',
}));

let browser: Browser;
let page: Page;
let server: Server;
let base: string;
const problems: string[] = [];

/** Telnyx with the fake account's webhook key: its receipts are accepted. */
const telnyxSigned = () => telnyxLink({ webhookPublicKey: telnyx.publicKey });

let maple: TestOrg;
let lakesideId: string;
let mapleAccount: { sid: string; token: string };

beforeAll(async () => {
  const launched = await launchBrowser();
  browser = launched.browser;
  console.log(`chromium ${launched.version}: unpacked in ${launched.unpackMs} ms, started in ${launched.launchMs} ms`);
  server = h.runtime.app.listen(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    server.once('listening', () => resolve());
    server.once('error', reject);
  });
  base = `http://127.0.0.1:${port}`;
  page = await browser.newPage();
  // Anything the page itself complains about (a CSP violation, a script error) fails the suite at the end.
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(String(e)));
  await fs.mkdir(ARTIFACTS, { recursive: true });

  // A few clinics, as an operator would see them; Maple is the one the scenarios act on.
  mapleAccount = newTwilioAccount(twilio);
  maple = await createOrg(h, { name: 'Maple Street Family Clinic' });
  await putSms(h, maple.id, [twilioLink({ accountSid: mapleAccount.sid, authToken: mapleAccount.token }), telnyxSigned()], {
    rateLimitPerHour: 100,
    failoverEnabled: false,
  });
  const harbor = await createOrg(h, { name: 'Harbor Pediatrics', timeZone: 'America/Los_Angeles' });
  await putSms(h, harbor.id, [{ kind: 'sandbox', senderNumbers: ['+15005550006'] }]);
  const lakeside = await createOrg(h, { name: 'Lakeside Dental', timeZone: 'America/Chicago' });
  await putSms(h, lakeside.id, [telnyxSigned()], { rateLimitPerHour: 100 });
  await Promise.all([book(h, maple), book(h, harbor), book(h, harbor), ...Array.from({ length: 6 }, () => book(h, lakeside))]);
  // Lakeside's day so far: its messages spread over earlier hours, each delivered (Telnyx's receipts), for the 24 h chart.
  await waitFor('Lakeside delivered', async () => {
    const [r] = await h.owner<
      { n: number }[]
    >`SELECT count(*)::int AS n FROM sms_attempts WHERE org_id = ${lakeside.id} AND delivery_state = 'delivered'`;
    return r!.n === 6;
  });
  await h.owner`
    UPDATE sms_attempts a SET started_at = a.started_at - make_interval(hours => (x.n * 3)::int)
      FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM sms_attempts WHERE org_id = ${lakeside.id}) x
     WHERE a.id = x.id AND x.n <= 5`;
  lakesideId = lakeside.id;
});

afterAll(async () => {
  await browser?.close();
  if (server) {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});

const row = (orgId: string) => `tr:has(a#clinic-${orgId})`;

/** The words and colour of a clinic's first link on the overview, as the page shows them now. */
async function firstLink(orgId: string) {
  return page.$eval(`${row(orgId)} ol.chain li:first-child`, (li) => ({
    text: li.querySelector('.state')?.textContent ?? '',
    cls: li.className,
    colour: getComputedStyle(li.querySelector('.state')!).color,
  }));
}

async function sessionCookie() {
  const cookies = await browser.cookies();
  return cookies.find((c) => c.name === 'ops_session');
}

describe('the console in a browser', () => {
  it('1. signs in with the admin token and lands on the overview, which the server has already rendered', async () => {
    await page.goto(`${base}/ops`);
    // Not signed in: the sign-in page.
    expect(new URL(page.url()).pathname).toBe('/ops/login');
    await page.type('#token', ADMIN_TOKEN);
    await Promise.all([page.waitForNavigation(), page.click('#sign-in')]);
    expect(new URL(page.url()).pathname, await page.content()).toBe('/ops');
    expect(page.url()).not.toContain(ADMIN_TOKEN);
    await page.waitForSelector(row(maple.id));
    expect(await page.$eval('h1', (e) => e.textContent)).toBe('Overview');
    const names = await page.$$eval('table.clinics tbody th a', (as) => as.map((a) => a.textContent));
    expect(names).toEqual(expect.arrayContaining(['Maple Street Family Clinic', 'Harbor Pediatrics', 'Lakeside Dental']));
    const cookie = await sessionCookie();
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/ops' });
    expect(await page.content()).not.toContain(cookie!.value);
    expect(await page.content()).not.toContain(ADMIN_TOKEN);
    // Lakeside's chart: one green bar per hour with deliveries, and the rate in words.
    const chart = await page.$eval(`${row(lakesideId)} svg.chart`, (svg) => ({
      label: svg.getAttribute('aria-label'),
      bars: svg.querySelectorAll('rect.bar.ok').length,
    }));
    expect(chart).toEqual({ label: 'Delivery rate by hour, last 24 hours: 100 % overall', bars: 6 });
    // Readable at 200 %: half the width at twice the scale, and the page itself does not scroll sideways.
    await page.setViewport({ width: 680, height: 900, deviceScaleFactor: 2 });
    expect(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1)).toBe(true);
    await page.setViewport({ width: 1360, height: 900 });
  });

  it("2. the clinic's Twilio goes red, in words too, when the fake Twilio goes down, without a reload", async () => {
    await page.waitForFunction(
      (sel) => document.querySelector(sel)?.textContent === 'up',
      {},
      `${row(maple.id)} ol.chain li:first-child .state`,
    );
    await page.evaluate(() => ((window as unknown as { marker: string }).marker = 'same page'));
    await twilio.setFault({ kind: 'down' });
    await page.waitForFunction(
      (sel) => document.querySelector(sel)?.textContent === 'DOWN',
      { timeout: 15_000 },
      `${row(maple.id)} ol.chain li:first-child .state`,
    );
    const link = await firstLink(maple.id);
    expect(link.cls).toContain('bad');
    expect(link.colour).toBe('rgb(198, 40, 40)');
    expect(await page.$eval(row(maple.id), (tr) => tr.className)).toContain('alert');
    expect(await page.$eval(row(maple.id), (tr) => tr.textContent)).toContain('link down');
    expect(await page.$eval('.summary', (e) => e.textContent)).toMatch(/provider links? down/);
    // Refreshed in place by htmx: the same document.
    expect(await page.evaluate(() => (window as unknown as { marker?: string }).marker)).toBe('same page');
    await page.screenshot({ path: path.join(ARTIFACTS, 'console-overview.png'), fullPage: true });
  });

  it("3. the failover switch: off, the next booking's text does not go out; switched on from the keyboard, it goes through Telnyx", async () => {
    const off = freshPhone();
    const first = await book(h, maple, { patientPhone: off });
    expect(first.result.smsStatus).not.toBe('sent');
    expect(telnyx.messages.filter((m) => m.to === off)).toHaveLength(0);

    await page.focus(`#failover-${maple.id}`);
    await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
    expect(await page.$eval('.notice', (e) => e.textContent)).toContain('Failover switched on');
    expect(await page.$eval(`${row(maple.id)} .switch`, (e) => e.textContent)).toBe('On');
    const [settings] = await h.owner<{ failover_enabled: boolean }[]>`SELECT failover_enabled FROM sms_settings WHERE org_id = ${maple.id}`;
    expect(settings!.failover_enabled).toBe(true);

    const on = freshPhone();
    const second = await book(h, maple, { patientPhone: on, patientName: 'Ana Ruiz' });
    expect(second.result).toMatchObject({ smsStatus: 'sent', smsProvider: 'telnyx' });
    expect(telnyx.messages.filter((m) => m.to === on)).toHaveLength(1);
    const [sent] = await h.owner<{ body: string }[]>`SELECT body FROM sms_outbox WHERE appointment_id = ${second.result.appointmentId}`;

    // The clinic's page shows that text exactly as the patient got it, masked phone, provider, and the skipped Twilio attempt.
    await Promise.all([page.waitForNavigation(), page.click(`a#clinic-${maple.id}`)]);
    const messages = await page.$$eval('table.messages tbody tr', (trs) =>
      trs.map((tr) => ({
        text: tr.querySelector('p.body')?.textContent ?? '',
        to: tr.querySelector('.phone')?.textContent ?? '',
        cells: tr.textContent ?? '',
      })),
    );
    const shown = messages.find((m) => m.text === sent!.body);
    expect(shown, JSON.stringify(messages)).toBeDefined();
    expect(shown!.to).toBe(`…${on.slice(-4)}#${shown!.to.split('#')[1]}`);
    expect(shown!.cells).toContain('telnyx');
    expect(shown!.cells).toMatch(/twilio skipped/);
    expect(await page.content()).not.toContain(on);
    expect(await page.$eval('#clinic-status', (e) => e.textContent)).toContain('DOWN');
    await page.screenshot({ path: path.join(ARTIFACTS, 'console-clinic.png'), fullPage: true });

    // Switched off again on the clinic's page: the next text stays on the primary, which is down.
    await Promise.all([page.waitForNavigation(), page.click(`#failover-${maple.id}`)]);
    expect(await page.$eval('.notice', (e) => e.textContent)).toContain('Failover switched off');
    const again = freshPhone();
    const third = await book(h, maple, { patientPhone: again });
    expect(third.result.smsStatus).not.toBe('sent');
    expect(telnyx.messages.filter((m) => m.to === again)).toHaveLength(0);
  });

  it('4. a dead letter retried from the list is delivered once', async () => {
    const phone = freshPhone();
    const { result } = await book(h, maple, { patientPhone: phone });
    const dead = await waitFor('the dead letter', async () => {
      const r = await outboxFor(h, result.appointmentId);
      return r.status === 'failed' ? r : null;
    });
    // Twilio comes back; the overview says so in place: no longer red, and this process's next send through it is the trial.
    await twilio.setFault(null);
    await page.goto(`${base}/ops`);
    await page.waitForFunction(
      (sel) => !document.querySelector(sel)?.className.includes('bad'),
      { timeout: 15_000 },
      `${row(maple.id)} ol.chain li:first-child`,
    );
    expect(['up', 'RECOVERING']).toContain((await firstLink(maple.id)).text);

    await page.goto(`${base}/ops/dead-letters?org=${maple.id}`);
    await page.waitForSelector(`#dead-${dead.id}`);
    expect(await page.$eval(`#dead-${dead.id}`, (tr) => tr.textContent)).not.toContain(phone);
    // The retry needs a confirmation: the button is inside a disclosure.
    expect(await page.$eval(`#retry-${dead.id}`, (b) => b.checkVisibility())).toBe(false);
    await page.click(`#retry-open-${dead.id}`);
    await Promise.all([page.waitForNavigation(), page.click(`#retry-${dead.id}`)]);
    expect(await page.$eval('.notice', (e) => e.textContent)).toContain('Retried');
    expect(await page.$(`#dead-${dead.id}`)).toBeNull();
    const after = await waitFor('the retried message to be sent', async () => {
      const r = await outboxFor(h, result.appointmentId);
      return r.status === 'sent' ? r : null;
    });
    expect(after.provider).toBe('twilio');
    const delivered = [...twilio.messages, ...telnyx.messages].filter((m) => m.to === phone);
    expect(delivered).toHaveLength(1);
    // That send was the trial: Twilio is green again.
    await page.goto(`${base}/ops`);
    await page.waitForFunction(
      (sel) => document.querySelector(sel)?.textContent === 'up',
      { timeout: 15_000 },
      `${row(maple.id)} ol.chain li:first-child .state`,
    );
    expect((await firstLink(maple.id)).colour).toBe('rgb(26, 127, 55)');
  });

  it('5. signing out ends the session: the stale cookie gets nothing', async () => {
    const stale = (await sessionCookie())!;
    await Promise.all([page.waitForNavigation(), page.click('#sign-out')]);
    expect(new URL(page.url()).pathname).toBe('/ops/login');
    expect(await sessionCookie()).toBeUndefined();
    // The old cookie, replayed by hand: no page, no data.
    const res = await fetch(`${base}/ops`, { headers: { Cookie: `ops_session=${stale.value}`, Accept: 'text/html' }, redirect: 'manual' });
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/ops/login');
    expect(await res.text()).not.toContain('Maple Street');
    // Put back into the browser, it still leads only to the sign-in page.
    await browser.setCookie({
      name: 'ops_session',
      value: stale.value,
      domain: '127.0.0.1',
      path: '/ops',
      httpOnly: true,
      sameSite: 'Strict',
    });
    await page.goto(`${base}/ops/clinics/${maple.id}`);
    expect(new URL(page.url()).pathname).toBe('/ops/login');
    expect(await page.content()).not.toContain('Maple Street');
  });

  it('6. a form sent without its CSRF token is refused, and nothing changes', async () => {
    await page.type('#token', ADMIN_TOKEN);
    await Promise.all([page.waitForNavigation(), page.click('#sign-in')]);
    await page.goto(`${base}/ops/clinics/${maple.id}`);
    const before = await h.owner<{ failover_enabled: boolean }[]>`SELECT failover_enabled FROM sms_settings WHERE org_id = ${maple.id}`;
    await page.$eval(`.switchbox form input[name="csrf"]`, (input) => input.remove());
    const [response] = await Promise.all([page.waitForNavigation(), page.click(`.switchbox #failover-${maple.id}`)]);
    expect(response?.status()).toBe(403);
    expect(await page.$eval('h1', (e) => e.textContent)).toBe('Refused');
    const after = await h.owner<{ failover_enabled: boolean }[]>`SELECT failover_enabled FROM sms_settings WHERE org_id = ${maple.id}`;
    expect(after).toEqual(before);
    // Refusals were the only complaints: no CSP violation, no script error on any page.
    expect(problems.filter((p) => !/status of 403/.test(p))).toEqual([]);
  });
});
