#!/usr/bin/env node
/**
 * prestart: compiles src/ to dist/ only when something that goes into the
 * build changed since the last successful build, and says so when it does.
 *
 * "Changed" is a content hash over every file under src/, the tsconfig files,
 * package.json, package-lock.json and the TypeScript version, kept in
 * dist/.build-stamp. Hashes rather than modification times: a checkout of an
 * older commit, a renamed or deleted file, or a clock step cannot fool it.
 * Plain JavaScript with no dependencies, so it runs before anything is built.
 *
 *   node scripts/build-if-stale.mjs           # from the package root (npm does this)
 *   node scripts/build-if-stale.mjs --force   # compile regardless
 */
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const root = process.cwd();
const stamp = path.join(root, 'dist', '.build-stamp');
const require = createRequire(path.join(root, 'package.json'));

function filesUnder(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .flatMap((e) => (e.isDirectory() ? filesUnder(path.join(dir, e.name)) : [path.join(dir, e.name)]));
}

function buildHash() {
  const h = createHash('sha256');
  const tsc = require.resolve('typescript/package.json');
  h.update(`typescript ${JSON.parse(fs.readFileSync(tsc, 'utf8')).version}\0`);
  const inputs = [
    ...['tsconfig.json', 'tsconfig.build.json', 'package.json', 'package-lock.json'].map((f) => path.join(root, f)),
    ...filesUnder(path.join(root, 'src')),
  ];
  for (const file of inputs) {
    if (!fs.existsSync(file)) continue;
    h.update(`${path.relative(root, file)}\0`);
    h.update(fs.readFileSync(file));
    h.update('\0');
  }
  return h.digest('hex');
}

const hash = buildHash();
const built = fs.existsSync(path.join(root, 'dist', 'src', 'main.js'));
const previous = fs.existsSync(stamp) ? fs.readFileSync(stamp, 'utf8').trim() : '';
if (!process.argv.includes('--force') && built && previous === hash) process.exit(0);

const started = Date.now();
process.stderr.write(
  `compiling TypeScript (tsc -p tsconfig.build.json): ${built ? 'src/ changed since the last build' : 'no build in dist/ yet'}; takes a few seconds\n`,
);
const tsc = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'], {
  cwd: root,
  stdio: 'inherit',
});
if (tsc.status !== 0) process.exit(tsc.status ?? 1);
fs.writeFileSync(stamp, `${hash}\n`);
process.stderr.write(`compiled in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
