import type http from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '../ops/log';
import { renderGlanceError } from './errors';

/**
 * What happens to a connection on which a client sends something Node's parser cannot read.
 *
 * Node parses everything that has arrived on a connection at once: requests received in full are
 * handed to the server (with their whole body) before the parser meets the bytes after them. On a
 * parse error Node's default writes a bare 400 at once and destroys the socket, so the answers to
 * those requests, still being prepared, are lost, and the 400 lands where the first of them was due.
 * Measured on Node 20: with a 'clientError' listener the socket stays open and writable, the requests
 * already handed over keep their bodies, and their answers go out normally.
 *
 * So: a request that was fully received gets its answer even when garbage follows it; only then does
 * the connection get a 400 and close. eventlet (Glance 25) does the same in substance: it answers the
 * valid request, then sends Python's http.server error page without a status line (an HTTP/0.9
 * answer) and closes. The proxy sends a real HTTP/1.1 answer instead, with WebOb's plain text body.
 */

/** Node's own status for the errors it names (lib/_http_server.js); 400 for every other. */
const STATUS_BY_CODE: Record<string, number> = {
  HPE_HEADER_OVERFLOW: 431,
  HPE_CHUNK_EXTENSIONS_OVERFLOW: 413,
  ERR_HTTP_REQUEST_TIMEOUT: 408,
};

/** WebOb's explanations for those statuses (webob.exc). */
const EXPLANATIONS: Record<number, string> = {
  400: 'The server could not comply with the request since it is either malformed or otherwise incorrect.',
  408: 'The server has waited too long for the request to be sent by the client.',
  413: 'The body of your request was too large for this server.',
  431: 'The request header fields were too large',
};

/** The connection itself failed: nobody is left to answer. */
const CONNECTION_GONE = new Set(['ECONNRESET', 'EPIPE']);

interface ConnectionState {
  /** Requests handed to the server whose answer has not finished, oldest first. */
  open: Array<{ req: http.IncomingMessage; res: http.ServerResponse }>;
  /** The status owed once those are answered; set by the first error, later ones change nothing. */
  failed?: number;
}

/** The whole answer, status line to body, closing the connection. */
export function clientErrorResponse(status: number): Buffer {
  const { contentType, body } = renderGlanceError(status, EXPLANATIONS[status] ?? EXPLANATIONS[400], 'plain');
  // The plain body opens with "<status> <title>", WebOb's status line.
  const statusLine = body.slice(0, body.indexOf('\n'));
  return Buffer.from(
    `HTTP/1.1 ${statusLine}\r\nContent-Type: ${contentType}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
      `Date: ${new Date().toUTCString()}\r\nConnection: close\r\n\r\n${body}`,
  );
}

/**
 * Installs the server's 'clientError' handling (replacing Node's default): answers a malformed
 * request with a Glance-style 400 (431 for headers too large, 413 for chunk extensions too large,
 * 408 for headers that took too long, as Node would), after the answers to the requests before it on
 * the same connection, and then closes the connection. Never throws.
 */
export function handleClientErrors(server: http.Server, logger: Logger): void {
  const connections = new WeakMap<Socket, ConnectionState>();
  const stateOf = (socket: Socket): ConnectionState => {
    let state = connections.get(socket);
    if (!state) {
      state = { open: [] };
      connections.set(socket, state);
    }
    return state;
  };

  // First among the 'request' listeners, so that every answer is seen before anything can end it.
  server.prependListener('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const socket = req.socket;
    const state = stateOf(socket);
    const entry = { req, res };
    state.open.push(entry);
    res.once('close', () => {
      state.open.splice(state.open.indexOf(entry), 1);
      if (state.open.length === 0 && state.failed !== undefined) endWith(socket, state.failed);
    });
  });

  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    try {
      if (CONNECTION_GONE.has(err.code ?? '') || socket.destroyed) {
        socket.destroy();
        return;
      }
      const state = stateOf(socket);
      // The parser stays in error: every later chunk on this connection reports again.
      if (state.failed !== undefined) return;
      const status = STATUS_BY_CODE[err.code ?? ''] ?? 400;
      state.failed = status;
      // Never err.rawPacket: it holds the request's headers, tokens included.
      logger.info('malformed request on a connection', { error: err.code ?? err.message, status, answers_pending: state.open.length });
      const receiving = state.open[state.open.length - 1];
      if (receiving === undefined) {
        endWith(socket, status);
      } else if (!receiving.req.complete) {
        // The broken bytes are inside the request being received (its chunked body, say): nothing
        // will complete it, and its handler may be streaming it to Glance. As Node does, the error
        // is the answer if no answer has started on the connection, and the connection is cut,
        // which also releases the upstream request.
        if (!state.open[0].res.headersSent && socket.writable) socket.write(clientErrorResponse(status));
        socket.destroy();
      }
      // Otherwise every request was received in full: the 'close' of the last answer ends the connection.
    } catch {
      socket.destroy();
    }
  });
}

/**
 * Sends the error and half-closes; the client reads it, sees the end and closes, and the socket goes.
 * Destroying at once could reset the connection while the client is still sending, and a reset can
 * discard the answer before the client reads it. A client that never closes is dropped by the
 * server's idle timeout. When the last answer already closed the connection (the client asked for
 * Connection: close, or spoke HTTP/1.0), there is nothing to do.
 */
function endWith(socket: Socket, status: number): void {
  if (socket.destroyed || !socket.writable || socket.writableEnded) return;
  socket.end(clientErrorResponse(status));
}
