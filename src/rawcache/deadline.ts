/**
 * What `work` resolves to, or a rejection with the error `expired()` returns when `work` takes
 * longer than `ms`. `work` itself is not stopped; the caller decides what expiry means (and
 * `expired` may act on it, e.g. drop a connection, before it returns the error).
 */
export async function withDeadline<T>(work: Promise<T>, ms: number, expired: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(expired()), ms);
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** A step of a conversion ran past its deadline, or made no progress for too long. */
export class DeadlineError extends Error {
  constructor(
    message: string,
    readonly kind: 'deadline' | 'stall',
  ) {
    super(message);
    this.name = 'DeadlineError';
  }
}

export interface StepLimits {
  /** The whole step may take this long (no limit when absent or 0). */
  timeoutMs?: number;
  /** The step ends when it reports no progress for this long (no limit when absent or 0). */
  stallMs?: number;
}

/**
 * Watches one step (a transfer, a command) against its limits: `progress()` is called whenever the
 * step moves (bytes arrive, the tool prints its progress); when the whole step runs past
 * `timeoutMs`, or nothing moves for `stallMs`, `signal` aborts with a DeadlineError. `stop()` ends
 * the watch (always call it).
 */
export class StepWatch {
  private readonly controller = new AbortController();
  private readonly deadlineTimer: NodeJS.Timeout | undefined;
  private stallTimer: NodeJS.Timeout | undefined;
  private readonly started = Date.now();
  private stopped = false;
  private readonly onParentAbort: () => void;

  constructor(
    private readonly what: string,
    private readonly limits: StepLimits,
    private readonly parent?: AbortSignal,
  ) {
    this.onParentAbort = () => this.controller.abort(parent?.reason);
    if (parent?.aborted) this.controller.abort(parent.reason);
    else parent?.addEventListener('abort', this.onParentAbort, { once: true });
    if (limits.timeoutMs) {
      this.deadlineTimer = setTimeout(
        () => this.expire(new DeadlineError(`${what} did not finish within ${formatSeconds(limits.timeoutMs!)}`, 'deadline')),
        limits.timeoutMs,
      );
      this.deadlineTimer.unref?.();
    }
    this.armStall();
  }

  /** Aborts with the parent's reason, or a DeadlineError when a limit was hit. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  progress(): void {
    if (!this.stopped) this.armStall();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.deadlineTimer);
    clearTimeout(this.stallTimer);
    this.parent?.removeEventListener('abort', this.onParentAbort);
  }

  private armStall(): void {
    if (!this.limits.stallMs) return;
    clearTimeout(this.stallTimer);
    this.stallTimer = setTimeout(() => {
      const after = formatSeconds(Date.now() - this.started);
      this.expire(new DeadlineError(`${this.what} made no progress for ${formatSeconds(this.limits.stallMs!)} (after ${after})`, 'stall'));
    }, this.limits.stallMs);
    this.stallTimer.unref?.();
  }

  private expire(error: DeadlineError): void {
    if (this.stopped || this.controller.signal.aborted) return;
    this.stop();
    this.controller.abort(error);
  }
}

function formatSeconds(ms: number): string {
  return ms >= 1000 ? `${Math.round(ms / 100) / 10} s` : `${ms} ms`;
}
