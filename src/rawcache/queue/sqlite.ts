import { randomBytes } from 'node:crypto';
import { mkdirSync, watch, type FSWatcher } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { RawCacheConfig } from '../../config/load';
import type { Logger } from '../../ops/log';
import { OwnershipLostError, type ClaimedJob, type ConsumeOptions, type JobQueue, type QueueHealth, type RawCacheJob, type TriggerReason } from '../types';
import {
  DEFAULT_POLL_INTERVAL_MS,
  JobSettlement,
  checkConsumeArguments,
  QueueUnavailableError,
  checkEnqueueArguments,
  defaultRetryDelayMs,
  type JobQueueOptions,
  type Settlement,
} from './common';
import { SqliteTriggerWriter, touchWakeFile, wakeFileOf } from './sqlite-writer';

/**
 * How long a statement waits for another process's write lock. The proxy and every worker
 * process share the file; their transactions are a few microseconds long, so a wait this long
 * only happens when something is wrong with the disk.
 */
const BUSY_TIMEOUT_MS = 5_000;

/**
 * With the database's directory watched, polling is only the fallback (a missed or coalesced
 * file-system event, a retry whose delay ran out): this often.
 */
const WATCHED_POLL_INTERVAL_MS = 1_000;

/** Bumped with every entry added to MIGRATIONS; stored in the file's `user_version`. */
export const SQLITE_SCHEMA_VERSION = 1;

/**
 * One row per image: the row is the job and the lock. Times are milliseconds since the epoch.
 * - enqueued_at: the first trigger still pending in this job;
 * - not_before: when the job may run (now, or later after a retry);
 * - lease_owner/lease_until: the worker claim running it; a lease past lease_until is free to take;
 * - rerun/rerun_enqueued_at: a trigger arrived while the job ran, so complete() brings it back.
 */
const MIGRATIONS: ReadonlyArray<(db: Database.Database) => void> = [
  (db) =>
    db.exec(`
      CREATE TABLE jobs (
        image_id          TEXT PRIMARY KEY NOT NULL,
        reason            TEXT NOT NULL,
        attempts          INTEGER NOT NULL DEFAULT 0,
        enqueued_at       INTEGER NOT NULL,
        not_before        INTEGER NOT NULL,
        lease_owner       TEXT,
        lease_until       INTEGER,
        rerun             INTEGER NOT NULL DEFAULT 0,
        rerun_enqueued_at INTEGER
      ) WITHOUT ROWID;
      CREATE INDEX jobs_due ON jobs (not_before);
    `),
];

/**
 * Records one trigger. Waiting: coalesce (earliest enqueued_at, latest reason, due now, attempts
 * from 0). Leased (running, or held by a worker that may have died): only remember that a trigger came.
 */
export const ENQUEUE_SQL = `
  INSERT INTO jobs (image_id, reason, attempts, enqueued_at, not_before)
  VALUES (@imageId, @reason, 0, @now, @now)
  ON CONFLICT (image_id) DO UPDATE SET
    reason = excluded.reason,
    attempts = CASE WHEN lease_owner IS NULL THEN 0 ELSE attempts END,
    not_before = CASE WHEN lease_owner IS NULL THEN excluded.not_before ELSE not_before END,
    rerun = CASE WHEN lease_owner IS NULL THEN 0 ELSE 1 END,
    rerun_enqueued_at = CASE WHEN lease_owner IS NULL THEN NULL ELSE coalesce(rerun_enqueued_at, excluded.enqueued_at) END
`;

interface JobRow {
  image_id: string;
  reason: TriggerReason;
  attempts: number;
  enqueued_at: number;
}

interface RunningClaim {
  imageId: string;
  owner: string;
  done: Promise<void>;
  settlement: JobSettlement;
  /** Until when the lease is known to be this claim's: the last successful renewal's lease_until. */
  heldUntil: number;
  /** The handler settled the job: the row is no longer this claim's, even while the handler finishes. */
  settled: boolean;
}

/**
 * The SQLite job queue: the proxy and the workers of one host share a database file.
 *
 * Durability: WAL with synchronous=FULL on every connection: a commit is fsynced before it
 * returns, so a job `enqueue` confirmed survives a power loss, not only a crash. Triggers are
 * committed by a thread of their own (sqlite-writer.ts), which keeps the fsync and any wait for
 * another process's write lock off the event loop and lets concurrent triggers share one commit.
 *
 * Wake-up: whoever commits a job that is due now (the trigger writer; a worker handing a job back
 * or finding a trigger came during its run) touches the wake file next to the database after the
 * commit. Consumers watch the database's directory (inotify on Linux) and look for due jobs when
 * it changes, so a trigger starts its job in another process without waiting for a poll. Each
 * poll that finds nothing is timed for the next job that falls due (a retry's delay, a lease
 * running out), and the fallback poll stays for what neither covers.
 */
export class SqliteJobQueue implements JobQueue {
  readonly backend = 'sqlite' as const;
  private readonly db: Database.Database;
  private readonly leaseMs: number;
  private readonly pollIntervalMs: number | undefined;
  /** Watches the database's directory for other processes' commits while consuming. */
  private watcher: FSWatcher | undefined;
  private readonly retryDelayMs: (attempts: number) => number;
  /** This queue instance, in lease owners: host, process and a random part (several per process are fine). */
  private readonly instanceId = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
  private claimSequence = 0;

  private handler: ((job: ClaimedJob) => Promise<void>) | undefined;
  private concurrency = 0;
  private stopping = false;
  private pollTimer: NodeJS.Timeout | undefined;
  /** The poll scheduled is an immediate one (several file-system events make one poll). */
  private pollSoon = false;
  private renewTimer: NodeJS.Timeout | undefined;
  private readonly running = new Map<string, RunningClaim>();
  private stopped: Promise<void> | undefined;
  private closed = false;
  /** Commits triggers off the event loop; started on the first enqueue. */
  private readonly writer: SqliteTriggerWriter;

  private readonly statements: {
    due: Database.Statement;
    claim: Database.Statement;
    renew: Database.Statement;
    completeDelete: Database.Statement;
    completeRerun: Database.Statement;
    retry: Database.Statement;
    release: Database.Statement;
    depth: Database.Statement;
    nextDue: Database.Statement;
  };

  constructor(
    private readonly config: RawCacheConfig['queue'],
    private readonly logger: Logger,
    options: JobQueueOptions = {},
  ) {
    this.leaseMs = Math.round(config.lease_seconds * 1000);
    this.pollIntervalMs = options.pollIntervalMs;
    this.retryDelayMs = options.retryDelayMs ?? defaultRetryDelayMs;
    mkdirSync(path.dirname(path.resolve(config.sqlite_path)), { recursive: true });
    this.db = new Database(config.sqlite_path, { timeout: BUSY_TIMEOUT_MS });
    try {
      this.db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      const mode = this.db.pragma('journal_mode = WAL', { simple: true });
      if (String(mode).toLowerCase() !== 'wal') {
        throw new Error(`${config.sqlite_path}: SQLite refused WAL mode (got '${mode}'); the queue needs a local file system`);
      }
      this.db.pragma('synchronous = FULL');
      this.migrate();
      this.statements = this.prepare();
    } catch (err) {
      this.db.close();
      throw err;
    }
    this.writer = new SqliteTriggerWriter({ path: config.sqlite_path, busyTimeoutMs: BUSY_TIMEOUT_MS, enqueueSql: ENQUEUE_SQL }, (journalMode, synchronous) =>
      logger.info('raw-cache queue: trigger writer ready', { path: config.sqlite_path, journal_mode: journalMode, synchronous }),
    );
  }

  private migrate(): void {
    const current = (): number => Number(this.db.pragma('user_version', { simple: true }));
    if (current() === SQLITE_SCHEMA_VERSION) return;
    // IMMEDIATE: two processes opening a new file at once must not both create the table.
    this.db
      .transaction(() => {
        const version = current();
        if (version > SQLITE_SCHEMA_VERSION) {
          throw new Error(
            `${this.config.sqlite_path}: queue schema version ${version} is newer than this program knows (${SQLITE_SCHEMA_VERSION}); upgrade it`,
          );
        }
        for (let v = version; v < SQLITE_SCHEMA_VERSION; v++) MIGRATIONS[v](this.db);
        this.db.pragma(`user_version = ${SQLITE_SCHEMA_VERSION}`);
      })
      .immediate();
  }

  private prepare(): SqliteJobQueue['statements'] {
    return {
      // A read first: readers never wait for (or hold up) writers in WAL mode, so idle polling by
      // several workers costs the proxy's enqueue nothing.
      due: this.db.prepare('SELECT 1 FROM jobs WHERE not_before <= @now AND (lease_owner IS NULL OR lease_until <= @now) LIMIT 1'),
      // One statement, so one write lock: no two claimers can both see a row free. Taking over an
      // expired lease starts a new run, which already covers every trigger recorded so far.
      claim: this.db.prepare(`
        UPDATE jobs SET
          lease_owner = @owner,
          lease_until = @until,
          attempts = CASE WHEN rerun = 1 THEN 0 ELSE attempts END,
          rerun = 0,
          rerun_enqueued_at = NULL
        WHERE image_id IN (
          SELECT image_id FROM jobs
          WHERE not_before <= @now AND (lease_owner IS NULL OR lease_until <= @now)
          ORDER BY not_before, enqueued_at
          LIMIT @limit
        )
        RETURNING image_id, reason, attempts, enqueued_at
      `),
      renew: this.db.prepare('UPDATE jobs SET lease_until = @until WHERE image_id = @imageId AND lease_owner = @owner'),
      completeDelete: this.db.prepare('DELETE FROM jobs WHERE image_id = @imageId AND lease_owner = @owner AND rerun = 0'),
      // Complete with a trigger pending: the job is due again as if that trigger had just coalesced.
      completeRerun: this.db.prepare(`
        UPDATE jobs SET
          lease_owner = NULL, lease_until = NULL, attempts = 0, not_before = @now,
          enqueued_at = coalesce(rerun_enqueued_at, @now), rerun = 0, rerun_enqueued_at = NULL
        WHERE image_id = @imageId AND lease_owner = @owner AND rerun = 1
      `),
      // A trigger that came during the run wins over the retry's delay, as it would have if it had
      // arrived just after the retry.
      retry: this.db.prepare(`
        UPDATE jobs SET
          lease_owner = NULL, lease_until = NULL,
          attempts = CASE WHEN rerun = 1 THEN 0 ELSE attempts + @counted END,
          not_before = CASE WHEN rerun = 1 THEN @now ELSE @now + @delayMs END,
          rerun = 0, rerun_enqueued_at = NULL
        WHERE image_id = @imageId AND lease_owner = @owner
      `),
      release: this.db.prepare(`
        UPDATE jobs SET
          lease_owner = NULL, lease_until = NULL,
          attempts = CASE WHEN rerun = 1 THEN 0 ELSE attempts END,
          not_before = min(not_before, @now),
          rerun = 0, rerun_enqueued_at = NULL
        WHERE image_id = @imageId AND lease_owner = @owner
      `),
      depth: this.db.prepare('SELECT count(*) AS n FROM jobs WHERE lease_owner IS NULL OR lease_until <= @now'),
      // When the next job falls due: a waiting one's not_before, or a leased one's lease end.
      nextDue: this.db.prepare('SELECT min(CASE WHEN lease_owner IS NULL THEN not_before ELSE max(not_before, lease_until) END) AS at FROM jobs'),
    };
  }

  async enqueue(id: string, reason: TriggerReason): Promise<void> {
    const imageId = checkEnqueueArguments(id, reason);
    if (this.closed) throw new QueueUnavailableError('raw-cache queue is closed');
    try {
      await this.writer.write(imageId, reason);
    } catch (err) {
      throw new QueueUnavailableError(`raw-cache queue ${this.config.sqlite_path}: cannot record the job for image ${imageId}: ${(err as Error).message}`);
    }
  }

  async consume(handler: (job: ClaimedJob) => Promise<void>, options: ConsumeOptions): Promise<void> {
    checkConsumeArguments(this.closed, this.handler !== undefined, options);
    this.handler = handler;
    this.concurrency = options.concurrency;
    this.stopping = false;
    this.stopped = undefined;
    // Renewing every third of the lease leaves two renewals' worth of slack before another worker may take over.
    this.renewTimer = setInterval(() => this.renewLeases(), Math.max(100, Math.floor(this.leaseMs / 3)));
    this.watchForCommits();
    this.schedulePoll(0);
  }

  /** The fallback poll interval: short when no watch tells of new commits. */
  private get fallbackPollMs(): number {
    return this.pollIntervalMs ?? (this.watcher ? WATCHED_POLL_INTERVAL_MS : DEFAULT_POLL_INTERVAL_MS);
  }

  private watchForCommits(): void {
    const wakeFile = wakeFileOf(path.resolve(this.config.sqlite_path));
    const name = path.basename(wakeFile);
    const stopWatching = (err: Error): void => {
      this.logger.warn('raw-cache queue: cannot watch the queue database for new jobs; polling instead', { path: this.config.sqlite_path, error: err.message });
      this.watcher?.close();
      this.watcher = undefined;
    };
    try {
      this.watcher = watch(path.dirname(wakeFile), { persistent: false }, (_event, changed) => {
        if (changed !== null && String(changed) === name) this.onCommitSeen();
      });
      this.watcher.on('error', stopWatching);
    } catch (err) {
      stopWatching(err as Error);
    }
  }

  /** A job may be due: with a slot free, look now. */
  private onCommitSeen(): void {
    if (!this.handler || this.stopping || this.running.size >= this.concurrency) return;
    if (this.pollTimer && this.pollSoon) return;
    this.pollSoon = true;
    this.schedulePoll(0);
  }

  stopConsuming(): Promise<void> {
    if (!this.handler) return this.stopped ?? Promise.resolve();
    this.stopping = true;
    clearTimeout(this.pollTimer);
    this.pollTimer = undefined;
    this.watcher?.close();
    this.watcher = undefined;
    this.stopped ??= (async () => {
      while (this.running.size > 0) await Promise.all([...this.running.values()].map((claim) => claim.done));
      clearInterval(this.renewTimer);
      this.renewTimer = undefined;
      this.handler = undefined;
    })();
    return this.stopped;
  }

  async health(): Promise<QueueHealth> {
    try {
      const row = this.statements.depth.get({ now: Date.now() }) as { n: number };
      return { ok: true, depth: row.n };
    } catch (err) {
      return { ok: false, detail: `${this.config.sqlite_path}: ${(err as Error).message}` };
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.stopConsuming();
    this.closed = true;
    await this.writer.close();
    this.db.close();
  }

  private schedulePoll(delayMs: number): void {
    if (!this.handler || this.stopping) return;
    clearTimeout(this.pollTimer);
    this.pollSoon = delayMs === 0;
    this.pollTimer = setTimeout(() => this.poll(), delayMs);
  }

  private poll(): void {
    this.pollTimer = undefined;
    this.pollSoon = false;
    if (!this.handler || this.stopping) return;
    const free = this.concurrency - this.running.size;
    // With every slot busy, the next poll comes when a job finishes.
    if (free <= 0) return;
    const owner = `${this.instanceId}:${++this.claimSequence}`;
    let rows: JobRow[];
    try {
      const now = Date.now();
      rows = this.statements.due.get({ now }) ? (this.statements.claim.all({ owner, now, until: now + this.leaseMs, limit: free }) as JobRow[]) : [];
    } catch (err) {
      this.logger.warn('raw-cache queue: cannot claim jobs', { path: this.config.sqlite_path, error: (err as Error).message });
      this.schedulePoll(this.fallbackPollMs);
      return;
    }
    for (const row of rows) this.start(row, owner);
    if (rows.length < free) this.schedulePoll(this.untilNextDue());
  }

  /** How long until the next poll: when the next job falls due, the fallback poll at the latest. */
  private untilNextDue(): number {
    try {
      const { at } = this.statements.nextDue.get() as { at: number | null };
      if (at !== null) return Math.max(0, Math.min(this.fallbackPollMs, at - Date.now() + 1));
    } catch {
      // The fallback poll tries again.
    }
    return this.fallbackPollMs;
  }

  private start(row: JobRow, owner: string): void {
    const job: RawCacheJob = {
      imageId: row.image_id,
      reason: row.reason,
      attempts: row.attempts,
      enqueuedAt: new Date(row.enqueued_at).toISOString(),
    };
    const settlement = new JobSettlement(
      job,
      (s) => this.settle(job.imageId, owner, s).finally(() => (claim.settled = true)),
      () => this.confirmLease(claim),
    );
    const claim: RunningClaim = { imageId: job.imageId, owner, done: Promise.resolve(), settlement, heldUntil: Date.now() + this.leaseMs, settled: false };
    claim.done = settlement.run(this.handler!, this.retryDelayMs, this.logger).finally(() => {
      // Once settled, the job may have been claimed again (a trigger came during the run) while this
      // handler was still cleaning up: that newer claim is not this one's to drop.
      if (this.running.get(job.imageId) === claim) this.running.delete(job.imageId);
      this.schedulePoll(0);
    });
    this.running.set(job.imageId, claim);
  }

  private async settle(imageId: string, owner: string, settlement: Settlement): Promise<void> {
    const keys = { imageId, owner, now: Date.now() };
    let changes: number;
    /** The row stays, waiting: other workers may take it (now, or after the retry's delay). */
    let waitsAgain = settlement.kind !== 'complete';
    try {
      if (settlement.kind === 'complete') {
        changes = this.db
          .transaction(() => {
            const deleted = this.statements.completeDelete.run(keys).changes;
            if (deleted) return deleted;
            waitsAgain = true;
            return this.statements.completeRerun.run(keys).changes;
          })
          .immediate();
      } else if (settlement.kind === 'retry') {
        changes = this.statements.retry.run({ ...keys, delayMs: settlement.delayMs, counted: settlement.countAttempt ? 1 : 0 }).changes;
      } else {
        changes = this.statements.release.run(keys).changes;
      }
    } catch (err) {
      this.logger.error('raw-cache queue: cannot settle a job', { image_id: imageId, settlement: settlement.kind, error: (err as Error).message });
      throw new QueueUnavailableError(`raw-cache queue ${this.config.sqlite_path}: cannot ${settlement.kind} the job for image ${imageId}: ${(err as Error).message}`);
    }
    if (changes > 0 && waitsAgain) touchWakeFile(this.config.sqlite_path);
    if (changes === 0) {
      // The lease expired and another worker claimed the row: that run owns the job now.
      this.logger.warn('raw-cache queue: job lease was lost before it was settled; another worker has it', {
        image_id: imageId,
        settlement: settlement.kind,
      });
    }
  }

  /**
   * The heartbeat of every running claim: extends its lease. A lease another worker took, or one
   * that could not be renewed before it ran out (another worker may take it from then on), is lost:
   * the claim's handler is aborted.
   */
  private renewLeases(): void {
    if (this.running.size === 0) return;
    for (const claim of this.running.values()) {
      if (claim.settled || claim.settlement.lost) continue;
      try {
        this.renew(claim);
      } catch (err) {
        if (err instanceof OwnershipLostError) {
          this.logger.error('raw-cache queue: job lease lost while its handler runs; the conversion is stopped', {
            image_id: claim.imageId,
            error: err.message,
          });
          claim.settlement.lose(err.message);
        } else {
          this.logger.warn('raw-cache queue: cannot renew a job lease', { image_id: claim.imageId, error: (err as Error).message });
          if (Date.now() >= claim.heldUntil) {
            claim.settlement.lose(`its lease ran out at ${new Date(claim.heldUntil).toISOString()} without a renewal (${(err as Error).message})`);
          }
        }
      }
    }
  }

  /** Extends the claim's lease, proving the row is still this claim's; throws OwnershipLostError when it is not. */
  private renew(claim: RunningClaim): void {
    const until = Date.now() + this.leaseMs;
    const { changes } = this.statements.renew.run({ imageId: claim.imageId, owner: claim.owner, until });
    if (changes === 0) throw new OwnershipLostError('another worker holds its lease now');
    claim.heldUntil = until;
  }

  /** The live check before an irreversible step: a renewal that must succeed now. */
  private async confirmLease(claim: RunningClaim): Promise<void> {
    if (claim.settled) throw new OwnershipLostError('the job was settled');
    try {
      this.renew(claim);
    } catch (err) {
      if (err instanceof OwnershipLostError) throw err;
      // Not proven lost, but not proven held either: an irreversible step needs the proof.
      throw new OwnershipLostError(`its lease could not be confirmed (${(err as Error).message})`);
    }
  }
}
