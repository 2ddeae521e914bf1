import fs from 'node:fs';
const p = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const nodes = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map(); for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const self = new Map(); let total = 0;
for (let i = 0; i < p.samples.length; i++) { const id = p.samples[i]; const d = p.timeDeltas[i] ?? 0; if (nodes.get(id).callFrame.functionName === '(idle)') continue; self.set(id, (self.get(id) ?? 0) + d); total += d; }
// attribute native/node-internal self time to nearest ancestor in user-land package
const pkgOf = (url) => { const m = url.match(/node_modules\/((@[^/]+\/)?[^/]+)/); if (m) return m[1]; if (url.includes('/dist/src/')) return 'src/' + url.replace(/.*\/dist\/src\//, ''); return null; };
const by = new Map();
for (const [id, t] of self) { let cur = id; let k = null; while (cur !== undefined && !k) { k = pkgOf(nodes.get(cur).callFrame.url); cur = parent.get(cur); } k ??= nodes.get(id).callFrame.functionName || nodes.get(id).callFrame.url || '(native)'; by.set(k, (by.get(k) ?? 0) + t); }
console.log('busy ms', (total/1000).toFixed(0));
for (const [k, t] of [...by].sort((a, b) => b[1] - a[1]).slice(0, 40)) console.log((100 * t / total).toFixed(1).padStart(5) + '%', (t/1000).toFixed(0).padStart(5), k);
