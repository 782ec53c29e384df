import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Metrics } from './metrics';

/**
 * A worker has no API port of its own: this small listener gives it /metrics and /healthcheck
 * for Prometheus and the process supervisor. Loopback by default.
 */
export async function startOpsServer(
  listen: string,
  metrics: Metrics,
  health: (req: http.IncomingMessage, res: http.ServerResponse) => Promise<void>,
  refresh?: () => Promise<void>,
): Promise<{ address: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?', 1)[0];
    if (path === '/healthcheck') return void health(req, res);
    if (path === '/metrics' && req.method === 'GET') {
      void metrics.render(refresh).then(({ contentType, body }) => {
        res.writeHead(200, { 'Content-Type': contentType, 'Content-Length': String(Buffer.byteLength(body)) });
        res.end(body);
      });
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain; charset=UTF-8' });
    res.end('Not Found');
  });
  const at = listen.lastIndexOf(':');
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(listen.slice(at + 1)), listen.slice(0, at).replace(/^\[|\]$/g, ''), resolve);
  });
  const address = server.address() as AddressInfo;
  return {
    address: `${address.address}:${address.port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
