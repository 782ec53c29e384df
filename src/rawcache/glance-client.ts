import http from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import type { CachedImage } from './state';

/**
 * The worker's and reconciler's own client of the Glance API: it talks to Glance directly (never
 * through the proxy's user-facing guard) with the service identity `authHeaders` provides.
 */
export interface GlanceClientOptions {
  baseUrl: string;
  /** Headers that carry the service identity (a Keystone token); none for a Glance without auth. */
  authHeaders?: () => Promise<Record<string, string>>;
  /** Called when Glance answers 401, before the one retry with fresh credentials. */
  onUnauthorized?: () => void;
  timeoutMs?: number;
}

export class GlanceHttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'GlanceHttpError';
  }
}

const PATCH_TYPE = 'application/openstack-images-v2.1-json-patch';

export class GlanceClient {
  /** Where this client reaches Glance (from the configuration or the catalog). */
  readonly baseUrl: string;
  private readonly agent: http.Agent;

  constructor(private readonly options: GlanceClientOptions) {
    // Kept as text: a catalog URL may carry a path prefix (http://host/image) that new URL(path, base) would drop.
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    const Agent = this.baseUrl.startsWith('https:') ? https.Agent : http.Agent;
    this.agent = new Agent({ keepAlive: true, maxSockets: 16, timeout: 30_000 });
  }

  /** The image as Glance shows it now, or undefined when Glance says it does not exist. */
  async getImage(id: string): Promise<CachedImage | undefined> {
    const res = await this.send('GET', `/v2/images/${encodeURIComponent(id)}`);
    if (res.status === 404) return undefined;
    return this.json(res, 'show image') as Promise<CachedImage>;
  }

  /** Every image matching `filters` (Glance's list query parameters), all pages. */
  async *listImages(filters: Record<string, string>): AsyncGenerator<CachedImage> {
    let path: string | undefined = `/v2/images?${new URLSearchParams({ limit: '200', ...filters })}`;
    while (path) {
      const res = await this.send('GET', path);
      const page = (await this.json(res, 'list images')) as { images: CachedImage[]; next?: string };
      yield* page.images;
      path = page.images.length > 0 ? page.next : undefined;
    }
  }

  /** The image data as a stream (status 200), for the worker to verify and convert. */
  async download(id: string, signal?: AbortSignal): Promise<Readable> {
    const res = await this.send('GET', `/v2/images/${encodeURIComponent(id)}/file`, undefined, {}, signal);
    if (res.status !== 200) throw await this.refusal(res, 'download image data');
    return res;
  }

  private async refusal(res: http.IncomingMessage & { status: number }, what: string): Promise<GlanceHttpError> {
    if (res.status >= 400) return this.json(res, what).then(() => new GlanceHttpError(res.status, `Glance refused to ${what}: ${res.status}`), (err: Error) => err as GlanceHttpError);
    res.resume();
    return new GlanceHttpError(res.status, `Glance answered ${res.status} where the image data was expected (to ${what})`);
  }

  /**
   * Sets and removes extra properties in one PATCH. `current` is the image as last read, so that
   * only properties that exist are removed (Glance answers 409 to removing a missing one).
   */
  async updateProperties(current: CachedImage, set: Record<string, string>, remove: readonly string[] = []): Promise<CachedImage> {
    const ops: Array<Record<string, string>> = [];
    for (const [key, value] of Object.entries(set)) {
      if ((current as unknown as Record<string, unknown>)[key] !== value) ops.push({ op: 'add', path: `/${key}`, value });
    }
    for (const key of remove) {
      if ((current as unknown as Record<string, unknown>)[key] !== undefined) ops.push({ op: 'remove', path: `/${key}` });
    }
    if (ops.length === 0) return current;
    const res = await this.send('PATCH', `/v2/images/${encodeURIComponent(current.id)}`, JSON.stringify(ops), { 'Content-Type': PATCH_TYPE });
    return this.json(res, 'update image properties') as Promise<CachedImage>;
  }

  close(): void {
    this.agent.destroy();
  }

  private async json(res: http.IncomingMessage, what: string): Promise<unknown> {
    const chunks: Buffer[] = [];
    for await (const chunk of res) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    if ((res.statusCode ?? 0) >= 400) {
      const detail = text.replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 300);
      throw new GlanceHttpError(res.statusCode ?? 0, `Glance refused to ${what}: ${res.statusCode} ${detail}`);
    }
    return JSON.parse(text);
  }

  private async send(method: string, path: string, body?: string, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<http.IncomingMessage & { status: number }> {
    const res = await this.sendOnce(method, path, body, headers, signal);
    if (res.status !== 401 || !this.options.onUnauthorized) return res;
    // The service token expired or was revoked early: fetch a new one and try once more.
    res.resume();
    this.options.onUnauthorized();
    return this.sendOnce(method, path, body, headers, signal);
  }

  private async sendOnce(method: string, path: string, body: string | undefined, headers: Record<string, string>, signal?: AbortSignal): Promise<http.IncomingMessage & { status: number }> {
    const auth = (await this.options.authHeaders?.()) ?? {};
    const url = new URL(this.baseUrl + path);
    const request = url.protocol === 'https:' ? https.request : http.request;
    return new Promise((resolve, reject) => {
      const req = request(
        url,
        { method, agent: this.agent, signal, headers: { Accept: 'application/json', ...auth, ...headers, ...(body ? { 'Content-Length': String(Buffer.byteLength(body)) } : {}) } },
        (res) => resolve(Object.assign(res, { status: res.statusCode ?? 0 })),
      );
      req.setTimeout(this.options.timeoutMs ?? 60_000, () => req.destroy(new Error(`Glance did not answer ${method} ${url.pathname} in time`)));
      req.once('error', reject);
      req.end(body);
    });
  }
}
