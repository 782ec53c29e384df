import { readdirSync, readFileSync } from 'node:fs';

/** Ids of the processes whose command line (argv, from /proc) `matches` accepts. */
export function findProcesses(matches: (argv: string[]) => boolean): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').filter((arg) => arg !== '');
    } catch {
      continue; // it ended meanwhile
    }
    if (argv.length > 0 && matches(argv)) found.push(Number(name));
  }
  return found;
}

/** True while `pid` exists (running, stopped, or not yet reaped). */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A zombie has exited; only its parent has not collected its status yet.
  return processState(pid) !== 'Z';
}

/** The state letter of /proc/<pid>/stat (R, S, T, Z...), or undefined when it cannot be read. */
function processState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

/** Polls /proc until a process that `matches` runs, and returns its id. */
export async function waitForProcess(matches: (argv: string[]) => boolean, timeoutMs: number, what: string): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [pid] = findProcesses(matches);
    if (pid !== undefined) return pid;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** `qemu-img convert ...` with `word` (an image id) in one of its paths. */
export function isQemuImgConvertOf(word: string): (argv: string[]) => boolean {
  return (argv) => argv[0].endsWith('qemu-img') && argv[1] === 'convert' && argv.some((arg) => arg.includes(word));
}
