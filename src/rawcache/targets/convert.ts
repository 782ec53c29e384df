import { statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import { RawCacheError } from '../types';
import { runCommand, stderrSummary } from '../exec';
import type { CopySource } from '../types';
import { measureRawCopy, type RawCopyMeasure } from '../inspect';
import { formatBytes, WORK_DIR_MARGIN_BYTES } from '../source';

/** An inspected image (a local file, or an `rbd:` spec read in place), as RawCopyTarget.write receives it. */
export type ConvertSource = CopySource;

/**
 * `qemu-img convert -f <format> -O raw <source> <destination>`. The source format is always given
 * with -f, so qemu-img never re-probes what inspectImage already decided. The output is sparse
 * (qemu-img skips zeroes by default). `destination` is a local path or an `rbd:` spec.
 */
export async function convertToRaw(source: ConvertSource, destination: string, signal: AbortSignal, extraArgs: readonly string[] = []): Promise<void> {
  // -p: qemu-img prints its progress at each percent, which is what the stall limit watches and
  // the worker publishes. The conversion shows as 0% from the moment qemu-img is started.
  source.onProgress?.(0);
  const result = await runCommand('qemu-img', ['convert', '-p', '-f', source.format, '-O', 'raw', ...extraArgs, qemuSourceSpec(source), destination], {
    signal,
    maxStdout: 4 * 1024 * 1024,
    limits: source.limits,
    ...(source.onProgress ? { onProgress: source.onProgress } : {}),
  });
  if (result.code === 0) return;
  const summary = stderrSummary(result);
  if (/No space left on device|Disk quota exceeded|EDQUOT|ENOSPC/i.test(result.stderr)) {
    throw new RawCacheError(`no space left for the raw copy (qemu-img convert: ${summary}); will retry`, false);
  }
  if (/error while reading/i.test(result.stderr)) {
    throw new RawCacheError(`the ${source.format} image's data cannot be read back (qemu-img convert: ${summary}): the image is damaged; upload an intact one`, true);
  }
  // Writing failed for some other reason (the target, the network to Ceph): worth another attempt.
  throw new RawCacheError(`converting to raw failed (qemu-img convert: ${summary}); will retry`, false);
}

/**
 * How qemu-img is told to open the source. A qcow2 file is opened with its backing image switched
 * off (`"backing": null`): inspectImage refused any qcow2 that names one, but a file read in place
 * (Glance's store, rawcache.target.file_source_dirs) could be replaced between that check and the
 * convert, and qemu-img must never open a file an image names. (An external data file cannot be
 * switched off this way; the hash checked beside the convert keeps such a copy from being published.)
 */
export function qemuSourceSpec(source: Pick<ConvertSource, 'format' | 'path'>): string {
  if (source.format !== 'qcow2' || source.path.startsWith('rbd:')) return source.path;
  return `json:${JSON.stringify({ driver: 'qcow2', backing: null, file: { driver: 'file', filename: source.path } })}`;
}

/** Free bytes of the filesystem holding `path` (or its nearest existing ancestor). */
export async function filesystemFreeBytes(path: string): Promise<number> {
  let candidate = path;
  for (;;) {
    try {
      const stats = await statfs(candidate);
      return Number(stats.bavail) * Number(stats.bsize);
    } catch (error) {
      const parent = dirname(candidate);
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || parent === candidate) throw error;
      candidate = parent;
    }
  }
}

/**
 * The space limits of raw copies (rawcache.target.reserve_bytes and max_virtual_size_bytes); the
 * schema's defaults, for targets built without a configuration.
 */
export interface SpaceLimits {
  /** Bytes a target keeps free after a new copy. */
  reserveBytes: number;
  /** Largest virtual size (so RAW copy size) of an image that gets a copy. */
  maxVirtualSize: number;
}

export const DEFAULT_SPACE_LIMITS: Readonly<SpaceLimits> = Object.freeze({ reserveBytes: 1024 ** 3, maxVirtualSize: 1024 ** 4 });

export function spaceLimits(limits: Partial<SpaceLimits> = {}): SpaceLimits {
  return {
    reserveBytes: limits.reserveBytes ?? DEFAULT_SPACE_LIMITS.reserveBytes,
    maxVirtualSize: limits.maxVirtualSize ?? DEFAULT_SPACE_LIMITS.maxVirtualSize,
  };
}

/** Free space as a space check sees it; `limitedBy` says what bounds it when that is not plain disk space. */
export interface Room {
  free: number;
  limitedBy?: string;
}

/**
 * Sizes up the RAW copy of `source` before anything is written, from the image's tables, not its
 * file: refuses for good a disk larger than `maxVirtualSize`.
 */
export async function measureRawCopyWithin(source: ConvertSource, limits: SpaceLimits, signal: AbortSignal): Promise<RawCopyMeasure> {
  refuseOversized(source.virtualSize, limits.maxVirtualSize);
  const measure = await measureRawCopy(source.path, source.format, source.virtualSize, signal);
  refuseOversized(Math.max(measure.size, source.virtualSize), limits.maxVirtualSize);
  return measure;
}

export function refuseOversized(size: number, maxVirtualSize: number): void {
  if (size <= maxVirtualSize) return;
  throw new RawCacheError(
    `the image's virtual size is ${formatBytes(size)} (${size} bytes), above the ${formatBytes(maxVirtualSize)} (${maxVirtualSize} bytes) a raw copy may have (rawcache.target.max_virtual_size_bytes): no raw copy is made; set cache_raw to False, or ask an operator to raise the limit`,
    true,
  );
}

/**
 * Refuses (transiently) a copy that cannot fit with the reserve left free, before qemu-img starts
 * filling the space. Nothing is refused when the free space is unknown (`room` undefined).
 */
export function ensureRoom(room: Room | undefined, measure: RawCopyMeasure, reserveBytes: number, where: string): void {
  const needed = measure.dataBytes + reserveBytes;
  if (room === undefined || room.free >= needed) return;
  throw new RawCacheError(
    `${where} has ${describeRoom(room)}; the raw copy needs ${formatBytes(needed)}: ${formatBytes(measure.dataBytes)} of guest data (in a ${formatBytes(measure.size)} disk) plus the ${formatBytes(reserveBytes)} kept free (rawcache.target.reserve_bytes); will retry when space frees up`,
    false,
  );
}

/**
 * For a copy that goes through a temporary RAW file in the work dir (rbd import): refuses
 * (transiently) when the work dir cannot hold the file's data plus the work dir's margin.
 */
export function ensureWorkDirRoom(free: number, measure: RawCopyMeasure, workDir: string): void {
  const needed = measure.dataBytes + WORK_DIR_MARGIN_BYTES;
  if (free >= needed) return;
  throw new RawCacheError(
    `the work dir ${workDir} has ${formatBytes(free)} free; the temporary raw file for rbd import needs ${formatBytes(needed)}: ${formatBytes(measure.dataBytes)} of guest data plus a ${formatBytes(WORK_DIR_MARGIN_BYTES)} margin; will retry when space frees up`,
    false,
  );
}

function describeRoom(room: Room): string {
  return `${formatBytes(room.free)} free${room.limitedBy ? ` (${room.limitedBy})` : ''}`;
}
