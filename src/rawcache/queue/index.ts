import { ConfigError, type RawCacheConfig } from '../../config/load';
import type { Logger } from '../../ops/log';
import type { JobQueue } from '../types';
import { AmqpJobQueue } from './amqp';
import type { JobQueueOptions } from './common';
import { SqliteJobQueue } from './sqlite';

export { QueueUnavailableError, defaultRetryDelayMs, type JobQueueOptions } from './common';
export { AmqpJobQueue, partitionOf } from './amqp';
export { SqliteJobQueue, SQLITE_SCHEMA_VERSION } from './sqlite';

/**
 * Opens the configured raw-cache queue.
 * - sqlite: opens (and creates or migrates) the database file; throws if it cannot.
 * - amqp: connects once and resolves even when the broker is unreachable; it then reconnects in
 *   the background, `enqueue` rejects with QueueUnavailableError meanwhile and health() says why.
 */
export async function createJobQueue(config: RawCacheConfig['queue'], logger: Logger, options: JobQueueOptions = {}): Promise<JobQueue> {
  if (config.backend === 'sqlite') return new SqliteJobQueue(config, logger, options);
  if (config.backend === 'amqp') {
    const queue = new AmqpJobQueue(config, logger, options);
    await queue.start();
    return queue;
  }
  throw new ConfigError(`config: unknown rawcache.queue.backend '${String((config as { backend: unknown }).backend)}'`);
}
