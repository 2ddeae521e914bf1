import fs from 'node:fs';
const file = process.argv[2];
const p = JSON.parse(fs.readFileSync(file, 'utf8'));
const nodes = new Map(p.nodes.map((n) => [n.id, n]));
const self = new Map();
const dt = p.timeDeltas; let total = 0;
for (let i = 0; i < p.samples.length; i++) { const id = p.samples[i]; self.set(id, (self.get(id) ?? 0) + (dt[i] ?? 0)); total += dt[i] ?? 0; }
// self time by function+url
const byFn = new Map();
for (const [id, t] of self) { const n = nodes.get(id); const cf = n.callFrame; const key = `${cf.functionName || '(anon)'} ${cf.url.replace(/.*node_modules\//, 'nm/').replace(/.*\/work\/main\//, '')}:${cf.lineNumber}`; byFn.set(key, (byFn.get(key) ?? 0) + t); }
const top = [...byFn].sort((a, b) => b[1] - a[1]).slice(0, 40);
console.log('total ms', (total / 1000).toFixed(0));
for (const [k, t] of top) console.log((t / 1000).toFixed(0).padStart(6), (100 * t / total).toFixed(1).padStart(5) + '%', k);
// inclusive by package
const parent = new Map(); for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const pkg = (url) => { const m = url.match(/node_modules\/((@[^/]+\/)?[^/]+)/); return m ? m[1] : url.includes('/src/') ? 'src:' + url.replace(/.*\/src\//, '').split('/')[0] : url.startsWith('node:') ? url : url ? 'other' : '(native)'; };
const incl = new Map();
for (const [id, t] of self) { const seen = new Set(); let cur = id; while (cur !== undefined) { const k = pkg(nodes.get(cur).callFrame.url); if (!seen.has(k)) { seen.add(k); incl.set(k, (incl.get(k) ?? 0) + t); } cur = parent.get(cur); } }
console.log('--- inclusive by package');
for (const [k, t] of [...incl].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log((100 * t / total).toFixed(1).padStart(5) + '%', k);
