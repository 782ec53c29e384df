import { randomBytes } from 'node:crypto';
import { open, mkdir, readdir, readFile, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { isTriggerReason } from './queue/common';
import type { TriggerReason } from './types';

/**
 * The proxy's fallback for triggers the queue did not confirm in time: an append-only file of
 * JSON lines in a local directory, each line fsynced before the client gets its answer, and read
 * back into the queue once the queue takes jobs again.
 *
 * Files in the directory:
 * - `triggers.jsonl`: the one every proxy process on the host appends to (O_APPEND);
 * - `draining-<time>-<random>.jsonl`: taken by a drain (renamed from `triggers.jsonl`), deleted
 *   once every trigger in it is queued; left for the next drain if the queue fails meanwhile.
 *
 * No locks, and no trigger lost, with any number of writers and drains across processes: a
 * writer checks after each fsync that `triggers.jsonl` is still the file it wrote to. If a drain
 * renamed it in between, the drain may have read it before the write landed, so the writer writes
 * the same lines again to a new `triggers.jsonl`. The price is a duplicate now and then, and
 * queued jobs are idempotent.
 */

export interface SpooledTrigger {
  imageId: string;
  reason: TriggerReason;
  /** When the proxy spooled it (ISO-8601). */
  spooledAt: string;
  requestId: string;
}

/** What a drain took: the triggers (in the order they were spooled) and the files they came from. */
export interface SpoolClaim {
  triggers: SpooledTrigger[];
  files: string[];
  /** Lines that were not triggers: only the torn end of a write a crash cut short, never answered. */
  unreadable: number;
}

const ACTIVE = 'triggers.jsonl';
const DRAINING = /^draining-[0-9]+-[0-9a-f]+\.jsonl$/;
/** A writer that keeps finding its file taken gives up after this many tries (the drain is not that fast). */
const MAX_WRITE_TRIES = 5;

interface Waiter {
  line: string;
  resolve(): void;
  reject(err: Error): void;
}

export class TriggerSpool {
  private handle: FileHandle | undefined;
  private waiting: Waiter[] = [];
  private flushing: Promise<void> | undefined;

  constructor(readonly dir: string) {}

  /** Resolves once the trigger is on disk (written and fsynced). Concurrent appends share one fsync. */
  append(trigger: SpooledTrigger): Promise<void> {
    const line = `${JSON.stringify(trigger)}\n`;
    const done = new Promise<void>((resolve, reject) => this.waiting.push({ line, resolve, reject }));
    this.startFlush();
    return done;
  }

  /**
   * Takes every trigger waiting in the spool: renames the active file (so new appends go to a new
   * one), then reads it and any file an earlier drain left. Release the files once their triggers
   * are queued.
   */
  async claim(): Promise<SpoolClaim> {
    try {
      await rename(path.join(this.dir, ACTIVE), path.join(this.dir, `draining-${Date.now()}-${randomBytes(4).toString('hex')}.jsonl`));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    let names: string[];
    try {
      names = (await readdir(this.dir)).filter((name) => DRAINING.test(name)).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { triggers: [], files: [], unreadable: 0 };
      throw err;
    }
    const claim: SpoolClaim = { triggers: [], files: [], unreadable: 0 };
    for (const name of names) {
      const file = path.join(this.dir, name);
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch (err) {
        // Another drain finished it first.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      claim.files.push(file);
      for (const line of text.split('\n')) {
        if (line.trim() === '') continue;
        const trigger = parseTrigger(line);
        if (trigger) claim.triggers.push(trigger);
        else claim.unreadable++;
      }
    }
    return claim;
  }

  /** Deletes files whose triggers are all queued now. */
  async release(files: string[]): Promise<void> {
    for (const file of files) await unlink(file).catch(() => undefined);
  }

  /** Waits for appends in flight, then closes the file. */
  async close(): Promise<void> {
    while (this.flushing) await this.flushing;
    await this.handle?.close().catch(() => undefined);
    this.handle = undefined;
  }

  private startFlush(): void {
    if (this.flushing) return;
    this.flushing = this.flush().finally(() => {
      this.flushing = undefined;
      // Appended after the last batch was taken, before this settled.
      if (this.waiting.length > 0) this.startFlush();
    });
  }

  private async flush(): Promise<void> {
    while (this.waiting.length > 0) {
      const batch = this.waiting;
      this.waiting = [];
      try {
        await this.write(batch.map((w) => w.line).join(''));
        for (const waiter of batch) waiter.resolve();
      } catch (err) {
        for (const waiter of batch) waiter.reject(err as Error);
      }
    }
  }

  private async write(text: string): Promise<void> {
    const file = path.join(this.dir, ACTIVE);
    for (let attempt = 1; attempt <= MAX_WRITE_TRIES; attempt++) {
      const handle = await this.activeHandle(file);
      try {
        await handle.appendFile(text);
        await handle.datasync();
      } catch (err) {
        // A handle that failed once is not trusted with the next write.
        this.handle = undefined;
        await handle.close().catch(() => undefined);
        throw err;
      }
      if (await this.stillActive(handle, file)) return;
      // A drain renamed the file under us, perhaps before these lines landed: write them again.
      this.handle = undefined;
      await handle.close().catch(() => undefined);
    }
    throw new Error(`${file} was taken by a drain ${MAX_WRITE_TRIES} times in a row while being written`);
  }

  private async activeHandle(file: string): Promise<FileHandle> {
    if (this.handle) return this.handle;
    await mkdir(this.dir, { recursive: true, mode: 0o750 });
    const handle = await open(file, 'a', 0o640);
    // The new name must survive a power loss too, not only what is written under it.
    const directory = await open(this.dir, 'r');
    try {
      await directory.sync();
    } finally {
      await directory.close();
    }
    this.handle = handle;
    return handle;
  }

  private async stillActive(handle: FileHandle, file: string): Promise<boolean> {
    const [mine, current] = await Promise.all([handle.stat(), stat(file).catch(() => undefined)]);
    return current !== undefined && current.ino === mine.ino && current.dev === mine.dev;
  }
}

function parseTrigger(line: string): SpooledTrigger | undefined {
  try {
    const value = JSON.parse(line) as Partial<SpooledTrigger>;
    if (typeof value?.imageId !== 'string' || value.imageId === '' || !isTriggerReason(value.reason)) return undefined;
    return {
      imageId: value.imageId,
      reason: value.reason,
      spooledAt: typeof value.spooledAt === 'string' ? value.spooledAt : '',
      requestId: typeof value.requestId === 'string' ? value.requestId : '',
    };
  } catch {
    return undefined;
  }
}
