import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface StopOptions {
  /** Send the first signal to the whole process group instead of the leader alone. */
  group?: boolean;
  /** How long the first signal gets before the group is killed with SIGKILL. */
  graceMs?: number;
}

const DEFAULT_GRACE_MS = 10_000;

/**
 * Ends the process group when its stdin reaches end-of-file, which happens when the test process
 * dies for any reason, SIGKILL included. Jest runs each suite in a sandbox whose `process` is a
 * copy that never emits 'exit', so an exit hook in the harness would never run.
 */
const WATCHDOG_SCRIPT = 'read -r _; kill -TERM "-$1" 2>/dev/null && sleep 5; kill -KILL "-$1" 2>/dev/null';

/**
 * A server process started in its own process group (so its children end with it), tied to the
 * test process by a watchdog so that a crashed suite leaves nothing running.
 */
export class ServiceProcess {
  readonly pid: number;
  readonly exited: Promise<ExitStatus>;
  private exitStatus: ExitStatus | undefined;
  private readonly watchdog: ChildProcess;

  private constructor(readonly child: ChildProcess, pid: number) {
    this.pid = pid;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitStatus = { code, signal };
        resolve(this.exitStatus);
      });
    });
    this.watchdog = spawn('/bin/sh', ['-c', WATCHDOG_SCRIPT, 'watchdog', String(pid)], {
      detached: true,
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    this.watchdog.unref();
    (this.watchdog.stdin as unknown as { unref(): void }).unref();
    child.unref();
  }

  static async start(command: string, args: string[], options: SpawnOptions): Promise<ServiceProcess> {
    const child = spawn(command, args, { ...options, detached: true });
    if (child.pid === undefined) {
      const error = await new Promise<Error>((resolve) => child.once('error', resolve));
      throw new Error(`cannot start ${command}: ${error.message}`);
    }
    return new ServiceProcess(child, child.pid);
  }

  isRunning(): boolean {
    return this.exitStatus === undefined;
  }

  signal(signal: NodeJS.Signals, group = false): void {
    if (!this.isRunning()) return;
    signalQuietly(group ? -this.pid : this.pid, signal);
  }

  /** Signals, waits, escalates to SIGKILL after the grace, and sweeps up whatever the group left. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', options: StopOptions = {}): Promise<ExitStatus> {
    this.child.ref();
    if (this.isRunning()) {
      this.signal(signal, options.group ?? false);
      const inTime = await settlesWithin(this.exited, options.graceMs ?? DEFAULT_GRACE_MS);
      if (!inTime) signalQuietly(-this.pid, 'SIGKILL');
    }
    const status = await this.exited;
    signalQuietly(-this.pid, 'SIGKILL');
    this.watchdog.kill('SIGKILL');
    return status;
  }
}

function signalQuietly(target: number, signal: NodeJS.Signals): void {
  try {
    process.kill(target, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

/** True if `promise` settles within `ms`; the timer never outlives the answer. */
export function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms, false);
    const settle = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    promise.then(settle, settle);
  });
}
