import { spawn } from 'node:child_process';
import { createHash, getHashes, type Hash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { lstat, mkdir, realpath, rm, statfs } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PassThrough, Transform, Writable, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CommandAbortedError, isAbortError } from './exec';
import type { CachedImage } from './state';
import { RawCacheError } from './types';
import { assertImageId, workNames } from './targets/names';
import { keepFileAlive, newAttempt } from './writer';

/**
 * Materializes an image's data as a local file whose bytes are proven to be the ones Glance
 * recorded (os_hash_value, or the md5 checksum when Glance has nothing else, and size), before any
 * tool parses it; and chooses where the data is read from (RBD in place, or Glance's API).
 */

/** What Glance recorded about the data (the image's own fields). */
export interface ImageDataRecord {
  imageId: string;
  /** The md5 `checksum` field; null when Glance has none (e.g. location-only images). */
  checksum: string | null;
  /** `os_hash_algo`, a Python hashlib name (sha512 by default). */
  osHashAlgo: string | null;
  osHashValue: string | null;
  size: number | null;
}

/** The record of an image as Glance shows it. */
export function dataRecordOf(image: CachedImage): ImageDataRecord {
  return { imageId: image.id, checksum: image.checksum ?? null, osHashAlgo: image.os_hash_algo ?? null, osHashValue: image.os_hash_value ?? null, size: image.size ?? null };
}

export interface VerifiedSource {
  path: string;
  bytes: number;
  /** Which record the bytes were proven against: the multihash, or (only when Glance has nothing else) the md5 checksum. */
  verifiedBy: Verification['by'];
}

/** Opens the image data; the signal aborts it (and is aborted when the fetch gives up). */
export type OpenSource = (signal: AbortSignal) => Readable | Promise<Readable>;

/** Room left free in the work dir beyond the image itself (logs, other jobs' metadata). */
export const WORK_DIR_MARGIN_BYTES = 256 * 1024 * 1024;

/** hashlib names that node:crypto spells differently. */
const NODE_HASH_NAMES: Readonly<Record<string, string>> = {
  sha3_224: 'sha3-224',
  sha3_256: 'sha3-256',
  sha3_384: 'sha3-384',
  sha3_512: 'sha3-512',
  blake2b: 'blake2b512',
  blake2s: 'blake2s256',
  sha512_224: 'sha512-224',
  sha512_256: 'sha512-256',
};

/** The node:crypto name of a Glance os_hash_algo, or null when this Node cannot compute it. */
export function nodeHashName(osHashAlgo: string): string | null {
  const name = NODE_HASH_NAMES[osHashAlgo.toLowerCase()] ?? osHashAlgo.toLowerCase();
  return getHashes().includes(name) ? name : null;
}

/** What the data of an image is proven against. */
export interface Verification {
  by: 'os_hash_value' | 'checksum';
  /** node:crypto name of the hash. */
  algorithm: string;
  expected: string;
  /** How messages and `cache show` name it. */
  field: string;
}

/**
 * How the worker proves an image's data, decided from what Glance recorded (fields Glance never
 * changes once set): `os_hash_value` whenever Glance has one; the md5 `checksum` only when Glance has
 * no multihash at all (images uploaded before Glance Rocky). Throws a permanent RawCacheError, before
 * anything is read, when Glance recorded a multihash this Node cannot compute (never a quiet step down
 * to md5) or no hash at all (the size alone proves nothing).
 */
export function verificationOf(record: ImageDataRecord): Verification {
  if (record.osHashAlgo || record.osHashValue) {
    const algorithm = record.osHashAlgo ? nodeHashName(record.osHashAlgo) : null;
    if (!record.osHashAlgo || !record.osHashValue || algorithm === null) {
      throw new RawCacheError(
        `image ${record.imageId}: Glance recorded the data's hash as os_hash_algo ${record.osHashAlgo ?? '(none)'}, ` +
          `which this worker cannot compute (Node ${process.version}, OpenSSL ${process.versions.openssl ?? 'unknown'}): ` +
          'refused rather than checked against a weaker hash; run the worker where OpenSSL has that algorithm, then retry the image',
        true,
      );
    }
    return { by: 'os_hash_value', algorithm, expected: record.osHashValue.toLowerCase(), field: `os_hash_value (${record.osHashAlgo})` };
  }
  if (record.checksum) return { by: 'checksum', algorithm: 'md5', expected: record.checksum.toLowerCase(), field: 'checksum (md5)' };
  throw new RawCacheError(
    `image ${record.imageId}: Glance recorded no os_hash_value and no checksum for the image data (an image made from a location), ` +
      'so what the worker reads cannot be verified: refused; upload or import the data through Glance, which hashes it, to get a raw copy',
    true,
  );
}

/** One line for operators (`cache show`): what the worker checks this image's data against. */
export function describeVerification(record: ImageDataRecord): string {
  try {
    const verification = verificationOf(record);
    return verification.by === 'checksum' ? 'checksum (md5) only: Glance recorded no os_hash_value' : verification.field;
  } catch (error) {
    return `refused: ${(error as Error).message.replace(/^image \S+: /, '')}`;
  }
}

/** Counts and hashes what passes; stops the stream as soon as it carries more than `limit` bytes. */
class Measure extends Transform {
  bytes = 0;
  constructor(
    private readonly hash: Hash,
    private readonly limit: number | null,
    private readonly imageId: string,
  ) {
    super();
  }

  /** Hex digest of everything that passed (once the stream has finished). */
  digest(): string {
    return this.hash.digest('hex');
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.limit !== null && this.bytes > this.limit) {
      callback(new RawCacheError(`image ${this.imageId}: the data source sent more than the ${this.limit} bytes Glance recorded`, false));
      return;
    }
    this.hash.update(chunk);
    callback(null, chunk);
  }
}

/**
 * Streams the data to `<workDir>/<id>.src.<attempt>` (../targets/names.ts) while hashing it, then compares with what Glance
 * recorded (see verificationOf, whose refusals come before anything is read). Rejects with a transient RawCacheError on a short, long or corrupted download (a retry
 * fetches it again), on a full work dir and on read errors; with an AbortError when `signal` aborts.
 * The file is removed on every failure.
 */
export async function fetchVerifiedSource(record: ImageDataRecord, from: OpenSource, workDir: string, signal: AbortSignal): Promise<VerifiedSource> {
  assertImageId(record.imageId);
  const expectation = verificationOf(record);
  if (signal.aborted) throw new CommandAbortedError('fetch', signal.reason);
  await mkdir(workDir, { recursive: true });
  await ensureRoom(workDir, record);

  const attempt = newAttempt();
  const path = join(workDir, workNames.source(record.imageId, attempt));
  // Kept fresh until the file is gone: the caller removes it once the copy is made.
  const stopHeartbeat = keepFileAlive(attempt, path, true);
  const controller = new AbortController();
  const onAbort = (): void => controller.abort(signal.reason);
  signal.addEventListener('abort', onAbort, { once: true });
  const measure = new Measure(createHash(expectation.algorithm), record.size, record.imageId);
  try {
    const source = await from(controller.signal);
    await pipeline(source, measure, createWriteStream(path, { flags: 'wx', mode: 0o600 }), { signal: controller.signal });
    checkMeasured(measure, record, expectation);
    return { path, bytes: measure.bytes, verifiedBy: expectation.by };
  } catch (error) {
    controller.abort();
    await rm(path, { force: true });
    stopHeartbeat();
    if (signal.aborted) throw new CommandAbortedError('fetch', signal.reason);
    throw asFetchError(error, record.imageId, workDir);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/** Throws (transiently) unless what passed through `measure` is what Glance recorded: size and hash. */
function checkMeasured(measure: Measure, record: ImageDataRecord, expectation: Verification): void {
  if (record.size !== null && measure.bytes !== record.size) {
    throw new RawCacheError(`image ${record.imageId}: got ${measure.bytes} bytes where Glance recorded size ${record.size} (a truncated download); will retry`, false);
  }
  const actual = measure.digest();
  if (actual !== expectation.expected) {
    throw new RawCacheError(
      `image ${record.imageId}: the data read does not match its ${expectation.field} (got ${actual.slice(0, 16)}..., Glance recorded ${expectation.expected.slice(0, 16)}...): a corrupted transfer, will retry; if it persists the stored data itself is damaged`,
      false,
    );
  }
}

/** Bytes of the start of an image that inspection needs (sniffHeader). */
export const VERIFY_HEAD_BYTES = 4096;

/** A read of the whole image data that proves it against Glance's record, beside a conversion reading the same data in place. */
export interface VerifyingRead {
  /** The first VERIFY_HEAD_BYTES of the data (fewer for a shorter image), as soon as they are in. */
  head: Promise<Buffer>;
  /**
   * Resolves once every byte was read and matched what Glance recorded (size and hash); rejects
   * with a transient RawCacheError on a mismatch or a read error, with an AbortError when `signal` aborts.
   */
  verified: Promise<Omit<VerifiedSource, 'path'>>;
}

/**
 * Reads the image data from `from` to its end, hashing it, and compares it with what Glance
 * recorded, writing nothing anywhere: for a source that qemu-img reads in place (an RBD snapshot,
 * a file of Glance's file store), so that the hash runs beside the conversion instead of before
 * it. What verificationOf refuses is thrown at once, before anything is read. `onData` is called
 * with each chunk (progress, for the stall limit).
 */
export function readAndVerify(record: ImageDataRecord, from: OpenSource, signal: AbortSignal, onData: () => void = () => undefined): VerifyingRead {
  assertImageId(record.imageId);
  const expectation = verificationOf(record);
  const measure = new Measure(createHash(expectation.algorithm), record.size, record.imageId);
  const headChunks: Buffer[] = [];
  let headBytes = 0;
  let gotHead: (head: Buffer) => void = () => undefined;
  const head = new Promise<Buffer>((resolve) => (gotHead = resolve));
  const headIn = (): void => gotHead(Buffer.concat(headChunks).subarray(0, VERIFY_HEAD_BYTES));
  const sink = new Writable({
    highWaterMark: 4 * 1024 * 1024,
    write(chunk: Buffer, _encoding, callback): void {
      onData();
      if (headBytes < VERIFY_HEAD_BYTES) {
        headChunks.push(chunk.subarray(0, VERIFY_HEAD_BYTES - headBytes));
        headBytes += Math.min(chunk.length, VERIFY_HEAD_BYTES - headBytes);
        if (headBytes >= VERIFY_HEAD_BYTES) headIn();
      }
      callback();
    },
  });
  const verified = (async () => {
    try {
      if (signal.aborted) throw new CommandAbortedError('read', signal.reason);
      const source = await from(signal);
      await pipeline(source, measure, sink, { signal });
      checkMeasured(measure, record, expectation);
      // An image shorter than the header: all of it, once proven.
      headIn();
      return { bytes: measure.bytes, verifiedBy: expectation.by };
    } catch (error) {
      if (signal.aborted) throw new CommandAbortedError('read', signal.reason);
      throw asReadError(error, record.imageId);
    }
  })();
  const headOrFailure = Promise.race([head, verified.then(() => head)]);
  verified.catch(() => undefined);
  return { head: headOrFailure, verified };
}

function asReadError(error: unknown, imageId: string): Error {
  if (error instanceof RawCacheError) return error;
  if (isAbortError(error)) return new RawCacheError(`image ${imageId}: the read of the image data was cut off`, false);
  return new RawCacheError(`image ${imageId}: reading the image data failed: ${(error as Error).message}`, false);
}

function asFetchError(error: unknown, imageId: string, workDir: string): Error {
  if (error instanceof RawCacheError) return error;
  if (isAbortError(error)) return new RawCacheError(`image ${imageId}: the download was cut off`, false);
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new RawCacheError(`image ${imageId}: the work dir ${workDir} filled up during the download; will retry`, false);
  }
  return new RawCacheError(`image ${imageId}: reading the image data failed: ${(error as Error).message}`, false);
}

async function ensureRoom(workDir: string, record: ImageDataRecord): Promise<void> {
  const stats = await statfs(workDir);
  const free = Number(stats.bavail) * Number(stats.bsize);
  const needed = (record.size ?? 0) + WORK_DIR_MARGIN_BYTES;
  if (free < needed) {
    throw new RawCacheError(
      `image ${record.imageId}: the work dir ${workDir} has ${formatBytes(free)} free, the download needs ${formatBytes(needed)} (size + ${formatBytes(WORK_DIR_MARGIN_BYTES)} margin); will retry when space frees up`,
      false,
    );
  }
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/**
 * The data of an RBD snapshot, read straight from Ceph (`rbd export <pool>/<image>@<snap> -`) instead
 * of through Glance's API; for images whose location is `rbd://<fsid>/<pool>/<image>/<snap>`.
 * Destroying the stream or aborting `signal` kills rbd. The stream ends only when rbd exited 0;
 * otherwise it errors with rbd's message (a RawCacheError: permanent when the snapshot does not exist).
 */
export function rbdExportReader(pool: string, image: string, snap: string, user: string, cephConf: string, signal?: AbortSignal): Readable {
  const spec = `${pool}/${image}@${snap}`;
  const out = new PassThrough({ highWaterMark: 4 * 1024 * 1024 });
  if (signal?.aborted) {
    out.destroy(new CommandAbortedError('rbd export', signal.reason));
    return out;
  }
  const child = spawn('rbd', ['--id', user, '--conf', cephConf, 'export', '--no-progress', spec, '-'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    if (stderr.length < 8192) stderr += chunk.toString('utf8');
  });
  child.stdout.pipe(out, { end: false });
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  const onAbort = (): void => {
    kill();
    out.destroy(new CommandAbortedError('rbd export', signal?.reason));
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  out.once('close', () => {
    kill();
    signal?.removeEventListener('abort', onAbort);
  });
  child.once('error', (error: NodeJS.ErrnoException) => {
    out.destroy(new RawCacheError(error.code === 'ENOENT' ? 'rbd is not installed (ceph-common)' : `rbd export ${spec}: ${error.message}`, false));
  });
  // 'close' fires after stdout is drained into `out`, so ending here never cuts off data.
  child.once('close', (code, exitSignal) => {
    if (out.destroyed) return;
    if (code === 0) {
      out.end();
      return;
    }
    const message = stderr.trim().split('\n').filter(Boolean).slice(-2).join('; ') || `exit ${code ?? exitSignal}`;
    const missing = /No such file or directory|\(2\)/.test(stderr);
    out.destroy(new RawCacheError(`rbd export ${spec} failed: ${message}`, missing));
  });
  return out;
}

/** Longest the worker waits for the first bytes of an image (its header) before trying again later. */
export const HEAD_READ_TIMEOUT_MS = 120_000;

/**
 * The first `bytes` of the image data, read from the start of a plain stream: no Range request,
 * which Glance's rbd store refuses ("Getting images randomly from this store is not supported").
 * Once the header is in, the stream is destroyed, which closes the HTTP connection (or kills rbd
 * export) instead of reading the rest of the image. Shorter images give what they have.
 */
export async function readHead(from: OpenSource, bytes: number, imageId: string, timeoutMs = HEAD_READ_TIMEOUT_MS): Promise<Buffer> {
  const signal = AbortSignal.timeout(timeoutMs);
  // The timeout ends the wait whether or not the source itself listens to the signal.
  const timedOut = new Promise<never>((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }));
  timedOut.catch(() => undefined);
  const chunks: Buffer[] = [];
  let got = 0;
  let stream: Readable | undefined;
  try {
    stream = await Promise.race([Promise.resolve(from(signal)), timedOut]);
    const reader = stream[Symbol.asyncIterator]();
    while (got < bytes) {
      const next = await Promise.race([reader.next(), timedOut]);
      if (next.done) break;
      chunks.push(next.value as Buffer);
      got += (next.value as Buffer).length;
    }
  } catch (error) {
    if (signal.aborted) {
      throw new RawCacheError(`image ${imageId}: the first ${formatBytes(bytes)} of the image data did not arrive within ${timeoutMs / 1000} s; will retry`, false);
    }
    if (error instanceof RawCacheError || (error as Error).name === 'GlanceHttpError') throw error;
    throw new RawCacheError(`image ${imageId}: reading the start of the image data failed: ${(error as Error).message}; will retry`, false);
  } finally {
    stream?.destroy();
  }
  return Buffer.concat(chunks).subarray(0, bytes);
}

/** An image location as Glance's rbd store writes it: `rbd://<fsid>/<pool>/<image>/<snap>`. */
export interface RbdLocation {
  fsid: string;
  pool: string;
  image: string;
  snap: string;
}

/** Pool, image and snapshot names the worker hands to `rbd` (never one that reads as an option). */
const RBD_NAME = /^[A-Za-z0-9_.][A-Za-z0-9_.-]*$/;

/** The location a `rbd://` URL names, or undefined for any other URL or a name `rbd` should not be given. */
export function parseRbdLocation(url: string): RbdLocation | undefined {
  const match = /^rbd:\/\/([^/]+)\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(url);
  if (!match) return undefined;
  let parts: string[];
  try {
    parts = match.slice(1).map((part) => decodeURIComponent(part));
  } catch {
    return undefined;
  }
  const [fsid, pool, image, snap] = parts;
  if (![pool, image, snap].every((name) => RBD_NAME.test(name))) return undefined;
  return { fsid: fsid.toLowerCase(), pool, image, snap };
}

/** Where the worker may read image data in place: the cluster its rbd target talks to, and the pools it reads there. */
export interface InPlaceReadPolicy {
  fsid: string;
  pools: readonly string[];
}

export type SourceChoice = { from: 'rbd'; location: RbdLocation } | { from: 'glance'; why: string };

/**
 * Reads RBD in place only when the location is on the very cluster the worker's target talks to
 * (same fsid) and in a pool the worker is configured to read; anything else goes through Glance's
 * API, which reads its locations with its own rights. A location names a cluster by its fsid only:
 * the same pool and image names on the worker's own cluster would be other data.
 */
export function chooseSource(location: RbdLocation | undefined, policy: InPlaceReadPolicy | { unavailable: string }): SourceChoice {
  if (location === undefined) return { from: 'glance', why: 'the image shows no rbd:// location the worker can read' };
  const where = `rbd://${location.fsid}/${location.pool}/${location.image}/${location.snap}`;
  if ('unavailable' in policy) return { from: 'glance', why: `${where} is not read in place: ${policy.unavailable}` };
  if (location.fsid !== policy.fsid.toLowerCase()) {
    return { from: 'glance', why: `${where} is on another Ceph cluster than the one the worker's target talks to (fsid ${policy.fsid})` };
  }
  if (!policy.pools.includes(location.pool)) {
    return { from: 'glance', why: `${where} is in pool ${location.pool}, which the worker does not read in place (rawcache.target.rbd_source_pools: ${policy.pools.join(', ') || 'none'})` };
  }
  return { from: 'rbd', location };
}

export type FileSourceChoice = { from: 'file'; path: string } | { from: 'glance'; why: string };

/**
 * Reads a file of Glance's file store in place only when the worker is configured to see that
 * store (`rawcache.target.file_source_dirs`): the image's `file://` location must name a regular
 * file (not a symlink) called by the image's id, directly in one of those directories. Anything
 * else goes through Glance's API. Whoever may add a location chooses its path, so a location is
 * never followed outside the configured directories; inside them the hash check still decides
 * whether the bytes are the image's.
 */
export async function chooseFileSource(imageId: string, urls: readonly string[], dirs: readonly string[]): Promise<FileSourceChoice> {
  const url = urls.find((u) => u.startsWith('file://'));
  if (url === undefined) return { from: 'glance', why: 'the image shows no file:// location' };
  if (dirs.length === 0) return { from: 'glance', why: `${url} is not read in place: rawcache.target.file_source_dirs is empty` };
  let path: string;
  try {
    path = resolve(fileURLToPath(url));
  } catch {
    return { from: 'glance', why: `${url} is not a local file path` };
  }
  if (basename(path) !== imageId) return { from: 'glance', why: `${url} is not named after the image id` };
  let dir: string;
  try {
    dir = await realpath(dirname(path));
  } catch (error) {
    return { from: 'glance', why: `${url} is not read in place: ${(error as Error).message}` };
  }
  const allowed = await Promise.all(dirs.map((d) => realpath(d).catch(() => undefined)));
  if (!allowed.includes(dir)) {
    return { from: 'glance', why: `${url} is not in a directory the worker reads in place (rawcache.target.file_source_dirs: ${dirs.join(', ')})` };
  }
  const inPlace = join(dir, imageId);
  const stats = await lstat(inPlace).catch(() => undefined);
  if (!stats?.isFile()) return { from: 'glance', why: `${url} is not a regular file the worker can see` };
  return { from: 'file', path: inPlace };
}
