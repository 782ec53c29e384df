import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { ConfigError } from '../../src/config/load';
import { applyForwardingHeaders, compileTrustedProxies, forwardingHeaders, peerAddress } from '../../src/http/forwarded';

/** What Glance would get: the request's headers with the changes applied. */
function forwarded(remoteAddress: string | undefined, headers: IncomingHttpHeaders, trusted: readonly string[] = []): IncomingHttpHeaders {
  const req = { headers, socket: { remoteAddress } } as unknown as IncomingMessage;
  const out = { ...headers };
  applyForwardingHeaders(out, forwardingHeaders(req, trusted));
  return out;
}

const CLIENT_SENT: IncomingHttpHeaders = {
  host: 'images.example.com:9292',
  forwarded: 'for=203.0.113.9;proto=https;host=evil.example',
  'x-forwarded-for': '203.0.113.9',
  'x-forwarded-proto': 'https',
  'x-forwarded-host': 'evil.example',
  'x-forwarded-port': '443',
  'x-forwarded-prefix': '/evil',
  'x-real-ip': '203.0.113.9',
  'x-auth-token': 'kept',
};

describe('forwarding headers from a peer that is not a trusted proxy', () => {
  it('drops every client-sent forwarding header and sets the proxy own X-Forwarded-For, -Proto and -Host', () => {
    expect(forwarded('192.0.2.7', CLIENT_SENT, ['10.0.0.0/8'])).toEqual({
      host: 'images.example.com:9292',
      'x-forwarded-for': '192.0.2.7',
      'x-forwarded-proto': 'http',
      'x-forwarded-host': 'images.example.com:9292',
      'x-auth-token': 'kept',
    });
  });

  it('drops spellings with underscores, which eventlet reads as the same header', () => {
    const out = forwarded('192.0.2.7', { host: 'h', x_forwarded_host: 'evil.example', X_Forwarded_Proto: 'https', 'x-forwarded_for': '1.2.3.4' });
    expect(out).toEqual({ host: 'h', 'x-forwarded-for': '192.0.2.7', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'h' });
  });

  it('trusts nobody when trusted_proxies is empty, loopback included', () => {
    const changes = forwardingHeaders({ headers: { ...CLIENT_SENT }, socket: { remoteAddress: '127.0.0.1' } } as unknown as IncomingMessage, []);
    expect(changes.trustedPeer).toBe(false);
    expect(changes.set['x-forwarded-host']).toBe('images.example.com:9292');
  });

  it('sets no X-Forwarded-Host without a Host header, and no X-Forwarded-For without a peer address', () => {
    expect(forwarded(undefined, { 'x-forwarded-host': 'evil.example', 'x-forwarded-for': '1.2.3.4' })).toEqual({ 'x-forwarded-proto': 'http' });
  });

  it('leaves every other header alone', () => {
    const out = forwarded('192.0.2.7', { host: 'h', 'content-type': 'application/json', 'x-openstack-request-id': 'req-1', 'x-forwarded-something': 'x' });
    expect(out).toMatchObject({ 'content-type': 'application/json', 'x-openstack-request-id': 'req-1', 'x-forwarded-something': 'x' });
  });
});

describe('forwarding headers from a trusted proxy', () => {
  it('keeps its headers, appends the peer to X-Forwarded-For and to Forwarded', () => {
    expect(forwarded('10.1.2.3', CLIENT_SENT, ['10.1.2.3'])).toEqual({
      ...CLIENT_SENT,
      forwarded: 'for=203.0.113.9;proto=https;host=evil.example, for=10.1.2.3',
      'x-forwarded-for': '203.0.113.9, 10.1.2.3',
    });
  });

  it('fills in the scheme and the Host header when the trusted proxy sent none', () => {
    expect(forwarded('10.1.2.3', { host: 'images.example.com' }, ['10.0.0.0/8'])).toEqual({
      host: 'images.example.com',
      'x-forwarded-for': '10.1.2.3',
      'x-forwarded-proto': 'http',
      'x-forwarded-host': 'images.example.com',
    });
  });

  it('matches IPv4 CIDR blocks, and nothing outside them', () => {
    expect(forwarded('10.255.0.1', { host: 'h', 'x-forwarded-host': 'lb.example' }, ['10.0.0.0/8'])['x-forwarded-host']).toBe('lb.example');
    expect(forwarded('11.0.0.1', { host: 'h', 'x-forwarded-host': 'lb.example' }, ['10.0.0.0/8'])['x-forwarded-host']).toBe('h');
  });

  it('treats an IPv4-mapped IPv6 peer (a dual-stack listener) as its IPv4 address', () => {
    const out = forwarded('::ffff:10.1.2.3', { host: 'h', 'x-forwarded-proto': 'https' }, ['10.0.0.0/8']);
    expect(out).toMatchObject({ 'x-forwarded-proto': 'https', 'x-forwarded-for': '10.1.2.3' });
    expect(peerAddress('::FFFF:192.0.2.1')).toBe('192.0.2.1');
    expect(peerAddress('::ffff:c000:201')).toBe('::ffff:c000:201');
  });

  it('matches IPv6 addresses and CIDR blocks however the address is written', () => {
    expect(forwarded('2001:db8::1', { host: 'h', 'x-forwarded-host': 'lb' }, ['2001:db8:0:0:0:0:0:1'])['x-forwarded-host']).toBe('lb');
    expect(forwarded('2001:db8:ab::5', { host: 'h', 'x-forwarded-host': 'lb' }, ['2001:db8::/32'])['x-forwarded-host']).toBe('lb');
    expect(forwarded('2001:db9::5', { host: 'h', 'x-forwarded-host': 'lb' }, ['2001:db8::/32'])['x-forwarded-host']).toBe('h');
    expect(forwarded('::1', { host: 'h', 'x-forwarded-host': 'lb' }, ['127.0.0.1'])['x-forwarded-host']).toBe('h');
  });

  it('writes an IPv6 peer in Forwarded as RFC 7239 asks: quoted, in brackets', () => {
    const out = forwarded('2001:db8::5', { host: 'h', forwarded: 'for=192.0.2.60;proto=https' }, ['2001:db8::/32']);
    expect(out.forwarded).toBe('for=192.0.2.60;proto=https, for="[2001:db8::5]"');
    expect(out['x-forwarded-for']).toBe('2001:db8::5');
  });

  it('still drops spellings with underscores, which the trusted proxy does not vouch for', () => {
    const out = forwarded('10.1.2.3', { host: 'h', 'x-forwarded-host': 'lb.example', x_forwarded_host: 'evil.example' }, ['10.1.2.3']);
    expect(out).toEqual({ host: 'h', 'x-forwarded-host': 'lb.example', 'x-forwarded-for': '10.1.2.3', 'x-forwarded-proto': 'http' });
  });
});

describe('trusted_proxies entries', () => {
  it('accepts IPv4 and IPv6 addresses and CIDR blocks', () => {
    expect(() => compileTrustedProxies(['192.0.2.1', '10.0.0.0/8', '0.0.0.0/0', '2001:db8::/32', '::1', '::/0'])).not.toThrow();
  });

  it.each(['10.0.0.0/33', '2001:db8::/129', 'lb.example.com', '10.0.0.1/8/1', '10.0.0/8', '10.0.0.0/'])('refuses %s with a configuration error naming it', (entry) => {
    expect(() => compileTrustedProxies([entry])).toThrow(ConfigError);
    expect(() => compileTrustedProxies([entry])).toThrow(`'${entry}'`);
  });
});

describe('applyForwardingHeaders', () => {
  it('matches names without regard to case, as a header object keeping the client spelling needs', () => {
    const headers: Record<string, string> = { Host: 'h', 'X-Forwarded-Host': 'evil', 'X-Real-IP': '1.2.3.4', Accept: '*/*' };
    applyForwardingHeaders(headers, { delete: ['x-real-ip'], set: { 'x-forwarded-host': 'h' }, trustedPeer: false });
    expect(headers).toEqual({ Host: 'h', Accept: '*/*', 'x-forwarded-host': 'h' });
  });
});
