import { execFile, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, open, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import winston from 'winston';
import { startCeph, type CephCluster } from '../harness/ceph';
import { makeCompressedQcow2, sha256File, sha256OfOutput } from '../harness/images';
import { inspectImage, type ImageInspection } from '../../src/rawcache/inspect';
import { FileRawCopyTarget, RbdRawCopyTarget } from '../../src/rawcache/targets';
import { RawCacheError } from '../../src/rawcache/types';
import { keepAlive, newAttempt, writerOf } from '../../src/rawcache/writer';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const logger = winston.createLogger({ silent: true });

async function until(what: string, probe: () => Promise<boolean>, timeoutMs = 20_000, intervalMs = 5): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

const never = (): AbortSignal => new AbortController().signal;

describe('raw copy targets, with the real qemu-img and a real Ceph', () => {
  let ceph: CephCluster;
  let work: string;
  /** 24 MiB virtual, qcow2: random data at the start and at 16 MiB, zeroes between (sparse). */
  let small: ImageInspection & { path: string };
  /** sha256 of `qemu-img convert -O raw` of `small`: what every copy must hold. */
  let expectedSha256: string;
  /** A few hundred MiB of incompressible data, to abort a copy mid-way. */
  let big: ImageInspection & { path: string };

  beforeAll(async () => {
    const cephStarting = startCeph();
    work = await mkdtemp(join(tmpdir(), 'stx-targets-'));
    const raw = join(work, 'small.img');
    const handle = await open(raw, 'w');
    await handle.write(randomBytes(4 * MiB), 0, 4 * MiB, 0);
    await handle.write(randomBytes(4 * MiB), 0, 4 * MiB, 16 * MiB);
    await handle.truncate(24 * MiB);
    await handle.close();
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, join(work, 'small.qcow2')]);
    await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', join(work, 'small.qcow2'), join(work, 'small.reference.raw')]);
    expectedSha256 = await sha256File(join(work, 'small.reference.raw'));
    small = { path: join(work, 'small.qcow2'), ...(await inspectImage(join(work, 'small.qcow2'), 'qcow2', never())) };

    await run('dd', ['if=/dev/urandom', `of=${join(work, 'big.img')}`, 'bs=1M', 'count=384', 'status=none']);
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', join(work, 'big.img'), join(work, 'big.qcow2')]);
    await rm(join(work, 'big.img'));
    big = { path: join(work, 'big.qcow2'), ...(await inspectImage(join(work, 'big.qcow2'), 'qcow2', never())) };
    ceph = await cephStarting;
  }, 120_000);

  afterAll(async () => {
    await ceph?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  describe('file', () => {
    let dir: string;
    let target: FileRawCopyTarget;
    beforeAll(async () => {
      dir = join(work, 'raw-copies');
      target = new FileRawCopyTarget(dir, logger);
    });

    test('writes <dir>/<id>.raw holding exactly what qemu-img convert -O raw gives, sized to the virtual size', async () => {
      const id = randomUUID();
      const result = await target.write(id, small, never());
      const path = join(dir, `${id}.raw`);
      expect(result).toEqual({ url: `file://${path}`, size: 24 * MiB });
      expect(await sha256File(path)).toBe(expectedSha256);
      await run('cmp', [path, join(work, 'small.reference.raw')]);
      // Sparse: the zeroes between the two data regions take no blocks.
      expect((await stat(path)).blocks * 512).toBeLessThan(12 * MiB);
      expect(await target.exists(id)).toBe(true);
      expect(await target.list()).toContain(id);
      expect((await readdir(dir)).filter((name) => name.includes('.partial-'))).toEqual([]);
      expect(await target.freeBytes()).toBeGreaterThan(0);
    });

    test('an abort mid-write kills qemu-img and leaves neither the copy nor a partial', async () => {
      const id = randomUUID();
      const controller = new AbortController();
      const writing = target.write(id, big, controller.signal);
      await until('the partial file', async () => (await readdir(dir)).some((name) => name.startsWith(`${id}.raw.partial-`)));
      controller.abort(new Error('worker stopping'));
      await expect(writing).rejects.toMatchObject({ name: 'AbortError' });
      expect((await readdir(dir)).filter((name) => name.startsWith(id))).toEqual([]);
      expect(await target.exists(id)).toBe(false);
      expect(await target.list()).not.toContain(id);
    });

    test("list() reports leftover partials and remove() clears them with the copy, not a live writer's; removing twice is fine", async () => {
      const id = randomUUID();
      await target.write(id, small, never());
      const hourAgo = new Date(Date.now() - 3_600_000);
      await writeFile(join(dir, `${id}.raw.partial-0123abcd`), 'left by a crash');
      await utimes(join(dir, `${id}.raw.partial-0123abcd`), hourAgo, hourAgo);
      const orphan = randomUUID();
      await writeFile(join(dir, `${orphan}.raw.partial-deadbeef`), 'left by a crash');
      await utimes(join(dir, `${orphan}.raw.partial-deadbeef`), hourAgo, hourAgo);
      const attempt = newAttempt();
      const stopWriting = keepAlive(attempt, async () => true);
      await writeFile(join(dir, `${id}.raw.partial-${attempt}`), 'being written');
      expect(await target.list()).toEqual(expect.arrayContaining([id, orphan]));
      await target.remove(id);
      await target.remove(orphan);
      await target.remove(orphan);
      expect((await readdir(dir)).filter((name) => name.startsWith(id) || name.startsWith(orphan))).toEqual([`${id}.raw.partial-${attempt}`]);
      expect(await target.exists(id)).toBe(false);
      stopWriting();
      await target.remove(id);
      expect((await readdir(dir)).filter((name) => name.startsWith(id))).toEqual([]);
    });
  });

  describe('rbd', () => {
    let target: RbdRawCopyTarget;
    const rbdLs = async (): Promise<string[]> => JSON.parse(await ceph.rbd(['ls', '--pool', 'images', '--format', 'json']));
    beforeAll(() => {
      target = new RbdRawCopyTarget({ pool: ceph.pool, user: ceph.user, cephConf: ceph.confPath }, logger);
    });

    async function expectCompleteCopy(id: string, url: string): Promise<void> {
      expect(url).toBe(`rbd://${ceph.fsid}/images/${id}_raw/snap`);
      const snaps = JSON.parse(await ceph.rbd(['snap', 'ls', '--format', 'json', `images/${id}_raw`])) as Array<{ name: string; protected: string }>;
      expect(snaps).toEqual([expect.objectContaining({ name: 'snap', protected: 'true' })]);
      const exported = await sha256OfOutput('rbd', ['--id', ceph.user, '--conf', ceph.confPath, 'export', '--no-progress', `images/${id}_raw@snap`, '-']);
      expect(exported).toBe(expectedSha256);
      expect((await rbdLs()).filter((name) => name.startsWith(`${id}_raw_partial`))).toEqual([]);
      expect(await target.exists(id)).toBe(true);
    }

    test('writes <id>_raw with a protected snapshot snap whose content is the qemu-img raw conversion', async () => {
      const id = randomUUID();
      const result = await target.write(id, small, never());
      expect(result.size).toBe(24 * MiB);
      await expectCompleteCopy(id, result.url);
      expect(target.urlFor(id)).toBe(result.url);
      expect(await target.list()).toContain(id);
      // Sparse in Ceph too: only the 8 MiB of data (in 4 MiB objects) is stored.
      const usage = JSON.parse(await ceph.rbd(['du', '--format', 'json', `images/${id}_raw`])) as { images: Array<{ used_size: number }> };
      expect(usage.images[0].used_size).toBeLessThanOrEqual(12 * MiB);
    });

    test('writes the same copy through a local file and rbd import when qemu-img cannot write to rbd:', async () => {
      const importing = new RbdRawCopyTarget({ pool: ceph.pool, user: ceph.user, cephConf: ceph.confPath, writeMode: 'import' }, logger);
      const id = randomUUID();
      const before = await readdir(work);
      const result = await importing.write(id, small, never());
      await expectCompleteCopy(id, result.url);
      expect(await readdir(work)).toEqual(before);
    });

    test('remove() leaves nothing in the pool, and removing again succeeds', async () => {
      const id = randomUUID();
      await target.write(id, small, never());
      await target.remove(id);
      expect((await rbdLs()).filter((name) => name.startsWith(id))).toEqual([]);
      expect(await target.exists(id)).toBe(false);
      await target.remove(id);
    });

    test('an abort mid-write returns at once; the partial goes once the OSD has dropped the dead writer\'s watch', async () => {
      const id = randomUUID();
      const controller = new AbortController();
      const writing = target.write(id, big, controller.signal);
      await until('the partial image', async () => (await rbdLs()).some((name) => name.startsWith(`${id}_raw_partial-`)), 30_000, 20);
      const abortedAt = Date.now();
      controller.abort(new Error('worker stopping'));
      await expect(writing).rejects.toMatchObject({ name: 'AbortError' });
      expect(Date.now() - abortedAt).toBeLessThan(15_000);
      // The killed qemu-img's watch holds the partial until the OSD drops it (30 s watch timeout);
      // until then a removal leaves it alone (and logs why, for the next sweep), then it goes.
      await until(
        'the partial removed',
        async () => {
          await target.remove(id);
          return !(await rbdLs()).some((name) => name.startsWith(id));
        },
        90_000,
        1000,
      );
      expect((await rbdLs()).filter((name) => name.startsWith(id))).toEqual([]);
      expect(await target.list()).not.toContain(id);
    }, 150_000);

    test("remove() removes a dead writer's partial with its protected snapshot, and keeps another host's while its heartbeat is fresh", async () => {
      const id = randomUUID();
      const writer = spawn('sleep', ['600'], { stdio: 'ignore' });
      const dead = `${writerOf(writer.pid!)}-c0ffee`;
      const exited = new Promise((resolve) => writer.once('exit', resolve));
      writer.kill('SIGKILL');
      await exited;
      const deadPartial = `images/${id}_raw_partial-${dead}`;
      const foreignPartial = `images/${id}_raw_partial-0badc0de-4242-0badc0de-c0ffee`;
      for (const spec of [deadPartial, foreignPartial]) await ceph.rbd(['create', spec, '--size', '4']);
      await ceph.rbd(['snap', 'create', `${deadPartial}@snap`]);
      await ceph.rbd(['snap', 'protect', `${deadPartial}@snap`]);
      await target.remove(id);
      expect((await rbdLs()).filter((name) => name.startsWith(id))).toEqual([`${id}_raw_partial-0badc0de-4242-0badc0de-c0ffee`]);
      await ceph.rbd(['rm', '--no-progress', foreignPartial]);
    });

    test('replaces an incomplete <id>_raw (no protected snapshot, as a crashed StarlingX import left it)', async () => {
      const id = randomUUID();
      await ceph.rbd(['create', `images/${id}_raw`, '--size', '4']);
      expect(await target.exists(id)).toBe(false);
      expect(await target.list()).toContain(id);
      const result = await target.write(id, small, never());
      await expectCompleteCopy(id, result.url);
    });

    test('keeps a complete copy that is already there', async () => {
      const id = randomUUID();
      await target.write(id, small, never());
      const before = JSON.parse(await ceph.rbd(['info', '--format', 'json', `images/${id}_raw`])) as { id: string };
      const again = await target.write(id, small, never());
      expect(again).toEqual({ url: target.urlFor(id), size: 24 * MiB });
      expect((JSON.parse(await ceph.rbd(['info', '--format', 'json', `images/${id}_raw`])) as { id: string }).id).toBe(before.id);
    });

    test('will not remove a copy that volumes were cloned from, and says why', async () => {
      const id = randomUUID();
      await target.write(id, small, never());
      await ceph.rbd(['clone', `images/${id}_raw@snap`, `images/volume-${id}`]);
      const error = await target.remove(id).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(RawCacheError);
      expect(error).toMatchObject({ permanent: false, message: expect.stringMatching(/has clones \(volumes created from it\)/) });
      expect(await target.exists(id)).toBe(true);
      await ceph.rbd(['rm', '--no-progress', `images/volume-${id}`]);
      await target.remove(id);
      expect((await rbdLs()).filter((name) => name.includes(id))).toEqual([]);
    });

    describe('space', () => {
      /** 40 MiB of guest data in a 64 MiB disk, stored compressed in a file of under 1 MiB. */
      let dense: ImageInspection & { path: string };
      beforeAll(async () => {
        const path = makeCompressedQcow2(work, 'dense.qcow2', 64, 40);
        dense = { path, ...(await inspectImage(path, 'qcow2', never())) };
      });

      test('refuses a copy whose guest data exceeds what the pool quota leaves, before writing anything', async () => {
        const spare = new RbdRawCopyTarget({ pool: ceph.pool, user: ceph.user, cephConf: ceph.confPath, limits: { reserveBytes: 0 } }, logger);
        // Below the copy's guest data whatever the pool stores already (Ceph's count of it lags by seconds).
        await ceph.admin(['osd', 'pool', 'set-quota', ceph.pool, 'max_bytes', String(32 * MiB)]);
        try {
          const free = await spare.freeBytes();
          expect(free).toBeLessThanOrEqual(32 * MiB);
          const id = randomUUID();
          const error = await spare.write(id, dense, never()).catch((e: unknown) => e);
          expect(error).toBeInstanceOf(RawCacheError);
          expect(error).toMatchObject({
            permanent: false,
            message: expect.stringMatching(
              new RegExp(`^Ceph pool images has [\\d.]+ (B|KiB|MiB) free \\(what its quota of 32\\.0 MiB leaves\\); the raw copy needs 40\\.0 MiB: 40\\.0 MiB of guest data \\(in a 64\\.0 MiB disk\\).*; will retry when space frees up$`),
            ),
          });
          expect((await rbdLs()).filter((name) => name.startsWith(id))).toEqual([]);
        } finally {
          await ceph.admin(['osd', 'pool', 'set-quota', ceph.pool, 'max_bytes', '0']);
        }
      }, 120_000);

      test('with rbd import, refuses when the work dir cannot hold the temporary raw file, before writing anything', async () => {
        const small = join(work, 'small-work');
        await mkdir(small);
        await run('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', small]);
        try {
          const source = { ...dense, path: join(small, 'dense.qcow2') };
          await copyFile(dense.path, source.path);
          const changed = (await stat(small, { bigint: true })).mtimeNs;
          const importing = new RbdRawCopyTarget({ pool: ceph.pool, user: ceph.user, cephConf: ceph.confPath, writeMode: 'import', limits: { reserveBytes: 0 } }, logger);
          const id = randomUUID();
          const error = await importing.write(id, source, never()).catch((e: unknown) => e);
          expect(error).toBeInstanceOf(RawCacheError);
          expect(error).toMatchObject({
            permanent: false,
            message: expect.stringMatching(new RegExp(`^the work dir ${small} has [\\d.]+ MiB free; the temporary raw file for rbd import needs 296\\.0 MiB: 40\\.0 MiB of guest data plus a 256\\.0 MiB margin`)),
          });
          expect((await readdir(small)).sort()).toEqual(['dense.qcow2']);
          expect((await stat(small, { bigint: true })).mtimeNs).toBe(changed);
          expect((await rbdLs()).filter((name) => name.startsWith(id))).toEqual([]);
        } finally {
          await run('umount', [small]);
        }
      }, 120_000);
    });

    test("reports the pool's free bytes from ceph df", async () => {
      const free = await target.freeBytes();
      expect(free).toBeGreaterThan(0);
      expect(free).toBeLessThanOrEqual(8 * 1024 ** 3);
    });
  });
});
