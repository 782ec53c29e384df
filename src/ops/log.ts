/** Keys that must never reach a log line, whatever code tries to log them. */
const SECRET_KEY = /token|password|secret|authorization|credential|cookie/i;

const LEVELS = { error: 0, warn: 1, info: 2, http: 3, verbose: 4, debug: 5, silly: 6 } as const;
export type LogLevel = keyof typeof LEVELS;
export type LogMeta = Record<string, unknown>;

/**
 * What the proxy logs through. A winston logger fits too (tests pass their own), so the code that logs
 * does not care which one it gets.
 */
export interface Logger {
  error(message: string, meta?: LogMeta): unknown;
  warn(message: string, meta?: LogMeta): unknown;
  info(message: string, meta?: LogMeta): unknown;
  debug(message: string, meta?: LogMeta): unknown;
  log(level: LogLevel, message: string, meta?: LogMeta): unknown;
  child(meta: LogMeta): Logger;
}

/** A logger of a process: `close` resolves once every line is written. */
export interface ProcessLogger extends Logger {
  close(): Promise<void>;
}

type Write = (line: string) => void;

/**
 * JSON lines, one object per line: level, message, the logger's fields (the service name), the line's
 * fields and a timestamp, with secret-looking keys left out. A line costs one JSON.stringify and one
 * write; lines below the level cost a comparison.
 */
class JsonLineLogger implements ProcessLogger {
  constructor(
    private readonly threshold: number,
    private readonly fields: LogMeta,
    private readonly write: Write,
  ) {}

  error(message: string, meta?: LogMeta): void {
    if (this.threshold >= LEVELS.error) this.emit('error', message, meta);
  }

  warn(message: string, meta?: LogMeta): void {
    if (this.threshold >= LEVELS.warn) this.emit('warn', message, meta);
  }

  info(message: string, meta?: LogMeta): void {
    if (this.threshold >= LEVELS.info) this.emit('info', message, meta);
  }

  debug(message: string, meta?: LogMeta): void {
    if (this.threshold >= LEVELS.debug) this.emit('debug', message, meta);
  }

  log(level: LogLevel, message: string, meta?: LogMeta): void {
    if (this.threshold >= (LEVELS[level] ?? LEVELS.info)) this.emit(level, message, meta);
  }

  child(meta: LogMeta): Logger {
    return new JsonLineLogger(this.threshold, { ...this.fields, ...meta }, this.write);
  }

  close(): Promise<void> {
    return new Promise((resolve) => process.stdout.write('', () => resolve()));
  }

  private emit(level: string, message: string, meta: LogMeta | undefined): void {
    const entry: LogMeta = { level, message };
    copyPublic(entry, this.fields);
    if (meta) copyPublic(entry, meta);
    entry.timestamp = new Date().toISOString();
    this.write(`${serialise(entry)}\n`);
  }
}

function copyPublic(into: LogMeta, from: LogMeta): void {
  for (const key in from) {
    if (key === 'level' || key === 'message' || SECRET_KEY.test(key)) continue;
    const value = from[key];
    if (value !== undefined) into[key] = value;
  }
}

/** JSON text of a line; values JSON cannot hold (cycles, bigints) are written as their text. */
function serialise(entry: LogMeta): string {
  try {
    return JSON.stringify(entry);
  } catch {
    const seen = new WeakSet<object>();
    return JSON.stringify(entry, (_key, value: unknown) => {
      if (typeof value === 'bigint') return value.toString();
      if (typeof value === 'object' && value !== null) {
        if (seen.has(value)) return '[Circular]';
        seen.add(value);
      }
      return value;
    });
  }
}

/** JSON lines on stdout, one object per line, with the service name and a timestamp. */
export function createLogger(level: string, service = 'stx-glance-proxy', write: Write = (line) => process.stdout.write(line)): ProcessLogger {
  const threshold = (LEVELS as Record<string, number>)[level];
  if (threshold === undefined) throw new Error(`unknown log level '${level}'`);
  return new JsonLineLogger(threshold, { service }, write);
}
