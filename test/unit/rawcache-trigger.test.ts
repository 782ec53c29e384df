import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { createJobQueue } from '../../src/rawcache/queue';
import { createRawCacheTrigger, type RawCacheTrigger } from '../../src/rawcache/trigger';
import type { JobQueue } from '../../src/rawcache/types';
import { imageId, recordingLogger, sqliteQueueConfig, waitUntil, type QueueConfig } from '../harness/queue-contract';

/*
 * The proxy's trigger against a real SQLite queue whose database another process holds locked:
 * the answer must not go out before the trigger is durable somewhere, and must not wait forever.
 * (With RabbitMQ stopped, through the proxy: test/integration/rawcache-amqp.test.ts.)
 */

const dir = mkdtempSync(join(tmpdir(), 'stx-trigger-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const sqliteConfig = (): QueueConfig => sqliteQueueConfig(dir);

/** Every trigger line in the spool directory, whatever file it is in. */
function spooled(spoolDir: string): Array<{ imageId: string; reason: string }> {
  if (!existsSync(spoolDir)) return [];
  return readdirSync(spoolDir)
    .filter((name) => name.endsWith('.jsonl'))
    .flatMap((name) => readFileSync(join(spoolDir, name), 'utf8').split('\n').filter(Boolean))
    .map((line) => JSON.parse(line));
}

describe('raw-cache trigger with a locked SQLite queue', () => {
  let queue: JobQueue;
  let trigger: RawCacheTrigger | undefined;
  let holder: Database.Database;
  let config: QueueConfig;
  let log: ReturnType<typeof recordingLogger>;

  beforeEach(async () => {
    config = sqliteConfig();
    log = recordingLogger();
    queue = await createJobQueue(config, log.logger);
    await queue.enqueue(imageId(), 'upload');
    holder = new Database(config.sqlite_path, { timeout: 0 });
    holder.exec('BEGIN IMMEDIATE');
  });
  afterEach(async () => {
    if (holder.inTransaction) holder.exec('ROLLBACK');
    holder.close();
    await trigger?.close();
    trigger = undefined;
    await queue.close();
  });
  const hasJob = (id: string) => holder.prepare('SELECT 1 FROM jobs WHERE image_id = ?').get(id) !== undefined;

  it('answers once the trigger is in the spool, and queues it from there once the database is free', async () => {
    const spoolDir = join(mkdtempSync(join(dir, 'case-')), 'spool');
    trigger = createRawCacheTrigger(queue, log.logger, { spool_dir: spoolDir, queue_wait_seconds: 0.2 });
    const id = imageId();
    await trigger.afterImageChange(id, 'upload', 'req-locked');
    expect(spooled(spoolDir)).toEqual([expect.objectContaining({ imageId: id, reason: 'upload' })]);
    expect(hasJob(id)).toBe(false);
    expect(log.entries).toContainEqual(expect.objectContaining({ level: 'warn', message: expect.stringContaining('spooled'), image_id: id, request_id: 'req-locked' }));

    holder.exec('ROLLBACK');
    await waitUntil(() => hasJob(id) && spooled(spoolDir).length === 0, 20_000, 'the spooled trigger in the queue and the spool empty');
  });

  it('answers, with an error in the log, when neither the queue nor the spool can take the trigger', async () => {
    const notADirectory = join(mkdtempSync(join(dir, 'case-')), 'file');
    writeFileSync(notADirectory, '');
    trigger = createRawCacheTrigger(queue, log.logger, { spool_dir: join(notADirectory, 'spool'), queue_wait_seconds: 0.2 });
    const id = imageId();
    await trigger.afterImageChange(id, 'upload', 'req-nowhere');
    expect(log.entries).toContainEqual(
      expect.objectContaining({ level: 'error', message: expect.stringContaining('not recorded'), image_id: id, request_id: 'req-nowhere' }),
    );
  });
});
