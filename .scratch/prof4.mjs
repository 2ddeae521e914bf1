import fs from 'node:fs';
const p = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const [from, to] = [Number(process.argv[3]), Number(process.argv[4])];
const mode = process.argv[5] ?? 'pkg';
const nodes = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map(); for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const self = new Map(); let total = 0; let t = p.startTime;
for (let i = 0; i < p.samples.length; i++) { t += p.timeDeltas[i]; const s = (t - p.startTime) / 1e6; if (s < from || s >= to) continue; const id = p.samples[i]; const d = p.timeDeltas[i] ?? 0; if (nodes.get(id).callFrame.functionName === '(idle)') continue; self.set(id, (self.get(id) ?? 0) + d); total += d; }
const pkgOf = (url) => { const m = url.match(/node_modules\/((@[^/]+\/)?[^/]+)/); if (m) return m[1]; if (url.includes('/dist/src/')) return 'src/' + url.replace(/.*\/dist\/src\//, ''); if (url.startsWith('node:')) return mode==='node' ? url : null; return null; };
const fnKey = (n) => `${n.callFrame.functionName || '(anon)'} ${n.callFrame.url.replace(/.*node_modules\//, 'nm/').replace(/.*\/dist\//, '')}:${n.callFrame.lineNumber}`;
const by = new Map();
for (const [id, t] of self) { let cur = id; let k = null; if (mode === 'fn') k = fnKey(nodes.get(id)); while (cur !== undefined && !k) { k = pkgOf(nodes.get(cur).callFrame.url); cur = parent.get(cur); } k ??= nodes.get(id).callFrame.functionName || '(native)'; by.set(k, (by.get(k) ?? 0) + t); }
console.log('busy ms in window', (total/1000).toFixed(0));
for (const [k, t] of [...by].sort((a, b) => b[1] - a[1]).slice(0, 45)) console.log((100 * t / total).toFixed(1).padStart(5) + '%', (t/1000).toFixed(0).padStart(5), k);
