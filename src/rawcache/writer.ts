import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import { utimes } from 'node:fs/promises';
import { hostname } from 'node:os';

/**
 * Who wrote a file in flight. Every partial copy and temp file carries an attempt tag
 * `<host>-<pid>-<process>-<random>`:
 * - host: 8 hex of sha256(hostname, pid namespace): the processes whose pids this process can
 *   look up in /proc (containers with the host's network share its hostname, not its pids);
 * - pid: the writing process;
 * - process: 8 hex of sha256(boot id, the process's start time in ticks): tells the process that
 *   wrote the file from another that holds the same pid later (a reuse, or after a reboot);
 * - random: 6 hex, one per attempt, so that two attempts never share a name.
 * A leftover of this host is judged at once from /proc. One of another host (or of a version that
 * named files without a tag) is judged by its heartbeat: the writer refreshes each file in flight
 * (mtime, or an rbd image-meta key) while it writes, and only a file whose heartbeat is older than
 * `rawcache.worker.leftover_stale_seconds` is a leftover.
 */

export interface AttemptTag {
  host: string;
  pid: number;
  process: string;
}

/** Why a file in flight is, or is not, a leftover to remove. */
export interface Verdict {
  leftover: boolean;
  why: string;
}

/** Read once: the kernel's id of this boot, half of every process token. */
let bootId: string | undefined;
const TAG = /^([0-9a-f]{8})-(\d{1,10})-([0-9a-f]{8})-[0-9a-f]{6,}$/;

export const ownHost = shortHash(`${hostname()}:${pidNamespace()}`);
const ownProcess = processToken(process.pid) ?? randomBytes(4).toString('hex');
/** Attempts this process has in flight (tag -> heartbeat), kept until the writer says it is done. */
const inFlight = new Map<string, Heartbeat>();

/** A new attempt tag of this process. */
export function newAttempt(): string {
  return `${ownHost}-${process.pid}-${ownProcess}-${randomBytes(3).toString('hex')}`;
}

/** `<host>-<pid>-<process>` of the process holding `pid` now, or undefined when there is none. */
export function writerOf(pid: number): string | undefined {
  const token = processToken(pid);
  return token === undefined ? undefined : `${ownHost}-${pid}-${token}`;
}

export function parseAttempt(attempt: string | undefined): AttemptTag | undefined {
  const match = attempt === undefined ? null : TAG.exec(attempt);
  return match ? { host: match[1], pid: Number(match[2]), process: match[3] } : undefined;
}

/**
 * Whether a file in flight named with `attempt` is a leftover. `lastBeat` (ms since the epoch) is
 * read only when the writer's liveness cannot be seen from here.
 */
export async function judgeAttempt(attempt: string | undefined, lastBeat: () => Promise<number>): Promise<Verdict> {
  const tag = parseAttempt(attempt);
  if (tag !== undefined && tag.host === ownHost) {
    if (tag.pid === process.pid && tag.process === ownProcess) {
      return inFlight.has(attempt!) ? { leftover: false, why: 'this process is writing it' } : { leftover: true, why: 'an attempt of this process that has ended' };
    }
    const now = processToken(tag.pid);
    if (now === undefined) {
      if (procReadable()) return { leftover: true, why: `its writer (pid ${tag.pid} on this host) is gone` };
    } else if (now === tag.process) {
      return { leftover: false, why: `its writer (pid ${tag.pid} on this host) is running` };
    } else {
      return { leftover: true, why: `its writer is gone (pid ${tag.pid} is now another process)` };
    }
  }
  const beat = await lastBeat();
  const age = Date.now() - beat;
  const whose = tag === undefined ? 'a writer that left no tag' : tag.host === ownHost ? `pid ${tag.pid} of this host` : `host ${tag.host}`;
  if (Number.isFinite(age) && age <= staleAfterMs) return { leftover: false, why: `written by ${whose}, heartbeat ${Math.round(age / 1000)} s ago` };
  return { leftover: true, why: `written by ${whose}, no heartbeat for ${Number.isFinite(age) ? `${Math.round(age / 1000)} s` : 'ever'}` };
}

/**
 * Keeps a file in flight fresh while this process writes it: `beat` runs every `heartbeatMs`
 * (one at a time). Returns the function the writer calls when the attempt has ended (its file
 * renamed or removed). A beat that answers false ends the heartbeat too (the file is gone).
 */
export function keepAlive(attempt: string, beat: () => Promise<boolean | void>): () => void {
  const heartbeat: Heartbeat = { beat, running: false };
  inFlight.set(attempt, heartbeat);
  scheduleBeats();
  return () => {
    inFlight.delete(attempt);
    scheduleBeats();
  };
}

/**
 * keepAlive for a local file: its mtime is the heartbeat. With `untilGone`, the heartbeat ends by
 * itself once the file is removed (by code that does not know about it).
 */
export function keepFileAlive(attempt: string, path: string, untilGone = false): () => void {
  return keepAlive(attempt, async () => {
    const now = new Date();
    try {
      await utimes(path, now, now);
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return !untilGone;
      throw error;
    }
  });
}

interface Heartbeat {
  beat: () => Promise<boolean | void>;
  running: boolean;
}

/** rawcache.worker.leftover_stale_seconds' default. */
export const DEFAULT_STALE_SECONDS = 900;
let staleAfterMs = DEFAULT_STALE_SECONDS * 1000;
let heartbeatMs = heartbeatFor(DEFAULT_STALE_SECONDS);
let timer: NodeJS.Timeout | undefined;

/** Sets the stale age (rawcache.worker.leftover_stale_seconds), and with it the heartbeat. */
export function setStaleAge(seconds: number): void {
  staleAfterMs = seconds * 1000;
  heartbeatMs = heartbeatFor(seconds);
  if (timer !== undefined) {
    clearInterval(timer);
    timer = undefined;
  }
  scheduleBeats();
}

/** A fifth of the stale age, at most a minute: a writer misses four beats before anyone may judge it gone. */
function heartbeatFor(staleAfterSeconds: number): number {
  return Math.min(60_000, (staleAfterSeconds * 1000) / 5);
}

function scheduleBeats(): void {
  if (inFlight.size === 0 && timer !== undefined) {
    clearInterval(timer);
    timer = undefined;
  } else if (inFlight.size > 0 && timer === undefined) {
    timer = setInterval(beatAll, heartbeatMs);
    timer.unref();
  }
}

function beatAll(): void {
  for (const [attempt, heartbeat] of inFlight) {
    if (heartbeat.running) continue;
    heartbeat.running = true;
    heartbeat.beat().then(
      (alive) => {
        heartbeat.running = false;
        if (alive === false && inFlight.get(attempt) === heartbeat) inFlight.delete(attempt);
        scheduleBeats();
      },
      () => {
        // A missed beat only brings the stale age nearer; the next one may succeed.
        heartbeat.running = false;
      },
    );
  }
}

function shortHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 8);
}

/** The token of the process that holds `pid` now, or undefined when there is none (or no /proc). */
function processToken(pid: number): string | undefined {
  try {
    bootId ??= readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces and parentheses): state is field 3,
    // starttime field 22. A zombie (Z) or dying (X) process writes nothing any more.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z' || fields[0] === 'X' || fields[19] === undefined) return undefined;
    return shortHash(`${bootId}:${fields[19]}`);
  } catch {
    return undefined;
  }
}

function pidNamespace(): string {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return '';
  }
}

function procReadable(): boolean {
  return processToken(process.pid) === ownProcess;
}
