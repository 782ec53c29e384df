'use strict';
// Prints N TCP ports that nothing listens on right now on 127.0.0.1, space-separated.
// All N are held open together so the kernel cannot hand out the same one twice.
const net = require('node:net');

const count = Number(process.argv[2] ?? 1);
const servers = Array.from({ length: count }, () => net.createServer());
Promise.all(servers.map((s) => new Promise((resolve) => s.listen(0, '127.0.0.1', resolve)))).then(() => {
  process.stdout.write(`${servers.map((s) => s.address().port).join(' ')}\n`);
  for (const s of servers) s.close();
});
