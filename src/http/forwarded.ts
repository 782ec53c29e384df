import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { BlockList, isIPv4, isIPv6 } from 'node:net';
import { ConfigError } from '../config/load';

/**
 * What the proxy tells Glance about where a request came from.
 *
 * With `[oslo_middleware] enable_proxy_headers_parsing = True`, Glance's http_proxy_to_wsgi filter
 * takes the scheme, host and client address from the first element of `Forwarded` (proto, host,
 * for) or, when there is no Forwarded, from `X-Forwarded-Proto`, `-Host` and `-For`; and it prepends
 * `X-Forwarded-Prefix` to the script name. The absolute links Glance builds follow them: Location
 * the scheme and host, the versions document the prefix as well. Whatever that setting, eventlet writes
 * X-Forwarded-For into Glance's access log as the client address, and WebOb's `client_addr` (read by
 * keystonemiddleware's audit) takes its first entry. `X-Forwarded-Port` and `X-Real-IP` are read by
 * none of them; they are dropped too, so that nothing behind the proxy can ever trust a client's.
 *
 * A client's values are kept only when the TCP peer is a trusted proxy (a TLS terminator or load
 * balancer in front, `trusted_proxies`); the proxy then appends the peer to the chain it vouches for.
 */
const FORWARDING = new Set(['forwarded', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'x-forwarded-prefix', 'x-real-ip']);

export interface ForwardingChanges {
  /** Names of the request's headers to remove, as they appear in `req.headers`. */
  delete: string[];
  /** Headers to set, by lower-case name. */
  set: Record<string, string>;
  /** Whether the peer was a trusted proxy, whose forwarding headers were kept. */
  trustedPeer: boolean;
}

const compiled = new WeakMap<readonly string[], BlockList>();

/**
 * The trusted peers as a BlockList; a bad entry is a configuration error, so call this at start.
 * Entries are addresses or CIDR blocks, IPv4 or IPv6 (an IPv4 rule also matches the IPv4-mapped
 * IPv6 address a dual-stack listener reports).
 */
export function compileTrustedProxies(trustedProxies: readonly string[]): BlockList {
  let list = compiled.get(trustedProxies);
  if (list) return list;
  list = new BlockList();
  for (const entry of trustedProxies) {
    const [address, prefix, extra] = entry.split('/');
    const family = isIPv4(address) ? 'ipv4' : isIPv6(address) ? 'ipv6' : undefined;
    const bits = prefix === undefined ? undefined : /^[0-9]{1,3}$/.test(prefix) ? Number(prefix) : NaN;
    const maxBits = family === 'ipv4' ? 32 : 128;
    if (!family || extra !== undefined || (bits !== undefined && !(bits <= maxBits))) {
      throw new ConfigError(`config: 'trusted_proxies' entry '${entry}' is not an IPv4 or IPv6 address or CIDR block`);
    }
    if (bits === undefined) list.addAddress(address, family);
    else list.addSubnet(address, bits, family);
  }
  compiled.set(trustedProxies, list);
  return list;
}

/** The peer's address as Glance's logs should show it: an IPv4-mapped IPv6 address as plain IPv4. */
export function peerAddress(remoteAddress: string | undefined): string | undefined {
  if (!remoteAddress) return undefined;
  const mapped = /^::ffff:([0-9.]+)$/i.exec(remoteAddress);
  return mapped && isIPv4(mapped[1]) ? mapped[1] : remoteAddress;
}

function isTrusted(peer: string | undefined, trustedProxies: readonly string[]): boolean {
  if (!peer || trustedProxies.length === 0) return false;
  const list = compileTrustedProxies(trustedProxies);
  try {
    return isIPv4(peer) ? list.check(peer, 'ipv4') : list.check(peer, 'ipv6');
  } catch {
    // An address BlockList cannot read is nobody we trust.
    return false;
  }
}

function single(value: string | string[] | undefined): string | undefined {
  const text = Array.isArray(value) ? value.join(', ') : value;
  return text === undefined || text.trim() === '' ? undefined : text;
}

/** RFC 7239 node: an IPv6 address goes in brackets and quotes. */
function forwardedNode(address: string): string {
  return isIPv6(address) ? `"[${address}]"` : address;
}

/**
 * Decides, for one request, which forwarding headers Glance gets: the client's are removed unless
 * the peer is trusted; then X-Forwarded-For carries the peer (after a trusted chain), X-Forwarded-Proto
 * the scheme the proxy was reached by (or a trusted one), X-Forwarded-Host the Host header (or a
 * trusted one), and a trusted Forwarded gains the peer as its last element.
 *
 * Untrusted, the values equal what Glance sees without the headers (scheme http, the client's Host,
 * which the proxy forwards), so links are the same whether Glance parses proxy headers or not.
 * Names are compared as eventlet compares them: `X_Forwarded_Host` becomes the same WSGI variable as
 * `X-Forwarded-Host`, so any spelling with underscores is removed even from a trusted peer, which
 * vouches only for the spelling it sets itself (nginx and HAProxy pass underscored names through).
 */
export function forwardingHeaders(req: Pick<IncomingMessage, 'headers' | 'socket'>, trustedProxies: readonly string[]): ForwardingChanges {
  const peer = peerAddress(req.socket?.remoteAddress);
  const trustedPeer = isTrusted(peer, trustedProxies);
  const remove: string[] = [];
  for (const name of Object.keys(req.headers)) {
    const lower = name.toLowerCase();
    const canonical = lower.replace(/_/g, '-');
    if (FORWARDING.has(canonical) && (!trustedPeer || canonical !== lower)) remove.push(name);
  }
  const kept = (name: string) => (trustedPeer ? single(req.headers[name]) : undefined);
  const set: Record<string, string> = {};

  const chain = [kept('x-forwarded-for'), peer].filter((part): part is string => part !== undefined);
  if (chain.length > 0) set['x-forwarded-for'] = chain.join(', ');

  const encrypted = (req.socket as { encrypted?: boolean } | undefined)?.encrypted === true;
  set['x-forwarded-proto'] = kept('x-forwarded-proto') ?? (encrypted ? 'https' : 'http');

  const host = kept('x-forwarded-host') ?? single(req.headers.host);
  if (host !== undefined) set['x-forwarded-host'] = host;

  const forwarded = kept('forwarded');
  if (forwarded !== undefined && peer !== undefined) set.forwarded = `${forwarded}, for=${forwardedNode(peer)}`;

  return { delete: remove, set, trustedPeer };
}

/**
 * Applies `changes` to the headers of the request that goes to Glance. Names are matched without
 * regard to case, as a header object built from raw headers may keep the client's spelling.
 */
export function applyForwardingHeaders(headers: IncomingHttpHeaders | OutgoingHttpHeaders, changes: ForwardingChanges): void {
  const replaced = new Set([...changes.delete, ...Object.keys(changes.set)].map((name) => name.toLowerCase()));
  for (const name of Object.keys(headers)) {
    if (replaced.has(name.toLowerCase())) delete headers[name];
  }
  for (const [name, value] of Object.entries(changes.set)) headers[name] = value;
}
