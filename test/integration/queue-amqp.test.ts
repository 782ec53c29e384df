import { connect, type Channel, type ChannelModel } from 'amqplib';
import { createJobQueue, partitionOf, QueueUnavailableError } from '../../src/rawcache/queue';
import type { JobQueue } from '../../src/rawcache/types';
import { startAmqpRelay } from '../harness/amqp-relay';
import { startRabbitMQ, type RunningRabbitMQ } from '../harness/rabbitmq';
import { describeJobQueueContract, gate, imageId, recordingLogger, sleep, snapshot, waitUntil, type QueueConfig, type Run } from '../harness/queue-contract';

let rabbit: RunningRabbitMQ;
beforeAll(async () => {
  rabbit = await startRabbitMQ();
}, 90_000);
afterAll(async () => {
  await rabbit?.stop();
}, 60_000);

let stores = 0;
function amqpConfig(overrides: Partial<QueueConfig> = {}): QueueConfig {
  return {
    backend: 'amqp',
    sqlite_path: '/nonexistent/unused.sqlite',
    amqp_url: rabbit.url,
    // Queue names of their own per test: nothing a previous test left is delivered to the next.
    amqp_queue: `stx-glance-proxy-test.${process.pid}.${++stores}`,
    amqp_partitions: 4,
    lease_seconds: 60,
    ...overrides,
  };
}

describeJobQueueContract('amqp', () => ({
  newStore: () => {
    const config = amqpConfig();
    return { config, open: (options) => createJobQueue(config, recordingLogger().logger, options) };
  },
  openLosable: async (store) => {
    // Through a relay: cutting it is a network cut between this worker and the broker.
    const relay = await startAmqpRelay(rabbit.port);
    const queue = await createJobQueue({ ...store.config, amqp_url: relay.url }, recordingLogger().logger);
    const close = queue.close.bind(queue);
    queue.close = async () => {
      await close();
      await relay.close();
    };
    return { queue, takeAway: () => relay.close() };
  },
  // The kernel closes a killed process's socket: the broker requeues its jobs at once.
  redeliveryWithinMs: 5_000,
}));

describe('RabbitMQ job queue', () => {
  const opened: JobQueue[] = [];
  let admin: ChannelModel | undefined;

  const open = async (config: QueueConfig, logger = recordingLogger().logger): Promise<JobQueue> => {
    const queue = await createJobQueue(config, logger);
    opened.push(queue);
    return queue;
  };
  /** A channel of our own, to look at the broker the way an operator would. */
  const inspect = async (): Promise<Channel> => {
    admin ??= await connect(rabbit.url);
    admin.on('error', () => undefined);
    const channel = await admin.createChannel();
    channel.on('error', () => undefined);
    return channel;
  };

  afterEach(async () => {
    if (!rabbit.isRunning()) await rabbit.resume();
    await Promise.all(opened.splice(0).map((queue) => queue.close()));
    await admin?.close().catch(() => undefined);
    admin = undefined;
  });

  it('spreads images over durable single-active-consumer partition queues by a stable hash of the id', async () => {
    const config = amqpConfig();
    const queue = await open(config);
    const ids = Array.from({ length: 40 }, imageId);
    for (const id of ids) await queue.enqueue(id, 'upload');
    const channel = await inspect();
    for (let n = 0; n < config.amqp_partitions; n++) {
      const name = `${config.amqp_queue}.${n}`;
      const { messageCount } = await channel.checkQueue(name);
      expect(messageCount).toBe(ids.filter((id) => partitionOf(id, config.amqp_partitions) === n).length);
    }
    expect(partitionOf(ids[0].toUpperCase(), 4)).toBe(partitionOf(ids[0], 4));
    expect(await queue.health()).toEqual({ ok: true, depth: 40 });
    // Declaring it without x-single-active-consumer is refused: the broker holds it with that argument.
    await expect(channel.assertQueue(`${config.amqp_queue}.0`, { durable: true })).rejects.toThrow(/PRECONDITION_FAILED.*x-single-active-consumer/);
  });

  it('merges the triggers a worker holds for a running image into one waiting job', async () => {
    const config = amqpConfig({ amqp_partitions: 1 });
    const queue = await open(config);
    const held = gate();
    const runs: Run[] = [];
    await queue.consume(async (job) => {
      runs.push(snapshot(job));
      if (runs.length === 1) await held.promise;
      await job.complete();
    }, { concurrency: 3 });
    const id = imageId();
    await queue.enqueue(id, 'upload');
    await waitUntil(() => runs.length === 1, 5_000, 'the first run');
    const beforeUpdate = Date.now();
    await queue.enqueue(id, 'update');
    const afterUpdate = Date.now();
    await queue.enqueue(id, 'import');
    await queue.enqueue(id, 'operator');
    // Delivered and merged: nothing is left in the queue although three triggers wait.
    await waitUntil(async () => (await queue.health()).depth === 0, 5_000, 'every trigger to be delivered');
    held.open();
    await waitUntil(() => runs.length === 2, 5_000, 'the merged run');
    await sleep(400);
    expect(runs).toHaveLength(2);
    expect(runs[1]).toMatchObject({ imageId: id, reason: 'operator', attempts: 0 });
    expect(Date.parse(runs[1].enqueuedAt)).toBeGreaterThanOrEqual(beforeUpdate - 1);
    expect(Date.parse(runs[1].enqueuedAt)).toBeLessThanOrEqual(afterUpdate);
  });

  it('rejects enqueue at once while the broker is down, then reconnects and resumes consuming', async () => {
    const config = amqpConfig();
    const { logger, entries } = recordingLogger();
    const producer = await open(config, logger);
    await rabbit.halt('SIGTERM');
    await waitUntil(async () => !(await producer.health()).ok, 10_000, 'the queue to notice the broker is gone');

    const id = imageId();
    const started = Date.now();
    const failure = await producer.enqueue(id, 'upload').then(
      () => undefined,
      (err: Error) => err,
    );
    expect(Date.now() - started).toBeLessThan(250);
    expect(failure).toBeInstanceOf(QueueUnavailableError);
    expect(failure?.message).toMatch(new RegExp(`RabbitMQ at 127\\.0\\.0\\.1:${rabbit.port} vhost / is not connected .*; the raw-cache job for image ${id} was not queued`));
    expect((await producer.health()).detail).toMatch(/not connected to RabbitMQ at 127\.0\.0\.1/);

    // A worker that starts during the outage starts anyway and gets its jobs once the broker is back.
    const consumer = await open(config);
    const seen: string[] = [];
    await consumer.consume(async (job) => {
      seen.push(job.imageId);
      await job.complete();
    }, { concurrency: 1 });

    await rabbit.resume();
    await waitUntil(async () => (await producer.health()).ok, 20_000, 'the producer to reconnect');
    await producer.enqueue(id, 'upload');
    await waitUntil(() => seen.length === 1, 20_000, 'the consumer to reconnect and take the job');
    expect(seen).toEqual([id]);
    expect(entries).toContainEqual(expect.objectContaining({ level: 'warn', message: 'raw-cache queue: lost the connection to RabbitMQ; reconnecting' }));
    expect(entries).toContainEqual(expect.objectContaining({ message: 'raw-cache queue: reconnected to RabbitMQ' }));
    // Credentials never reach the log.
    expect(JSON.stringify(entries)).not.toContain('guest:guest');
  });

  it('keeps queued and unacknowledged jobs across a broker crash and restart, and consumers resume', async () => {
    const config = amqpConfig();
    const producer = await open(config);
    // RabbitMQ 3.10 keeps a queue's declaration in Mnesia, which can lose a declaration made moments
    // before a crash, and with it the queue's confirmed messages (seen here: one of four partition
    // queues gone after a SIGKILL about a second after it was declared). Partition queues of a
    // deployment are declared once and live on; a clean restart puts these on disk the same way.
    await rabbit.restart('SIGTERM');
    await waitUntil(async () => (await producer.health()).ok, 20_000, 'the producer to reconnect');
    const ids = Array.from({ length: 20 }, imageId);
    for (const id of ids) await producer.enqueue(id, 'upload');

    const consumerLog = recordingLogger();
    const consumer = await open(config, consumerLog.logger);
    const held = gate();
    const runs: string[] = [];
    await consumer.consume(async (job) => {
      runs.push(job.imageId);
      await held.promise;
      await job.complete();
    }, { concurrency: 2 });
    await waitUntil(() => runs.length === 2, 5_000, 'two jobs in hand');
    const unacked = [...runs];

    await rabbit.restart('SIGKILL');
    // The handlers that ran across the crash settle now: their acks have nowhere to go.
    held.open();
    await waitUntil(() => ids.every((id) => runs.includes(id)), 90_000, 'every job after the restart').catch(async (err: Error) => {
      // What a failure needs to be understood: the jobs that never came, what the queue said, the broker's log.
      const missing = ids.filter((id) => !runs.includes(id));
      throw new Error(
        `${err.message}: ${missing.length} of ${ids.length} jobs never ran; health ${JSON.stringify(await consumer.health())}\n` +
          `queue log:\n${consumerLog.entries.map((entry) => JSON.stringify(entry)).join('\n')}\n${rabbit.logs()}`,
      );
    });
    for (const id of unacked) expect(runs.filter((seen) => seen === id).length).toBe(2);
    await waitUntil(async () => (await producer.health()).depth === 0, 10_000, 'an empty queue');
    await producer.enqueue(imageId(), 'reconcile');
  }, 150_000);

  it('drops a connection on which the broker does not answer the setup, keeps reconnecting, and resumes when it answers', async () => {
    const relay = await startAmqpRelay(rabbit.port);
    const { logger, entries } = recordingLogger();
    try {
      const config = amqpConfig({ amqp_url: relay.url });
      // Quiet on every channel: the publisher channel and the queue declarations get no answer.
      relay.mute('all-channels');
      const started = Date.now();
      const queue = await createJobQueue(config, logger, { setupTimeoutMs: 500 });
      opened.push(queue);
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(await queue.health()).toEqual({
        ok: false,
        detail: expect.stringMatching(/not connected to RabbitMQ at 127\.0\.0\.1:\d+ vhost \/: no answer to opening a channel and declaring the queues within 500 ms/),
      });
      await expect(queue.enqueue(imageId(), 'upload')).rejects.toThrow(QueueUnavailableError);
      expect(entries).toContainEqual(expect.objectContaining({ level: 'warn', message: 'raw-cache queue: RabbitMQ does not answer; dropping the connection' }));

      // Quiet only on the consumer's channel (the second one opened): publishing works, consuming
      // cannot start, and each attempt is dropped after the deadline instead of hanging.
      relay.mute([2]);
      await waitUntil(() => entries.some((entry) => entry.message === 'raw-cache queue: reconnected to RabbitMQ'), 15_000, 'the publisher to connect');
      const seen: string[] = [];
      await queue.consume(async (job) => {
        seen.push(job.imageId);
        await job.complete();
      }, { concurrency: 1 });
      const id = imageId();
      await waitUntil(
        () =>
          queue.enqueue(id, 'upload').then(
            () => true,
            () => false,
          ),
        15_000,
        'an enqueue that is kept',
      );
      await waitUntil(() => entries.some((entry) => /no answer to starting the consumers within 500 ms/.test(JSON.stringify(entry))), 15_000, 'the consumer start to be dropped');
      expect(seen).toEqual([]);

      relay.unmute();
      await waitUntil(() => seen.includes(id), 20_000, 'the consumer to start once the broker answers');
      expect(JSON.stringify(entries)).not.toContain('guest:guest');

      // A broker that stops answering on channels cannot hold a shutdown: the consumer channel's
      // close gets no CloseOk and is given up after 5 s, then the connection closes.
      relay.mute('all-channels');
      const closing = Date.now();
      await queue.close();
      expect(Date.now() - closing).toBeLessThan(10_000);
      expect(relay.dropped.length).toBeGreaterThan(0);
    } finally {
      await relay.close();
    }
  }, 60_000);

  it('declares a partition queue again when it was deleted under it (queue expiry policy), rejecting the job that found none', async () => {
    const config = amqpConfig({ amqp_partitions: 1 });
    const { logger, entries } = recordingLogger();
    const queue = await open(config, logger);
    const channel = await inspect();
    await channel.deleteQueue(`${config.amqp_queue}.0`);

    await expect(queue.enqueue(imageId(), 'upload')).rejects.toThrow(/has no queue .*\.0: it was deleted \(by an expiry policy such as StarlingX's all_queues_ttl\?\)/);
    expect(entries).toContainEqual(expect.objectContaining({ level: 'error', message: 'raw-cache queue: RabbitMQ had no queue for a job; declaring the queues again' }));
    await waitUntil(
      () =>
        queue.enqueue(imageId(), 'upload').then(
          () => true,
          () => false,
        ),
      5_000,
      'an enqueue that is kept',
    );
    expect((await channel.checkQueue(`${config.amqp_queue}.0`)).messageCount).toBe(1);
  });
});
