import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import { chooseFileSource, chooseSource, describeVerification, fetchVerifiedSource, nodeHashName, parseRbdLocation, readAndVerify, readHead, VERIFY_HEAD_BYTES, type ImageDataRecord } from '../../src/rawcache/source';
import { RawCacheError } from '../../src/rawcache/types';

const IMAGE_ID = '0b6c5c5e-1f0e-4c39-9a57-8f3f7a3c2d11';
const data = randomBytes(1024 * 1024 + 17);
const md5 = createHash('md5').update(data).digest('hex');
const sha512 = createHash('sha512').update(data).digest('hex');

function record(overrides: Partial<ImageDataRecord> = {}): ImageDataRecord {
  return { imageId: IMAGE_ID, checksum: md5, osHashAlgo: 'sha512', osHashValue: sha512, size: data.length, ...overrides };
}

/** The data in 64 KiB chunks, optionally failing or stalling after `cutAt` bytes. */
function chunks(bytes: Buffer, cutAt?: number, how: 'end' | 'error' | 'stall' = 'end'): () => Readable {
  if (how === 'stall') {
    // A source that goes silent, as a stalled socket does: it can still be destroyed. (A generator held
    // at an await that never settles could not be: its return() would wait for that await forever.)
    return () => {
      const pieces: Buffer[] = [];
      for (let offset = 0; offset < (cutAt ?? bytes.length); offset += 64 * 1024) pieces.push(bytes.subarray(offset, Math.min(cutAt ?? bytes.length, offset + 64 * 1024)));
      return new Readable({
        read() {
          const piece = pieces.shift();
          if (piece) this.push(piece);
        },
      });
    };
  }
  return () =>
    Readable.from(
      (async function* generate() {
        const limit = cutAt ?? bytes.length;
        for (let offset = 0; offset < limit; offset += 64 * 1024) yield bytes.subarray(offset, Math.min(limit, offset + 64 * 1024));
        if (how === 'error') throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
      })(),
    );
}

describe('fetchVerifiedSource', () => {
  let workDir: string;
  const never = (): AbortSignal => new AbortController().signal;

  beforeEach(async () => {
    workDir = await mkdtemp(join(tmpdir(), 'stx-source-'));
  });
  afterEach(async () => {
    await rm(workDir, { recursive: true, force: true });
  });

  async function failure(promise: Promise<unknown>): Promise<RawCacheError> {
    const error = await promise.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(RawCacheError);
    return error as RawCacheError;
  }

  test("writes the bytes to <workDir>/<id>.src.<attempt>, proven against Glance's sha512 os_hash_value", async () => {
    const source = await fetchVerifiedSource(record(), chunks(data), workDir, never());
    expect(source.path).toMatch(new RegExp(`^${workDir}/${IMAGE_ID}\\.src\\.[0-9a-f]{8}-${process.pid}-[0-9a-f]{8}-[0-9a-f]{6}$`));
    expect(source).toMatchObject({ bytes: data.length, verifiedBy: 'os_hash_value' });
    expect((await readFile(source.path)).equals(data)).toBe(true);
    expect((await stat(source.path)).mode & 0o777).toBe(0o600);
  });

  test('uses the md5 checksum when there is no os_hash_value', async () => {
    const source = await fetchVerifiedSource(record({ osHashAlgo: null, osHashValue: null }), chunks(data), workDir, never());
    expect(source.verifiedBy).toBe('checksum');
  });

  test('refuses, before opening the source, an os_hash_algo this Node cannot compute (never falls back to md5)', async () => {
    let opened = false;
    const open = () => {
      opened = true;
      return chunks(data)();
    };
    const error = await failure(fetchVerifiedSource(record({ osHashAlgo: 'whirlpool-9000' }), open, workDir, never()));
    expect(error.permanent).toBe(true);
    expect(error.message).toMatch(/os_hash_algo whirlpool-9000, which this worker cannot compute .*refused rather than checked against a weaker hash/);
    expect(opened).toBe(false);
    expect(await readdir(workDir)).toEqual([]);
  });

  test('refuses an image for which Glance recorded no hash at all (the size alone proves nothing)', async () => {
    const error = await failure(fetchVerifiedSource(record({ checksum: null, osHashAlgo: null, osHashValue: null }), chunks(data), workDir, never()));
    expect(error.permanent).toBe(true);
    expect(error.message).toMatch(/no os_hash_value and no checksum .*cannot be verified: refused/);
    expect(await readdir(workDir)).toEqual([]);
  });

  test('proves the data against os_hash_value, not the md5 checksum, when Glance has both', async () => {
    const source = await fetchVerifiedSource(record({ checksum: 'd41d8cd98f00b204e9800998ecf8427e' }), chunks(data), workDir, never());
    expect(source.verifiedBy).toBe('os_hash_value');
  });

  test('a checksum mismatch is a transient error and leaves no file behind', async () => {
    const bad = record({ osHashAlgo: null, osHashValue: null, checksum: 'd41d8cd98f00b204e9800998ecf8427e' });
    const error = await failure(fetchVerifiedSource(bad, chunks(data), workDir, never()));
    expect(error.permanent).toBe(false);
    expect(error.message).toMatch(/does not match its checksum \(md5\).*will retry/);
    expect(await readdir(workDir)).toEqual([]);
  });

  test('an os_hash_value mismatch is a transient error and leaves no file behind', async () => {
    const corrupted = Buffer.from(data);
    corrupted[1000] ^= 0xff;
    const error = await failure(fetchVerifiedSource(record(), chunks(corrupted), workDir, never()));
    expect(error).toMatchObject({ permanent: false, message: expect.stringMatching(/os_hash_value \(sha512\)/) });
    expect(await readdir(workDir)).toEqual([]);
  });

  test('a truncated download is a transient error and leaves no file behind', async () => {
    const error = await failure(fetchVerifiedSource(record(), chunks(data, 300_000), workDir, never()));
    expect(error).toMatchObject({ permanent: false, message: expect.stringMatching(/got 300000 bytes where Glance recorded size \d+ \(a truncated download\)/) });
    expect(await readdir(workDir)).toEqual([]);
  });

  test('a source that sends more than the recorded size is stopped and cleaned up', async () => {
    const error = await failure(fetchVerifiedSource(record({ size: 1000 }), chunks(data), workDir, never()));
    expect(error).toMatchObject({ permanent: false, message: expect.stringMatching(/more than the 1000 bytes/) });
    expect(await readdir(workDir)).toEqual([]);
  });

  test('a connection reset mid-download is transient and cleaned up', async () => {
    const error = await failure(fetchVerifiedSource(record(), chunks(data, 200_000, 'error'), workDir, never()));
    expect(error).toMatchObject({ permanent: false, message: expect.stringMatching(/socket hang up/) });
    expect(await readdir(workDir)).toEqual([]);
  });

  test('an abort mid-download rejects with an AbortError, aborts the source and removes the file', async () => {
    const controller = new AbortController();
    let sourceSignal: AbortSignal | undefined;
    const fetching = fetchVerifiedSource(
      record(),
      (signal) => {
        sourceSignal = signal;
        return chunks(data, 200_000, 'stall')();
      },
      workDir,
      controller.signal,
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect((await readdir(workDir)).length).toBe(1);
    controller.abort(new Error('worker stopping'));
    await expect(fetching).rejects.toMatchObject({ name: 'AbortError' });
    expect(sourceSignal?.aborted).toBe(true);
    expect(await readdir(workDir)).toEqual([]);
  });

  test('refuses to start when the work dir cannot hold the image, before writing anything', async () => {
    const error = await failure(fetchVerifiedSource(record({ size: 2 ** 53 - 1 }), chunks(data), workDir, never()));
    expect(error).toMatchObject({ permanent: false, message: expect.stringMatching(/the work dir .* free, the download needs .*will retry/) });
    expect(await readdir(workDir)).toEqual([]);
  });

  test('refuses an id that is not a UUID before building any path', async () => {
    const error = await failure(fetchVerifiedSource(record({ imageId: '../../etc/passwd' }), chunks(data), workDir, never()));
    expect(error.permanent).toBe(true);
  });
});

describe('nodeHashName', () => {
  test.each([
    ['sha512', 'sha512'],
    ['sha256', 'sha256'],
    ['sha3_512', 'sha3-512'],
    ['blake2b', 'blake2b512'],
    ['md5', 'md5'],
  ])('maps hashlib %s to node:crypto %s', (hashlib, node) => {
    expect(nodeHashName(hashlib)).toBe(node);
  });

  test('answers null for an algorithm Node does not have', () => {
    expect(nodeHashName('whirlpool-9000')).toBeNull();
  });
});

describe('describeVerification', () => {
  test.each([
    [{}, 'os_hash_value (sha512)'],
    [{ osHashAlgo: null, osHashValue: null }, 'checksum (md5) only: Glance recorded no os_hash_value'],
    [{ osHashAlgo: 'whirlpool-9000' }, expect.stringMatching(/^refused: Glance recorded the data's hash as os_hash_algo whirlpool-9000/)],
    [{ checksum: null, osHashAlgo: null, osHashValue: null }, expect.stringMatching(/^refused: Glance recorded no os_hash_value and no checksum/)],
  ])('says what the data of %j is checked against', (overrides, described) => {
    expect(describeVerification(record(overrides as Partial<ImageDataRecord>))).toEqual(described);
  });
});

describe('readHead', () => {
  test('reads the first bytes of a stream and destroys it, without reading the rest', async () => {
    let produced = 0;
    const stream = Readable.from(
      (async function* generate() {
        for (;;) {
          produced += 16 * 1024;
          yield Buffer.alloc(16 * 1024, produced / 1024);
        }
      })(),
    );
    const head = await readHead(() => stream, 64 * 1024, IMAGE_ID);
    expect(head.length).toBe(64 * 1024);
    expect(head[0]).toBe(16);
    expect(stream.destroyed).toBe(true);
    expect(produced).toBeLessThan(1024 * 1024);
  });

  test('gives all of an image shorter than the header', async () => {
    expect((await readHead(chunks(data.subarray(0, 1000)), 64 * 1024, IMAGE_ID)).equals(data.subarray(0, 1000))).toBe(true);
  });

  test('gives up with a transient error when the data does not come', async () => {
    const error = await readHead(chunks(data, 0, 'stall'), 64 * 1024, IMAGE_ID, 50).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(RawCacheError);
    expect(error).toMatchObject({ permanent: false, message: expect.stringMatching(/did not arrive within 0.05 s; will retry/) });
  });
});

describe('where the image data is read from', () => {
  const FSID = '840f16bc-3238-4adb-8700-6b9876c23462';
  const OTHER = '11111111-2222-4333-8444-555555555555';
  const at = (fsid: string, pool = 'images') => parseRbdLocation(`rbd://${fsid}/${pool}/${IMAGE_ID}/snap`);

  test('parses the rbd:// locations Glance writes, and nothing else', () => {
    expect(at(FSID.toUpperCase())).toEqual({ fsid: FSID, pool: 'images', image: IMAGE_ID, snap: 'snap' });
    expect(parseRbdLocation(`file:///var/lib/glance/images/${IMAGE_ID}`)).toBeUndefined();
    expect(parseRbdLocation(`rbd://${FSID}/images/${IMAGE_ID}`)).toBeUndefined();
    // A name rbd would read as an option, or one with a separator, is never handed to rbd.
    expect(parseRbdLocation(`rbd://${FSID}/--conf=x/${IMAGE_ID}/snap`)).toBeUndefined();
    expect(parseRbdLocation(`rbd://${FSID}/images/a%40b/snap`)).toBeUndefined();
  });

  test('reads in place only on the same cluster and in a pool the worker reads', () => {
    const policy = { fsid: FSID, pools: ['images'] };
    expect(chooseSource(at(FSID), policy)).toEqual({ from: 'rbd', location: at(FSID) });
    expect(chooseSource(at(OTHER), policy)).toEqual({ from: 'glance', why: expect.stringMatching(/is on another Ceph cluster than the one the worker's target talks to/) });
    expect(chooseSource(at(FSID, 'volumes'), policy)).toEqual({ from: 'glance', why: expect.stringMatching(/in pool volumes, which the worker does not read in place/) });
    expect(chooseSource(at(FSID), { fsid: FSID, pools: [] })).toMatchObject({ from: 'glance' });
    expect(chooseSource(undefined, policy)).toMatchObject({ from: 'glance' });
    expect(chooseSource(at(FSID), { unavailable: 'the raw-copy target is not Ceph RBD' })).toEqual({ from: 'glance', why: expect.stringMatching(/not read in place: the raw-copy target is not Ceph RBD/) });
  });
});

describe('readAndVerify (the hash beside an in-place conversion)', () => {
  const never = (): AbortSignal => new AbortController().signal;

  test("gives the header as soon as it is in, and proves the whole data against Glance's sha512", async () => {
    let chunksSeen = 0;
    const read = readAndVerify(record(), chunks(data), never(), () => (chunksSeen += 1));
    expect((await read.head).equals(data.subarray(0, VERIFY_HEAD_BYTES))).toBe(true);
    expect(await read.verified).toEqual({ bytes: data.length, verifiedBy: 'os_hash_value' });
    expect(chunksSeen).toBe(Math.ceil(data.length / (64 * 1024)));
  });

  test('rejects data that does not match os_hash_value with a transient error, after giving the header', async () => {
    const tampered = Buffer.from(data);
    tampered[data.length - 1] ^= 0xff;
    const read = readAndVerify(record(), chunks(tampered), never());
    expect((await read.head).length).toBe(VERIFY_HEAD_BYTES);
    const error = await read.verified.then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(RawCacheError);
    expect(error).toMatchObject({ permanent: false, message: expect.stringMatching(/does not match its os_hash_value \(sha512\)/) });
  });

  test('a truncated or overlong read is a transient error; the header promise fails with it when the header never came', async () => {
    const short = readAndVerify(record(), chunks(data, 100), never());
    await expect(short.head).rejects.toMatchObject({ permanent: false, message: expect.stringMatching(/got 100 bytes/) });
    await expect(short.verified).rejects.toBeInstanceOf(RawCacheError);
    const long = readAndVerify(record({ size: data.length - 1 }), chunks(data), never());
    await expect(long.verified).rejects.toMatchObject({ message: expect.stringMatching(/more than the \d+ bytes/) });
  });

  test('refuses at once, before opening anything, what verificationOf refuses', () => {
    let opened = false;
    expect(() =>
      readAndVerify(record({ osHashAlgo: null, osHashValue: null, checksum: null }), () => {
        opened = true;
        return chunks(data)();
      }, never()),
    ).toThrow(expect.objectContaining({ permanent: true }));
    expect(opened).toBe(false);
  });

  test('an abort stops the read with an AbortError', async () => {
    const controller = new AbortController();
    const read = readAndVerify(record(), chunks(data, 128 * 1024, 'stall'), controller.signal);
    await read.head;
    controller.abort(new Error('stop'));
    await expect(read.verified).rejects.toMatchObject({ name: 'AbortError' });
  });
});

describe('chooseFileSource (Glance file store read in place)', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stx-store-'));
    await mkdir(join(dir, 'images'));
    await writeFile(join(dir, 'images', IMAGE_ID), data);
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const url = (path: string): string => pathToFileURL(path).href;

  test('reads <dir>/<id> in place when the dir is configured', async () => {
    expect(await chooseFileSource(IMAGE_ID, [url(join(dir, 'images', IMAGE_ID))], [join(dir, 'images')])).toEqual({ from: 'file', path: join(dir, 'images', IMAGE_ID) });
  });

  test('goes through Glance without a configured dir, outside it, for another name, or for a symlink', async () => {
    const inStore = url(join(dir, 'images', IMAGE_ID));
    expect((await chooseFileSource(IMAGE_ID, [inStore], [])).from).toBe('glance');
    expect((await chooseFileSource(IMAGE_ID, [inStore], [join(dir, 'other')])).from).toBe('glance');
    expect((await chooseFileSource(IMAGE_ID, [url(join(dir, 'images', '..', 'images', 'x'))], [join(dir, 'images')])).from).toBe('glance');
    await writeFile(join(dir, IMAGE_ID), data);
    expect((await chooseFileSource(IMAGE_ID, [url(join(dir, 'images', '..', IMAGE_ID))], [join(dir, 'images')])).from).toBe('glance');
    await rm(join(dir, 'images', IMAGE_ID));
    await symlink(join(dir, IMAGE_ID), join(dir, 'images', IMAGE_ID));
    expect(await chooseFileSource(IMAGE_ID, [inStore], [join(dir, 'images')])).toMatchObject({ from: 'glance', why: expect.stringMatching(/not a regular file/) });
    expect((await chooseFileSource(IMAGE_ID, ['rbd://f/p/i/s', 'http://x/y'], [join(dir, 'images')])).from).toBe('glance');
  });
});
