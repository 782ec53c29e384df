import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { healthcheckMediaType, publicHealthcheck } from '../../src/ops/health';

interface Answer {
  status: number;
  headers: OutgoingHttpHeaders;
  body: string;
}

async function ask(disableByFile: string | null, method: string, accept?: string): Promise<Answer> {
  const req = { method, url: '/healthcheck', headers: accept === undefined ? {} : { accept } } as unknown as IncomingMessage;
  const answer: Answer = { status: 0, headers: {}, body: '' };
  const res = {
    writeHead(status: number, headers: OutgoingHttpHeaders) {
      answer.status = status;
      answer.headers = headers;
      return this;
    },
    end(body?: string) {
      answer.body = body ?? '';
      return this;
    },
  } as unknown as ServerResponse;
  await publicHealthcheck(disableByFile)(req, res);
  return answer;
}

describe('public /healthcheck, as oslo.middleware answers it in Glance 25', () => {
  let dir: string;
  let disableFile: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'stx-public-health-'));
    disableFile = join(dir, 'disabled');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('answers GET with 200 "OK" in plain text', async () => {
    expect(await ask(disableFile, 'GET')).toEqual({ status: 200, headers: { 'Content-Type': 'text/plain; charset=UTF-8', 'Content-Length': '2' }, body: 'OK' });
  });

  it('answers HEAD with 204 and no body or content type', async () => {
    expect(await ask(null, 'HEAD')).toEqual({ status: 204, headers: { 'Content-Length': '0' }, body: '' });
  });

  it('answers any other method as GET, as oslo looks at the path alone', async () => {
    for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']) expect((await ask(null, method)).body).toBe('OK');
  });

  it('answers 503 DISABLED BY FILE while the file exists, and HEAD 503 with no body', async () => {
    writeFileSync(disableFile, '');
    try {
      expect(await ask(disableFile, 'GET')).toMatchObject({ status: 503, body: 'DISABLED BY FILE' });
      expect(await ask(disableFile, 'HEAD')).toEqual({ status: 503, headers: { 'Content-Type': 'text/plain; charset=UTF-8', 'Content-Length': '0' }, body: '' });
    } finally {
      rmSync(disableFile);
    }
    expect((await ask(disableFile, 'GET')).status).toBe(200);
  });

  it("renders oslo's JSON and HTML bodies byte for byte", async () => {
    const json = await ask(null, 'GET', 'application/json');
    expect(json.headers['Content-Type']).toBe('application/json');
    expect(json.body).toBe('{\n    "detailed": false,\n    "reasons": [\n        "OK"\n    ]\n}');
    const html = await ask(null, 'GET', 'text/html');
    expect(html.headers['Content-Type']).toBe('text/html; charset=UTF-8');
    // 239 bytes from a real Glance 25.1 (oslo.middleware 5.0).
    expect(html.body).toBe(
      '<HTML>\n<HEAD><TITLE>Healthcheck Status</TITLE></HEAD>\n<BODY>\n\n<H2>Result of 1 checks:</H2>\n<TABLE bgcolor="#ffffff" border="1">\n' +
        '<TBODY>\n<TR>\n\n<TH>\nReason\n</TH>\n</TR>\n<TR>\n\n    <TD>OK</TD>\n\n</TR>\n</TBODY>\n</TABLE>\n<HR></HR>\n\n</BODY>\n</HTML>',
    );
    expect(html.headers['Content-Length']).toBe('239');
  });
});

describe("the healthcheck's body type, as WebOb 1.8 acceptable_offers picks it", () => {
  // Each row measured with webob.Request.accept.acceptable_offers(('text/plain', 'text/html', 'application/json')).
  it.each([
    [undefined, 'text/plain'],
    ['', 'text/plain'],
    ['*/*', 'text/plain'],
    ['application/json', 'application/json'],
    ['APPLICATION/JSON', 'application/json'],
    ['text/html', 'text/html'],
    ['application/json, text/html', 'text/html'],
    ['text/*', 'text/plain'],
    ['application/*', 'application/json'],
    ['image/png', 'text/plain'],
    ['application/json;q=0.5, text/plain;q=0.4', 'application/json'],
    ['application/json;q=0', 'text/plain'],
    ['text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8', 'text/html'],
    ['text/*;q=0.5, application/json', 'application/json'],
    ['*/*;q=0.1, application/json;q=0.2', 'application/json'],
    ['text/plain;q=0, */*', 'text/html'],
    ['*/*, application/json;q=0.5', 'text/plain'],
    ['application/json;charset=utf-8', 'text/plain'],
    ['text/html;level=1', 'text/plain'],
    ['garbage', 'text/plain'],
    ['application/json;q=abc', 'text/plain'],
    ['application/json ; q=0.9, text/html;q=0.8', 'application/json'],
    [',,application/json', 'application/json'],
    ['text/plain;q=0.9, application/json;q=0.9', 'text/plain'],
  ])('Accept %p gives %s', (accept, expected) => {
    expect(healthcheckMediaType(accept)).toBe(expected);
  });
});
