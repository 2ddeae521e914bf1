import fs from 'node:fs';
// self time of luxon (and natives under it) attributed to the nearest src/ caller
const p = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const [from, to, pkg] = [Number(process.argv[3]), Number(process.argv[4]), process.argv[5]];
const nodes = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map(); for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
let t = p.startTime; const by = new Map(); let total=0;
for (let i = 0; i < p.samples.length; i++) { t += p.timeDeltas[i]; const s = (t - p.startTime) / 1e6; if (s < from || s >= to) continue;
  let cur = p.samples[i]; let inPkg = false; let caller = null;
  while (cur !== undefined) { const u = nodes.get(cur).callFrame.url; if (u.includes('node_modules/' + pkg + '/')) inPkg = true; else if (inPkg && u.includes('/dist/src/')) { const cf = nodes.get(cur).callFrame; caller = `${cf.functionName} ${u.replace(/.*\/dist\//,'')}:${cf.lineNumber}`; break; } cur = parent.get(cur); }
  if (inPkg) { by.set(caller ?? '?', (by.get(caller ?? '?') ?? 0) + p.timeDeltas[i]); total += p.timeDeltas[i]; } }
console.log(pkg, 'ms', (total/1000).toFixed(0));
for (const [k, v] of [...by].sort((a,b)=>b[1]-a[1]).slice(0,25)) console.log((v/1000).toFixed(0).padStart(5), k);
