/**
 * Glance 25's v2 routes, as glance/api/v2/router.py connects them (plus the cache management
 * middleware's), in the order Routes tries them. A template's `{name}` matches what Routes' default
 * requirement `[^/]+?` matches. The table is the only list of routes in the proxy: the request
 * classification, logs and metrics all name routes from it.
 */

/** What the proxy does with a route's requests beyond forwarding them. */
export type RouteKind =
  /** JSON bodies read and judged (limits, Glance's own decoding) before Glance sees them. */
  | 'json-body'
  /** Image data: streamed both ways, never read. */
  | 'data'
  /** Everything else: forwarded as it is, no body expected by Glance. */
  | 'plain';

export interface GlanceRoute {
  /** The route's name in the proxy's code. */
  readonly name: string;
  readonly template: string;
  /** Methods Glance serves on the template, with what each does; any other method gets Glance's 405. */
  readonly methods: Readonly<Record<string, RouteKind>>;
  /** The template parameter that names an image, when there is one. */
  readonly imageParam?: 'image_id';
}

/** Logs and metrics name the image routes by what each method does there; others by the route. */
const ACTION_LABELS: Readonly<Record<string, string>> = {
  'GET images': 'image-list',
  'POST images': 'image-create',
  'GET image': 'image-show',
  'PATCH image': 'image-update',
  'PUT image': 'image-update',
  'DELETE image': 'image-delete',
};

/** A bounded label for a request on `route` with `method`. */
export function routeLabel(route: GlanceRoute, method: string): string {
  return ACTION_LABELS[`${method} ${route.name}`] ?? route.name;
}

const route = (name: string, template: string, methods: Record<string, RouteKind>): GlanceRoute =>
  Object.freeze({ name, template, methods: Object.freeze(methods), ...(template.includes('{image_id}') ? { imageParam: 'image_id' as const } : {}) });

const GET = { GET: 'plain' } as const;
const SCHEMAS = [
  'image', 'images', 'member', 'members', 'task', 'tasks',
  'metadefs/namespace', 'metadefs/namespaces', 'metadefs/resource_type', 'metadefs/resource_types',
  'metadefs/property', 'metadefs/properties', 'metadefs/object', 'metadefs/objects', 'metadefs/tag', 'metadefs/tags',
];

export const GLANCE_ROUTES: readonly GlanceRoute[] = Object.freeze([
  ...SCHEMAS.map((schema) => route(schema === 'image' ? 'image-schema' : schema === 'images' ? 'images-schema' : 'schemas', `/schemas/${schema}`, { ...GET })),
  route('metadefs', '/metadefs/resource_types', { ...GET }),
  route('metadefs', '/metadefs/namespaces/{namespace}/resource_types', { GET: 'plain', POST: 'json-body' }),
  route('metadefs', '/metadefs/namespaces/{namespace}/resource_types/{resource_type}', { DELETE: 'plain' }),
  route('metadefs', '/metadefs/namespaces', { GET: 'plain', POST: 'json-body' }),
  route('metadefs', '/metadefs/namespaces/{namespace}', { GET: 'plain', PUT: 'json-body', DELETE: 'plain' }),
  route('metadefs', '/metadefs/namespaces/{namespace}/properties', { GET: 'plain', POST: 'json-body', DELETE: 'plain' }),
  route('metadefs', '/metadefs/namespaces/{namespace}/properties/{property_name}', { GET: 'plain', PUT: 'json-body', DELETE: 'plain' }),
  route('metadefs', '/metadefs/namespaces/{namespace}/objects', { GET: 'plain', POST: 'json-body', DELETE: 'plain' }),
  route('metadefs', '/metadefs/namespaces/{namespace}/objects/{object_name}', { GET: 'plain', PUT: 'json-body', DELETE: 'plain' }),
  route('metadefs', '/metadefs/namespaces/{namespace}/tags', { GET: 'plain', POST: 'json-body', DELETE: 'plain' }),
  route('metadefs', '/metadefs/namespaces/{namespace}/tags/{tag_name}', { GET: 'plain', POST: 'json-body', PUT: 'json-body', DELETE: 'plain' }),
  route('images', '/images', { GET: 'plain', POST: 'json-body' }),
  // PUT is not Glance's: the StarlingX API documents image updates as PUT with a JSON-patch body,
  // which the proxy turns into the PATCH it means (any other PUT still gets Glance's 405).
  route('image', '/images/{image_id}', { PATCH: 'json-body', PUT: 'json-body', GET: 'plain', DELETE: 'plain' }),
  route('image-tasks', '/images/{image_id}/tasks', { ...GET }),
  route('image-import', '/images/{image_id}/import', { POST: 'json-body' }),
  route('image-store', '/stores/{store_id}/{image_id}', { DELETE: 'plain' }),
  route('image-actions', '/images/{image_id}/actions/deactivate', { POST: 'plain' }),
  route('image-actions', '/images/{image_id}/actions/reactivate', { POST: 'plain' }),
  route('image-data', '/images/{image_id}/file', { GET: 'data', PUT: 'data' }),
  route('image-stage', '/images/{image_id}/stage', { PUT: 'data' }),
  route('image-tags', '/images/{image_id}/tags/{tag_value}', { PUT: 'plain', DELETE: 'plain' }),
  route('image-members', '/images/{image_id}/members', { GET: 'plain', POST: 'json-body' }),
  route('image-members', '/images/{image_id}/members/{member_id}', { GET: 'plain', PUT: 'json-body', DELETE: 'plain' }),
  route('tasks', '/tasks', { POST: 'json-body', GET: 'plain' }),
  route('tasks', '/tasks/{task_id}', { GET: 'plain', DELETE: 'plain' }),
  route('info', '/info/import', { ...GET }),
  route('info', '/info/stores', { ...GET }),
  route('info', '/info/usage', { ...GET }),
  route('info', '/info/stores/detail', { ...GET }),
  route('cache', '/cache', { GET: 'plain', DELETE: 'plain' }),
  route('cache', '/cache/{image_id}', { DELETE: 'plain', PUT: 'plain' }),
  // glance/api/middleware/cache_manage.py (the cachemanagement pipelines).
  route('cache', '/cached_images', { GET: 'plain', DELETE: 'plain' }),
  route('cache', '/cached_images/{image_id}', { DELETE: 'plain' }),
  route('cache', '/queued_images', { GET: 'plain', DELETE: 'plain' }),
  route('cache', '/queued_images/{image_id}', { PUT: 'plain', DELETE: 'plain' }),
]);

interface CompiledRoute {
  readonly route: GlanceRoute;
  readonly pattern: RegExp;
  readonly params: readonly string[];
}

/**
 * Routes builds `^template$` and matches it with Python's re, where `$` also matches just before a
 * final newline: `/images/ID\n` is the image ID. `\n?$` is the same in JavaScript.
 */
function compile(route: GlanceRoute): CompiledRoute {
  const params: string[] = [];
  const source = route.template
    .split(/(\{[a-z_]+\})/)
    .map((part) => {
      const param = /^\{([a-z_]+)\}$/.exec(part);
      if (param) {
        params.push(param[1]!);
        return '([^/]+?)';
      }
      return part.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    })
    .join('');
  return { route, pattern: new RegExp(`^${source}\\n?$`, 's'), params };
}

const COMPILED = GLANCE_ROUTES.map(compile);

export interface RouteMatch {
  readonly route: GlanceRoute;
  /** Parameters as Routes hands them to Glance: Latin-1 strings of the decoded path's bytes. */
  readonly params: Readonly<Record<string, string>>;
}

/** The route Glance's router picks for `routerPath` (the path after `/v2`, slashes collapsed). */
export function matchGlanceRoute(routerPath: string): RouteMatch | undefined {
  for (const { route, pattern, params } of COMPILED) {
    const match = pattern.exec(routerPath);
    if (!match) continue;
    const values: Record<string, string> = {};
    params.forEach((name, index) => {
      values[name] = match[index + 1]!;
    });
    return { route, params: values };
  }
  return undefined;
}

/** The canonical path of a matched route: every parameter percent-encoded, so Glance decodes it back exactly. */
export function routePath(route: GlanceRoute, params: Readonly<Record<string, string>>): string {
  return route.template.replace(/\{([a-z_]+)\}/g, (_, name: string) => encodePathBytes(params[name] ?? ''));
}

const KEEP = /^[A-Za-z0-9_~.-]$/;

/**
 * Percent-encodes a Latin-1 string of bytes for a path segment. Dots stay readable unless the segment
 * is all dots, which anything between the proxy and Glance might take for a dot segment.
 */
export function encodePathBytes(bytes: string): string {
  if (/^\.+$/.test(bytes)) return bytes.replace(/\./g, '%2E');
  let out = '';
  for (const char of bytes) {
    out += KEEP.test(char) ? char : `%${char.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}
