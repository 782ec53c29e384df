import type { IncomingMessage } from 'node:http';

/**
 * Glance builds absolute links (the Location of a created image, the hrefs of the versions
 * document) from the Host header it receives. The proxy forwards the client's Host, so those
 * links already name the proxy; with a configured public URL (TLS offload, another name) the
 * origin Glance used is swapped for it.
 */
export function originGlanceSaw(req: IncomingMessage): string | undefined {
  const host = req.headers.host;
  return host ? `http://${host}` : undefined;
}

export function rewriteLink(link: string, from: string | undefined, publicUrl: string | null): string {
  if (!publicUrl || !from) return link;
  if (link === from || link.startsWith(`${from}/`)) return publicUrl + link.slice(from.length);
  return link;
}

interface VersionsDocument { versions?: Array<{ links?: Array<{ href?: unknown }> }> }

export function rewriteVersionsDocument(doc: unknown, from: string | undefined, publicUrl: string | null): unknown {
  const versions = (doc as VersionsDocument)?.versions;
  if (!Array.isArray(versions)) return doc;
  for (const version of versions) {
    for (const link of version.links ?? []) {
      if (typeof link.href === 'string') link.href = rewriteLink(link.href, from, publicUrl);
    }
  }
  return doc;
}
