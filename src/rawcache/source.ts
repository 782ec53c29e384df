import { spawn } from 'node:child_process';
import { createHash, getHashes, type Hash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CommandAbortedError, isAbortError } from './exec';
import { RawCacheError } from './types';
import { assertImageId, workNames } from './targets/names';
import { keepFileAlive, newAttempt } from './writer';

/**
 * Materializes an image's data as a local file whose bytes are proven to be the ones Glance
 * recorded (os_hash_value, else checksum, and size), before any tool parses it.
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

export interface VerifiedSource {
  path: string;
  bytes: number;
  /** Which record the bytes were proven against: the multihash, the md5 checksum, or the size alone. */
  verifiedBy: 'os_hash_value' | 'checksum' | 'size' | 'nothing';
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

interface Expectation {
  verifiedBy: VerifiedSource['verifiedBy'];
  algorithm: string | null;
  expected: string | null;
  field: string;
}

function expectationOf(record: ImageDataRecord): Expectation {
  if (record.osHashAlgo && record.osHashValue) {
    const algorithm = nodeHashName(record.osHashAlgo);
    if (algorithm !== null) {
      return { verifiedBy: 'os_hash_value', algorithm, expected: record.osHashValue.toLowerCase(), field: `os_hash_value (${record.osHashAlgo})` };
    }
  }
  if (record.checksum) return { verifiedBy: 'checksum', algorithm: 'md5', expected: record.checksum.toLowerCase(), field: 'checksum (md5)' };
  return { verifiedBy: record.size === null ? 'nothing' : 'size', algorithm: null, expected: null, field: 'size' };
}

/** Counts and hashes what passes; stops the stream as soon as it carries more than `limit` bytes. */
class Measure extends Transform {
  bytes = 0;
  constructor(
    private readonly hash: Hash | null,
    private readonly limit: number | null,
    private readonly imageId: string,
  ) {
    super();
  }

  /** Hex digest of everything that passed (once the stream has finished), or null when not hashing. */
  digest(): string | null {
    return this.hash === null ? null : this.hash.digest('hex');
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.limit !== null && this.bytes > this.limit) {
      callback(new RawCacheError(`image ${this.imageId}: the data source sent more than the ${this.limit} bytes Glance recorded`, false));
      return;
    }
    this.hash?.update(chunk);
    callback(null, chunk);
  }
}

/**
 * Streams the data to `<workDir>/<id>.src.<attempt>` (../targets/names.ts) while hashing it, then compares with what Glance
 * recorded. Rejects with a transient RawCacheError on a short, long or corrupted download (a retry
 * fetches it again), on a full work dir and on read errors; with an AbortError when `signal` aborts.
 * The file is removed on every failure.
 */
export async function fetchVerifiedSource(record: ImageDataRecord, from: OpenSource, workDir: string, signal: AbortSignal): Promise<VerifiedSource> {
  assertImageId(record.imageId);
  if (signal.aborted) throw new CommandAbortedError('fetch', signal.reason);
  await mkdir(workDir, { recursive: true });
  await ensureRoom(workDir, record);

  const expectation = expectationOf(record);
  const attempt = newAttempt();
  const path = join(workDir, workNames.source(record.imageId, attempt));
  // Kept fresh until the file is gone: the caller removes it once the copy is made.
  const stopHeartbeat = keepFileAlive(attempt, path, true);
  const controller = new AbortController();
  const onAbort = (): void => controller.abort(signal.reason);
  signal.addEventListener('abort', onAbort, { once: true });
  const measure = new Measure(expectation.algorithm === null ? null : createHash(expectation.algorithm), record.size, record.imageId);
  try {
    const source = await from(controller.signal);
    await pipeline(source, measure, createWriteStream(path, { flags: 'wx', mode: 0o600 }), { signal: controller.signal });
    if (record.size !== null && measure.bytes !== record.size) {
      throw new RawCacheError(`image ${record.imageId}: got ${measure.bytes} bytes where Glance recorded size ${record.size} (a truncated download); will retry`, false);
    }
    if (expectation.expected !== null) {
      const actual = measure.digest() ?? '';
      if (actual !== expectation.expected) {
        throw new RawCacheError(
          `image ${record.imageId}: the data read does not match its ${expectation.field} (got ${actual.slice(0, 16)}..., Glance recorded ${expectation.expected.slice(0, 16)}...): a corrupted transfer, will retry; if it persists the stored data itself is damaged`,
          false,
        );
      }
    }
    return { path, bytes: measure.bytes, verifiedBy: expectation.verifiedBy };
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
