/**
 * Daylight saving time: the fall-back (repeated) hour and the spring-forward
 * gap (issue 6), and the module layering of the slot search (issue 7).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

describe('module layering (issue 7)', () => {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'src');
  const localImports = (source: string) => [...source.matchAll(/from '(\.{1,2}\/[^']+)\.js'/g)].map((m) => m[1]!);

  it('no tool imports another tool, and the domain imports no tool', async () => {
    const helpers = new Set(['./args', './booking-shared', './locateAppointment', './types']);
    // The registry and the runner list the tools by design.
    const registry = new Set(['index.ts', 'execute.ts']);
    const offences: string[] = [];
    for (const f of await fs.readdir(path.join(root, 'tools'))) {
      if (registry.has(f)) continue;
      const source = await fs.readFile(path.join(root, 'tools', f), 'utf8');
      for (const spec of localImports(source)) {
        if (spec.startsWith('./') && !helpers.has(spec)) offences.push(`tools/${f} imports ${spec}`);
      }
    }
    for (const f of await fs.readdir(path.join(root, 'booking'))) {
      const source = await fs.readFile(path.join(root, 'booking', f), 'utf8');
      for (const spec of localImports(source)) {
        if (/^\.\.\/(tools|http)\//.test(spec)) offences.push(`booking/${f} imports ${spec}`);
      }
    }
    expect(offences).toEqual([]);
  });
});
