import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { freePort } from './ports';

/**
 * A relay in front of a real Glance, for faults Glance itself cannot produce (fault injection
 * only: every answer it passes on is the real Glance's). `fault` decides per request: undefined
 * relays it; `{ status }` answers that status instead; `{ stallAfterBytes }` relays the answer's
 * head and that many bytes of its body, then sends nothing more (the connection stays open).
 */
export type RelayFault = { status: number; body?: string } | { stallAfterBytes: number };

export interface GlanceRelay {
  readonly url: string;
  /** Requests seen, as `METHOD path`. */
  readonly seen: string[];
  fault: ((req: IncomingMessage) => RelayFault | undefined) | undefined;
  close(): Promise<void>;
}

export async function startGlanceRelay(glanceUrl: string): Promise<GlanceRelay> {
  const upstream = new URL(glanceUrl);
  const relay: GlanceRelay = {
    url: '',
    seen: [],
    fault: undefined,
    close: () => Promise.resolve(),
  };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    relay.seen.push(`${req.method} ${req.url}`);
    const fault = relay.fault?.(req);
    if (fault && 'status' in fault) {
      req.resume();
      res.writeHead(fault.status, { 'Content-Type': 'text/plain' });
      res.end(fault.body ?? `${fault.status} from the test relay\n`);
      return;
    }
    const forwarded = httpRequest(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: { ...req.headers, host: upstream.host } },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        if (!fault) {
          answer.pipe(res);
          return;
        }
        let sent = 0;
        answer.on('data', (chunk: Buffer) => {
          const room = fault.stallAfterBytes - sent;
          if (room > 0) res.write(chunk.subarray(0, room));
          sent += chunk.length;
          if (sent >= fault.stallAfterBytes) answer.pause();
        });
      },
    );
    forwarded.once('error', (error) => res.destroy(error));
    req.pipe(forwarded);
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return Object.assign(relay, {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
}
