const p = JSON.parse(require('fs').readFileSync(process.argv[2]));
const self = new Map(); const byId = new Map(p.nodes.map(n => [n.id, n]));
const counts = new Map(); for (const s of p.samples) counts.set(s, (counts.get(s) || 0) + 1);
let total = 0;
for (const [id, c] of counts) { const n = byId.get(id); const cf = n.callFrame; const key = `${cf.functionName || '(anon)'} ${cf.url.replace(/.*\/(node_modules\/)?/, '')}:${cf.lineNumber}`; self.set(key, (self.get(key) || 0) + c); total += c; }
// by file
const files = new Map();
for (const [id, c] of counts) { const cf = byId.get(id).callFrame; const f = cf.url.includes('/dist/') ? cf.url.replace(/.*\/dist\//, 'dist/') : cf.url.includes('node_modules') ? 'nm:' + cf.url.replace(/.*node_modules\//, '').split('/')[0] : cf.url.startsWith('node:') ? cf.url : (cf.functionName || '(native)'); files.set(f, (files.get(f) || 0) + c); }
console.log('total samples', total);
for (const [k, v] of [...files].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log((100 * v / total).toFixed(1).padStart(5), k);
console.log('---');
for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log((100 * v / total).toFixed(1).padStart(5), k);
