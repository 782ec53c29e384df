import { connect, type Socket } from 'node:net';

/**
 * An HTTP/1.1 client that sends a request exactly as written: the request line and headers go out
 * byte for byte (Latin-1), with no URL parsing, no dot-segment resolution and no header tidying,
 * which Node's `http` and `URL` would do. Connections are kept alive and reused, a few at a time.
 */

export interface RawRequest {
  method: string;
  /** The request-target as sent, each character one byte (Latin-1). */
  target: string;
  /** Header lines in order; Host, and Content-Length or Transfer-Encoding for a body, are added when absent. */
  headers?: ReadonlyArray<readonly [string, string]>;
  body?: Buffer;
  /** Send the body in chunked transfer coding instead of with a Content-Length. */
  chunked?: boolean;
}

export interface RawResponse {
  status: number;
  /** Every value of every header, by lower-case name. */
  headers: Record<string, string[]>;
  body: Buffer;
  header(name: string): string | undefined;
  text(): string;
}

/** A request that got no complete answer (connection refused, reset or closed mid-answer). */
export class NoAnswer extends Error {}

/** A pooled connection idle longer than this is not reused: the server may be closing it as we write. */
const STALE_AFTER_MS = 1_000;
/** A safety net for a server that never answers; a case that hits it is reported, not waited for. */
const NO_ANSWER_AFTER_MS = 120_000;

interface PooledSocket {
  socket: Socket;
  idleSince: number;
}

export class RawHttpClient {
  private readonly idle: PooledSocket[] = [];
  private readonly waiting: Array<() => void> = [];
  private active = 0;

  constructor(
    readonly port: number,
    private readonly maxConnections = 4,
  ) {}

  async send(request: RawRequest): Promise<RawResponse> {
    await this.slot();
    try {
      return await this.exchange(request);
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }

  /** Closes every pooled connection. */
  destroy(): void {
    for (const { socket } of this.idle.splice(0)) socket.destroy();
  }

  private slot(): Promise<void> {
    if (this.active < this.maxConnections) {
      this.active++;
      return Promise.resolve();
    }
    return new Promise((resolve) =>
      this.waiting.push(() => {
        this.active++;
        resolve();
      }),
    );
  }

  private async socket(): Promise<Socket> {
    for (;;) {
      const pooled = this.idle.pop();
      if (!pooled) break;
      if (!pooled.socket.destroyed && Date.now() - pooled.idleSince < STALE_AFTER_MS) return pooled.socket;
      pooled.socket.destroy();
    }
    return new Promise((resolve, reject) => {
      const socket = connect(this.port, '127.0.0.1');
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(socket);
      });
      socket.once('error', (error) => reject(new NoAnswer(`cannot connect to 127.0.0.1:${this.port}: ${error.message}`)));
    });
  }

  private async exchange(request: RawRequest): Promise<RawResponse> {
    const socket = await this.socket();
    const parser = new ResponseParser(request.method === 'HEAD');
    return new Promise<RawResponse>((resolve, reject) => {
      const timer = setTimeout(() => finish(new NoAnswer(`no answer within ${NO_ANSWER_AFTER_MS} ms`)), NO_ANSWER_AFTER_MS);
      const onData = (chunk: Buffer): void => {
        try {
          if (parser.feed(chunk)) finish();
        } catch (error) {
          finish(new NoAnswer(`unreadable answer: ${(error as Error).message}`));
        }
      };
      const onEnd = (): void => finish(parser.end() ? undefined : new NoAnswer(`connection closed before a complete answer (${parser.received} bytes)`));
      // A server may answer early (413, 415) and reset while the body is still going out: the answer counts.
      const onError = (error: Error): void =>
        finish(parser.end() ? undefined : new NoAnswer(`connection failed: ${error.message}, ${parser.received} bytes of an answer read`));
      const finish = (error?: Error): void => {
        clearTimeout(timer);
        socket.off('data', onData).off('end', onEnd).off('close', onEnd).off('error', onError);
        if (error) {
          writer.stop();
          socket.destroy();
          reject(error);
          return;
        }
        const response = parser.response();
        // A connection answered before its request was all written is in no state to carry another.
        const written = writer.stop();
        if (written && parser.reusable && !socket.destroyed && socket.readyState === 'open') {
          // A late error on a pooled socket must not crash the test process.
          socket.on('error', () => socket.destroy());
          this.idle.push({ socket, idleSince: Date.now() });
        } else {
          socket.destroy();
        }
        resolve(response);
      };
      socket.removeAllListeners('error');
      socket.on('data', onData).on('end', onEnd).on('close', onEnd).on('error', onError);
      const writer = writeRequest(socket, encodeRequest(request, this.port), () => parser.answering);
    });
  }
}

const WRITE_PIECE = 256 * 1024;

/**
 * Writes a request in pieces, and stops once an answer has begun: a server that refuses a large
 * body early (413) closes the connection, and writing on would reset it before the answer is read.
 */
function writeRequest(socket: Socket, data: Buffer, answered: () => boolean): { stop(): boolean } {
  let at = 0;
  const next = (): void => {
    while (at < data.length && !answered() && !socket.destroyed) {
      const piece = data.subarray(at, at + WRITE_PIECE);
      at += piece.length;
      if (!socket.write(piece)) {
        socket.once('drain', next);
        return;
      }
    }
  };
  next();
  return {
    /** Stops writing; true if the whole request had been written. */
    stop: () => {
      socket.off('drain', next);
      return at >= data.length;
    },
  };
}

export function encodeRequest(request: RawRequest, port: number): Buffer {
  const headers = [...(request.headers ?? [])];
  const has = (name: string): boolean => headers.some(([key]) => key.toLowerCase() === name);
  if (!has('host')) headers.unshift(['Host', `127.0.0.1:${port}`]);
  let body = request.body;
  if (body !== undefined && !has('content-length') && !has('transfer-encoding')) {
    headers.push(request.chunked ? ['Transfer-Encoding', 'chunked'] : ['Content-Length', String(body.length)]);
  }
  if (body !== undefined && request.chunked) {
    // Two chunks when there is more than a byte, so that a server sees a body really cut in pieces.
    const cut = Math.floor(body.length / 2);
    const chunk = (part: Buffer): Buffer[] => (part.length === 0 ? [] : [Buffer.from(`${part.length.toString(16)}\r\n`), part, Buffer.from('\r\n')]);
    body = Buffer.concat([...chunk(body.subarray(0, cut)), ...chunk(body.subarray(cut)), Buffer.from('0\r\n\r\n')]);
  }
  const head = `${request.method} ${request.target} HTTP/1.1\r\n${headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), body ?? Buffer.alloc(0)]);
}

/** Reads one HTTP/1.1 answer (skipping 1xx interim ones): Content-Length, chunked, or until close. */
class ResponseParser {
  private buffer = Buffer.alloc(0);
  private status = 0;
  private headers: Record<string, string[]> = {};
  private headEnd = -1;
  private body: Buffer | undefined;
  received = 0;
  reusable = true;

  /** The final (not 1xx) answer has begun. */
  get answering(): boolean {
    return this.status !== 0;
  }

  constructor(private readonly isHead: boolean) {}

  /** True once the answer is complete. */
  feed(chunk: Buffer): boolean {
    this.received += chunk.length;
    this.buffer = Buffer.concat([this.buffer, chunk]);
    return this.parse();
  }

  /** The connection ended: true if that completes the answer (a body delimited by the close). */
  end(): boolean {
    if (this.body !== undefined) return true;
    if (this.headEnd === -1 || this.framing() !== 'close') return false;
    this.body = this.buffer.subarray(this.headEnd);
    this.reusable = false;
    return true;
  }

  response(): RawResponse {
    const headers = this.headers;
    const body = this.body ?? Buffer.alloc(0);
    return {
      status: this.status,
      headers,
      body,
      header: (name) => headers[name.toLowerCase()]?.[0],
      text: () => body.toString('utf8'),
    };
  }

  private parse(): boolean {
    for (;;) {
      if (this.headEnd === -1) {
        const at = this.buffer.indexOf('\r\n\r\n');
        if (at === -1) return false;
        const lines = this.buffer.subarray(0, at).toString('latin1').split('\r\n');
        const match = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
        if (!match) throw new Error(`not an HTTP status line: ${JSON.stringify(lines[0])}`);
        const status = Number(match[1]);
        if (status >= 100 && status < 200) {
          this.buffer = this.buffer.subarray(at + 4);
          continue;
        }
        this.status = status;
        for (const line of lines.slice(1)) {
          const colon = line.indexOf(':');
          (this.headers[line.slice(0, colon).trim().toLowerCase()] ??= []).push(line.slice(colon + 1).trim());
        }
        if (/\bclose\b/i.test(this.headers.connection?.join(',') ?? '') || lines[0].startsWith('HTTP/1.0')) this.reusable = false;
        this.headEnd = at + 4;
      }
      const framing = this.framing();
      const rest = this.buffer.subarray(this.headEnd);
      if (framing === 'none') {
        this.body = Buffer.alloc(0);
        return true;
      }
      if (framing === 'close') return false;
      if (framing === 'chunked') {
        const decoded = decodeChunked(rest);
        if (decoded === undefined) return false;
        this.body = decoded;
        return true;
      }
      if (rest.length < framing) return false;
      this.body = rest.subarray(0, framing);
      return true;
    }
  }

  private framing(): 'none' | 'close' | 'chunked' | number {
    if (this.isHead || this.status === 204 || this.status === 304) return 'none';
    if (/chunked/i.test(this.headers['transfer-encoding']?.join(',') ?? '')) return 'chunked';
    const length = this.headers['content-length']?.[0];
    if (length !== undefined) return Number(length);
    this.reusable = false;
    return 'close';
  }
}

/** The body of a complete chunked message, or undefined while more bytes are needed. */
function decodeChunked(data: Buffer): Buffer | undefined {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const lineEnd = data.indexOf('\r\n', at);
    if (lineEnd === -1) return undefined;
    const size = parseInt(data.subarray(at, lineEnd).toString('latin1').split(';')[0], 16);
    if (Number.isNaN(size)) throw new Error('bad chunk size');
    at = lineEnd + 2;
    if (size === 0) {
      // Trailers end with an empty line.
      const end = data.indexOf('\r\n', at);
      if (end === -1) return undefined;
      return Buffer.concat(parts);
    }
    if (data.length < at + size + 2) return undefined;
    parts.push(data.subarray(at, at + size));
    at += size + 2;
  }
}
