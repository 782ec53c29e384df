import { readFileSync, rmSync } from 'node:fs';
import { runCommand, stderrSummary } from '../../src/rawcache/exec';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('runCommand', () => {
  test('resolves with the exit code and output whatever the code', async () => {
    const result = await runCommand('/bin/sh', ['-c', 'echo out; echo err >&2; exit 3']);
    expect(result).toMatchObject({ code: 3, stdout: 'out\n', stderr: 'err\n', timedOut: false });
    expect(stderrSummary(result)).toBe('err');
  });

  test('an abort kills the command and rejects only once it has exited', async () => {
    const controller = new AbortController();
    const pidFile = `/tmp/stx-exec-test-${process.pid}`;
    const running = runCommand('/bin/sh', ['-c', `echo $$ > ${pidFile}; exec sleep 30`], { signal: controller.signal });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const pid = Number(readFileSync(pidFile, 'utf8'));
    controller.abort(new Error('stop'));
    await expect(running).rejects.toMatchObject({ name: 'AbortError' });
    expect(alive(pid)).toBe(false);
    rmSync(pidFile, { force: true });
  });

  test('an already aborted signal starts nothing', async () => {
    await expect(runCommand('/bin/false', [], { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
  });

  test('a command that outlives its time limit is killed and reported as timed out', async () => {
    const started = Date.now();
    const result = await runCommand('sleep', ['30'], { timeoutMs: 200 });
    expect(result).toMatchObject({ timedOut: true, signal: 'SIGKILL' });
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(stderrSummary(result)).toBe('no answer in time');
  });

  test('keeps only the start of a flood of stderr', async () => {
    const result = await runCommand('/bin/sh', ['-c', 'yes "Leaked cluster 4 refcount=1 reference=0" | head -n 200000 >&2']);
    expect(result.code).toBe(0);
    expect(result.stderr.length).toBe(64 * 1024);
  });

  test('names a tool that is not installed', async () => {
    await expect(runCommand('stx-no-such-tool', [])).rejects.toThrow(/stx-no-such-tool is not installed/);
  });
});
