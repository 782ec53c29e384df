/**
 * Progress of the conversions a worker runs: qemu-img's `-p` output parsed into a percent, an ETA
 * from the rate seen so far, and the board of conversions in flight that the worker's ops listener
 * publishes (/progress, and the gauges of /metrics). Pure functions and plain state: the clock is
 * injected, so all of it is tested without waiting.
 */

/** qemu-img convert -p redraws "    (12.34/100%)" with \r (a newline at the end). */
const QEMU_PROGRESS = /\((\d{1,3}(?:\.\d+)?)\/100%\)/g;

/**
 * Reads qemu-img's progress output chunk by chunk (a line may be split across chunks): `push`
 * returns the last percent the chunk completed, or undefined when it completed none.
 */
export class QemuProgressParser {
  private carry = '';

  push(chunk: string): number | undefined {
    const text = this.carry + chunk;
    const cut = Math.max(text.lastIndexOf('\r'), text.lastIndexOf('\n'), text.lastIndexOf(')'));
    // Keep what follows the last complete report (bounded: a line never grows past a few bytes).
    this.carry = text.slice(cut + 1).slice(-64);
    let last: number | undefined;
    for (const match of text.slice(0, cut + 1).matchAll(QEMU_PROGRESS)) {
      const value = Number(match[1]);
      if (value >= 0 && value <= 100) last = value;
    }
    return last;
  }
}

/** Before this much progress (percent) and this long, an ETA would be a guess: none is given. */
export const ETA_MIN_PERCENT = 1;
export const ETA_MIN_SECONDS = 2;
/** Weight of the newest rate sample in the smoothed rate (exponential moving average). */
const RATE_SMOOTHING = 0.3;

/**
 * The ETA of one conversion from its rate so far: the rate is the percent per second between
 * updates, smoothed (a burst of zeroes that qemu-img skips, then a slow stretch of data, do not make
 * it swing), and no ETA is given before ETA_MIN_PERCENT and ETA_MIN_SECONDS of progress.
 */
export class EtaEstimator {
  private readonly startedAt: number;
  private startPercent: number | undefined;
  private lastAt: number;
  private lastPercent = 0;
  private rate: number | undefined;

  constructor(private readonly now: () => number = Date.now) {
    this.startedAt = now();
    this.lastAt = this.startedAt;
  }

  /** Records `percent` now; returns the ETA in seconds, or undefined when there is none yet. */
  update(percent: number): number | undefined {
    const at = this.now();
    if (this.startPercent === undefined) {
      this.startPercent = percent;
      this.lastAt = at;
      this.lastPercent = percent;
      return undefined;
    }
    const seconds = (at - this.lastAt) / 1000;
    if (percent > this.lastPercent && seconds > 0) {
      const sample = (percent - this.lastPercent) / seconds;
      this.rate = this.rate === undefined ? sample : RATE_SMOOTHING * sample + (1 - RATE_SMOOTHING) * this.rate;
      this.lastAt = at;
      this.lastPercent = percent;
    }
    return this.eta();
  }

  /**
   * The ETA as of now: the time left at the smoothed rate, less the time since the last report.
   * None once that is overdue (the conversion slowed down: the past rate no longer tells).
   */
  eta(): number | undefined {
    if (this.rate === undefined || this.startPercent === undefined) return undefined;
    const at = this.now();
    if (this.lastPercent - this.startPercent < ETA_MIN_PERCENT || (at - this.startedAt) / 1000 < ETA_MIN_SECONDS) return undefined;
    const left = (100 - this.lastPercent) / this.rate - (at - this.lastAt) / 1000;
    return left >= 0 ? left : undefined;
  }
}

/** One conversion in flight, as /progress shows it. */
export interface ConversionProgress {
  image_id: string;
  /** 0..100 */
  percent: number;
  /** Seconds left, or null while there is not enough progress to tell. */
  eta_seconds: number | null;
  /** ISO-8601 time the conversion started. */
  started_at: string;
}

/** The conversions in flight in one worker process; an entry ends with its conversion. */
export class ProgressBoard {
  private readonly entries = new Map<string, { percent: number; estimator: EtaEstimator; startedAt: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  /** qemu-img reported `percent` for the image's conversion; the first report starts its entry. */
  report(imageId: string, percent: number): void {
    let entry = this.entries.get(imageId);
    if (!entry) {
      entry = { percent, estimator: new EtaEstimator(this.now), startedAt: this.now() };
      this.entries.set(imageId, entry);
    }
    entry.percent = percent;
    entry.estimator.update(percent);
  }

  /** The conversion ended (cached, failed, cancelled): its entry goes. */
  end(imageId: string): void {
    this.entries.delete(imageId);
  }

  snapshot(): ConversionProgress[] {
    return [...this.entries].map(([imageId, entry]) => {
      const eta = entry.estimator.eta();
      return {
        image_id: imageId,
        percent: entry.percent,
        eta_seconds: eta === undefined ? null : Math.round(eta),
        started_at: new Date(entry.startedAt).toISOString(),
      };
    });
  }
}

/** "1h02m", "4m05s", "12s". */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}

/** "42.0%, ETA 4m05s" (or "42.0%" when no ETA is known yet). */
export function describeProgress(progress: Pick<ConversionProgress, 'percent' | 'eta_seconds'>): string {
  const eta = progress.eta_seconds === null ? '' : `, ETA ${formatDuration(progress.eta_seconds)}`;
  return `${progress.percent.toFixed(1)}%${eta}`;
}

/** A one-line bar for a terminal: "[#########...........]  42.0%, ETA 4m05s". */
export function renderProgressBar(progress: Pick<ConversionProgress, 'percent' | 'eta_seconds'>, width = 30): string {
  const filled = Math.max(0, Math.min(width, Math.floor((progress.percent / 100) * width)));
  const eta = progress.eta_seconds === null ? '' : `, ETA ${formatDuration(progress.eta_seconds)}`;
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${`${progress.percent.toFixed(1)}%`.padStart(6)}${eta}`;
}
