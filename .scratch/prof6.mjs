import fs from 'node:fs';
// self time (incl. native descendants) grouped by the nearest frame of package P, by function
const p = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const [from, to, pkg] = [Number(process.argv[3]), Number(process.argv[4]), process.argv[5]];
const nodes = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map(); for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
let t = p.startTime; const by = new Map();
for (let i = 0; i < p.samples.length; i++) { t += p.timeDeltas[i]; const s = (t - p.startTime) / 1e6; if (s < from || s >= to) continue;
  let cur = p.samples[i]; if (nodes.get(cur).callFrame.functionName === '(idle)') continue;
  let leaf = nodes.get(cur).callFrame; let k = null;
  while (cur !== undefined) { const cf = nodes.get(cur).callFrame; if (/node_modules\//.test(cf.url) || cf.url.includes('/dist/src/')) { if (cf.url.includes('node_modules/' + pkg + '/')) k = `${cf.functionName} ${cf.url.replace(/.*node_modules\//,'')}:${cf.lineNumber} <- leaf ${leaf.functionName||leaf.url}`; break; } cur = parent.get(cur); }
  if (k) by.set(k, (by.get(k) ?? 0) + p.timeDeltas[i]); }
for (const [k, v] of [...by].sort((a,b)=>b[1]-a[1]).slice(0,20)) console.log((v/1000).toFixed(0).padStart(5), k);
