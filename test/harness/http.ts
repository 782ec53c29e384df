import { Agent, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { Readable } from 'node:stream';

export type RequestBody = Buffer | string | Readable;

export interface HttpRequest {
  method?: string;
  path: string;
  headers?: OutgoingHttpHeaders;
  body?: RequestBody;
  /** Sent as JSON with Content-Type application/json unless headers name another type. */
  json?: unknown;
  timeoutMs?: number;
}

export interface HttpResponse {
  status: number;
  statusMessage: string;
  /** Header lines as received: original case, order and duplicates kept. */
  rawHeaders: Array<[name: string, value: string]>;
  /** Every value of every header, by lower-case name. */
  headers: Record<string, string[]>;
  body: Buffer;
  /** First value of a header, or undefined. */
  header(name: string): string | undefined;
  text(): string;
  json<T = any>(): T;
}

const DEFAULT_TIMEOUT_MS = 30_000;

/**
 * A client for one base URL. Its agent never keeps connections alive, so a test never sees a
 * response on a socket that an earlier test left behind; destroy() ends anything still open.
 */
export class HttpClient {
  private readonly agent = new Agent({ keepAlive: false });
  private readonly base: URL;

  constructor(baseUrl: string) {
    this.base = new URL(baseUrl);
  }

  request(req: HttpRequest): Promise<HttpResponse> {
    const url = new URL(req.path, this.base);
    const headers: OutgoingHttpHeaders = { ...req.headers };
    const body = requestBody(req, headers);
    return new Promise((resolve, reject) => {
      const outgoing = httpRequest(url, { method: req.method ?? 'GET', headers, agent: this.agent }, (incoming) =>
        readResponse(incoming).then(resolve, reject),
      );
      outgoing.setTimeout(req.timeoutMs ?? DEFAULT_TIMEOUT_MS, () =>
        outgoing.destroy(new Error(`${req.method ?? 'GET'} ${url.pathname}: no answer in time`)),
      );
      outgoing.once('error', reject);
      if (expectsContinue(headers) && body !== undefined) {
        outgoing.once('continue', () => writeBody(outgoing, body));
      } else {
        writeBody(outgoing, body);
      }
    });
  }

  get(path: string, headers?: OutgoingHttpHeaders): Promise<HttpResponse> {
    return this.request({ method: 'GET', path, headers });
  }

  delete(path: string, headers?: OutgoingHttpHeaders): Promise<HttpResponse> {
    return this.request({ method: 'DELETE', path, headers });
  }

  /** A request whose body is `value` as JSON (omit it for none). */
  sendJson(method: string, path: string, value?: unknown, headers?: OutgoingHttpHeaders): Promise<HttpResponse> {
    return this.request({ method, path, headers, json: value });
  }

  destroy(): void {
    this.agent.destroy();
  }
}

/** A one-off request to an absolute URL, on a connection of its own. */
export async function fetchOnce(url: string, req: Omit<HttpRequest, 'path'> = {}): Promise<HttpResponse> {
  const target = new URL(url);
  const client = new HttpClient(target.origin);
  try {
    return await client.request({ ...req, path: target.pathname + target.search });
  } finally {
    client.destroy();
  }
}

function requestBody(req: HttpRequest, headers: OutgoingHttpHeaders): RequestBody | undefined {
  let body = req.body;
  if (req.json !== undefined) {
    body = JSON.stringify(req.json);
    if (!hasHeader(headers, 'content-type')) headers['Content-Type'] = 'application/json';
  }
  if (body !== undefined && !(body instanceof Readable)) {
    if (!hasHeader(headers, 'content-length') && !hasHeader(headers, 'transfer-encoding')) {
      headers['Content-Length'] = Buffer.byteLength(body);
    }
  }
  return body;
}

function writeBody(outgoing: ReturnType<typeof httpRequest>, body: RequestBody | undefined): void {
  if (body instanceof Readable) {
    body.once('error', (error) => outgoing.destroy(error));
    body.pipe(outgoing);
  } else {
    outgoing.end(body);
  }
}

function readResponse(incoming: IncomingMessage): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    incoming.on('data', (chunk: Buffer) => chunks.push(chunk));
    incoming.once('error', reject);
    incoming.once('end', () => resolve(toResponse(incoming, Buffer.concat(chunks))));
  });
}

function toResponse(incoming: IncomingMessage, body: Buffer): HttpResponse {
  const rawHeaders: Array<[string, string]> = [];
  const headers: Record<string, string[]> = {};
  for (let i = 0; i + 1 < incoming.rawHeaders.length; i += 2) {
    const name = incoming.rawHeaders[i];
    const value = incoming.rawHeaders[i + 1];
    rawHeaders.push([name, value]);
    (headers[name.toLowerCase()] ??= []).push(value);
  }
  return {
    status: incoming.statusCode ?? 0,
    statusMessage: incoming.statusMessage ?? '',
    rawHeaders,
    headers,
    body,
    header: (name) => headers[name.toLowerCase()]?.[0],
    text: () => body.toString('utf8'),
    json: () => JSON.parse(body.toString('utf8')),
  };
}

function hasHeader(headers: OutgoingHttpHeaders, name: string): boolean {
  return Object.keys(headers).some((key) => key.toLowerCase() === name);
}

function expectsContinue(headers: OutgoingHttpHeaders): boolean {
  return Object.entries(headers).some(
    ([key, value]) => key.toLowerCase() === 'expect' && String(value).toLowerCase() === '100-continue',
  );
}
