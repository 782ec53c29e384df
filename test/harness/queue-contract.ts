import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { randomUUID } from 'node:crypto';
import path, { join } from 'node:path';
import { Writable } from 'node:stream';
import winston from 'winston';
import type { RawCacheConfig } from '../../src/config/load';
import type { Logger } from '../../src/ops/log';
import { createJobQueue, partitionOf, type JobQueueOptions } from '../../src/rawcache/queue';
import { OwnershipLostError, type ClaimedJob, type JobQueue, type RawCacheJob } from '../../src/rawcache/types';

/*
 * The behaviour every JobQueue backend must show (src/rawcache/types.ts), run against each of
 * them by its own suite: test/unit/queue-sqlite.test.ts and test/integration/queue-amqp.test.ts.
 */

export type QueueConfig = RawCacheConfig['queue'];

/**
 * A counter of SQLite stores, so that every queue config made in one process has a database of its own.
 */
let sqliteStores = 0;

/** Settings of an SQLite queue in a database of its own under `dir`. */
export function sqliteQueueConfig(dir: string, overrides: Partial<QueueConfig> = {}): QueueConfig {
  return {
    backend: 'sqlite',
    sqlite_path: join(dir, `queue-${++sqliteStores}`, 'rawcache.sqlite'),
    amqp_url: null,
    amqp_queue: 'unused',
    amqp_partitions: 1,
    lease_seconds: 5,
    ...overrides,
  };
}

export interface QueueStore {
  /** Settings of a queue no other test uses (its own database file or queue names). */
  config: QueueConfig;
  /** A new queue instance on that store: for exclusivity it stands for another worker process. */
  open(options?: JobQueueOptions): Promise<JobQueue>;
}

/** A consumer whose running job the test can make the queue take away, the way production loses one. */
export interface LosableConsumer {
  queue: JobQueue;
  /** SQLite: its lease runs out and another worker claims the row; RabbitMQ: its connection is cut. */
  takeAway(): Promise<void>;
}

export interface QueueFixture {
  newStore(): QueueStore;
  /** A queue instance on `store` whose running job `takeAway()` takes from it. */
  openLosable(store: QueueStore): Promise<LosableConsumer>;
  /** How long a job held by a consumer that died takes to be delivered again, at most. */
  redeliveryWithinMs: number;
}

export interface LogEntry {
  level: string;
  message: string;
  [key: string]: unknown;
}

/** A winston logger that keeps its entries for assertions (and prints them with QUEUE_TEST_LOGS=1). */
export function recordingLogger(): { logger: Logger; entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) entries.push(JSON.parse(line) as LogEntry);
      callback();
    },
  });
  const transports: winston.transport[] = [new winston.transports.Stream({ stream })];
  if (process.env.QUEUE_TEST_LOGS === '1') transports.push(new winston.transports.Console());
  return { logger: winston.createLogger({ level: 'debug', format: winston.format.json(), transports }), entries };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function waitUntil(condition: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

export interface Gate {
  promise: Promise<void>;
  open(): void;
}

export function gate(): Gate {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

export function imageId(): string {
  return randomUUID();
}

/** Orders events in this process without the ties a millisecond clock has. */
let eventCounter = 0;
function nextEvent(): number {
  return ++eventCounter;
}

/** What a handler saw: the job's fields and when it started. */
export interface Run extends RawCacheJob {
  startedAt: number;
}

/** A run with its place among this process's events. */
interface OrderedRun extends Run {
  order: number;
}

/** A handler's record of the job it was given, as it starts. */
export function snapshot(job: ClaimedJob): OrderedRun {
  return { imageId: job.imageId, reason: job.reason, attempts: job.attempts, enqueuedAt: job.enqueuedAt, startedAt: Date.now(), order: nextEvent() };
}

const REPO_ROOT = path.resolve(__dirname, '..', '..');

/** The start of a worker process's script: loads the TypeScript sources directly, and the queue. */
const WORKER_PRELUDE = `
      const fs = require('node:fs');
      const ts = require('typescript');
      require.extensions['.ts'] = (module, filename) => {
        const { outputText } = ts.transpileModule(fs.readFileSync(filename, 'utf8'), {
          fileName: filename,
          compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
        });
        module._compile(outputText, filename);
      };
      const winston = require('winston');
      const { createJobQueue } = require(${JSON.stringify(path.join(REPO_ROOT, 'src', 'rawcache', 'queue', 'index.ts'))});
      const logger = winston.createLogger({ transports: [new winston.transports.Console({ silent: true })] });
`;

/**
 * A worker in a process of its own that takes one job and hangs in its handler (never settles),
 * for the "consumer dies" case: kill it with SIGKILL. Runs the TypeScript sources directly.
 */
export class HangingWorker {
  readonly started: Promise<string>;
  private readonly child: ChildProcess;
  private output = '';

  constructor(config: QueueConfig) {
    const script = `${WORKER_PRELUDE}
      (async () => {
        const queue = await createJobQueue(JSON.parse(process.env.QUEUE_CONFIG), logger);
        await queue.consume(async (job) => {
          process.stdout.write('started ' + job.imageId + '\\n');
          await new Promise(() => undefined);
        }, { concurrency: 1 });
      })().catch((err) => {
        process.stderr.write(String(err && err.stack) + '\\n');
        process.exit(1);
      });
    `;
    this.child = spawn(process.execPath, ['-e', script], {
      cwd: REPO_ROOT,
      env: { ...process.env, QUEUE_CONFIG: JSON.stringify(config) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stderr!.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    this.started = new Promise((resolve, reject) => {
      let stdout = '';
      this.child.stdout!.on('data', (chunk: Buffer) => {
        stdout += chunk.toString();
        const match = /^started (\S+)$/m.exec(stdout);
        if (match) resolve(match[1]);
      });
      this.child.once('exit', (code, signal) => reject(new Error(`worker process exited (${code ?? signal}) before taking a job:\n${this.output}`)));
    });
    this.started.catch(() => undefined);
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

/** One line of a shared event log: a worker process started or ended a job. */
export interface WorkerEvent {
  kind: 'start' | 'end';
  worker: string;
  imageId: string;
}

/** The events appended to `file` by RecordingWorkers, in the order the kernel appended them. */
export function readWorkerEvents(file: string): WorkerEvent[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [kind, worker, id] = line.split(' ');
      return { kind: kind as WorkerEvent['kind'], worker, imageId: id };
    });
}

/**
 * What a shared event log shows: runs of one image that overlapped (the fence broken), and the
 * most worker processes that ran a job at the same moment (the capacity).
 */
export function analyseWorkerEvents(events: WorkerEvent[]): { overlaps: string[]; mostWorkersAtOnce: number } {
  const runningImages = new Set<string>();
  const runningPerWorker = new Map<string, number>();
  const overlaps: string[] = [];
  let mostWorkersAtOnce = 0;
  for (const event of events) {
    if (event.kind === 'start') {
      if (runningImages.has(event.imageId)) overlaps.push(event.imageId);
      runningImages.add(event.imageId);
      runningPerWorker.set(event.worker, (runningPerWorker.get(event.worker) ?? 0) + 1);
    } else {
      runningImages.delete(event.imageId);
      runningPerWorker.set(event.worker, (runningPerWorker.get(event.worker) ?? 1) - 1);
    }
    mostWorkersAtOnce = Math.max(mostWorkersAtOnce, [...runningPerWorker.values()].filter((n) => n > 0).length);
  }
  return { overlaps, mostWorkersAtOnce };
}

/**
 * A worker process (concurrency 1) that appends "start <name> <image>" and "end <name> <image>" to
 * a shared file around each job. A job is held until the file shows another worker process running
 * one too, or `holdMs` passed: two processes that can work at once are seen doing so, and one
 * that cannot makes the other wait out the hold (which the event log then shows).
 */
export class RecordingWorker {
  readonly consuming: Promise<void>;
  private readonly child: ChildProcess;
  private output = '';

  constructor(config: QueueConfig, readonly name: string, eventsFile: string, holdMs: number) {
    const script = `${WORKER_PRELUDE}
      const events = process.env.EVENTS_FILE;
      const name = process.env.WORKER_NAME;
      const holdMs = Number(process.env.HOLD_MS);
      const othersRunning = () => {
        const running = new Map();
        for (const line of fs.readFileSync(events, 'utf8').split('\\n').filter(Boolean)) {
          const [kind, worker] = line.split(' ');
          if (worker !== name) running.set(worker, (running.get(worker) || 0) + (kind === 'start' ? 1 : -1));
        }
        return [...running.values()].some((n) => n > 0);
      };
      (async () => {
        const queue = await createJobQueue(JSON.parse(process.env.QUEUE_CONFIG), logger);
        await queue.consume(async (job) => {
          fs.appendFileSync(events, 'start ' + name + ' ' + job.imageId + '\\n');
          const until = Date.now() + holdMs;
          while (Date.now() < until && !othersRunning()) await new Promise((r) => setTimeout(r, 10));
          fs.appendFileSync(events, 'end ' + name + ' ' + job.imageId + '\\n');
          await job.complete();
        }, { concurrency: 1 });
        process.stdout.write('consuming\\n');
      })().catch((err) => {
        process.stderr.write(String(err && err.stack) + '\\n');
        process.exit(1);
      });
    `;
    this.child = spawn(process.execPath, ['-e', script], {
      cwd: REPO_ROOT,
      env: { ...process.env, QUEUE_CONFIG: JSON.stringify(config), EVENTS_FILE: eventsFile, WORKER_NAME: name, HOLD_MS: String(holdMs) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stderr!.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    this.consuming = new Promise((resolve, reject) => {
      let stdout = '';
      this.child.stdout!.on('data', (chunk: Buffer) => {
        stdout += chunk.toString();
        if (/^consuming$/m.test(stdout)) resolve();
      });
      this.child.once('exit', (code, signal) => reject(new Error(`worker process ${name} exited (${code ?? signal}):\n${this.output}`)));
    });
    this.consuming.catch(() => undefined);
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

export function describeJobQueueContract(backend: string, fixture: () => QueueFixture): void {
  describe(`JobQueue contract (${backend})`, () => {
    const opened: JobQueue[] = [];
    const workers: HangingWorker[] = [];
    let store: QueueStore;
    let log: ReturnType<typeof recordingLogger>;

    const open = async (options?: JobQueueOptions): Promise<JobQueue> => {
      const queue = await createJobQueue(store.config, log.logger, options);
      opened.push(queue);
      return queue;
    };

    beforeEach(() => {
      store = fixture().newStore();
      log = recordingLogger();
    });

    afterEach(async () => {
      for (const worker of workers.splice(0)) worker.kill();
      await Promise.all(opened.splice(0).map((queue) => queue.close()));
    });

    it('keeps an enqueued job once enqueue resolves, and delivers it to a consumer opened later', async () => {
      const producer = await open();
      const id = imageId();
      const before = Date.now();
      await producer.enqueue(id, 'upload');
      expect(await producer.health()).toMatchObject({ ok: true, depth: 1 });
      await producer.close();

      const consumer = await open();
      const runs: Run[] = [];
      await consumer.consume(async (job) => {
        runs.push(snapshot(job));
        await job.complete();
      }, { concurrency: 1 });
      await waitUntil(() => runs.length === 1, 5_000, 'the job');
      expect(runs[0]).toMatchObject({ imageId: id, reason: 'upload', attempts: 0 });
      expect(Date.parse(runs[0].enqueuedAt)).toBeGreaterThanOrEqual(before - 1_000);
      expect(Date.parse(runs[0].enqueuedAt)).toBeLessThanOrEqual(Date.now());
      await waitUntil(async () => (await consumer.health()).depth === 0, 5_000, 'an empty queue');
      await sleep(300);
      expect(runs).toHaveLength(1);
    });

    // How many runs a burst of triggers costs differs (SQLite: one; RabbitMQ: what the prefetch lets the
    // worker merge); what every backend keeps is the last trigger, and no more runs than triggers.
    it('runs a burst of triggers for one image at most once each, and the last run sees the latest reason', async () => {
      const queue = await open();
      const x = imageId();
      const y = imageId();
      await queue.enqueue(x, 'upload');
      await queue.enqueue(x, 'update');
      await queue.enqueue(y, 'import');
      await queue.enqueue(x, 'operator');
      const runs: Run[] = [];
      await queue.consume(async (job) => {
        runs.push(snapshot(job));
        await sleep(50);
        await job.complete();
      }, { concurrency: 3 });
      await waitUntil(() => runs.some((r) => r.imageId === x && r.reason === 'operator') && runs.some((r) => r.imageId === y), 5_000, 'both images');
      await sleep(400);
      const xRuns = runs.filter((r) => r.imageId === x);
      expect(xRuns.length).toBeLessThanOrEqual(3);
      expect(xRuns[xRuns.length - 1]).toMatchObject({ reason: 'operator', attempts: 0 });
      expect(runs.filter((r) => r.imageId === y)).toHaveLength(1);
    });

    it('runs an image again after complete() when a trigger arrived while its job ran', async () => {
      const queue = await open();
      const id = imageId();
      const runs: Run[] = [];
      const firstRunHeld = gate();
      await queue.consume(async (job) => {
        runs.push(snapshot(job));
        if (runs.length === 1) await firstRunHeld.promise;
        await job.complete();
      }, { concurrency: 2 });
      await queue.enqueue(id, 'upload');
      await waitUntil(() => runs.length === 1, 5_000, 'the first run');
      await queue.enqueue(id, 'update');
      await sleep(300);
      expect(runs).toHaveLength(1);
      firstRunHeld.open();
      await waitUntil(() => runs.length === 2, 5_000, 'the second run');
      expect(runs[1]).toMatchObject({ imageId: id, reason: 'update', attempts: 0 });
      await sleep(400);
      expect(runs).toHaveLength(2);
    });

    it('never runs two jobs for one image at once, with three consumers and many triggers for few images', async () => {
      const images = Array.from({ length: 4 }, imageId);
      const active = new Set<string>();
      const overlaps: string[] = [];
      const runs: Array<OrderedRun & { consumer: number }> = [];
      const running = [0, 0, 0];
      let mostAtOnce = 0;
      const consumers = await Promise.all([open(), open(), open()]);
      await Promise.all(
        consumers.map((consumer, n) =>
          consumer.consume(async (job) => {
            if (active.has(job.imageId)) overlaps.push(job.imageId);
            active.add(job.imageId);
            mostAtOnce = Math.max(mostAtOnce, ++running[n]);
            runs.push({ ...snapshot(job), consumer: n });
            await sleep(5 + Math.floor(Math.random() * 25));
            running[n]--;
            active.delete(job.imageId);
            if (job.attempts < 2 && Math.random() < 0.15) await job.retry(0);
            else await job.complete();
          }, { concurrency: 3 }),
        ),
      );
      const producer = await open();
      // Recorded before enqueue is called: the broker may deliver a message before its publisher
      // has the confirm, so a run that serves the last trigger can start before enqueue resolves.
      const lastTrigger = new Map<string, number>();
      for (let burst = 0; burst < 6; burst++) {
        for (let i = 0; i < 10; i++) {
          const id = images[(burst * 10 + i) % images.length];
          lastTrigger.set(id, nextEvent());
          await producer.enqueue(id, i % 2 === 0 ? 'upload' : 'update');
        }
        await sleep(40);
      }
      // No trigger is lost: each image has a run that started after its last trigger was recorded.
      await waitUntil(
        () => images.every((id) => runs.some((r) => r.imageId === id && r.order > lastTrigger.get(id)!)),
        15_000,
        'a run after the last trigger of every image',
      );
      await waitUntil(async () => active.size === 0 && (await producer.health()).depth === 0, 10_000, 'the queue to drain');
      expect(overlaps).toEqual([]);
      expect(mostAtOnce).toBeLessThanOrEqual(3);
      expect(runs.length).toBeGreaterThanOrEqual(images.length);
    });

    it('runs jobs in two worker processes (concurrency 1 each) at once, never two runs of one image at once', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'queue-capacity-'));
      const eventsFile = join(dir, 'events');
      writeFileSync(eventsFile, '');
      const pair = [new RecordingWorker(store.config, 'a', eventsFile, 3_000), new RecordingWorker(store.config, 'b', eventsFile, 3_000)];
      try {
        await Promise.all(pair.map((worker) => worker.consuming));
        const producer = await open();
        // Images of different partitions where the backend has them (RabbitMQ): one partition is
        // one image at a time by design, so four ids that happened to share one would prove nothing.
        const partitions = store.config.backend === 'amqp' ? store.config.amqp_partitions : 1;
        const images: string[] = [];
        while (images.length < 4) {
          const id = imageId();
          const taken = images.map((other) => partitionOf(other, partitions));
          if (taken.length >= partitions || !taken.includes(partitionOf(id, partitions))) images.push(id);
        }
        for (const id of images) await producer.enqueue(id, 'upload');
        // Each image is triggered again once its first run is seen (a run of it may be in progress),
        // which gives the fence something to hold: a second job of an image a worker is running.
        const retriggered = new Set<string>();
        await waitUntil(
          async () => {
            for (const event of readWorkerEvents(eventsFile)) {
              if (event.kind !== 'start' || retriggered.has(event.imageId)) continue;
              retriggered.add(event.imageId);
              await producer.enqueue(event.imageId, 'update');
              await producer.enqueue(event.imageId, 'operator');
            }
            const ends = readWorkerEvents(eventsFile).filter((event) => event.kind === 'end');
            return images.every((id) => ends.filter((event) => event.imageId === id).length >= 2);
          },
          60_000,
          'two runs of every image',
        );
        await waitUntil(async () => (await producer.health()).depth === 0, 20_000, 'the queue to drain');
        for (const worker of pair) worker.kill();
        const events = readWorkerEvents(eventsFile);
        const { overlaps, mostWorkersAtOnce } = analyseWorkerEvents(events);
        expect(overlaps).toEqual([]);
        expect(mostWorkersAtOnce).toBe(2);
        expect(new Set(events.map((event) => event.worker))).toEqual(new Set(['a', 'b']));
      } finally {
        for (const worker of pair) worker.kill();
        rmSync(dir, { recursive: true, force: true });
      }
    }, 120_000);

    it('aborts a handler whose job the queue took away, refuses its ownership checks, and runs the job elsewhere', async () => {
      const losable = await fixture().openLosable(store);
      opened.push(losable.queue);
      const id = imageId();
      await losable.queue.enqueue(id, 'upload');
      let held: ClaimedJob | undefined;
      const lost = new Promise<void>((resolve) => {
        void losable.queue.consume(async (job) => {
          held = job;
          await new Promise<void>((aborted) => job.signal.addEventListener('abort', () => aborted(), { once: true }));
          resolve();
          await job.release().catch(() => undefined);
        }, { concurrency: 1 });
      });
      await waitUntil(() => held !== undefined, 10_000, 'the job to be claimed');
      expect(held!.claimId).toMatch(/^[A-Za-z0-9-]+\.\d+\.[0-9a-f]+\.\d+$/);
      await held!.confirmOwnership();
      expect(held!.signal.aborted).toBe(false);

      const other = await open();
      const runs: Run[] = [];
      await other.consume(async (job) => {
        runs.push(snapshot(job));
        await job.confirmOwnership();
        await job.complete();
      }, { concurrency: 1 });
      await losable.takeAway();
      await lost;
      expect(held!.signal.reason).toBeInstanceOf(OwnershipLostError);
      await expect(held!.confirmOwnership()).rejects.toBeInstanceOf(OwnershipLostError);
      await waitUntil(() => runs.length === 1, fixture().redeliveryWithinMs + 5_000, 'the job to run on the other consumer');
      expect(runs[0].imageId).toBe(id);
    });

    it('runs jobs under the canonical (lower-case) image id, whatever case the trigger used', async () => {
      const queue = await open();
      const id = imageId();
      await queue.enqueue(id.toUpperCase(), 'upload');
      await queue.enqueue(id, 'update');
      const runs: Run[] = [];
      await queue.consume(async (job) => {
        runs.push(snapshot(job));
        await job.complete();
      }, { concurrency: 2 });
      await waitUntil(async () => runs.length >= 1 && (await queue.health()).depth === 0, 5_000, 'the jobs to run');
      expect(new Set(runs.map((r) => r.imageId))).toEqual(new Set([id]));
    });

    it('runs at most `concurrency` handlers at once in one consumer', async () => {
      const queue = await open();
      const ids = Array.from({ length: 6 }, imageId);
      for (const id of ids) await queue.enqueue(id, 'upload');
      const held = gate();
      const done: string[] = [];
      let running = 0;
      let mostAtOnce = 0;
      await queue.consume(async (job) => {
        mostAtOnce = Math.max(mostAtOnce, ++running);
        await held.promise;
        running--;
        done.push(job.imageId);
        await job.complete();
      }, { concurrency: 2 });
      await waitUntil(() => running === 2, 5_000, 'two running jobs');
      await sleep(400);
      expect(running).toBe(2);
      held.open();
      await waitUntil(() => done.length === ids.length, 5_000, 'every job');
      expect(mostAtOnce).toBe(2);
      expect([...done].sort()).toEqual([...ids].sort());
    });

    it('runs a job again after retry(delay), not before the delay, with attempts + 1', async () => {
      const queue = await open();
      const id = imageId();
      const runs: Run[] = [];
      let retriedAt = 0;
      await queue.consume(async (job) => {
        runs.push(snapshot(job));
        if (runs.length === 1) {
          retriedAt = Date.now();
          await job.retry(800);
        } else {
          await job.complete();
        }
      }, { concurrency: 1 });
      await queue.enqueue(id, 'import');
      await waitUntil(() => runs.length === 2, 6_000, 'the retried run');
      expect(runs[1]).toMatchObject({ imageId: id, reason: 'import', attempts: 1, enqueuedAt: runs[0].enqueuedAt });
      const waited = runs[1].startedAt - retriedAt;
      expect(waited).toBeGreaterThanOrEqual(750);
      expect(waited).toBeLessThan(800 + 2_500);
      await sleep(300);
      expect(runs).toHaveLength(2);
    });

    it('hands a job back with release(), at once and without counting an attempt', async () => {
      const queue = await open();
      const id = imageId();
      const runs: Run[] = [];
      await queue.consume(async (job) => {
        runs.push(snapshot(job));
        if (runs.length === 1) await job.release();
        else await job.complete();
      }, { concurrency: 1 });
      await queue.enqueue(id, 'upload');
      await waitUntil(() => runs.length === 2, 3_000, 'the released job to come back');
      expect(runs[1]).toMatchObject({ imageId: id, reason: 'upload', attempts: 0 });
      expect(runs[1].startedAt - runs[0].startedAt).toBeLessThan(1_500);
    });

    it('retries a job whose handler threw, with the default backoff', async () => {
      const delays: number[] = [];
      const queue = await open({
        retryDelayMs: (attempts) => {
          delays.push(attempts);
          return 300;
        },
      });
      const id = imageId();
      const runs: Run[] = [];
      await queue.consume(async (job) => {
        runs.push(snapshot(job));
        if (runs.length === 1) throw new Error('Glance answered 503');
        await job.complete();
      }, { concurrency: 1 });
      await queue.enqueue(id, 'upload');
      await waitUntil(() => runs.length === 2, 5_000, 'the retried run');
      expect(delays).toEqual([0]);
      expect(runs[1]).toMatchObject({ imageId: id, attempts: 1 });
      expect(runs[1].startedAt - runs[0].startedAt).toBeGreaterThanOrEqual(280);
      expect(log.entries).toContainEqual(expect.objectContaining({ level: 'warn', error: 'Glance answered 503', image_id: id }));
    });

    it('retries a job whose handler returned without settling it', async () => {
      const queue = await open({ retryDelayMs: () => 100 });
      const id = imageId();
      const runs: Run[] = [];
      await queue.consume(async (job) => {
        runs.push(snapshot(job));
        if (runs.length > 1) await job.complete();
      }, { concurrency: 1 });
      await queue.enqueue(id, 'upload');
      await waitUntil(() => runs.length === 2, 5_000, 'the retried run');
      expect(runs[1]).toMatchObject({ imageId: id, attempts: 1 });
    });

    it('rejects a second settlement of one job', async () => {
      const queue = await open();
      const outcomes: string[] = [];
      await queue.consume(async (job) => {
        await job.complete();
        await job.retry(10).then(
          () => outcomes.push('second settled'),
          (err: Error) => outcomes.push(err.message),
        );
      }, { concurrency: 1 });
      const id = imageId();
      await queue.enqueue(id, 'upload');
      await waitUntil(() => outcomes.length === 1, 5_000, 'the job');
      expect(outcomes[0]).toMatch(/already settled/);
    });

    it('stopConsuming() takes no new job and resolves only when the handlers in flight have settled', async () => {
      const worker = await open();
      const held = gate();
      const seen: string[] = [];
      await worker.consume(async (job) => {
        seen.push(job.imageId);
        await held.promise;
        await job.complete();
      }, { concurrency: 2 });
      const first = imageId();
      await worker.enqueue(first, 'upload');
      await waitUntil(() => seen.length === 1, 5_000, 'the first job');

      let stopped = false;
      const stopping = worker.stopConsuming().then(() => (stopped = true));
      const second = imageId();
      await worker.enqueue(second, 'upload');
      await sleep(400);
      expect(stopped).toBe(false);
      held.open();
      await stopping;
      expect(seen).toEqual([first]);

      const next = await open();
      const nextSeen: string[] = [];
      await next.consume(async (job) => {
        nextSeen.push(job.imageId);
        await job.complete();
      }, { concurrency: 2 });
      await waitUntil(() => nextSeen.length === 1, 5_000, 'the job queued while stopping');
      await sleep(300);
      expect(nextSeen).toEqual([second]);
    });

    it('delivers a job again when the worker process holding it is killed, and not before', async () => {
      const id = imageId();
      const producer = await open();
      await producer.enqueue(id, 'upload');
      const doomed = new HangingWorker(store.config);
      workers.push(doomed);
      expect(await doomed.started).toBe(id);

      const survivor = await open();
      const runs: Run[] = [];
      await survivor.consume(async (job) => {
        runs.push(snapshot(job));
        await job.complete();
      }, { concurrency: 1 });
      await sleep(500);
      expect(runs).toEqual([]);

      const killedAt = Date.now();
      doomed.kill();
      await waitUntil(() => runs.length === 1, fixture().redeliveryWithinMs, 'the job to be delivered again');
      expect(runs[0]).toMatchObject({ imageId: id, reason: 'upload', attempts: 0 });
      expect(runs[0].startedAt - killedAt).toBeLessThan(fixture().redeliveryWithinMs);
    });
  });
}
