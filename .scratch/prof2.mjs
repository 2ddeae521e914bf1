import fs from 'node:fs';
const p = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const filter = process.argv[3] ?? '';
const nodes = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map(); for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const self = new Map(); let total = 0;
for (let i = 0; i < p.samples.length; i++) { const id = p.samples[i]; const d = p.timeDeltas[i] ?? 0; self.set(id, (self.get(id) ?? 0) + d); if (nodes.get(id).callFrame.functionName !== '(idle)') total += d; }
const key = (n) => { const cf = n.callFrame; return `${cf.functionName || '(anon)'} ${cf.url.replace(/.*node_modules\//, 'nm/').replace(/.*\/work\/main\//, '')}:${cf.lineNumber}`; };
const incl = new Map();
for (const [id, t] of self) { if (nodes.get(id).callFrame.functionName === '(idle)') continue; const seen = new Set(); let cur = id; while (cur !== undefined) { const k = key(nodes.get(cur)); if (!seen.has(k)) { seen.add(k); incl.set(k, (incl.get(k) ?? 0) + t); } cur = parent.get(cur); } }
console.log('busy ms', (total/1000).toFixed(0));
for (const [k, t] of [...incl].filter(([k]) => k.includes(filter)).sort((a, b) => b[1] - a[1]).slice(0, 45)) console.log((100 * t / total).toFixed(1).padStart(5) + '%', k);
