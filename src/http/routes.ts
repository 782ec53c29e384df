/**
 * Which Image API route a request is, by method and path alone. The server uses it to send only
 * the few metadata routes through the rewriting path; logs and metrics use the class name.
 */
export type RouteClass =
  | 'image-create'
  | 'image-list'
  | 'image-show'
  | 'image-update'
  | 'image-delete'
  | 'image-data'
  | 'image-stage'
  | 'image-import'
  | 'image-schema'
  | 'versions'
  | 'other';

export interface Route {
  routeClass: RouteClass;
  /** The response (or request) is rewritten, so the request goes through the image metadata app. */
  intercepted: boolean;
  imageId?: string;
}

const IMAGES = /^\/v2\/images\/?$/;
const IMAGE = /^\/v2\/images\/([^/]+)\/?$/;
const IMAGE_SUB = /^\/v2\/images\/([^/]+)\/(file|stage|import)\/?$/;
const IMAGE_SCHEMAS = /^\/v2\/schemas\/images?\/?$/;

export function classifyRoute(method: string | undefined, url: string | undefined, rewriteVersions: boolean): Route {
  const path = (url ?? '/').split('?', 1)[0];
  let match: RegExpExecArray | null;
  if (!path.startsWith('/v2/') && path !== '/v2') return { routeClass: 'versions', intercepted: rewriteVersions && method === 'GET' };
  if (IMAGES.test(path)) {
    if (method === 'POST') return { routeClass: 'image-create', intercepted: true };
    if (method === 'GET') return { routeClass: 'image-list', intercepted: true };
    return { routeClass: 'other', intercepted: false };
  }
  if ((match = IMAGE.exec(path))) {
    const imageId = decodeURIComponent(match[1]);
    if (method === 'GET') return { routeClass: 'image-show', intercepted: true, imageId };
    if (method === 'PATCH' || method === 'PUT') return { routeClass: 'image-update', intercepted: true, imageId };
    if (method === 'DELETE') return { routeClass: 'image-delete', intercepted: false, imageId };
    return { routeClass: 'other', intercepted: false, imageId };
  }
  if ((match = IMAGE_SUB.exec(path))) {
    const imageId = decodeURIComponent(match[1]);
    const routeClass = match[2] === 'file' ? 'image-data' : match[2] === 'stage' ? 'image-stage' : 'image-import';
    return { routeClass, intercepted: false, imageId };
  }
  if (IMAGE_SCHEMAS.test(path)) return { routeClass: 'image-schema', intercepted: method === 'GET' };
  return { routeClass: 'other', intercepted: false };
}
