import type { IncomingMessage } from 'node:http';
import type { Refusal } from './classify';

/**
 * Reads a request body the proxy must judge before Glance sees it, within `limit` bytes.
 *
 * Glance never decodes Content-Encoding: a compressed body reaches its JSON parser as it came. The
 * proxy accepts exactly the bodies Glance can read, so anything but identity is refused (415) rather
 * than inflated and judged in a form Glance would never see.
 */
export type BodyResult = { ok: true; body: Buffer } | { ok: false; refusal: Refusal } | { ok: false; aborted: true };

/**
 * `inspect` sees each chunk as it arrives (the JSON reader works while the body streams in, so no
 * single step holds the event loop for the whole body); a refusal it returns ends the reading.
 */
export function readRequestBody(req: IncomingMessage, limit: number, inspect?: (chunk: Buffer) => Refusal | undefined): Promise<BodyResult> {
  const encoding = String(req.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
  if (encoding !== 'identity' && encoding !== '') {
    return Promise.resolve({
      ok: false,
      refusal: { status: 415, message: `The request content encoding ${req.headers['content-encoding']} is not supported by this server.` },
    });
  }
  const tooLarge: BodyResult = {
    ok: false,
    refusal: { status: 413, message: `The request body is larger than the ${limit} bytes this API accepts for a JSON request.`, headers: { Connection: 'close' } },
  };
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) {
    req.resume();
    return Promise.resolve(tooLarge);
  }
  return new Promise((resolve) => {
    // With a declared length the body is copied once into its final buffer; chunked bodies are joined.
    const sized = req.headers['content-length'] !== undefined ? Buffer.allocUnsafe(declared) : undefined;
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const settle = (result: BodyResult) => {
      if (settled) return;
      settled = true;
      req.off('data', onData);
      resolve(result);
    };
    const onData = (chunk: Buffer) => {
      if (size + chunk.length > limit || (sized && size + chunk.length > sized.length)) {
        // The answer goes out now; the rest of the body is drained, and the connection closed after it.
        chunks.length = 0;
        req.resume();
        settle(tooLarge);
        return;
      }
      if (sized) chunk.copy(sized, size);
      else chunks.push(chunk);
      size += chunk.length;
      const refusal = inspect?.(chunk);
      if (refusal) {
        chunks.length = 0;
        req.resume();
        settle({ ok: false, refusal });
      }
    };
    req.on('data', onData);
    req.once('end', () => {
      const body = sized ? sized.subarray(0, size) : chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
      settle({ ok: true, body });
    });
    req.once('close', () => {
      if (!req.complete) settle({ ok: false, aborted: true });
    });
    req.once('error', () => settle({ ok: false, aborted: true }));
  });
}
