import client from 'prom-client';

/**
 * Prometheus metrics of one process (proxy or worker), in the text format at /metrics.
 * Label values are bounded: route classes and status codes, never paths; image ids only for the
 * conversions in flight (at most rawcache.worker.concurrency of them).
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

  /**
   * Conversions in flight only (setConversionsInFlight replaces the set at each scrape), so the
   * image_id label has at most rawcache.worker.concurrency values at a time.
   */
  readonly conversionProgress = new client.Gauge({
    name: 'stx_glance_proxy_worker_conversion_progress_ratio',
    help: 'Share of a conversion in flight done (0..1), from qemu-img convert -p, by image.',
    labelNames: ['image_id'] as const,
    registers: [this.registry],
  });

  readonly conversionEta = new client.Gauge({
    name: 'stx_glance_proxy_worker_conversion_eta_seconds',
    help: 'Estimated seconds left of a conversion in flight, by image; absent until enough progress was seen.',
    labelNames: ['image_id'] as const,
    registers: [this.registry],
  });

  constructor(processName: string) {
    client.collectDefaultMetrics({ register: this.registry, prefix: `stx_glance_proxy_${processName}_` });
  }

  /** Replaces the progress gauges with the conversions in flight now: ended ones disappear. */
  setConversionsInFlight(conversions: ReadonlyArray<{ image_id: string; percent: number; eta_seconds: number | null }>): void {
    this.conversionProgress.reset();
    this.conversionEta.reset();
    for (const c of conversions) {
      this.conversionProgress.set({ image_id: c.image_id }, c.percent / 100);
      if (c.eta_seconds !== null) this.conversionEta.set({ image_id: c.image_id }, c.eta_seconds);
    }
  }

  /** Sets gauges that are read on demand (queue depth), then renders the text format. */
  async render(refresh?: () => Promise<void>): Promise<{ contentType: string; body: string }> {
    await refresh?.();
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
