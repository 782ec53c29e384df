import { stat, statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import { RawCacheError } from '../types';
import { runCommand, stderrSummary } from '../exec';
import type { CopySource } from '../types';
import { formatBytes } from '../source';

/** A verified, inspected local image, as RawCopyTarget.write receives it. */
export type ConvertSource = CopySource;

/**
 * `qemu-img convert -f <format> -O raw <source> <destination>`. The source format is always given
 * with -f, so qemu-img never re-probes what inspectImage already decided. The output is sparse
 * (qemu-img skips zeroes by default). `destination` is a local path or an `rbd:` spec.
 */
export async function convertToRaw(source: ConvertSource, destination: string, signal: AbortSignal, extraArgs: readonly string[] = []): Promise<void> {
  // -p: qemu-img prints its progress at each percent, which is what the stall limit watches.
  const result = await runCommand('qemu-img', ['convert', '-p', '-f', source.format, '-O', 'raw', ...extraArgs, source.path, destination], {
    signal,
    maxStdout: 4 * 1024 * 1024,
    limits: source.limits,
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

/** Bytes the source occupies on disk: what its raw copy is expected to occupy (zeroes stay sparse). */
export async function allocatedBytes(path: string): Promise<number> {
  const stats = await stat(path);
  return Math.min(stats.size, stats.blocks * 512);
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

/** Refuses (transiently) a write that cannot fit, before qemu-img starts filling the space. */
export function ensureRoom(free: number | undefined, needed: number, where: string): void {
  if (free !== undefined && free < needed) {
    throw new RawCacheError(`${where} has ${formatBytes(free)} free, the raw copy needs about ${formatBytes(needed)}; will retry when space frees up`, false);
  }
}
