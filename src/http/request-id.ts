import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

export const REQUEST_ID_HEADER = 'x-openstack-request-id';

/** The format oslo.middleware's RequestId accepts from a caller as a global request id. */
const VALID_REQUEST_ID = /^req-[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}$/;

export function newRequestId(): string {
  return `req-${randomUUID()}`;
}

const ownIds = new WeakMap<IncomingMessage, string>();

/**
 * Keeps a well-formed client request id so that Glance adopts it; drops any other value so that
 * Glance makes its own. Returns the id the client supplied, if it was kept.
 */
export function adoptClientRequestId(req: IncomingMessage): string | undefined {
  const value = req.headers[REQUEST_ID_HEADER];
  if (typeof value === 'string' && VALID_REQUEST_ID.test(value)) return value;
  delete req.headers[REQUEST_ID_HEADER];
  return undefined;
}

/**
 * The id of a request the proxy answers itself (Glance never saw it): the client's, when it sent a
 * valid one, else one made here once and kept for the request's log lines.
 */
export function requestIdOf(req: IncomingMessage): string {
  const client = req.headers[REQUEST_ID_HEADER];
  if (typeof client === 'string') return client;
  let id = ownIds.get(req);
  if (!id) {
    id = newRequestId();
    ownIds.set(req, id);
  }
  return id;
}

const upstreamIds = new WeakMap<IncomingMessage, string>();

/** Remembers the id Glance gave a request the client sent without one. */
export function recordUpstreamRequestId(req: IncomingMessage, id: string): void {
  upstreamIds.set(req, id);
}

/**
 * The id every log line of a request carries: the client's when it sent a valid one (Glance adopts
 * it), else Glance's once Glance answered, else the one the proxy gave its own answer.
 */
export function logRequestId(req: IncomingMessage): string {
  const client = req.headers[REQUEST_ID_HEADER];
  if (typeof client === 'string') return client;
  return upstreamIds.get(req) ?? requestIdOf(req);
}
