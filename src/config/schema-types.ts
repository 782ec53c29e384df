// Generated from schemas/config.schema.json by scripts/gen-config-types.js: do not edit by hand.
// After changing the schema, run: node scripts/gen-config-types.js (npm run build checks it).

/** stx-glance-proxy configuration */
export interface ProxyConfig {
  /** Address and port the proxy listens on (host:port). */
  listen: string;
  /** Base URL of the real Glance API, e.g. http://127.0.0.1:19292. Required for serve. */
  upstream?: string;
  /**
   * Public base URL of the proxy, as clients reach it. Absolute links Glance builds (Location
   * headers, the versions document) are rewritten to it. When unset, the request's Host header is
   * forwarded and Glance builds the links from it.
   */
  public_url: string | null;
  /**
   * Peers (addresses or CIDR blocks) whose Forwarded and X-Forwarded-* headers are kept: a TLS
   * terminator or load balancer in front of the proxy. From any other peer those headers are
   * dropped. The proxy always sets its own X-Forwarded-For, -Proto and -Host for Glance.
   */
  trusted_proxies: string[];
  timeouts: {
    /**
     * Seconds a client connection may stay silent (mid-request or between keep-alive requests)
     * before it is closed; 0 disables. A long upload is never cut while bytes flow.
     */
    client_idle: number;
    /**
     * Seconds Glance may stay silent on a request before the proxy gives up (504 before the answer
     * started, a cut connection after); 0 disables.
     */
    upstream_idle: number;
    /** Seconds a client has to send its request headers. */
    request_headers: number;
    /** Seconds an idle client keep-alive connection is kept open. */
    keep_alive: number;
    /** Seconds requests in flight may take to finish after SIGTERM. */
    shutdown_grace: number;
  };
  upstream_pool: {
    /** Most concurrent connections to Glance. */
    max_sockets: number;
    /** Most idle keep-alive connections kept to Glance. */
    max_free_sockets: number;
  };
  limits: {
    /**
     * Largest JSON request body the proxy reads (image create and update, import, members, tasks,
     * metadefs), in bytes; larger ones get 413 before the rest is read. Image data is streamed and
     * never limited.
     */
    max_json_request: number;
    /**
     * Largest image metadata response the proxy enriches, in bytes; a larger one is passed through
     * as Glance sent it.
     */
    max_json_response: number;
    /**
     * Deepest nesting of arrays and objects in a JSON request body; deeper bodies get 400. Glance's
     * own parser fails (500) near 1000 levels, and no valid image request needs more than a few.
     */
    json_depth: number;
    /**
     * Most members in one JSON object of a request body; more get 413. Glance's default image
     * property quota is 128.
     */
    json_members: number;
    /** Most elements in one JSON array of a request body (patch operations, tags); more get 413. */
    json_elements: number;
    /**
     * Most values (strings, numbers, literals, arrays and objects) in one JSON request body; more
     * get 413. Bounds the proxy's work and memory for bodies of many tiny values.
     */
    json_values: number;
    /**
     * Longest string in a JSON request body, in characters; longer ones get 400. 65535 is the size
     * of the TEXT column MySQL and MariaDB give Glance's property values.
     */
    json_string: number;
  };
  /**
   * Glance backend id (from enabled_backends) to store type, used to derive `store` when Glance
   * hides image locations.
   */
  store_types: Record<string, "file" | "rbd">;
  log: {
    /** Least severe level written. */
    level: "error" | "warn" | "info" | "debug";
  };
  /** The raw cache: RAW copies of images whose cache_raw is True, made by `stx-glance-proxy worker`. */
  rawcache: RawCacheConfig;
  /**
   * The Keystone identity the raw-cache worker and reconciler use to talk to Glance directly
   * (client tokens are never used for that). null or absent: no token is sent, for a Glance without
   * Keystone. Password authentication needs username, password and project_name; an application
   * credential needs application_credential_id and application_credential_secret. The worker checks
   * these when it starts (the proxy itself never uses them, so it starts without the secrets). The
   * secrets may come from STX_GLANCE_PROXY_SERVICE_PASSWORD and
   * STX_GLANCE_PROXY_SERVICE_APPLICATION_CREDENTIAL_SECRET instead of this file. Glance must let
   * this identity see and update every image (the admin role), and its property protections must
   * let it write the cache_raw_* fields (config/glance-property-protections.conf: admin or
   * service).
   */
  service_auth: ServiceAuthConfig | null;
  health: {
    /**
     * While this file exists, GET /healthcheck answers 503 DISABLED BY FILE, so a load balancer
     * drains the node (as oslo.middleware's disable_by_file backend).
     */
    disable_by_file: string | null;
  };
  metrics: {
    /** Serve Prometheus metrics at GET /metrics on the ops listener (never on the public listener). */
    enabled: boolean;
    /**
     * The proxy's ops listener: /metrics and the detailed /healthcheck, for Prometheus and
     * operators; loopback by default. null disables it. The public listener serves only the plain
     * /healthcheck.
     */
    listen: string | null;
    /**
     * Where a worker serves its own /metrics, /healthcheck and /progress (its conversions in
     * flight); null disables.
     */
    worker_listen: string | null;
    /**
     * Ops listeners (host:port) of workers on other hosts whose /progress `cache list` and `cache
     * show` read, besides metrics.worker_listen: the percent and ETA of conversions in flight are
     * shown only for the workers named here.
     */
    worker_progress_from: string[];
  };
}

/** The raw cache: RAW copies of images whose cache_raw is True, made by `stx-glance-proxy worker`. */
export interface RawCacheConfig {
  /**
   * Record raw-cache triggers (uploads, imports, cache_raw changes, deletes) in the queue for
   * `stx-glance-proxy worker`. Enable it together with a worker.
   */
  enabled: boolean;
  /**
   * Glance API the worker and reconciler talk to directly, with their own identity; defaults to
   * upstream.
   */
  glance_url: string | null;
  queue: {
    /**
     * sqlite: one host, proxy and workers share a database file. amqp: RabbitMQ, for several proxy
     * and worker hosts.
     */
    backend: "sqlite" | "amqp";
    /** The SQLite queue's database file. */
    sqlite_path: string;
    /**
     * RabbitMQ URL (amqp://user:password@host:5672/vhost) for the amqp backend. May come from
     * STX_GLANCE_PROXY_AMQP_URL instead, to keep the broker password out of the file.
     */
    amqp_url: string | null;
    /**
     * Name prefix of the durable queues; keep 'notifications' out of it (StarlingX's broker caps
     * such queues).
     */
    amqp_queue: string;
    /**
     * Queues jobs are spread over by image id; each has one active consumer, so one image is never
     * worked on twice at once.
     */
    amqp_partitions: number;
    /**
     * SQLite: how long a claimed job stays with a worker that stopped renewing it (a crashed one)
     * before another takes it.
     */
    lease_seconds: number;
  };
  trigger: {
    /**
     * How long an upload, import, delete or cache_raw change waits for the queue to confirm its
     * raw-cache job before the proxy writes the job to the spool instead.
     */
    queue_wait_seconds: number;
    /**
     * Local directory where the proxy fsyncs raw-cache jobs the queue did not confirm in time,
     * before it answers; drained into the queue in the background and at start. null: no spool
     * (such jobs are only logged, for the reconciler's sweep).
     */
    spool_dir: string | null;
  };
  target: {
    /** Where RAW copies go: a directory (file) or Ceph RBD as <pool>/<id>_raw@snap (rbd). */
    kind: "file" | "rbd";
    /** file: the directory of RAW copies (<id>.raw). */
    file_dir: string;
    /** rbd: the pool of RAW copies (StarlingX: the Glance images pool). */
    rbd_pool: string;
    /** rbd: the Ceph client name (without 'client.'). */
    rbd_user: string;
    /** rbd: ceph.conf of the cluster. */
    ceph_conf: string;
    /**
     * Bytes the target keeps free. Before writing, a copy's guest data (qemu-img map) plus this
     * must fit in the target's free space: the file_dir filesystem, or the pool's MAX AVAIL and
     * what its quota leaves; otherwise it is refused and retried later.
     */
    reserve_bytes: number;
    /**
     * Largest virtual size (the RAW copy's size) of an image that gets a copy; a larger one ends in
     * Error before anything is written. Default 1 TiB, Glance's own image_size_cap default.
     */
    max_virtual_size_bytes: number;
    /**
     * rbd: the pools whose images the worker reads in place (qemu-img and rbd export read the
     * snapshot) when an image's rbd:// location names one of them on the target's own cluster (same
     * fsid); any other location is read through Glance's API. null: rbd_pool only; []: always
     * through Glance.
     */
    rbd_source_pools: string[] | null;
    /**
     * Directories of Glance file stores (filesystem_store_datadir) that the worker's host shares
     * and may read: an image whose file:// location is <dir>/<image id> in one of them is converted
     * in place, its hash checked beside the conversion, instead of being downloaded through
     * Glance's API first. []: always through Glance.
     */
    file_source_dirs: string[];
  };
  worker: {
    /** Conversions at once in one worker process. */
    concurrency: number;
    /** Scratch space for downloaded source images. */
    work_dir: string;
    /** Attempts after transient failures before the image ends in Error. */
    max_attempts: number;
    /** First retry delay; doubles each attempt. */
    retry_base_seconds: number;
    /** Longest retry delay. */
    retry_max_seconds: number;
    /**
     * Longest time one step of a conversion may take: the download of the image data, inspecting
     * it, converting it to RAW (and importing it into RBD). Past it the step is stopped and the job
     * retried. The default (6 h) fits a 1 TiB image at 50 MB/s.
     */
    step_timeout_seconds: number;
    /**
     * A download, conversion or import that makes no progress for this long is stopped and the job
     * retried. qemu-img reports progress at each percent of the image, so keep it above the time
     * one percent of the largest image takes.
     */
    stall_timeout_seconds: number;
    /**
     * How long a job waits for an image whose upload or import is still running, looking again
     * every 3 s without using up attempts. Then the job ends; the reconciler's sweep queues the
     * image again once it is active.
     */
    data_wait_seconds: number;
    /**
     * How often the worker sweeps for images that need a raw copy, stuck jobs and orphan copies; 0
     * disables.
     */
    reconcile_interval_seconds: number;
    /** An image shown Caching for longer without progress is requeued by the sweep. */
    stuck_after_seconds: number;
    /**
     * A partial copy or work-dir file whose writer cannot be seen from this host (another host, or
     * an older version) is a leftover once its heartbeat is this old; writers refresh theirs every
     * fifth of this, at most every 60 s. See docs/raw-cache.md §6.
     */
    leftover_stale_seconds: number;
  };
}

/**
 * The Keystone identity the raw-cache worker and reconciler use to talk to Glance directly (client
 * tokens are never used for that). null or absent: no token is sent, for a Glance without Keystone.
 * Password authentication needs username, password and project_name; an application credential
 * needs application_credential_id and application_credential_secret. The worker checks these when
 * it starts (the proxy itself never uses them, so it starts without the secrets). The secrets may
 * come from STX_GLANCE_PROXY_SERVICE_PASSWORD and
 * STX_GLANCE_PROXY_SERVICE_APPLICATION_CREDENTIAL_SECRET instead of this file. Glance must let this
 * identity see and update every image (the admin role), and its property protections must let it
 * write the cache_raw_* fields (config/glance-property-protections.conf: admin or service).
 */
export interface ServiceAuthConfig {
  /**
   * Keystone's identity endpoint, e.g. http://keystone:5000/v3 (/v3 is added when missing). For
   * https with a private CA, give the CA to Node with NODE_EXTRA_CA_CERTS.
   */
  auth_url: string;
  /** Password authentication: the service user's name. */
  username?: string;
  /** Password authentication: the service user's password (or STX_GLANCE_PROXY_SERVICE_PASSWORD). */
  password?: string;
  /** Password authentication: the domain of the user, by name. */
  user_domain_name: string;
  /** Password authentication: the domain of the user, by id; wins over user_domain_name. */
  user_domain_id?: string;
  /** Password authentication: the project the token is scoped to (usually 'service'). */
  project_name?: string;
  /** Password authentication: the domain of the project, by name. */
  project_domain_name: string;
  /** Password authentication: the domain of the project, by id; wins over project_domain_name. */
  project_domain_id?: string;
  /**
   * Application credential authentication: the credential's id (the token is scoped to the
   * credential's project).
   */
  application_credential_id?: string;
  /**
   * Application credential authentication: its secret (or
   * STX_GLANCE_PROXY_SERVICE_APPLICATION_CREDENTIAL_SECRET).
   */
  application_credential_secret?: string;
  /** Region of the image endpoint taken from the catalog; null: the first region that has one. */
  region_name: string | null;
  /** Which of the image service's endpoints in the catalog is Glance itself (not the proxy). */
  interface: "public" | "internal" | "admin";
  /**
   * Take Glance's URL from the token's catalog (the image service at interface and region_name)
   * instead of rawcache.glance_url or upstream.
   */
  glance_from_catalog: boolean;
}
