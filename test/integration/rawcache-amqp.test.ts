import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type ChannelModel } from 'amqplib';
import { startGlance, type RunningGlance } from '../harness/glance';
import { HttpClient } from '../harness/http';
import { makeQcow2, rawSha256Of, sha256File } from '../harness/images';
import { freePort } from '../harness/ports';
import { imageSteps, writeRawCacheConfig, type Image } from '../harness/rawcache';
import { startProxy, startWorker, type RunningProxy } from '../harness/proxy';
import { startRabbitMQ, type RunningRabbitMQ } from '../harness/rabbitmq';
import { isQemuImgConvertOf, processExists, waitForProcess } from '../harness/processes';
import { partitionOf } from '../../src/rawcache/queue';

/**
 * The raw cache with the RabbitMQ queue, end to end: real Glance (file store), the proxy publishing
 * each trigger to a real RabbitMQ before it answers, and `stx-glance-proxy worker` processes on the
 * other side. Jobs must survive a broker restart, run once each across workers, and come back to
 * another worker when the one holding them dies. With the broker down, the proxy answers once the
 * job is in its spool, and the spool reaches the broker even if that proxy dies right after.
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const QUEUE = 'stx-glance-proxy-e2e.rawcache';
const PARTITIONS = 4;

describe('raw cache with the RabbitMQ queue', () => {
  let rabbit: RunningRabbitMQ;
  let glance: RunningGlance;
  let proxy: RunningProxy;
  let dir: string;
  let rawDir: string;
  let spoolDir: string;
  let configFile: string;
  let client: HttpClient;
  const workers: RunningProxy[] = [];

  const startAWorker = async () => {
    const worker = await startWorker({ config: configFile, opsPort: await freePort() });
    workers.push(worker);
    return worker;
  };

  beforeAll(async () => {
    [rabbit, glance] = await Promise.all([startRabbitMQ(), startGlance()]);
    dir = await mkdtemp(join(tmpdir(), 'stx-rawcache-amqp-'));
    rawDir = join(dir, 'raw');
    spoolDir = join(dir, 'spool');
    configFile = writeRawCacheConfig(dir, {
      upstream: glance.url,
      queue: { backend: 'amqp', amqp_url: rabbit.url, amqp_queue: QUEUE, amqp_partitions: PARTITIONS },
      worker: { max_attempts: 3 },
      rawcache: { trigger: { spool_dir: spoolDir, queue_wait_seconds: 2 } },
    });
    proxy = await startProxy({ upstream: glance.url, config: configFile });
    client = new HttpClient(proxy.url);
  }, 120_000);

  afterAll(async () => {
    client?.destroy();
    while (workers.length) await workers.pop()!.stop();
    await proxy?.stop();
    await glance?.stop();
    await rabbit?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 120_000);

  const steps = () => imageSteps(client, () => workers.map((w) => w.logs().slice(-2000)).join('\n'));
  const create = async (name: string) => (await steps().create({ name, cache_raw: 'True' })).id as string;
  const upload = (id: string, file: string) => steps().upload(id, file);
  const show = (id: string) => steps().show(id);
  const waitForImage = (id: string, done: (image: Image) => boolean, timeoutMs?: number) => steps().waitForImage(id, done, timeoutMs);
  /** Lines "converting to RAW" per worker, for one image. */
  const conversionsOf = (id: string, of: RunningProxy[] = workers) =>
    of.map((w) => w.logs().split('\n').filter((l) => l.includes('"message":"converting to RAW"') && l.includes(`"image_id":"${id}"`)).length);
  const partials = () => readdirSync(rawDir).filter((name) => name.includes('.partial-'));
  /** The triggers in the proxy's spool, from every file there. */
  const spooled = (): Array<{ imageId: string; reason: string }> =>
    existsSync(spoolDir)
      ? readdirSync(spoolDir)
          .filter((name) => name.endsWith('.jsonl'))
          .flatMap((name) => readFileSync(join(spoolDir, name), 'utf8').split('\n').filter(Boolean))
          .map((line) => JSON.parse(line))
      : [];

  /** Ready messages in the partition queues, as an operator would count them. */
  const queuedJobs = async (): Promise<number> => {
    let connection: ChannelModel | undefined;
    try {
      connection = await connect(rabbit.url);
      connection.on('error', () => undefined);
      const channel = await connection.createChannel();
      let total = 0;
      for (let n = 0; n < PARTITIONS; n++) total += (await channel.checkQueue(`${QUEUE}.${n}`)).messageCount;
      return total;
    } finally {
      await connection?.close().catch(() => undefined);
    }
  };

  it('keeps the jobs of uploads made while no worker runs through a RabbitMQ restart; two workers then convert each image once', async () => {
    const images: Array<{ id: string; file: string }> = [];
    for (let i = 0; i < 5; i++) {
      const file = makeQcow2(dir, `queued-${i}.qcow2`, 48, 8, 0x41 + i);
      const id = await create(`queued-${i}`);
      await upload(id, file);
      images.push({ id, file });
    }
    for (const { id } of images) expect(await show(id)).toMatchObject({ status: 'active', cache_raw_status: 'Queued', cache_raw_size: '-' });
    // The proxy answered each upload only after the broker confirmed the job.
    expect(await queuedJobs()).toBe(images.length);

    await rabbit.restart();
    expect(await queuedJobs()).toBe(images.length);
    // The proxy lost its connection in the restart and makes a new one on its own.
    await proxy.waitForLog('raw-cache queue: reconnected to RabbitMQ', 30_000);

    const pair = [await startAWorker(), await startAWorker()];
    for (const { id } of images) await waitForImage(id, (i) => i.cache_raw_status === 'Cached');
    for (const { id, file } of images) {
      expect(conversionsOf(id, pair).reduce((a, b) => a + b, 0)).toBe(1);
      expect(await show(id)).toMatchObject({ cache_raw_url: `file://${join(rawDir, `${id}.raw`)}`, cache_raw_size: String(48 * 1024 * 1024) });
      expect(await sha256File(join(rawDir, `${id}.raw`))).toBe(await rawSha256Of(dir, file));
    }
    expect(partials()).toEqual([]);
    // Every job acked: nothing is left to deliver.
    const deadline = Date.now() + 10_000;
    while ((await queuedJobs()) > 0 && Date.now() < deadline) await sleep(200);
    expect(await queuedJobs()).toBe(0);
  }, 180_000);

  it('hands the job of a worker SIGKILLed mid-conversion to the other worker, which ends it Cached with no partial copy', async () => {
    while (workers.length < 2) await startAWorker();
    const source = makeQcow2(dir, 'big.qcow2', 2048, 600, 0x5c);
    const id = await create('big');
    await upload(id, source);

    await waitForImage(id, (i) => i.cache_raw_status === 'Caching', 30_000);
    const holder = await Promise.any(workers.map((w) => w.waitForLog(new RegExp(`^(?=.*"image_id":"${id}")(?=.*"message":"converting to RAW")`)).then(() => w)));
    const other = workers.find((w) => w !== holder)!;
    await sleep(300);
    // SIGKILL to the worker and then to what it ran (as systemd ends a crashed service's cgroup).
    await holder.stop('SIGKILL');
    workers.splice(workers.indexOf(holder), 1);
    expect((await show(id)).cache_raw_status).toBe('Caching');

    const image = await waitForImage(id, (i) => i.cache_raw_status === 'Cached', 120_000);
    expect(image.cache_raw_size).toBe(String(2048 * 1024 * 1024));
    expect(conversionsOf(id, [other])).toEqual([1]);
    expect(partials()).toEqual([]);
    expect(readdirSync(rawDir).filter((name) => name.startsWith(id))).toEqual([`${id}.raw`]);
    expect(await sha256File(join(rawDir, `${id}.raw`))).toBe(await rawSha256Of(dir, source));
  }, 240_000);

  it('converts two images at once in two workers of concurrency 1 (not one active worker and a standby), each once', async () => {
    while (workers.length) await workers.pop()!.stop();
    const single = join(dir, 'concurrency-1.json');
    const config = JSON.parse(readFileSync(configFile, 'utf8'));
    writeFileSync(single, JSON.stringify({ ...config, rawcache: { ...config.rawcache, worker: { ...config.rawcache.worker, concurrency: 1 } } }));
    const pair = [await startWorker({ config: single, opsPort: await freePort() }), await startWorker({ config: single, opsPort: await freePort() })];
    workers.push(...pair);
    // Two images of different partitions: jobs of one partition run one at a time by design.
    const a = randomUUID();
    let b = randomUUID();
    while (partitionOf(b, PARTITIONS) === partitionOf(a, PARTITIONS)) b = randomUUID();
    await steps().create({ id: a, name: 'at-once-a', cache_raw: 'True' });
    await upload(a, makeQcow2(dir, 'at-once-a.qcow2', 256, 128, 0x71));
    // The first conversion is held mid-way: its worker's only slot stays taken.
    const convertA = await waitForProcess(isQemuImgConvertOf(a), 60_000, `qemu-img convert of ${a}`);
    process.kill(convertA, 'SIGSTOP');
    try {
      await steps().create({ id: b, name: 'at-once-b', cache_raw: 'True' });
      await upload(b, makeQcow2(dir, 'at-once-b.qcow2', 256, 128, 0x72));
      // Only the other worker can take this job: both conversions are alive at once.
      const convertB = await waitForProcess(isQemuImgConvertOf(b), 60_000, `qemu-img convert of ${b}`);
      expect(processExists(convertA)).toBe(true);
      expect(processExists(convertB)).toBe(true);
    } finally {
      process.kill(convertA, 'SIGCONT');
    }
    for (const id of [a, b]) await waitForImage(id, (i) => i.cache_raw_status === 'Cached', 120_000);
    expect(conversionsOf(a, pair).reduce((x, y) => x + y, 0)).toBe(1);
    expect(conversionsOf(b, pair).reduce((x, y) => x + y, 0)).toBe(1);
    // One image in each worker.
    expect(conversionsOf(a, pair)).not.toEqual(conversionsOf(b, pair));
    expect(partials()).toEqual([]);
  }, 240_000);

  it('answers an upload made while RabbitMQ is down once its job is in the spool; a proxy SIGKILLed after that answer queues it at its next start', async () => {
    const source = makeQcow2(dir, 'spooled.qcow2', 32, 4, 0x66);
    const id = await create('spooled');
    await rabbit.halt();
    await proxy.waitForLog('raw-cache queue: lost the connection to RabbitMQ', 30_000);

    await upload(id, source);
    // The answer came after the job was written and fsynced to the spool.
    expect(spooled()).toContainEqual(expect.objectContaining({ imageId: id, reason: 'upload' }));
    await proxy.waitForLog(new RegExp(`(?=.*"image_id":"${id}")(?=.*raw-cache trigger spooled)`));

    // Only the spool has the job now: the broker never saw it, and this proxy dies.
    await proxy.stop('SIGKILL');
    proxy = await startProxy({ upstream: glance.url, config: configFile });
    client.destroy();
    client = new HttpClient(proxy.url);
    await rabbit.resume();
    if (workers.length === 0) await startAWorker();

    await proxy.waitForLog('raw-cache spool: spooled triggers queued', 60_000);
    expect(spooled()).toEqual([]);
    const image = await waitForImage(id, (i) => i.cache_raw_status === 'Cached', 120_000);
    expect(image.cache_raw_size).toBe(String(32 * 1024 * 1024));
    expect(await sha256File(join(rawDir, `${id}.raw`))).toBe(await rawSha256Of(dir, source));
  }, 240_000);
});
