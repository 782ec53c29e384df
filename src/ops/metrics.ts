import client from 'prom-client';

/**
 * Prometheus metrics of one process (proxy or worker), in the text format at /metrics.
 * Label values are bounded: route classes and status codes, never paths or ids.
 */
export class Metrics {
  readonly registry = new client.Registry();

  readonly requests = new client.Counter({
    name: 'stx_glance_proxy_requests_total',
    help: 'Requests answered, by route class, method and status.',
    labelNames: ['route', 'method', 'status'] as const,
    registers: [this.registry],
  });

  readonly requestDuration = new client.Histogram({
    name: 'stx_glance_proxy_request_duration_seconds',
    help: 'Time from the request to the end of the answer, by route class.',
    labelNames: ['route'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800],
    registers: [this.registry],
  });

  readonly bytes = new client.Counter({
    name: 'stx_glance_proxy_bytes_total',
    help: 'Bytes streamed between clients and the proxy, by direction (in: from clients, out: to clients) and route class.',
    labelNames: ['direction', 'route'] as const,
    registers: [this.registry],
  });

  readonly upstreamErrors = new client.Counter({
    name: 'stx_glance_proxy_upstream_errors_total',
    help: 'Requests Glance could not answer: unreachable (503), broken answer (502), silent (504).',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });

  readonly queueDepth = new client.Gauge({
    name: 'stx_glance_proxy_rawcache_queue_depth',
    help: 'Raw-cache jobs waiting in the queue.',
    registers: [this.registry],
  });

  readonly conversions = new client.Counter({
    name: 'stx_glance_proxy_rawcache_conversions_total',
    help: 'Raw-cache conversions by outcome: cached, error, retry, cancelled.',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly conversionDuration = new client.Histogram({
    name: 'stx_glance_proxy_rawcache_conversion_seconds',
    help: 'Time a conversion took, by outcome.',
    labelNames: ['outcome'] as const,
    buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600],
    registers: [this.registry],
  });

  constructor(processName: string) {
    client.collectDefaultMetrics({ register: this.registry, prefix: `stx_glance_proxy_${processName}_` });
  }

  /** Sets gauges that are read on demand (queue depth), then renders the text format. */
  async render(refresh?: () => Promise<void>): Promise<{ contentType: string; body: string }> {
    await refresh?.();
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
