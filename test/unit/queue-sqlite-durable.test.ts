import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { createJobQueue } from '../../src/rawcache/queue';
import type { JobQueue } from '../../src/rawcache/types';
import { imageId, recordingLogger, sqliteQueueConfig, waitUntil, type QueueConfig } from '../harness/queue-contract';

/*
 * A trigger the SQLite queue confirmed survives a power loss: it is committed with
 * synchronous=FULL, on a connection of its own in a thread of its own, so that neither the fsync
 * nor a wait for another process's write lock holds up the proxy's event loop, and triggers that
 * arrive together share one commit.
 */

const dir = mkdtempSync(join(tmpdir(), 'stx-queue-durable-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const sqliteConfig = (): QueueConfig => sqliteQueueConfig(dir);

describe('SQLite queue: durable triggers', () => {
  const opened: JobQueue[] = [];
  const holders: Database.Database[] = [];
  const open = async (config: QueueConfig, log = recordingLogger()): Promise<JobQueue> => {
    const queue = await createJobQueue(config, log.logger);
    opened.push(queue);
    return queue;
  };
  /** Another process's connection to the same file (SQLite locks per connection, not per process). */
  const connect = (config: QueueConfig): Database.Database => {
    const db = new Database(config.sqlite_path, { timeout: 0 });
    holders.push(db);
    return db;
  };
  afterEach(async () => {
    for (const db of holders.splice(0)) {
      if (db.inTransaction) db.exec('ROLLBACK');
      db.close();
    }
    await Promise.all(opened.splice(0).map((queue) => queue.close()));
  });

  const hasJob = (db: Database.Database, id: string) => db.prepare('SELECT 1 FROM jobs WHERE image_id = ?').get(id) !== undefined;

  it('commits triggers on a connection that reads back synchronous=FULL in WAL mode', async () => {
    const log = recordingLogger();
    const config = sqliteConfig();
    const queue = await open(config, log);
    const id = imageId();
    await queue.enqueue(id, 'upload');
    expect(hasJob(connect(config), id)).toBe(true);
    const ready = log.entries.find((entry) => entry.message === 'raw-cache queue: trigger writer ready');
    expect(ready).toMatchObject({ journal_mode: 'wal', synchronous: 'FULL' });
  });

  it('waits for another connection’s write lock without holding up the event loop, and resolves once the trigger is committed', async () => {
    const config = sqliteConfig();
    const queue = await open(config);
    await queue.enqueue(imageId(), 'upload');
    const holder = connect(config);
    holder.exec('BEGIN IMMEDIATE');

    let ticks = 0;
    const ticker = setInterval(() => ticks++, 5);
    const id = imageId();
    let settled = false;
    const recorded = queue.enqueue(id, 'upload').finally(() => (settled = true));
    try {
      // The timer keeps firing while the enqueue waits for the lock: the wait is not on this thread.
      await waitUntil(() => ticks >= 10, 3_000, 'timer ticks while the enqueue waits');
    } finally {
      clearInterval(ticker);
    }
    expect(settled).toBe(false);
    expect(hasJob(holder, id)).toBe(false);
    holder.exec('ROLLBACK');
    await recorded;
    expect(hasJob(holder, id)).toBe(true);
  });

  it('lets triggers that arrive while a commit waits share the next commit', async () => {
    const config = sqliteConfig();
    const queue = await open(config);
    await queue.enqueue(imageId(), 'upload');
    const holder = connect(config);
    // An empty WAL, so that its frame count afterwards is what these enqueues wrote.
    holder.pragma('wal_checkpoint(TRUNCATE)');
    holder.exec('BEGIN IMMEDIATE');
    const ids = Array.from({ length: 50 }, () => imageId());
    const recorded = Promise.all(ids.map((id) => queue.enqueue(id, 'upload')));
    holder.exec('ROLLBACK');
    await recorded;
    // One commit per enqueue would append at least 50 frames (a commit writes every page it changed).
    const [{ log: frames }] = holder.pragma('wal_checkpoint(PASSIVE)') as Array<{ log: number }>;
    expect(frames).toBeLessThan(ids.length / 2);
    for (const id of ids) expect(hasJob(holder, id)).toBe(true);
  });
});
