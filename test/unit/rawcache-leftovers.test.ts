import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import winston from 'winston';
import { removeLeftovers, workDirPlace } from '../../src/rawcache/leftovers';
import { FileRawCopyTarget } from '../../src/rawcache/targets';
import { fileNames, workNames } from '../../src/rawcache/targets/names';
import { judgeAttempt, keepAlive, newAttempt, parseAttempt, setStaleAge, writerOf } from '../../src/rawcache/writer';

/**
 * Which files in flight are leftovers, judged against real processes of this host (their pid and
 * start time in /proc) and real files (their mtime, the heartbeat of writers on other hosts).
 */

const logger = winston.createLogger({ silent: true });
const ID = '6f1c4f0e-2a4b-4b55-8d0e-5b0c1d2e3f40';
const OTHER_HOST = '0badc0de-4242-0badc0de-a1b2c3';
const now = async () => Date.now();
const longAgo = async () => Date.now() - 3_600_000;

/** A real process of this host, and its exit. */
function startProcess() {
  const child = spawn('sleep', ['600'], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { pid: child.pid!, stop: async () => (child.kill('SIGKILL'), await exited) };
}

beforeAll(() => setStaleAge(60));

describe('attempt tags', () => {
  test('name the host, the pid and the process, with a random part per attempt', () => {
    const [a, b] = [newAttempt(), newAttempt()];
    expect(a).not.toBe(b);
    expect(parseAttempt(a)).toEqual({ host: expect.stringMatching(/^[0-9a-f]{8}$/), pid: process.pid, process: expect.stringMatching(/^[0-9a-f]{8}$/) });
    expect(a.startsWith(`${writerOf(process.pid)}-`)).toBe(true);
    expect(parseAttempt('0123abcd')).toBeUndefined();
  });
});

describe('judging a file in flight', () => {
  test("on this host: kept while its writer runs, a leftover once it is gone, whatever the heartbeat's age", async () => {
    const writer = startProcess();
    const attempt = `${writerOf(writer.pid)}-c0ffee`;
    expect(await judgeAttempt(attempt, longAgo)).toEqual({ leftover: false, why: `its writer (pid ${writer.pid} on this host) is running` });
    await writer.stop();
    expect(await judgeAttempt(attempt, now)).toEqual({ leftover: true, why: `its writer (pid ${writer.pid} on this host) is gone` });
  });

  test('on this host: a leftover when another process now holds the pid', async () => {
    const holder = startProcess();
    try {
      const [host, pid] = writerOf(holder.pid)!.split('-');
      expect(await judgeAttempt(`${host}-${pid}-00000000-c0ffee`, now)).toEqual({ leftover: true, why: `its writer is gone (pid ${holder.pid} is now another process)` });
    } finally {
      await holder.stop();
    }
  });

  test('of this process: kept while its writer keeps it alive, a leftover after', async () => {
    const attempt = newAttempt();
    expect((await judgeAttempt(attempt, now)).leftover).toBe(true);
    const stop = keepAlive(attempt, async () => true);
    expect(await judgeAttempt(attempt, longAgo)).toEqual({ leftover: false, why: 'this process is writing it' });
    stop();
    expect((await judgeAttempt(attempt, now)).leftover).toBe(true);
  });

  test('of another host, or with no tag: kept until its heartbeat is older than the stale age', async () => {
    expect(await judgeAttempt(OTHER_HOST, async () => Date.now() - 59_000)).toEqual({ leftover: false, why: 'written by host 0badc0de, heartbeat 59 s ago' });
    expect(await judgeAttempt(OTHER_HOST, async () => Date.now() - 61_000)).toEqual({ leftover: true, why: 'written by host 0badc0de, no heartbeat for 61 s' });
    expect((await judgeAttempt(undefined, now)).leftover).toBe(false);
    expect(await judgeAttempt('0123abcd', async () => Number.NaN)).toEqual({ leftover: true, why: 'written by a writer that left no tag, no heartbeat for ever' });
  });
});

describe('removing leftovers', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stx-leftovers-unit-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("from the work dir and the file target: a dead writer's files and stale foreign ones go, live and fresh ones stay", async () => {
    const work = join(dir, 'work');
    const raw = join(dir, 'raw');
    const target = new FileRawCopyTarget(raw, logger);
    for (const d of [work, raw]) await mkdir(d);
    const live = startProcess();
    const dead = startProcess();
    const deadAttempt = `${writerOf(dead.pid)}-c0ffee`;
    await dead.stop();
    try {
      const liveAttempt = `${writerOf(live.pid)}-c0ffee`;
      const files = {
        deadSource: join(work, workNames.source(ID, deadAttempt)),
        deadImport: join(work, workNames.rawImport(ID, deadAttempt)),
        liveSource: join(work, workNames.source(ID, liveAttempt)),
        staleForeign: join(raw, fileNames.partial(ID, OTHER_HOST)),
        freshForeign: join(work, workNames.source(ID, '0badc0de-4242-0badc0de-d00d00')),
        deadPartial: join(raw, fileNames.partial(ID, deadAttempt)),
        copy: join(raw, fileNames.copy(ID)),
        unrelated: join(work, 'notes.txt'),
      };
      for (const path of Object.values(files)) await writeFile(path, 'x');
      const hourAgo = new Date(Date.now() - 3_600_000);
      await utimes(files.staleForeign, hourAgo, hourAgo);

      const result = await removeLeftovers([workDirPlace(work), target], logger);
      expect(result.removed.sort()).toEqual([files.deadImport, files.deadPartial, files.deadSource, files.staleForeign].sort());
      expect(result.kept.sort()).toEqual([files.freshForeign, files.liveSource].sort());
      expect((await readdir(work)).sort()).toEqual(['notes.txt', workNames.source(ID, '0badc0de-4242-0badc0de-d00d00'), workNames.source(ID, liveAttempt)].sort());
      expect(await readdir(raw)).toEqual([fileNames.copy(ID)]);
    } finally {
      await live.stop();
    }
  });
});
