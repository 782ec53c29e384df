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
 * Looks at the body as it arrives, one chunk per turn of the event loop, so that no turn costs more
 * than one chunk's worth of work whatever the body. `step` is called again, without a new chunk,
 * while it answers 'more' (work left over from the last chunk). A refusal ends the reading.
 */
export interface BodyInspector {
  chunk(chunk: Buffer): Refusal | 'more' | undefined;
  step(): Refusal | 'more' | undefined;
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** How much of a refused body with a declared length is read and dropped, in multiples of the limit. */
const MAX_DISCARD_FACTOR = 16;

export function readRequestBody(req: IncomingMessage, limit: number, inspector?: BodyInspector): Promise<BodyResult> {
  const encoding = String(req.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
  if (encoding !== 'identity' && encoding !== '') {
    return Promise.resolve({
      ok: false,
      refusal: { status: 415, message: `The request content encoding ${req.headers['content-encoding']} is not supported by this server.` },
    });
  }
  const tooLarge: BodyResult = {
    ok: false,
    refusal: { status: 413, message: `The request body is larger than the ${limit} bytes this API accepts for a JSON request.` },
  };
  const declaredHeader = req.headers['content-length'];
  const declared = Number(declaredHeader ?? 0);
  if (declared > limit) {
    // The client announced the whole body: drop all of it (up to a bound), or the cut would reset the
    // connection under the 413 before a client that writes its whole body first has read it.
    discardRest(req, Math.min(declared, MAX_DISCARD_FACTOR * limit));
    return Promise.resolve(tooLarge);
  }
  return new Promise((resolve) => {
    // One buffer, copied into as chunks arrive: never a join of every chunk at the end. Without a
    // declared length it is sized to the limit; only the pages written to take memory.
    const body = Buffer.allocUnsafe(declaredHeader !== undefined ? declared : limit);
    let size = 0;
    let ended = false;
    let settled = false;
    const queue: Buffer[] = [];
    let working = false;

    const settle = (result: BodyResult) => {
      if (settled) return;
      settled = true;
      req.off('data', onData);
      if (!result.ok) {
        queue.length = 0;
        discardRest(req, limit);
      }
      resolve(result);
    };
    const finish = () => {
      if (ended && !working && queue.length === 0) settle({ ok: true, body: body.subarray(0, size) });
    };
    const work = async () => {
      working = true;
      try {
        await inspectQueued();
      } catch {
        // A fault of the proxy's own: this request gets a 500, the process goes on.
        settle({ ok: false, refusal: { status: 500, message: 'The server has either erred or is incapable of performing the requested operation.' } });
      }
      working = false;
      finish();
    };
    const inspectQueued = async () => {
      while (queue.length > 0 && !settled) {
        let verdict = inspector!.chunk(queue.shift()!);
        while (verdict === 'more' && !settled) {
          await nextTurn();
          verdict = inspector!.step();
        }
        if (verdict !== undefined && verdict !== 'more') return settle({ ok: false, refusal: verdict });
        if (!ended && queue.length < 4) req.resume();
        await nextTurn();
      }
    };
    const onData = (chunk: Buffer) => {
      if (size + chunk.length > body.length) return settle(tooLarge);
      chunk.copy(body, size);
      const view = body.subarray(size, size + chunk.length);
      size += chunk.length;
      if (!inspector) return;
      queue.push(view);
      // A client faster than the inspector waits: its bytes stay in the socket, not in the proxy.
      if (queue.length >= 4) req.pause();
      if (!working) void work();
    };
    req.on('data', onData);
    req.once('end', () => {
      ended = true;
      finish();
    });
    req.once('close', () => {
      if (!req.complete) settle({ ok: false, aborted: true });
    });
    req.once('error', () => settle({ ok: false, aborted: true }));
  });
}

/**
 * Reads and drops the rest of a refused body, so that a client still sending gets its answer: a
 * socket closed with unread bytes makes the kernel reset the connection, and the client may never
 * read the error. Past `budget` more bytes the connection is cut.
 */
function discardRest(req: IncomingMessage, budget: number): void {
  let dropped = 0;
  req.on('data', (chunk: Buffer) => {
    dropped += chunk.length;
    if (dropped > budget) req.socket.destroy();
  });
  req.resume();
}
