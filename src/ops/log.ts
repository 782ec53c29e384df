import winston from 'winston';

/** Keys that must never reach a log line, whatever code tries to log them. */
const SECRET_KEY = /token|password|secret|authorization|credential|cookie/i;

const redactSecrets = winston.format((info) => {
  for (const key of Object.keys(info)) {
    if (SECRET_KEY.test(key)) delete (info as Record<string, unknown>)[key];
  }
  return info;
});

export type Logger = winston.Logger;

/** JSON lines on stdout, one object per line, with the service name and a timestamp. */
export function createLogger(level: string, service = 'stx-glance-proxy'): Logger {
  return winston.createLogger({
    level,
    defaultMeta: { service },
    format: winston.format.combine(redactSecrets(), winston.format.timestamp(), winston.format.json()),
    transports: [new winston.transports.Console()],
  });
}
