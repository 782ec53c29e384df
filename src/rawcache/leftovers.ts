import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../ops/log';
import { workNames } from './targets/names';
import { judgeAttempt } from './writer';

/**
 * Leftovers: the files a conversion writes on its way (the download `<id>.src.*` and the import
 * file `<id>.raw-import.*` in the work dir, the partial copy on the target) that a killed or failed
 * attempt left behind. They are found by name, and removed only when their writer is judged gone
 * (../writer.ts): a live conversion's files, on this host or another, are never touched.
 */

/** A file (or RBD image) that a conversion writes before the copy is complete. */
export interface FileInFlight {
  /** Where it is, for logs: a path, or `<pool>/<image>`. */
  where: string;
  imageId: string;
  /** The attempt tag in its name; undefined when the name has none. */
  attempt: string | undefined;
  /** When its writer last showed it was alive (ms since the epoch; NaN when unknown). */
  lastBeat(): Promise<number>;
  remove(): Promise<void>;
}

/** What holds files in flight: the work dir and each raw-copy target. */
export interface LeftoverPlace {
  filesInFlight(): Promise<FileInFlight[]>;
}

export function isLeftoverPlace(value: unknown): value is LeftoverPlace {
  return typeof (value as Partial<LeftoverPlace> | null)?.filesInFlight === 'function';
}

export interface LeftoverResult {
  /** Where each removed leftover was. */
  removed: string[];
  /** Files in flight whose writer is alive (or whose heartbeat is recent). */
  kept: string[];
}

/**
 * Removes the leftovers in `places` (of one image when `imageId` is given), logging each with the
 * reason. A place that cannot be listed, or a leftover that cannot be removed, is logged and
 * skipped: the next sweep tries again.
 */
export async function removeLeftovers(places: readonly LeftoverPlace[], logger: Logger, imageId?: string): Promise<LeftoverResult> {
  const result: LeftoverResult = { removed: [], kept: [] };
  for (const place of places) {
    let files: FileInFlight[];
    try {
      files = await place.filesInFlight();
    } catch (error) {
      logger.warn('could not look for leftovers', { error: (error as Error).message });
      continue;
    }
    for (const file of files) {
      if (imageId !== undefined && file.imageId !== imageId) continue;
      try {
        const verdict = await judgeAttempt(file.attempt, () => file.lastBeat());
        if (!verdict.leftover) {
          result.kept.push(file.where);
          logger.debug('file in flight kept', { image_id: file.imageId, where: file.where, why: verdict.why });
          continue;
        }
        await file.remove();
        result.removed.push(file.where);
        logger.info('leftover removed', { image_id: file.imageId, where: file.where, why: verdict.why });
      } catch (error) {
        logger.warn('could not remove a leftover; the next sweep retries', { image_id: file.imageId, where: file.where, error: (error as Error).message });
      }
    }
  }
  return result;
}

/** The worker's work dir as a place of leftovers: `<id>.src.*` and `<id>.raw-import.*`. */
export function workDirPlace(dir: string): LeftoverPlace {
  return {
    async filesInFlight() {
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw error;
      }
      return names.flatMap((name) => {
        const match = workNames.pattern.exec(name);
        return match ? [localFileInFlight(join(dir, name), match[1], match[2])] : [];
      });
    },
  };
}

/** A local file in flight: its heartbeat is its mtime. */
export function localFileInFlight(path: string, imageId: string, attempt: string | undefined): FileInFlight {
  return {
    where: path,
    imageId: imageId.toLowerCase(),
    attempt,
    lastBeat: async () => (await stat(path).catch(() => undefined))?.mtimeMs ?? Number.NaN,
    remove: () => rm(path, { force: true }),
  };
}

/** Every place a worker with `target` and `workDir` writes files in flight. */
export function leftoverPlaces(target: unknown, workDir: string): LeftoverPlace[] {
  return [workDirPlace(workDir), ...(isLeftoverPlace(target) ? [target] : [])];
}
