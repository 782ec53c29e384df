import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { readRequestBody } from '../../src/http/request-body';

/** A server that reads JSON bodies up to `limit` bytes and answers a refusal as the proxy does. */
async function bodyServer(limit: number): Promise<{ port: number; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    void readRequestBody(req, limit).then((result) => {
      if (result.ok) res.writeHead(204).end();
      else if ('refusal' in result) res.writeHead(result.refusal.status, { 'Content-Type': 'text/plain' }).end(result.refusal.message);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** Writes a whole request first and reads afterwards, as python's http.client does; what came back, and how it ended. */
function sendWholeThenRead(port: number, head: string, body: Buffer): Promise<{ answer: string; error?: string }> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let answer = '';
    let error: string | undefined;
    socket.on('data', (chunk) => {
      answer += chunk.toString('latin1');
      // The whole answer is in (its body is one short line): hang up, as the client is done.
      if (/\r\n\r\n[^]*\S/.test(answer)) socket.end();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => (error = err.code ?? err.message));
    socket.on('close', () => resolve({ answer, error }));
    socket.write(head);
    socket.write(body);
  });
}

describe('readRequestBody refusing a body over the limit', () => {
  const limit = 1024 * 1024;
  let server: Awaited<ReturnType<typeof bodyServer>>;
  beforeAll(async () => {
    server = await bodyServer(limit);
  });
  afterAll(() => server.close());

  it('drops the rest of a declared body, so the client reads the 413 and the connection is not reset', async () => {
    const body = Buffer.alloc(limit * 3, 0x78);
    const { answer, error } = await sendWholeThenRead(server.port, `POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`, body);
    expect(answer).toMatch(/^HTTP\/1\.1 413 /);
    expect(error).toBeUndefined();
  });
});
