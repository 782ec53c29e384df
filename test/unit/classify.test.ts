import { classifyRequest, withMethodOverride, type Classification } from '../../src/http/classify';

const ID = '5cbddbe0-98bf-45ce-bd99-98ef4f673a9f';

function classify(method: string, url: string, headers: Record<string, string> = {}, formBody?: string): Classification {
  return classifyRequest({ method, url, headers }, formBody === undefined ? undefined : Buffer.from(formBody, 'utf8'));
}

function routeOf(c: Classification): string {
  if (c.kind === 'route') return `${c.method} ${c.route.name} ${c.forwardUrl}`;
  if (c.kind === 'refused') return `refused ${c.refusal.status}`;
  return `${c.kind} ${c.forwardUrl}`;
}

describe('the request classification, as Glance routes', () => {
  test.each([
    ['/v2/images', 'GET images /v2/images'],
    [`/v2/images/${ID}`, `GET image /v2/images/${ID}`],
    [`/v2.1/images/${ID}`, `GET image /v2/images/${ID}`],
    [`/v2.16/images/${ID}`, `GET image /v2/images/${ID}`],
    [`//v2//images//${ID}`, `GET image /v2/images/${ID}`],
    [`/v2/im%61ges/${ID}`, `GET image /v2/images/${ID}`],
    [`/v2/images%2F${ID}`, `GET image /v2/images/${ID}`],
    [`/v2/images/${ID}%0A`, `GET image /v2/images/${ID}`],
    [`/v2/images/${ID}/file%0a`, `GET image-data /v2/images/${ID}/file`],
    [`/v2/images/${ID.toUpperCase()}`, `GET image /v2/images/${ID}`],
    [`/v2/images/${ID}?limit=1`, `GET image /v2/images/${ID}?limit=1`],
    ['/v2/schemas/image', 'GET image-schema /v2/schemas/image'],
    [`/v2/images/${ID}/tags/a.b%20c`, `GET image-tags /v2/images/${ID}/tags/a.b%20c`],
    [`/v2/images/${ID}/tags/..`, `GET image-tags /v2/images/${ID}/tags/%2E%2E`],
    [`/v2/images/${ID}/tags/a%23b`, `GET image-tags /v2/images/${ID}/tags/a%23b`],
  ])('GET %s is %s', (url, expected) => {
    expect(routeOf(classify('GET', url))).toBe(expected);
  });

  test.each([
    [`/v2/images/${ID}/../${ID}`, 'refused 404'],
    [`/v2/images/${ID}/`, 'refused 404'],
    [`/v2/images/${ID}#frag`, 'refused 404'],
    [`/v2/images/${ID}%20`, 'refused 404'],
    ['/v2/images/%E0%A4%A', 'refused 400'],
    ['/v2/images/%ff', 'refused 400'],
    ['/v2/nothing', 'refused 404'],
    ['/v2/', 'refused 404'],
  ])('GET %s is %s', (url, expected) => {
    expect(routeOf(classify('GET', url))).toBe(expected);
  });

  test.each([
    ['/', 'versions /'],
    ['/v1/images', 'versions /'],
    ['/v2.99/images', 'versions /'],
    ['/v3/images', 'versions /'],
    ['/images', 'versions /'],
    ['http://x/v2/images', 'versions /'],
    ['*', 'versions /'],
    ['/versions', 'versions /versions'],
    ['//versions/anything', 'versions /versions'],
    ['/v2', 'versions /v2'],
  ])('GET %s is Glance\'s %s', (url, expected) => {
    expect(routeOf(classify('GET', url))).toBe(expected);
  });

  test('a versioned Accept media type names the version, and the path keeps its first segment', () => {
    const accept = { accept: 'application/vnd.openstack.images-v2.1' };
    expect(routeOf(classify('GET', `/images/${ID}`, accept))).toBe(`GET image /v2/images/${ID}`);
    expect(routeOf(classify('GET', `/v2/images/${ID}`, accept))).toBe('refused 404');
    expect(routeOf(classify('GET', `/images/${ID}`, { accept: 'application/vnd.openstack.images-v2.1;q=1' }))).toBe(`GET image /v2/images/${ID}`);
    expect(routeOf(classify('GET', `/images/${ID}`, { accept: 'application/vnd.openstack.images-v2.1;q=0.5' }))).toBe('versions /');
    expect(routeOf(classify('GET', `/images/${ID}`, { accept: 'application/vnd.openstack.images-v2.9, text/html' }))).toBe('versions /');
    expect(routeOf(classify('GET', `/images/${ID}`, { accept: 'Application/vnd.openstack.images-v2.1' }))).toBe('versions /');
    const c = classify('GET', `/images/${ID}`, accept);
    expect(c.dropAccept).toBe(true);
  });

  test('a _method query override changes the method Glance routes by, and the query keeps saying so', () => {
    expect(routeOf(classify('GET', `/v2/images/${ID}?_method=DELETE`))).toBe(`DELETE image /v2/images/${ID}?_method=DELETE`);
    expect(routeOf(classify('POST', `/v2/images/${ID}?_method=patch`))).toBe(`PATCH image /v2/images/${ID}?_method=patch`);
    expect(routeOf(classify('POST', `/v2/images/${ID}?a=1;_method=PUT&_method=GET`))).toBe(`GET image /v2/images/${ID}?a=1&_method=PUT&_method=GET`);
    expect(routeOf(classify('PUT', `/v2/images/${ID}/file?x_method=1&%5Fmethod=delete`))).toBe(`DELETE image-data /v2/images/${ID}/file?x_method=1&_method=delete`);
    // Routes looks for the raw text "_method" before it parses anything.
    expect(routeOf(classify('POST', `/v2/images/${ID}?%5Fmethod=GET`))).toBe(`POST image /v2/images/${ID}?%5Fmethod=GET`);
    expect(routeOf(classify('POST', `/v2/images/${ID}?_method=`))).toBe(`POST image /v2/images/${ID}?_method=`);
    expect(routeOf(classify('POST', `/v2/images/${ID}?_method=po%C5%BFt`))).toBe('refused 400');
  });

  test('a POSTed form body may override the method, unless the query mentions _method', () => {
    const form = { 'content-type': 'application/x-www-form-urlencoded' };
    expect(classify('POST', `/v2/images/${ID}`, form).kind).toBe('needs-form-body');
    expect(routeOf(classify('POST', `/v2/images/${ID}`, form, 'a=1&_method=DELETE'))).toBe(`DELETE image /v2/images/${ID}`);
    expect(routeOf(classify('POST', `/v2/images/${ID}`, form, '{"a":"&_method=GET&"}'))).toBe(`GET image /v2/images/${ID}`);
    expect(routeOf(classify('POST', '/v2/images', form, '{"name": "x"}'))).toBe('POST images /v2/images');
    expect(routeOf(classify('POST', `/v2/images/${ID}?x_method=1`, form))).toBe(`POST image /v2/images/${ID}?x_method=1`);
    expect(routeOf(classify('POST', '/v2/images', { 'content-type': 'multipart/form-data; boundary=x' }))).toBe('refused 415');
    expect(routeOf(classify('POST', '/v2/images', { 'content-type': 'application/x-www-form-urlencoded; charset=latin1' }))).toBe('refused 415');
    expect(classify('POST', '/v2/images', { 'content-type': 'application/x-www-form-urlencoded; charset=UTF-8' }).kind).toBe('needs-form-body');
  });

  test('image ids are canonical UUIDs; anything else is no image', () => {
    const c = classify('DELETE', `/v2/images/${ID.toUpperCase()}`);
    expect(c.kind === 'route' && c.imageId).toBe(ID);
    const refused = classify('DELETE', '/v2/images/not-an-id');
    expect(refused.kind === 'refused' && refused.refusal.message).toBe('No image found with ID not-an-id');
    expect(routeOf(classify('DELETE', `/v2/stores/fs/${ID}`))).toBe(`DELETE image-store /v2/stores/fs/${ID}`);
  });

  test('methods a route does not serve still go to Glance, which answers 405', () => {
    const c = classify('HEAD', `/v2/images/${ID}`);
    expect(c.kind === 'route' && c.routeKind).toBe('reject');
  });
});

describe('changing the method after classification', () => {
  test('rewrites every _method of the query to the new method, and leaves other queries alone', () => {
    expect(withMethodOverride(`/v2/images/${ID}?_method=PUT&a=1`, 'PATCH')).toBe(`/v2/images/${ID}?_method=PATCH&a=1`);
    expect(withMethodOverride(`/v2/images/${ID}?a=1`, 'PATCH')).toBe(`/v2/images/${ID}?a=1`);
  });
});
