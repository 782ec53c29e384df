import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { createJobQueue, SQLITE_SCHEMA_VERSION } from '../../src/rawcache/queue';
import type { JobQueue } from '../../src/rawcache/types';
import {
  describeJobQueueContract,
  gate,
  imageId,
  recordingLogger,
  sleep,
  snapshot,
  waitUntil,
  type QueueConfig,
  type Run,
  sqliteQueueConfig,
} from '../harness/queue-contract';

const dir = mkdtempSync(join(tmpdir(), 'stx-queue-sqlite-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Leases of 1 s: a consumer that stops renewing loses its jobs quickly.
const sqliteConfig = (overrides: Partial<QueueConfig> = {}): QueueConfig => sqliteQueueConfig(dir, { lease_seconds: 1, ...overrides });

describeJobQueueContract('sqlite', () => ({
  newStore: () => {
    const config = sqliteConfig();
    return { config, open: (options) => createJobQueue(config, recordingLogger().logger, options) };
  },
  openLosable: async (store) => ({
    queue: await store.open(),
    // Its lease ran out (a stalled process) and another worker claimed the row.
    takeAway: async () => {
      const db = new Database(store.config.sqlite_path);
      try {
        db.prepare("UPDATE jobs SET lease_owner = 'another-host:1:0:1', lease_until = 0").run();
      } finally {
        db.close();
      }
    },
  }),
  // Lease of 1 s, renewed every third; a poll every 250 ms.
  redeliveryWithinMs: 3_000,
}));

describe('SQLite job queue', () => {
  const opened: JobQueue[] = [];
  const open = async (config: QueueConfig): Promise<JobQueue> => {
    const queue = await createJobQueue(config, recordingLogger().logger);
    opened.push(queue);
    return queue;
  };
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((queue) => queue.close()));
  });

  const collect = async (queue: JobQueue, concurrency = 1): Promise<Run[]> => {
    const runs: Run[] = [];
    await queue.consume(async (job) => {
      runs.push(snapshot(job));
      await job.complete();
    }, { concurrency });
    return runs;
  };

  it('coalesces triggers for a waiting image into one job: earliest enqueuedAt, latest reason', async () => {
    const config = sqliteConfig();
    const queue = await open(config);
    const id = imageId();
    await queue.enqueue(id, 'upload');
    await sleep(20);
    await queue.enqueue(id, 'update');
    await queue.enqueue(id, 'operator');
    expect(await queue.health()).toEqual({ ok: true, depth: 1 });
    const runs = await collect(queue);
    await waitUntil(() => runs.length === 1, 3_000, 'the job');
    await sleep(400);
    expect(runs).toHaveLength(1);
    expect(runs[0]).toMatchObject({ imageId: id, reason: 'operator', attempts: 0 });
    expect(Date.parse(runs[0].enqueuedAt)).toBeLessThan(runs[0].startedAt - 15);
  });

  it('a new trigger makes a job waiting out a retry due at once, with attempts from 0', async () => {
    const queue = await open(sqliteConfig());
    const id = imageId();
    const runs: Run[] = [];
    await queue.consume(async (job) => {
      runs.push(snapshot(job));
      if (runs.length === 1) await job.retry(60_000);
      else await job.complete();
    }, { concurrency: 1 });
    await queue.enqueue(id, 'upload');
    await waitUntil(() => runs.length === 1, 3_000, 'the first run');
    await sleep(100);
    await queue.enqueue(id, 'operator');
    await waitUntil(() => runs.length === 2, 3_000, 'the run the trigger brought forward');
    expect(runs[1]).toMatchObject({ imageId: id, reason: 'operator', attempts: 0, enqueuedAt: runs[0].enqueuedAt });
  });

  it('a trigger during a run that ends in retry() makes the job due at once, as a fresh trigger', async () => {
    const queue = await open(sqliteConfig());
    const id = imageId();
    const runs: Run[] = [];
    const held = gate();
    await queue.consume(async (job) => {
      runs.push(snapshot(job));
      if (runs.length === 1) {
        await held.promise;
        await job.retry(60_000);
      } else {
        await job.complete();
      }
    }, { concurrency: 1 });
    await queue.enqueue(id, 'upload');
    await waitUntil(() => runs.length === 1, 3_000, 'the first run');
    await queue.enqueue(id, 'update');
    held.open();
    await waitUntil(() => runs.length === 2, 3_000, 'the second run');
    expect(runs[1]).toMatchObject({ reason: 'update', attempts: 0 });
  });

  it('counts as depth only the jobs that wait, not the ones running', async () => {
    const config = sqliteConfig();
    const queue = await open(config);
    const held = gate();
    let running = 0;
    await queue.consume(async (job) => {
      running++;
      await held.promise;
      await job.complete();
    }, { concurrency: 1 });
    await queue.enqueue(imageId(), 'upload');
    await queue.enqueue(imageId(), 'upload');
    await waitUntil(() => running === 1, 3_000, 'one running job');
    expect(await queue.health()).toEqual({ ok: true, depth: 1 });
    held.open();
    await waitUntil(async () => (await queue.health()).depth === 0 && running === 2, 3_000, 'both jobs');
  });

  it('renews the lease of a long job, so no other worker takes it', async () => {
    const config = sqliteConfig();
    const first = await open(config);
    const second = await open(config);
    const id = imageId();
    const held = gate();
    const runs: string[] = [];
    const handler = (name: string) => async (job: Parameters<Parameters<JobQueue['consume']>[0]>[0]) => {
      runs.push(name);
      if (name === 'first') await held.promise;
      await job.complete();
    };
    await first.enqueue(id, 'upload');
    await first.consume(handler('first'), { concurrency: 1 });
    await waitUntil(() => runs.length === 1, 3_000, 'the first worker to take the job');
    await second.consume(handler('second'), { concurrency: 1 });
    // More than two lease lengths.
    await sleep(2_300);
    expect(runs).toEqual(['first']);
    held.open();
    await waitUntil(async () => (await first.health()).depth === 0, 3_000, 'the job to be done');
    await sleep(300);
    expect(runs).toEqual(['first']);
  });

  it('wakes an idle consumer when another queue instance commits a trigger, without waiting for its poll', async () => {
    const config = sqliteConfig();
    // A poll an hour apart: only the wake-up can start these jobs within the test's time.
    const consumer = await createJobQueue(config, recordingLogger().logger, { pollIntervalMs: 3_600_000 });
    opened.push(consumer);
    const producer = await open(config);
    const runs = await collect(consumer);
    // Idle: its first poll found nothing and the next one is an hour away.
    await sleep(200);
    const first = imageId();
    await producer.enqueue(first, 'upload');
    await waitUntil(() => runs.length === 1, 20_000, 'the job to start');
    const second = imageId();
    await producer.enqueue(second, 'update');
    await waitUntil(() => runs.length === 2, 20_000, 'the second job to start');
    expect(runs.map((run) => run.imageId)).toEqual([first, second]);
  });

  it('runs a retry when its delay ends, without a trigger or a poll in between', async () => {
    const config = sqliteConfig();
    const consumer = await createJobQueue(config, recordingLogger().logger, { pollIntervalMs: 3_600_000 });
    opened.push(consumer);
    const runs: Run[] = [];
    await consumer.consume(async (job) => {
      runs.push(snapshot(job));
      if (runs.length === 1) await job.retry(300);
      else await job.complete();
    }, { concurrency: 1 });
    await consumer.enqueue(imageId(), 'upload');
    await waitUntil(() => runs.length === 2, 20_000, 'the retry to run');
    expect(runs[1].startedAt - runs[0].startedAt).toBeGreaterThanOrEqual(300);
    expect(runs[1].attempts).toBe(1);
  });

  it('keeps jobs in a WAL database whose schema version is recorded', async () => {
    const config = sqliteConfig();
    const queue = await open(config);
    await queue.enqueue(imageId(), 'reconcile');
    const db = new Database(config.sqlite_path, { readonly: true });
    try {
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(db.pragma('user_version', { simple: true })).toBe(SQLITE_SCHEMA_VERSION);
      expect(db.prepare('SELECT image_id, reason, attempts FROM jobs').all()).toEqual([expect.objectContaining({ reason: 'reconcile', attempts: 0 })]);
    } finally {
      db.close();
    }
  });

  it('refuses a database written by a newer schema', async () => {
    const config = sqliteConfig();
    await (await open(config)).close();
    const db = new Database(config.sqlite_path);
    db.pragma(`user_version = ${SQLITE_SCHEMA_VERSION + 1}`);
    db.close();
    await expect(createJobQueue(config, recordingLogger().logger)).rejects.toThrow(/schema version 2 is newer than this program knows/);
  });

  it('rejects a job without an image id or with an unknown reason', async () => {
    const queue = await open(sqliteConfig());
    await expect(queue.enqueue('', 'upload')).rejects.toThrow(/image id/);
    await expect(queue.enqueue(imageId(), 'because' as never)).rejects.toThrow(/unknown trigger reason 'because'/);
  });
});
