import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Logger } from '../../ops/log';
import { throwIfAborted } from '../exec';
import { localFileInFlight, removeLeftovers, type FileInFlight, type LeftoverPlace } from '../leftovers';
import { RawCacheError, type RawCopyTarget } from '../types';
import { keepFileAlive, newAttempt } from '../writer';
import { convertToRaw, ensureRoom, filesystemFreeBytes, measureRawCopyWithin, spaceLimits, type ConvertSource, type Room, type SpaceLimits } from './convert';
import { assertImageId, fileNames, idsFromNames } from './names';

/**
 * Raw copies as `<dir>/<id>.raw` (cache_raw_url `file://<dir>/<id>.raw`). A write goes to
 * `<id>.raw.partial-<attempt>` (its mtime kept fresh while it is written), is fsynced, then
 * renamed: a `<id>.raw` is always complete, and a crash leaves only a partial that the leftover
 * sweep removes once its writer is gone (../leftovers.ts).
 */
export class FileRawCopyTarget implements RawCopyTarget, LeftoverPlace {
  readonly kind = 'file';
  readonly dir: string;
  readonly limits: SpaceLimits;

  constructor(
    dir: string,
    private readonly logger: Logger,
    limits: Partial<SpaceLimits> = {},
  ) {
    this.dir = resolve(dir);
    this.limits = spaceLimits(limits);
  }

  urlFor(imageId: string): string {
    return pathToFileURL(this.copyPath(imageId)).href;
  }

  /**
   * Converts `source` into the copy. A complete copy already there (same size) is kept: Glance
   * image data never changes, so it is the same bytes.
   */
  async write(imageId: string, source: ConvertSource, signal: AbortSignal): Promise<{ url: string; size: number }> {
    const finalPath = this.copyPath(imageId);
    const url = this.urlFor(imageId);
    throwIfAborted(signal, 'raw copy');
    await mkdir(this.dir, { recursive: true });
    const existing = await stat(finalPath).catch(() => undefined);
    if (existing?.isFile() && existing.size === source.virtualSize) {
      this.logger.info('raw copy already present', { imageId, url });
      return { url, size: existing.size };
    }
    // The source may be Glance's own file (read in place): qemu-img never writes to it, and the
    // copy is never the source.
    if (resolve(source.path) === finalPath) throw new RawCacheError(`the raw copy ${finalPath} would overwrite its own source`, true);
    const measure = await measureRawCopyWithin(source, this.limits, signal);
    ensureRoom(await this.room(), measure, this.limits.reserveBytes, `the raw copy directory ${this.dir}`);

    const attempt = newAttempt();
    const partial = join(this.dir, fileNames.partial(imageId, attempt));
    const stopHeartbeat = keepFileAlive(attempt, partial);
    try {
      await convertToRaw(source, partial, signal);
      const size = (await stat(partial)).size;
      if (size !== source.virtualSize) {
        throw new RawCacheError(`the raw copy has ${size} bytes where the image's virtual size is ${source.virtualSize}: refused`, true);
      }
      await fsyncPath(partial);
      throwIfAborted(signal, 'raw copy');
      await source.commit?.();
      await rename(partial, finalPath);
      await fsyncPath(this.dir);
      this.logger.info('raw copy written', { imageId, url, size });
      return { url, size };
    } catch (error) {
      await rm(partial, { force: true });
      throw asWriteError(error, this.dir);
    } finally {
      stopHeartbeat();
    }
  }

  async exists(imageId: string): Promise<boolean> {
    const stats = await stat(this.copyPath(imageId)).catch(() => undefined);
    return stats?.isFile() ?? false;
  }

  /** Removes the copy and the partials of `imageId` whose writer is gone (a live write's stays). */
  async remove(imageId: string): Promise<void> {
    assertImageId(imageId);
    await rm(this.copyPath(imageId), { force: true });
    await removeLeftovers([this], this.logger, imageId.toLowerCase());
  }

  /** The partials here (`<id>.raw.partial-<attempt>`), for the leftover sweep. */
  async filesInFlight(): Promise<FileInFlight[]> {
    return (await this.entries()).flatMap((name) => {
      const match = fileNames.partialPattern.exec(name);
      return match ? [localFileInFlight(join(this.dir, name), match[1], match[2])] : [];
    });
  }

  async list(): Promise<string[]> {
    return idsFromNames(await this.entries(), fileNames.pattern);
  }

  /** The free space of the directory's filesystem, as the space check before each write sees it. */
  async freeBytes(): Promise<number | undefined> {
    return (await this.room()).free;
  }

  private async room(): Promise<Room> {
    return { free: await filesystemFreeBytes(this.dir) };
  }

  private copyPath(imageId: string): string {
    assertImageId(imageId);
    return join(this.dir, fileNames.copy(imageId));
  }

  private async entries(): Promise<string[]> {
    try {
      return await readdir(this.dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
  }
}

async function fsyncPath(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function asWriteError(error: unknown, dir: string): unknown {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return new RawCacheError(`no space left in ${dir} for the raw copy; will retry`, false);
  if (typeof code === 'string') return new RawCacheError(`writing the raw copy in ${dir} failed: ${(error as Error).message}`, false);
  return error;
}
