/**
 * Headless Chromium for the console's browser suite: the Chromium build that
 * ships inside the @sparticuz/chromium npm package, driven by puppeteer-core.
 * Both are devDependencies, loaded only here, so nothing else pays for them.
 *
 * The package unpacks its browser into os.tmpdir() on first use. Left to
 * itself it would share one /tmp/chromium between every user and every
 * version of the package (and the binary is mode 0700): a run as root would
 * leave nothing a normal user may execute, and an older unpacked build would be
 * used in place of this one. So it unpacks into a staging directory of its
 * own, moved into place whole once complete, named by package version and uid.
 * A missing or broken browser fails the suite; it never skips.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import type { Browser, PuppeteerNode } from 'puppeteer-core';

const require = createRequire(import.meta.url);

export interface LaunchedBrowser {
  browser: Browser;
  /** How long unpacking took (0 when an earlier run had unpacked it) and how long Chromium took to start, in ms. */
  unpackMs: number;
  launchMs: number;
  version: string;
}

function unpackedDir(pkgVersion: string): string {
  const uid = typeof process.getuid === 'function' ? process.getuid() : 'user';
  return path.join(os.tmpdir(), `clinic-voice-tools-chromium-${pkgVersion}-${uid}`);
}

/** Runs `fn` with os.tmpdir() pointing at `dir`: the package unpacks wherever tmpdir() says at that moment. */
async function withTmpdir<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const saved = { TMPDIR: process.env.TMPDIR, TMP: process.env.TMP, TEMP: process.env.TEMP };
  process.env.TMPDIR = process.env.TMP = process.env.TEMP = dir;
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** The version of the package a resolved entry point belongs to (its package.json is not exported). */
function packageVersion(entry: string): string {
  for (let dir = path.dirname(entry); dir !== path.dirname(dir); dir = path.dirname(dir)) {
    const file = path.join(dir, 'package.json');
    if (!fs.existsSync(file)) continue;
    const pkg = JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: string; version?: string };
    if (pkg.name === '@sparticuz/chromium' && pkg.version) return pkg.version;
  }
  throw new Error('@sparticuz/chromium: package.json not found');
}

export async function launchBrowser(): Promise<LaunchedBrowser> {
  let chromium: typeof import('@sparticuz/chromium').default;
  let puppeteer: PuppeteerNode;
  try {
    chromium = (await import('@sparticuz/chromium')).default;
    puppeteer = (await import('puppeteer-core')).default as unknown as PuppeteerNode;
  } catch (err) {
    throw new Error(
      `The console's browser suite needs puppeteer-core and @sparticuz/chromium (devDependencies): run npm ci. ${String(err)}`,
      { cause: err },
    );
  }
  const pkgVersion = packageVersion(require.resolve('@sparticuz/chromium'));
  const dir = unpackedDir(pkgVersion);
  const exe = path.join(dir, 'chromium');
  const started = performance.now();
  if (!fs.existsSync(exe)) {
    const staging = fs.mkdtempSync(`${dir}.part-`);
    try {
      const unpacked = await withTmpdir(staging, () => chromium.executablePath());
      if (path.dirname(unpacked) !== staging) throw new Error(`Chromium unpacked to ${unpacked}, not into ${staging}`);
      try {
        fs.renameSync(staging, dir);
      } catch (err) {
        // Another run finished first: its copy is as good as ours.
        if (!fs.existsSync(exe)) throw err;
      }
    } finally {
      fs.rmSync(staging, { recursive: true, force: true });
    }
  }
  const unpackMs = Math.round(performance.now() - started);
  const launching = performance.now();
  let browser: Browser;
  try {
    browser = await puppeteer.launch({
      executablePath: exe,
      args: chromium.args,
      headless: 'shell',
      defaultViewport: { width: 1360, height: 900 },
    });
  } catch (err) {
    throw new Error(`Headless Chromium (${exe}) did not start: ${String(err)}`, { cause: err });
  }
  return { browser, unpackMs, launchMs: Math.round(performance.now() - launching), version: await browser.version() };
}
