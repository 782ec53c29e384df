import { Worker } from 'node:worker_threads';
import type { TriggerReason } from '../types';

/**
 * The SQLite queue's trigger writer: a thread with a connection of its own that commits triggers
 * with synchronous=FULL (the WAL is fsynced before a commit returns, so a confirmed trigger
 * survives a power loss).
 *
 * Why a thread: better-sqlite3 is synchronous. On the proxy's event loop every fsync, and every
 * wait for another process's write lock (up to the busy timeout), would stall every request and
 * every stream the proxy relays. Here they stall only this thread.
 *
 * Group commit: triggers that arrive while a commit is under way (or waits for the lock) are
 * committed together in the next transaction, with one fsync, so the cost per trigger falls as
 * the rate rises.
 *
 * Wake-up: after each commit the thread touches the wake file (wakeFileOf), which consumers of
 * the queue watch, so an idle worker in another process starts the job at once.
 */

/** The file next to the database whose change tells the consumers that jobs may be due. */
export function wakeFileOf(databasePath: string): string {
  return `${databasePath}-wake`;
}

/** Touches the wake file (creating it when missing); false when it cannot (consumers then rely on their poll). */
export function touchWakeFile(databasePath: string): boolean {
  const fs = require('node:fs') as typeof import('node:fs');
  const file = `${databasePath}-wake`;
  const now = new Date();
  try {
    fs.utimesSync(file, now, now);
    return true;
  } catch {
    try {
      fs.closeSync(fs.openSync(file, 'a'));
      return true;
    } catch {
      return false;
    }
  }
}

export interface WriterSettings {
  path: string;
  busyTimeoutMs: number;
  /** The upsert of one job: named parameters @imageId, @reason, @now. */
  enqueueSql: string;
}

interface WriterData extends WriterSettings {
  /** Resolved by the parent: a thread started from source code resolves modules from the working directory. */
  driver: string;
}

type Request = { id: number; imageId: string; reason: TriggerReason; now: number } | { id: number; close: true };
type Reply = { kind: 'ready'; journalMode: string; synchronous: string } | { kind: 'done'; ids: number[]; error?: string } | { kind: 'failed'; error: string };

/**
 * The thread's code. It runs from its source text (the thread is started with `eval`), so it
 * must not use anything from this module's scope: it gets what it needs from workerData, and
 * requires modules itself. (A file of its own would not exist when the sources run under ts-jest.)
 */
function writerThread(): void {
  const { parentPort, workerData, receiveMessageOnPort } = require('node:worker_threads') as typeof import('node:worker_threads');
  const Database = require((workerData as WriterData).driver) as typeof import('better-sqlite3');
  const settings = workerData as WriterData;
  const port = parentPort!;
  const send = (reply: Reply): void => port.postMessage(reply);
  const fs = require('node:fs') as typeof import('node:fs');
  // touchWakeFile, restated: this code cannot see the module's scope.
  const wake = (): void => {
    const file = `${settings.path}-wake`;
    const now = new Date();
    try {
      fs.utimesSync(file, now, now);
    } catch {
      try {
        fs.closeSync(fs.openSync(file, 'a'));
      } catch {
        // The consumers' poll finds the job instead.
      }
    }
  };
  let db: import('better-sqlite3').Database;
  let commit: (jobs: Array<{ imageId: string; reason: string; now: number }>) => void;
  try {
    db = new Database(settings.path, { timeout: settings.busyTimeoutMs });
    db.pragma(`busy_timeout = ${settings.busyTimeoutMs}`);
    const journalMode = String(db.pragma('journal_mode = WAL', { simple: true })).toLowerCase();
    db.pragma('synchronous = FULL');
    // 2 is FULL, 3 EXTRA (FULL and more); read back, not assumed.
    const level = Number(db.pragma('synchronous', { simple: true }));
    const synchronous = ['OFF', 'NORMAL', 'FULL', 'EXTRA'][level] ?? String(level);
    if (journalMode !== 'wal' || level < 2) {
      throw new Error(`SQLite gives journal_mode=${journalMode} synchronous=${synchronous}, the queue needs WAL with synchronous=FULL`);
    }
    const upsert = db.prepare(settings.enqueueSql);
    const batch = db.transaction((jobs: Array<{ imageId: string; reason: string; now: number }>) => {
      for (const job of jobs) upsert.run(job);
    });
    commit = (jobs) => batch.immediate(jobs);
    send({ kind: 'ready', journalMode, synchronous });
  } catch (err) {
    send({ kind: 'failed', error: (err as Error).message });
    port.close();
    return;
  }
  port.on('message', (first: Request) => {
    // Everything that queued up while the last commit ran goes into this one.
    const requests = [first];
    for (let next = receiveMessageOnPort(port); next !== undefined; next = receiveMessageOnPort(port)) requests.push(next.message as Request);
    const jobs = requests.filter((r): r is Extract<Request, { imageId: string }> => !('close' in r));
    if (jobs.length > 0) {
      try {
        commit(jobs.map(({ imageId, reason, now }) => ({ imageId, reason, now })));
        send({ kind: 'done', ids: jobs.map((job) => job.id) });
        wake();
      } catch (err) {
        send({ kind: 'done', ids: jobs.map((job) => job.id), error: (err as Error).message });
      }
    }
    if (requests.some((r) => 'close' in r)) {
      db.close();
      port.close();
    }
  });
}

interface Pending {
  resolve(): void;
  reject(err: Error): void;
}

/** How long close() waits for the thread to finish its last commit before it ends it. */
const CLOSE_WAIT_MS = 10_000;

/** The parent's side: one thread, started on first use, that the queue hands its triggers to. */
export class SqliteTriggerWriter {
  private worker: Worker | undefined;
  private ready: Promise<void> | undefined;
  private readonly pending = new Map<number, Pending>();
  private sequence = 0;
  private closed = false;

  constructor(
    private readonly settings: WriterSettings,
    /** Told once per thread what the connection reads back. */
    private readonly onReady: (journalMode: string, synchronous: string) => void,
  ) {}

  /** Resolves once the trigger is committed with synchronous=FULL; rejects with SQLite's message. */
  async write(imageId: string, reason: TriggerReason): Promise<void> {
    if (this.closed) throw new Error('the trigger writer is closed');
    const worker = this.start();
    await this.ready;
    // It may have died while this write waited for it to start: nothing would answer.
    if (this.worker !== worker) throw new Error('the trigger writer thread ended before it took the trigger');
    const id = ++this.sequence;
    const done = new Promise<void>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    // Referenced only while it owes an answer: an idle writer does not keep the process alive.
    worker.ref();
    worker.postMessage({ id, imageId, reason, now: Date.now() } satisfies Request);
    return done;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const worker = this.worker;
    if (!worker) return;
    worker.ref();
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.postMessage({ id: ++this.sequence, close: true } satisfies Request);
    const timer = setTimeout(() => void worker.terminate(), CLOSE_WAIT_MS);
    await exited;
    clearTimeout(timer);
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const data: WriterData = { ...this.settings, driver: require.resolve('better-sqlite3') };
    const worker = new Worker(`(${writerThread.toString()})()`, { eval: true, workerData: data });
    this.worker = worker;
    worker.unref();
    this.ready = new Promise<void>((resolve, reject) => {
      worker.on('message', (reply: Reply) => {
        if (reply.kind === 'ready') {
          this.onReady(reply.journalMode, reply.synchronous);
          resolve();
        } else if (reply.kind === 'failed') {
          reject(new Error(reply.error));
        } else {
          for (const id of reply.ids) {
            const waiter = this.pending.get(id);
            this.pending.delete(id);
            if (reply.error === undefined) waiter?.resolve();
            else waiter?.reject(new Error(reply.error));
          }
          if (this.pending.size === 0) worker.unref();
        }
      });
    });
    // A failed start is reported to every write() that waits for it; not as an unhandled rejection.
    this.ready.catch(() => undefined);
    const ended = (why: string): void => {
      if (this.worker !== worker) return;
      // The next write starts a new thread.
      this.worker = undefined;
      for (const waiter of this.pending.values()) waiter.reject(new Error(why));
      this.pending.clear();
    };
    worker.on('error', (err) => ended(`the trigger writer thread failed: ${err instanceof Error ? err.message : String(err)}`));
    worker.on('exit', (code) => ended(`the trigger writer thread exited (code ${code})`));
    return worker;
  }
}
