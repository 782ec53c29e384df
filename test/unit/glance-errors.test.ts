import { errorFlavor, renderGlanceError, renderReadableError, statesNoPreference } from '../../src/http/errors';

/** Bodies captured from Glance 25 (webob), byte for byte. */
const NOT_FOUND = 'No image found with ID 00000000-0000-0000-0000-000000000000';

describe('Glance-style error bodies', () => {
  it('renders the HTML page webob sends for Accept */*', () => {
    const { contentType, body } = renderGlanceError(404, NOT_FOUND, 'html');
    expect(contentType).toBe('text/html; charset=UTF-8');
    expect(body).toBe(
      `<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n <body>\n  <h1>404 Not Found</h1>\n  ${NOT_FOUND}<br /><br />\n\n\n\n </body>\n</html>`,
    );
    expect(Buffer.byteLength(body)).toBe(181);
  });

  it('renders the JSON object webob sends for Accept application/json', () => {
    const { contentType, body } = renderGlanceError(404, NOT_FOUND, 'json');
    expect(contentType).toBe('application/json');
    expect(body).toBe(`{"message": "${NOT_FOUND}<br /><br />\\n\\n\\n", "code": "404 Not Found", "title": "Not Found"}`);
    expect(Buffer.byteLength(body)).toBe(139);
  });

  it('renders the plain text webob sends otherwise', () => {
    const { contentType, body } = renderGlanceError(404, NOT_FOUND, 'plain');
    expect(contentType).toBe('text/plain; charset=UTF-8');
    expect(body).toBe(`404 Not Found\n\n${NOT_FOUND}\n\n   `);
    expect(Buffer.byteLength(body)).toBe(79);
  });

  it("uses webob's own template for 415", () => {
    const explanation = 'The request media type application/json is not supported by this server.';
    expect(renderGlanceError(415, explanation, 'json').body).toBe(
      `{"message": "${explanation}\\n<br /><br />\\n", "code": "415 Unsupported Media Type", "title": "Unsupported Media Type"}`,
    );
    expect(Buffer.byteLength(renderGlanceError(415, explanation, 'html').body)).toBe(219);
  });

  it('escapes quotes in HTML as webob does and keeps them in JSON', () => {
    expect(renderGlanceError(403, "Attribute 'store' is read-only.", 'html').body).toContain('Attribute &#x27;store&#x27; is read-only.<br /><br />');
    expect(renderGlanceError(403, "Attribute 'store' is read-only.", 'json').body).toBe(
      `{"message": "Attribute 'store' is read-only.<br /><br />\\n\\n\\n", "code": "403 Forbidden", "title": "Forbidden"}`,
    );
  });

  it.each([
    [undefined, 'plain'],
    ['', 'plain'],
    ['*/*', 'html'],
    ['application/json', 'json'],
    ['text/html;q=0.5, application/json', 'json'],
    ['text/plain', 'plain'],
    ['application/*', 'json'],
    ['text/*;q=0.9, application/json;q=0.1', 'html'],
    ['application/json;q=0', 'plain'],
  ])('picks the body for Accept %p like Glance: %s', (accept, flavor) => {
    expect(errorFlavor(accept)).toBe(flavor);
  });

  it.each([
    [undefined, true],
    ['', true],
    ['  ', true],
    ['*/*', false],
    ['text/plain', false],
  ])('treats Accept %p as stating no preference: %p', (accept, none) => {
    expect(statesNoPreference(accept)).toBe(none);
  });

  it('renders the proxy\'s own errors for no stated preference as JSON with the message in one object', () => {
    const { contentType, body } = renderReadableError(400, 'cache_raw must be True or False, value: maybe');
    expect(contentType).toBe('application/json');
    expect(body).toBe('{"error": {"message": "cache_raw must be True or False, value: maybe", "code": 400, "title": "Bad Request"}}');
    expect(JSON.parse(renderReadableError(503, 'Unavailable.', 'The image service could not be reached.').body).error.message).toBe(
      'Unavailable.\n\nThe image service could not be reached.',
    );
  });
});
