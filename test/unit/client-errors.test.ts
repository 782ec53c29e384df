import { clientErrorResponse } from '../../src/http/client-errors';

function parts(response: Buffer): { statusLine: string; headers: Record<string, string>; body: string } {
  const text = response.toString('latin1');
  const [head, body] = [text.slice(0, text.indexOf('\r\n\r\n')), text.slice(text.indexOf('\r\n\r\n') + 4)];
  const [statusLine, ...lines] = head.split('\r\n');
  return { statusLine, headers: Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 2)])), body };
}

describe('the answer to a malformed request on a connection', () => {
  it("is WebOb's plain text 400, closing the connection", () => {
    const { statusLine, headers, body } = parts(clientErrorResponse(400));
    expect(statusLine).toBe('HTTP/1.1 400 Bad Request');
    // webob.exc.HTTPBadRequest() rendered as text/plain, byte for byte (WebOb 1.8.6).
    expect(body).toBe('400 Bad Request\n\nThe server could not comply with the request since it is either malformed or otherwise incorrect.\n\n   ');
    expect(headers).toMatchObject({ 'Content-Type': 'text/plain; charset=UTF-8', 'Content-Length': '119', Connection: 'close' });
    expect(new Date(headers.Date).getTime()).not.toBeNaN();
  });

  it.each([
    [431, 'HTTP/1.1 431 Request Header Fields Too Large', '431 Request Header Fields Too Large\n\nThe request header fields were too large\n\n   '],
    [408, 'HTTP/1.1 408 Request Timeout', '408 Request Timeout\n\nThe server has waited too long for the request to be sent by the client.\n\n   '],
    [413, 'HTTP/1.1 413 Request Entity Too Large', '413 Request Entity Too Large\n\nThe body of your request was too large for this server.\n\n   '],
  ])("is WebOb's %i for the errors Node answers with it", (status, statusLine, body) => {
    const answer = parts(clientErrorResponse(status));
    expect(answer.statusLine).toBe(statusLine);
    expect(answer.body).toBe(body);
    expect(answer.headers['Content-Length']).toBe(String(Buffer.byteLength(body)));
  });
});
