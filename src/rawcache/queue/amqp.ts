import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { connect, type Channel, type ChannelModel, type ConfirmChannel, type ConsumeMessage, type Options } from 'amqplib';
import { ConfigError, type RawCacheConfig } from '../../config/load';
import type { Logger } from '../../ops/log';
import { OwnershipLostError, type ClaimedJob, type ConsumeOptions, type JobQueue, type QueueHealth, type RawCacheJob, type TriggerReason } from '../types';
import {
  DEFAULT_CONFIRM_TIMEOUT_MS,
  JobSettlement,
  canonicalImageId,
  checkConsumeArguments,
  QueueUnavailableError,
  checkEnqueueArguments,
  defaultRetryDelayMs,
  isTriggerReason,
  type JobQueueOptions,
  type Settlement,
} from './common';
import { withDeadline } from '../deadline';
import { backoffMs } from '../retry';

/*
 * The RabbitMQ job queue: proxies publish, workers on any host consume.
 *
 * Topology (all durable, declared by every process on every connection; nothing with x-expires):
 * - `<amqp_queue>.<n>` for n < amqp_partitions: the jobs. An image always goes to the same
 *   partition (FNV-1a of its id). Each is declared with x-single-active-consumer.
 * - `<amqp_queue>.delay` (headers exchange) and `<amqp_queue>.delay.<T>s` queues: retries waiting
 *   out their delay. A copy carries a per-message expiration and keeps the partition as its
 *   routing key; when it expires it is dead-lettered through the default exchange straight back
 *   to that partition. RabbitMQ only expires messages at the head of a queue, so one delay queue
 *   would make a 5 s retry wait behind a 600 s one: delays are grouped in power-of-two tiers
 *   (T/2 < delay <= T seconds), which bounds the wait to less than twice the delay asked for.
 *
 * Never two jobs for one image at once:
 * 1. every job of an image is in one partition queue;
 * 2. a single-active-consumer queue delivers to one consumer only, and gives the partition to
 *    another consumer only when that one is cancelled or its channel or connection closes;
 * 3. a worker cancels its consumer on a partition only while it holds no job from that partition
 *    (none running, none waiting), and keeps its channel until the handlers it runs have settled
 *    (stopConsuming closes it last), so a second worker cannot receive a partition while the first
 *    works on one of its jobs; a delivery that reaches a consumer already cancelled is handed back
 *    unstarted (nack, requeue);
 * 4. inside the one process that holds the partition, jobs of one image run one after the other
 *    (a second delivery waits for the first to settle; more deliveries coalesce into it).
 * 5. the fence: the broker gives a job to another consumer only after the channel it was delivered
 *    on closed. So a handler's ownership lasts exactly as long as that channel: when it or its
 *    connection closes (or a heartbeat round trip on it fails), the running handlers are aborted;
 *    before each irreversible step a handler proves the channel still open with a round trip
 *    (confirmOwnership). Heartbeats (15 s) bound how long a dead worker holds its partitions.
 *
 * Capacity: the first consumer of a single-active-consumer queue stays its active one, so a worker
 * that consumed every partition would keep all of them and leave the other workers idle. A worker
 * whose slots are all taken (it holds `concurrency` jobs) therefore cancels its consumers on the
 * partitions it holds nothing from: the broker makes the next worker in line active there. Once a
 * slot frees it consumes those partitions again (behind whoever took them over). Workers thus
 * share the partitions by load; more partitions than workers lets each run `concurrency` images.
 *
 * RabbitMQ has no in-place coalescing: triggers for one image are separate messages. A worker
 * merges those it holds at once (the oldest message carries the merged job, the others are
 * acked), so with prefetch = concurrency a burst of triggers runs the image once or twice.
 *
 * Operators: the StarlingX platform broker installs the policy `all_queues_ttl` (pattern `.*`,
 * expires 4 h), which deletes any queue unused for 4 h together with its messages: delay queues
 * are never consumed and partition queues are idle whenever no worker runs. Exempt these queues
 * with a policy of higher priority matching `^<amqp_queue>\.`, or give the raw cache a vhost of
 * its own. Keep "notifications" out of the name (StarlingX caps such queues at 10 000 messages).
 * A broker that crashes moments after a queue was first declared can lose that declaration and the
 * queue's jobs with it (RabbitMQ 3.10 keeps declarations in Mnesia): every connection declares the
 * queues again, and the reconciler's sweep finds the images whose jobs went.
 */

const HEARTBEAT_SECONDS = 15;
const CONNECT_TIMEOUT_MS = 5_000;
/** A broker that takes a connection but does not answer its setup (channels, declarations, consumers) this long loses it. */
const DEFAULT_SETUP_TIMEOUT_MS = 20_000;
const RECONNECT_INITIAL_MS = 250;
const RECONNECT_MAX_MS = 5_000;
const HEALTH_TIMEOUT_MS = 5_000;
/** amqplib's close() settles only on the broker's CloseOk, never when the connection dies first: bounded by this. */
const CLOSE_TIMEOUT_MS = 5_000;
/** Longest retry a delay queue tier holds without the head-of-line bound (about 18 h). */
const MAX_DELAY_TIER_SECONDS = 2 ** 16;
/** Header the delay exchange routes on; headers starting with x- are ignored by headers exchanges. */
const DELAY_TIER_HEADER = 'stx-delay-tier';
/** When a retry cannot be published, the job is held this long at most before it goes back to its queue. */
const RETRY_FAILURE_HOLD_MAX_MS = 5_000;

/** The partition of an image: FNV-1a (32 bits) of its lower-cased id, modulo the partition count. */
export function partitionOf(imageId: string, partitions: number): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(imageId.toLowerCase(), 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % partitions;
}

/** The delay tier (seconds, a power of two) of a retry delay. */
export function delayTierSeconds(delayMs: number): number {
  let tier = 1;
  while (tier * 1000 < delayMs && tier < MAX_DELAY_TIER_SECONDS) tier *= 2;
  return tier;
}

function parseJob(content: Buffer): RawCacheJob {
  const value = JSON.parse(content.toString('utf8')) as Partial<RawCacheJob>;
  if (typeof value?.imageId !== 'string' || value.imageId.length === 0) throw new Error('no image id');
  if (!isTriggerReason(value.reason)) throw new Error(`unknown reason ${JSON.stringify(value.reason)}`);
  const attempts = Number.isInteger(value.attempts) && (value.attempts as number) >= 0 ? (value.attempts as number) : 0;
  const enqueuedAt = typeof value.enqueuedAt === 'string' && !Number.isNaN(Date.parse(value.enqueuedAt)) ? value.enqueuedAt : new Date().toISOString();
  return { imageId: canonicalImageId(value.imageId), reason: value.reason, attempts, enqueuedAt };
}

/** Two triggers for one image as one job: the earliest enqueuedAt, the latest reason, attempts from 0. */
function coalesce(older: RawCacheJob, newer: RawCacheJob): RawCacheJob {
  const enqueuedAt = Date.parse(newer.enqueuedAt) < Date.parse(older.enqueuedAt) ? newer.enqueuedAt : older.enqueuedAt;
  return { imageId: older.imageId, reason: newer.reason, attempts: 0, enqueuedAt };
}

/** The broker's address for logs and errors, without credentials. */
function describeUrl(url: URL): string {
  const vhost = decodeURIComponent(url.pathname.replace(/^\//, '')) || '/';
  return `${url.hostname}:${url.port || (url.protocol === 'amqps:' ? 5671 : 5672)} vhost ${vhost}`;
}

function quietly(action: () => Promise<unknown> | unknown): Promise<void> {
  try {
    return Promise.resolve(action()).then(
      () => undefined,
      () => undefined,
    );
  } catch {
    return Promise.resolve();
  }
}

/** Drops a connection at once, without the close handshake a broker that does not answer would never finish. */
function abandon(connection: ChannelModel, reason: string): void {
  const stream = (connection.connection as unknown as { stream?: { destroy(err?: Error): void } }).stream;
  if (stream) stream.destroy(new Error(reason));
  else void quietly(() => connection.close());
}

/** Closes a channel, waiting for the broker's CloseOk CLOSE_TIMEOUT_MS at most. */
async function closeChannel(channel: Channel): Promise<void> {
  await withDeadline(quietly(() => channel.close()), CLOSE_TIMEOUT_MS, () => new Error('no CloseOk')).catch(() => undefined);
}

/** Closes a connection with the close handshake, or drops it when the broker does not finish the handshake in time. */
async function closeConnection(connection: ChannelModel): Promise<void> {
  const message = `no answer to closing the connection within ${CLOSE_TIMEOUT_MS} ms`;
  await withDeadline(quietly(() => connection.close()), CLOSE_TIMEOUT_MS, () => new Error(message)).catch(() => abandon(connection, message));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

interface Delivery {
  channel: Channel;
  /** The partition queue it came from. */
  queue: string;
  message: ConsumeMessage;
  job: RawCacheJob;
  /** Set once its handler runs: the claim's fence. */
  settlement?: JobSettlement;
}

/** The jobs of one image this process holds: at most one running and one waiting (which absorbs the others). */
interface ImageSlot {
  running?: Delivery;
  waiting?: Delivery;
}

export class AmqpJobQueue implements JobQueue {
  readonly backend = 'amqp' as const;
  private readonly url: string;
  private readonly where: string;
  private readonly partitionQueues: string[];
  private readonly delayExchange: string;
  private readonly retryDelayMs: (attempts: number) => number;
  private readonly confirmTimeoutMs: number;
  private readonly setupTimeoutMs: number;

  private connection: ChannelModel | undefined;
  private publisher: ConfirmChannel | undefined;
  private consumer: Channel | undefined;
  /** The consumer being started, and the connection it is started on. */
  private consumerStarting: { connection: ChannelModel; done: Promise<void> } | undefined;
  private connecting = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private reconnectAttempt = 0;
  private lastError = 'not connected yet';
  private blockedReason: string | undefined;
  /** Message ids the broker returned as unroutable; their confirm follows the return. */
  private readonly returned = new Set<string>();
  private declaredDelayTiers = new Set<number>();

  private handler: ((job: ClaimedJob) => Promise<void>) | undefined;
  private concurrency = 0;
  private stopping = false;
  private stopped: Promise<void> | undefined;
  private readonly images = new Map<string, ImageSlot>();
  private readonly inFlight = new Set<Promise<void>>();
  /** Partition queue -> consumer tag, for the partitions the consumer channel consumes now. */
  private readonly subscriptions = new Map<string, string>();
  /** Consumer tags not cancelled, on the consumer channel -> their partition queue. */
  private readonly liveTags = new Map<string, string>();
  private tagSequence = 0;
  private closing = false;
  private fenceTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly config: RawCacheConfig['queue'],
    private readonly logger: Logger,
    options: JobQueueOptions = {},
  ) {
    if (!config.amqp_url) throw new ConfigError("config: rawcache.queue.amqp_url is required when rawcache.queue.backend is 'amqp'");
    let url: URL;
    try {
      url = new URL(config.amqp_url);
    } catch {
      // Not echoed: the URL holds the password.
      throw new ConfigError('config: rawcache.queue.amqp_url is not a valid URL');
    }
    if (url.protocol !== 'amqp:' && url.protocol !== 'amqps:') throw new ConfigError('config: rawcache.queue.amqp_url must be an amqp:// or amqps:// URL');
    if (!url.searchParams.has('heartbeat')) url.searchParams.set('heartbeat', String(HEARTBEAT_SECONDS));
    this.url = url.toString();
    this.where = describeUrl(url);
    this.partitionQueues = Array.from({ length: config.amqp_partitions }, (_, n) => `${config.amqp_queue}.${n}`);
    this.delayExchange = `${config.amqp_queue}.delay`;
    this.retryDelayMs = options.retryDelayMs ?? defaultRetryDelayMs;
    this.confirmTimeoutMs = options.confirmTimeoutMs ?? DEFAULT_CONFIRM_TIMEOUT_MS;
    this.setupTimeoutMs = options.setupTimeoutMs ?? DEFAULT_SETUP_TIMEOUT_MS;
  }

  /**
   * Connects once and resolves, connected or not: a broker that is down (or refuses the
   * credentials) is retried in the background with backoff, health() reports it, and enqueue
   * rejects at once until the connection is back.
   */
  async start(): Promise<void> {
    await this.connectOnce();
  }

  /** The partition queue of an image. */
  queueFor(imageId: string): string {
    return this.partitionQueues[partitionOf(imageId, this.partitionQueues.length)];
  }

  /**
   * Resolves once the broker confirmed the persistent message. Rejects with a
   * QueueUnavailableError at once while the broker is unreachable or blocks publishers (no
   * buffering: a job held in this process's memory would not be durable), when the broker nacks
   * it or has no queue to route it to, or when no confirm comes within the confirm timeout.
   */
  async enqueue(id: string, reason: TriggerReason): Promise<void> {
    const imageId = checkEnqueueArguments(id, reason);
    if (this.closing) throw new QueueUnavailableError('raw-cache queue is closed');
    const job: RawCacheJob = { imageId, reason, attempts: 0, enqueuedAt: new Date().toISOString() };
    try {
      await this.publish('', this.queueFor(imageId), job, {});
    } catch (err) {
      throw new QueueUnavailableError(`${(err as Error).message}; the raw-cache job for image ${imageId} was not queued`);
    }
  }

  async consume(handler: (job: ClaimedJob) => Promise<void>, options: ConsumeOptions): Promise<void> {
    checkConsumeArguments(this.closing, this.handler !== undefined, options);
    this.handler = handler;
    this.concurrency = options.concurrency;
    this.stopping = false;
    this.stopped = undefined;
    const connection = this.connection;
    if (!connection) {
      this.logger.warn('raw-cache queue: RabbitMQ is not reachable yet; jobs will be delivered once it is', {
        broker: this.where,
        error: this.lastError,
      });
      return;
    }
    try {
      await this.ensureConsumer(connection);
    } catch (err) {
      this.logger.warn('raw-cache queue: cannot start consuming; reconnecting', { broker: this.where, error: (err as Error).message });
      void closeConnection(connection);
    }
  }

  stopConsuming(): Promise<void> {
    if (!this.handler) return this.stopped ?? Promise.resolve();
    this.stopping = true;
    this.stopped ??= (async () => {
      while (this.consumerStarting) await this.consumerStarting.done.catch(() => undefined);
      while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
      // Only now may another worker's consumer become active on these partitions. Jobs delivered
      // here but not started go back to their queues when the channel closes.
      const channel = this.consumer;
      this.consumer = undefined;
      this.forgetSubscriptions();
      for (const [imageId, slot] of this.images) {
        slot.waiting = undefined;
        if (!slot.running) this.images.delete(imageId);
      }
      if (channel) await closeChannel(channel);
      this.handler = undefined;
    })();
    return this.stopped;
  }

  async health(): Promise<QueueHealth> {
    const connection = this.connection;
    if (!connection) return { ok: false, detail: `not connected to RabbitMQ at ${this.where}: ${this.lastError}` };
    if (this.blockedReason) return { ok: false, detail: `RabbitMQ at ${this.where} blocks publishers: ${this.blockedReason}` };
    let channel: Channel | undefined;
    try {
      const depth = await withDeadline(
        (async () => {
          channel = await connection.createChannel();
          channel.on('error', () => undefined);
          let total = 0;
          for (const queue of this.partitionQueues) total += (await channel.checkQueue(queue)).messageCount;
          return total;
        })(),
        HEALTH_TIMEOUT_MS,
        () => new Error(`no answer within ${HEALTH_TIMEOUT_MS} ms`),
      );
      return { ok: true, depth };
    } catch (err) {
      return { ok: false, detail: `RabbitMQ at ${this.where}: ${(err as Error).message}` };
    } finally {
      const opened = channel as Channel | undefined;
      if (opened) void closeChannel(opened);
    }
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    await this.stopConsuming();
    clearInterval(this.fenceTimer);
    this.fenceTimer = undefined;
    const connection = this.connection;
    this.connection = undefined;
    this.publisher = undefined;
    if (connection) await closeConnection(connection);
  }

  private async connectOnce(): Promise<void> {
    if (this.closing || this.connecting || this.connection) return;
    this.connecting = true;
    let connection: ChannelModel | undefined;
    try {
      connection = await connect(this.url, {
        timeout: CONNECT_TIMEOUT_MS,
        clientProperties: { connection_name: `stx-glance-proxy raw-cache queue ${hostname()}:${process.pid}` },
      });
      const opened = connection;
      opened.on('error', (err: Error) => {
        this.lastError = err.message;
      });
      opened.on('close', (err?: Error) => this.onConnectionLost(opened, err));
      opened.on('blocked', (reason: string) => {
        this.blockedReason = reason || 'resource alarm';
        this.logger.warn('raw-cache queue: RabbitMQ blocks publishers', { broker: this.where, reason: this.blockedReason });
      });
      opened.on('unblocked', () => {
        this.blockedReason = undefined;
        this.logger.info('raw-cache queue: RabbitMQ accepts publishers again', { broker: this.where });
      });
      const publisher = await this.withinSetupDeadline(opened, 'opening a channel and declaring the queues', async () => {
        const channel = await opened.createConfirmChannel();
        this.watchChannel(opened, channel, () => this.publisher === channel);
        channel.on('return', (message: ConsumeMessage) => this.onReturned(message));
        await this.declareTopology(channel);
        return channel;
      });
      if (this.closing) {
        await closeConnection(opened);
        return;
      }
      this.connection = opened;
      this.publisher = publisher;
      this.declaredDelayTiers = new Set();
      this.lastError = '';
      if (this.reconnectAttempt > 0) this.logger.info('raw-cache queue: reconnected to RabbitMQ', { broker: this.where });
      this.reconnectAttempt = 0;
      await this.ensureConsumer(opened);
    } catch (err) {
      this.lastError = (err as Error).message;
      if (connection && this.connection === connection) {
        // Connected but could not start consuming: start over on a fresh connection.
        this.logger.warn('raw-cache queue: cannot start consuming; reconnecting', { broker: this.where, error: this.lastError });
        const current = connection;
        void closeConnection(current);
      } else {
        if (connection) {
          const failed = connection;
          void closeConnection(failed);
        }
        this.scheduleReconnect();
      }
    } finally {
      this.connecting = false;
    }
  }

  private scheduleReconnect(): void {
    if (this.closing || this.reconnectTimer) return;
    const attempt = ++this.reconnectAttempt;
    const delay = backoffMs(attempt - 1, { baseMs: RECONNECT_INITIAL_MS, maxMs: RECONNECT_MAX_MS }, 0.2);
    const level = attempt === 1 || attempt % 10 === 0 ? 'warn' : 'debug';
    this.logger.log(level, 'raw-cache queue: RabbitMQ unreachable; retrying', {
      broker: this.where,
      error: this.lastError,
      attempt,
      retry_in_ms: delay,
    });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      void this.connectOnce();
    }, delay);
  }

  private onConnectionLost(connection: ChannelModel, err: Error | undefined): void {
    if (this.connection !== connection) return;
    this.connection = undefined;
    this.publisher = undefined;
    this.consumer = undefined;
    this.forgetSubscriptions();
    this.blockedReason = undefined;
    this.returned.clear();
    this.lastError = err?.message ?? 'connection closed';
    if (this.closing) return;
    this.logger.warn('raw-cache queue: lost the connection to RabbitMQ; reconnecting', { broker: this.where, error: this.lastError });
    // Jobs delivered on that connection and not started are back in their queues; the running ones
    // will be delivered again too, so they are no longer this worker's.
    for (const [imageId, slot] of this.images) {
      slot.waiting = undefined;
      slot.running?.settlement?.lose(`the connection to RabbitMQ closed (${this.lastError})`);
      if (!slot.running) this.images.delete(imageId);
    }
    this.scheduleReconnect();
  }

  /** A channel the broker closes (a failed declaration, an unknown delivery tag) takes the connection with it, to start clean. */
  private watchChannel(connection: ChannelModel, channel: Channel, isCurrent: () => boolean): void {
    channel.on('error', (err: Error) => {
      this.lastError = err.message;
    });
    channel.on('close', () => {
      this.loseJobsOf(channel, `the RabbitMQ channel it came on closed (${this.lastError || 'closed'})`);
      if (!isCurrent() || this.closing) return;
      this.logger.warn('raw-cache queue: RabbitMQ closed a channel; reconnecting', { broker: this.where, error: this.lastError });
      void closeConnection(connection);
    });
  }

  private async declareTopology(channel: Channel): Promise<void> {
    await channel.assertExchange(this.delayExchange, 'headers', { durable: true });
    for (const queue of this.partitionQueues) {
      await channel.assertQueue(queue, { durable: true, arguments: { 'x-single-active-consumer': true } });
    }
  }

  private async ensureDelayTier(tier: number): Promise<void> {
    if (this.declaredDelayTiers.has(tier)) return;
    const channel = this.publisher;
    if (!channel) throw new QueueUnavailableError(`RabbitMQ at ${this.where} is not connected (${this.lastError})`);
    const queue = `${this.config.amqp_queue}.delay.${tier}s`;
    await channel.assertQueue(queue, { durable: true, arguments: { 'x-dead-letter-exchange': '' } });
    await channel.bindQueue(queue, this.delayExchange, '', { 'x-match': 'all', [DELAY_TIER_HEADER]: String(tier) });
    if (this.publisher === channel) this.declaredDelayTiers.add(tier);
  }

  private onReturned(message: ConsumeMessage): void {
    const id = message.properties.messageId;
    if (id !== undefined && id !== null) this.returned.add(String(id));
    this.logger.error('raw-cache queue: RabbitMQ had no queue for a job; declaring the queues again', {
      broker: this.where,
      routing_key: message.fields.routingKey,
    });
    this.declaredDelayTiers = new Set();
    const channel = this.publisher;
    if (channel) {
      this.declareTopology(channel).catch((err: Error) => this.logger.error('raw-cache queue: cannot declare the queues', { error: err.message }));
    }
  }

  private publish(exchange: string, routingKey: string, job: RawCacheJob, extra: Options.Publish): Promise<void> {
    const channel = this.publisher;
    if (!channel || !this.connection) {
      return Promise.reject(new QueueUnavailableError(`RabbitMQ at ${this.where} is not connected (${this.lastError || 'connection lost'})`));
    }
    if (this.blockedReason) {
      return Promise.reject(new QueueUnavailableError(`RabbitMQ at ${this.where} blocks publishers (${this.blockedReason})`));
    }
    const messageId = randomUUID();
    return new Promise<void>((resolve, reject) => {
      let done = false;
      const finish = (err?: Error): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.returned.delete(messageId);
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(
        () => finish(new QueueUnavailableError(`RabbitMQ at ${this.where} did not confirm within ${this.confirmTimeoutMs} ms`)),
        this.confirmTimeoutMs,
      );
      try {
        channel.publish(
          exchange,
          routingKey,
          Buffer.from(JSON.stringify(job)),
          {
            persistent: true,
            mandatory: true,
            messageId,
            contentType: 'application/json',
            timestamp: Math.floor(Date.now() / 1000),
            appId: 'stx-glance-proxy',
            ...extra,
          },
          (err: unknown) => {
            if (err) {
              finish(new QueueUnavailableError(`RabbitMQ at ${this.where} did not take the job (${(err as Error)?.message ?? 'nack'})`));
            } else if (this.returned.has(messageId)) {
              finish(
                new QueueUnavailableError(
                  `RabbitMQ at ${this.where} has no queue ${routingKey}: it was deleted (by an expiry policy such as StarlingX's all_queues_ttl?)`,
                ),
              );
            } else {
              finish();
            }
          },
        );
      } catch (err) {
        finish(new QueueUnavailableError(`RabbitMQ at ${this.where}: cannot publish (${(err as Error).message})`));
      }
    });
  }

  /**
   * Starts consuming on the current connection, once. A start still running for an earlier
   * connection is waited out first, never taken for this connection's.
   */
  private ensureConsumer(connection: ChannelModel): Promise<void> {
    if (!this.handler || this.stopping || this.consumer || this.connection !== connection) return Promise.resolve();
    const starting = this.consumerStarting;
    if (starting?.connection === connection) return starting.done;
    if (starting) return starting.done.catch(() => undefined).then(() => this.ensureConsumer(connection));
    const done: Promise<void> = this.withinSetupDeadline(connection, 'starting the consumers', () => this.startConsumer(connection)).finally(() => {
      if (this.consumerStarting?.done === done) this.consumerStarting = undefined;
    });
    this.consumerStarting = { connection, done };
    return done;
  }

  private async startConsumer(connection: ChannelModel): Promise<void> {
    const channel = await connection.createChannel();
    this.watchChannel(connection, channel, () => this.consumer === channel);
    // global: one limit for the channel, shared by the consumers of every partition.
    await channel.prefetch(this.concurrency, true);
    if (this.connection !== connection || this.stopping || !this.handler) {
      await closeChannel(channel);
      return;
    }
    this.consumer = channel;
    this.forgetSubscriptions();
    await Promise.all(this.partitionQueues.map((queue) => this.subscribe(channel, queue)));
  }

  private forgetSubscriptions(): void {
    this.subscriptions.clear();
    this.liveTags.clear();
  }

  /** Consumes `queue` on the consumer channel (joining the line of its single active consumer). */
  private subscribe(channel: Channel, queue: string): Promise<unknown> {
    const tag = `${process.pid}.${queue}.${++this.tagSequence}`;
    this.subscriptions.set(queue, tag);
    this.liveTags.set(tag, queue);
    return channel.consume(queue, (message) => this.onDelivery(channel, message), { noAck: false, consumerTag: tag });
  }

  /** The jobs this process holds (running or waiting) from the consumer channel, by partition queue. */
  private held(channel: Channel): Map<string, number> {
    const byQueue = new Map<string, number>();
    for (const slot of this.images.values()) {
      for (const delivery of [slot.running, slot.waiting]) {
        if (delivery?.channel === channel) byQueue.set(delivery.queue, (byQueue.get(delivery.queue) ?? 0) + 1);
      }
    }
    return byQueue;
  }

  /**
   * Shares the partitions with the other workers by load: with every slot taken, the consumers of
   * the partitions this process holds no job from are cancelled (the next worker in line becomes
   * their active consumer); with a slot free, every partition is consumed again.
   */
  private rebalance(): void {
    const channel = this.consumer;
    if (!channel || this.stopping || !this.handler || this.closing) return;
    const held = this.held(channel);
    let total = 0;
    for (const n of held.values()) total += n;
    if (total >= this.concurrency) {
      for (const [queue, tag] of this.subscriptions) {
        if (held.has(queue)) continue;
        this.subscriptions.delete(queue);
        this.liveTags.delete(tag);
        void quietly(() => channel.cancel(tag));
      }
    } else {
      for (const queue of this.partitionQueues) {
        if (this.subscriptions.has(queue)) continue;
        void quietly(() => this.subscribe(channel, queue));
      }
    }
  }

  /**
   * One step of a connection's setup. RabbitMQ can take a connection and then not answer on it
   * (a node still recovering its queues after a crash, a partition): past the setup timeout the
   * connection is dropped, which fails the step and reconnects, instead of waiting forever.
   */
  private withinSetupDeadline<T>(connection: ChannelModel, what: string, step: () => Promise<T>): Promise<T> {
    return withDeadline(step(), this.setupTimeoutMs, () => {
      const message = `no answer to ${what} within ${this.setupTimeoutMs} ms`;
      this.lastError = message;
      this.logger.warn('raw-cache queue: RabbitMQ does not answer; dropping the connection', { broker: this.where, error: message });
      abandon(connection, message);
      return new Error(message);
    });
  }

  private onDelivery(channel: Channel, message: ConsumeMessage | null): void {
    if (message === null) {
      // The broker cancelled the consumer: its queue was deleted. Reconnecting declares it again.
      this.logger.error('raw-cache queue: RabbitMQ cancelled a consumer (queue deleted?); reconnecting', { broker: this.where });
      const connection = this.connection;
      if (connection && this.consumer === channel) void closeConnection(connection);
      return;
    }
    if (channel !== this.consumer) return;
    const queue = this.liveTags.get(message.fields.consumerTag);
    if (queue === undefined) {
      // Sent before the broker saw this partition's cancel: another worker may be its active
      // consumer now, so the job goes back unstarted.
      void quietly(() => channel.nack(message, false, true));
      return;
    }
    let job: RawCacheJob;
    try {
      job = parseJob(message.content);
    } catch (err) {
      this.logger.error('raw-cache queue: dropping a message that is not a raw-cache job', {
        queue: message.fields.routingKey,
        error: (err as Error).message,
      });
      void quietly(() => channel.ack(message));
      return;
    }
    let slot = this.images.get(job.imageId);
    if (!slot) {
      slot = {};
      this.images.set(job.imageId, slot);
    }
    if (slot.waiting && slot.waiting.channel === channel) {
      // The older message carries both; it is still unacked, so nothing is lost if we die now.
      slot.waiting.job = coalesce(slot.waiting.job, job);
      void quietly(() => channel.ack(message));
    } else {
      slot.waiting = { channel, queue, message, job };
    }
    this.pump(job.imageId);
    this.rebalance();
  }

  private runningCount(): number {
    let running = 0;
    for (const slot of this.images.values()) if (slot.running) running += 1;
    return running;
  }

  /** Starts the waiting job of an image when none of its jobs runs. */
  private pump(imageId: string): void {
    const slot = this.images.get(imageId);
    if (!slot) return;
    if (!slot.running && slot.waiting && this.handler && !this.stopping && this.runningCount() < this.concurrency) {
      const delivery = slot.waiting;
      slot.waiting = undefined;
      slot.running = delivery;
      const settlement = new JobSettlement(
        delivery.job,
        (s) => this.settle(delivery, s),
        () => this.confirmChannel(delivery.channel),
      );
      delivery.settlement = settlement;
      this.armFence();
      const done: Promise<void> = settlement.run(this.handler, this.retryDelayMs, this.logger).finally(() => {
        this.inFlight.delete(done);
        slot.running = undefined;
        this.pump(imageId);
        // A slot is free: a job of another image that waited for one may start.
        for (const other of [...this.images.keys()]) if (other !== imageId) this.pump(other);
        this.rebalance();
      });
      this.inFlight.add(done);
    }
    if (!slot.running && !slot.waiting) this.images.delete(imageId);
  }

  private async settle(delivery: Delivery, settlement: Settlement): Promise<void> {
    const { channel, message, job } = delivery;
    // The consumer channel stays open until stopConsuming has seen every handler settle.
    const live = (): boolean => this.consumer === channel;
    const acknowledge = (action: () => void): void => {
      try {
        if (!live()) throw new Error('channel gone');
        action();
      } catch {
        this.lostJob(job, settlement);
      }
    };
    if (settlement.kind === 'complete') return acknowledge(() => channel.ack(message));
    if (settlement.kind === 'release') return acknowledge(() => channel.nack(message, false, true));
    if (!live()) return this.lostJob(job, settlement);
    try {
      await this.publishRetry({ ...job, attempts: job.attempts + (settlement.countAttempt ? 1 : 0) }, settlement.delayMs);
    } catch (err) {
      this.logger.error('raw-cache queue: cannot schedule a retry; the job goes back to its queue', {
        image_id: job.imageId,
        error: (err as Error).message,
      });
      // Held a while so that a broker refusing publishes does not turn into a tight redelivery loop.
      if (!this.stopping) await sleep(Math.min(settlement.delayMs, RETRY_FAILURE_HOLD_MAX_MS));
      if (live()) await quietly(() => channel.nack(message, false, true));
      throw err;
    }
    // Confirmed first, acked second: a crash in between runs the job twice, never zero times.
    acknowledge(() => channel.ack(message));
  }

  /** Aborts the handlers of the jobs delivered on `channel`: the broker delivers them again. */
  private loseJobsOf(channel: Channel, why: string): void {
    for (const slot of this.images.values()) {
      if (slot.running?.channel === channel) slot.running.settlement?.lose(why);
    }
  }

  /**
   * Proves `channel` open with a round trip (basic.qos with the prefetch it already has, which
   * changes nothing): while it is open, the broker gives its unacked jobs to nobody else.
   */
  private async confirmChannel(channel: Channel): Promise<void> {
    if (this.consumer !== channel) throw new OwnershipLostError('the RabbitMQ channel it came on is closed');
    await withDeadline(channel.prefetch(this.concurrency, true), HEALTH_TIMEOUT_MS, () => new OwnershipLostError(`RabbitMQ did not answer on its channel within ${HEALTH_TIMEOUT_MS} ms`));
    if (this.consumer !== channel) throw new OwnershipLostError('the RabbitMQ channel it came on is closed');
  }

  /**
   * While handlers run, the consumer channel is checked every third of the heartbeat: a broker
   * that stopped answering on it loses the connection (and the handlers their jobs) now, rather
   * than when the handlers next confirm.
   */
  private armFence(): void {
    if (this.fenceTimer) return;
    this.fenceTimer = setInterval(() => {
      const channel = this.consumer;
      const running = [...this.images.values()].some((slot) => slot.running !== undefined);
      if (!running) {
        clearInterval(this.fenceTimer);
        this.fenceTimer = undefined;
        return;
      }
      if (!channel) return;
      this.confirmChannel(channel).catch((err: Error) => {
        this.logger.warn('raw-cache queue: RabbitMQ does not answer on the consumer channel; dropping the connection', { broker: this.where, error: err.message });
        this.loseJobsOf(channel, err.message);
        const connection = this.connection;
        if (connection && this.consumer === channel) abandon(connection, err.message);
      });
    }, (HEARTBEAT_SECONDS * 1000) / 3);
    this.fenceTimer.unref?.();
  }

  private lostJob(job: RawCacheJob, settlement: Settlement): void {
    this.logger.warn('raw-cache queue: the connection a job came on is gone; RabbitMQ delivers it again', {
      image_id: job.imageId,
      settlement: settlement.kind,
    });
  }

  private async publishRetry(job: RawCacheJob, delayMs: number): Promise<void> {
    const queue = this.queueFor(job.imageId);
    if (delayMs <= 0) return this.publish('', queue, job, {});
    const tier = delayTierSeconds(delayMs);
    await this.ensureDelayTier(tier);
    return this.publish(this.delayExchange, queue, job, { expiration: String(delayMs), headers: { [DELAY_TIER_HEADER]: String(tier) } });
  }
}
