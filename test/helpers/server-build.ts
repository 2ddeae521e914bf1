/**
 * The server's source compiled once per run, for the suites that start it as a
 * child process many times: `node <dir>/src/main.js` starts in about half the
 * time `node --import tsx src/main.ts` takes, because nothing is compiled or
 * hooked at start-up. It is the same transform tsx applies (esbuild, file by
 * file, no bundling), written next to src/ one level down so that every path
 * the code resolves from its own location (sql/, the console's assets,
 * package.json) is found as it is from dist/src/.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

async function sources(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { withFileTypes: true });
  const nested = await Promise.all(
    entries.map((e) => {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) return sources(p);
      return Promise.resolve(e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [p] : []);
    }),
  );
  return nested.flat();
}

/** Compiles src/ into a new directory under the package root; returns it (its src/main.js is the server). */
export async function buildServer(): Promise<string> {
  const outDir = await fs.mkdtemp(path.join(ROOT, '.test-build-'));
  // mkdtemp makes it 0700; test/startup.test.ts also runs it as a normal user.
  await fs.chmod(outDir, 0o755);
  await build({
    entryPoints: await sources(path.join(ROOT, 'src')),
    outdir: path.join(outDir, 'src'),
    outbase: path.join(ROOT, 'src'),
    format: 'esm',
    platform: 'node',
    target: 'node20',
    tsconfig: path.join(ROOT, 'tsconfig.json'),
    logLevel: 'warning',
  });
  return outDir;
}
