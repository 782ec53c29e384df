import { spawn, type ChildProcess } from 'node:child_process';
import { StepWatch, type StepLimits } from './deadline';
import { QemuProgressParser } from './progress';

/**
 * Runs the external tools of the raw cache (qemu-img, rbd, ceph) with an AbortSignal, a wall-clock
 * limit and bounded output capture. An abort or a timeout kills the child and settles only once it
 * has exited, so the caller's cleanup never races a process that is still writing.
 */

export interface RunOptions {
  signal?: AbortSignal;
  /** Kill the command after this many milliseconds (no limit when absent). */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  /** Bytes of stdout kept (default 64 MiB); more fails the run: the output is not what we expect. */
  maxStdout?: number;
  /**
   * A deadline and stall limit for long commands (convert, import, export): any output on stdout or
   * stderr counts as progress (run the tool with its progress option). Past a limit the command is
   * killed and the run rejects with a DeadlineError.
   */
  limits?: StepLimits;
  /**
   * Called with each percent qemu-img's `-p` prints on stdout ("    (12.34/100%)", redrawn with
   * \r). Only for qemu-img convert: other tools' output is not parsed.
   */
  onProgress?: (percent: number) => void;
}

export interface RunResult {
  command: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  /** The start of stderr, at most STDERR_KEPT bytes (qemu-img check can print a line per cluster). */
  stderr: string;
  timedOut: boolean;
}

const DEFAULT_MAX_STDOUT = 64 * 1024 * 1024;
const STDERR_KEPT = 64 * 1024;

/** Thrown when the run's signal aborted it; `cause` is the signal's reason. */
export class CommandAbortedError extends Error {
  constructor(command: string, cause: unknown) {
    super(`${command}: aborted`, { cause });
    this.name = 'AbortError';
  }
}

export function isAbortError(error: unknown): boolean {
  return error instanceof Error && error.name === 'AbortError';
}

/** Throws the signal's abort error if it has aborted. */
export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw new CommandAbortedError(what, signal.reason);
}

/**
 * Runs `command args` to completion. Resolves with the exit status whatever it is (callers decide
 * what a non-zero code means); rejects when the command cannot be started or the signal aborts.
 */
export function runCommand(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const { signal } = options;
  const display = command.split('/').pop() ?? command;
  if (signal?.aborted) return Promise.reject(new CommandAbortedError(display, signal.reason));
  const watch = options.limits ? new StepWatch(display, options.limits) : undefined;
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env });
    const maxStdout = options.maxStdout ?? DEFAULT_MAX_STDOUT;
    const stdout: Buffer[] = [];
    let stdoutBytes = 0;
    let stdoutOverflow = false;
    const stderr: Buffer[] = [];
    let stderrBytes = 0;
    let timedOut = false;
    let aborted = false;
    const progress = options.onProgress ? new QemuProgressParser() : undefined;

    child.stdout.on('data', (chunk: Buffer) => {
      watch?.progress();
      if (progress) {
        const percent = progress.push(chunk.toString('latin1'));
        if (percent !== undefined) options.onProgress!(percent);
      }
      stdoutBytes += chunk.length;
      if (stdoutBytes > maxStdout) {
        stdoutOverflow = true;
        killHard(child);
        return;
      }
      stdout.push(chunk);
    });
    child.stderr.on('data', (chunk: Buffer) => {
      watch?.progress();
      if (stderrBytes >= STDERR_KEPT) return;
      const kept = chunk.subarray(0, STDERR_KEPT - stderrBytes);
      stderr.push(kept);
      stderrBytes += kept.length;
    });

    const onAbort = (): void => {
      aborted = true;
      killHard(child);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const onLimit = (): void => killHard(child);
    watch?.signal.addEventListener('abort', onLimit, { once: true });
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            killHard(child);
          }, options.timeoutMs);

    const finish = (): void => {
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      watch?.stop();
      watch?.signal.removeEventListener('abort', onLimit);
    };
    child.once('error', (error: NodeJS.ErrnoException) => {
      finish();
      if (error.code === 'ENOENT') reject(new Error(`${command} is not installed (or not on PATH)`));
      else reject(error);
    });
    // 'close' comes after the process exited and its pipes drained.
    child.once('close', (code, exitSignal) => {
      finish();
      if (aborted) {
        reject(new CommandAbortedError(display, signal?.reason));
        return;
      }
      if (watch?.signal.aborted) {
        reject(watch.signal.reason);
        return;
      }
      if (stdoutOverflow) {
        reject(new Error(`${display} printed more than ${maxStdout} bytes`));
        return;
      }
      resolve({
        command: display,
        code,
        signal: exitSignal,
        stdout: Buffer.concat(stdout).toString('utf8'),
        stderr: Buffer.concat(stderr).toString('utf8'),
        timedOut,
      });
    });
  });
}

function killHard(child: ChildProcess): void {
  // SIGKILL: qemu-img and rbd have no graceful stop on SIGTERM either, and a killed run is cleaned
  // up by the caller (partial files removed; an RBD partial once the OSD has dropped the dead watch).
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

/** The first meaningful line(s) of a tool's stderr, for an error message a person reads. */
export function stderrSummary(result: Pick<RunResult, 'stderr' | 'code' | 'signal' | 'timedOut'>, maxLines = 3): string {
  const lines = result.stderr
    .split(/[\r\n]/)
    .map((line) => line.trim())
    // Progress reports (rbd's "Importing image: 42% complete...") say nothing about a failure.
    .filter((line) => line !== '' && !/^[A-Za-z ]+: \d+% complete/.test(line));
  if (lines.length > 0) return lines.slice(0, maxLines).join('; ');
  if (result.timedOut) return 'no answer in time';
  if (result.signal) return `killed by ${result.signal}`;
  return `exit code ${result.code}`;
}
