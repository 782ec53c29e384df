import http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A stand-in Glance for the faults real Glance cannot be made to produce on demand (dying
 * mid-body, never answering, seeing a client vanish). Each test installs its own handler.
 */
export interface FakeUpstream {
  url: string;
  port: number;
  /** What the upstream saw of each request, in arrival order. */
  seen: SeenRequest[];
  handle(handler: http.RequestListener): void;
  close(): Promise<void>;
}

export interface SeenRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  /** Resolves when the upstream side of the request is torn down or finished, with how it ended. */
  ended: Promise<'complete' | 'aborted'>;
  bytesReceived(): number;
}

export async function startFakeUpstream(): Promise<FakeUpstream> {
  let handler: http.RequestListener = (_req, res) => {
    res.writeHead(500);
    res.end();
  };
  const seen: SeenRequest[] = [];
  const server = http.createServer({ requestTimeout: 0 }, (req, res) => {
    let received = 0;
    req.on('data', (chunk: Buffer) => {
      received += chunk.length;
    });
    const ended = new Promise<'complete' | 'aborted'>((resolve) => {
      res.once('close', () => resolve(res.writableFinished && req.complete ? 'complete' : 'aborted'));
    });
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, ended, bytesReceived: () => received });
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    seen,
    handle: (h) => {
      handler = h;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
