import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createJobQueue } from '../../src/rawcache/queue';
import type { ClaimedJob, JobQueue } from '../../src/rawcache/types';
import { imageId, recordingLogger, sleep, waitUntil, type QueueConfig } from '../harness/queue-contract';

/**
 * A handler that settles its job and then still has work to finish (the worker removes its
 * downloaded source after `complete()`), while a trigger that came during the run makes the job due
 * again at once: the run that picks it up must keep its lease, so no other worker starts the image.
 */

const dir = mkdtempSync(join(tmpdir(), 'stx-queue-sqlite-settled-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('SQLite job queue, a handler still running after it settled its job', () => {
  const opened: JobQueue[] = [];
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((queue) => queue.close()));
  });

  it('keeps renewing the lease of the run that took the job again, so no worker starts the image again meanwhile', async () => {
    const config: QueueConfig = {
      backend: 'sqlite',
      sqlite_path: join(dir, 'rawcache.sqlite'),
      amqp_url: null,
      amqp_queue: 'unused',
      amqp_partitions: 1,
      lease_seconds: 1,
    };
    const logsA = recordingLogger();
    const first = await createJobQueue(config, logsA.logger, { pollIntervalMs: 50 });
    const second = await createJobQueue(config, recordingLogger().logger, { pollIntervalMs: 50 });
    opened.push(first, second);
    const id = imageId();
    const runs: Array<{ worker: string; start: number; end?: number }> = [];

    const handler = (worker: string) => async (job: ClaimedJob) => {
      const run: { worker: string; start: number; end?: number } = { worker, start: Date.now() };
      runs.push(run);
      if (runs.length === 1) {
        await first.enqueue(id, 'update');
        await job.complete();
        // Cleanup after settling, long enough for a poll to claim the job again.
        await sleep(400);
      } else {
        // A conversion that outlasts the lease several times over: only renewals keep it.
        await sleep(runs.length === 2 ? 3_500 : 50);
        await job.complete();
      }
      run.end = Date.now();
    };

    await first.enqueue(id, 'upload');
    await first.consume(handler('first'), { concurrency: 2 });
    await waitUntil(() => runs.length >= 2, 5_000, 'the job to be claimed again');
    await second.consume(handler('second'), { concurrency: 2 });
    await waitUntil(() => runs[1].end !== undefined, 10_000, 'the second run to end');
    await sleep(500);

    expect(runs.map((r) => r.worker)).toEqual(['first', 'first']);
    expect(logsA.entries.filter((e) => /lease (was )?lost/.test(e.message))).toEqual([]);
  });
});
