import { createLogger } from '../../src/ops/log';

function capture(level: string) {
  const lines: string[] = [];
  const logger = createLogger(level, 'svc', (line) => lines.push(line));
  return { logger, lines, entries: () => lines.map((line) => JSON.parse(line) as Record<string, unknown>) };
}

describe('the JSON-lines logger', () => {
  it('writes one JSON object per line with level, message, service, the fields and an ISO timestamp', () => {
    const { logger, lines, entries } = capture('info');
    logger.info('request', { request_id: 'req-1', status: 200, nothing: undefined });
    expect(lines).toHaveLength(1);
    expect(lines[0]!.endsWith('\n')).toBe(true);
    expect(lines[0]!.indexOf('\n')).toBe(lines[0]!.length - 1);
    const [entry] = entries();
    expect(entry).toEqual({ level: 'info', message: 'request', service: 'svc', request_id: 'req-1', status: 200, timestamp: expect.any(String) });
    expect(new Date(entry!.timestamp as string).toISOString()).toBe(entry!.timestamp);
  });

  it('writes nothing below its level', () => {
    const { logger, lines, entries } = capture('warn');
    logger.debug('d');
    logger.info('i');
    logger.log('info', 'i2');
    logger.warn('w');
    logger.log('error', 'e');
    expect(lines).toHaveLength(2);
    expect(entries().map((e) => [e.level, e.message])).toEqual([['warn', 'w'], ['error', 'e']]);
  });

  it('never writes a secret-looking key, from the line or from a child logger', () => {
    const { logger, lines } = capture('debug');
    logger.child({ auth_token: 'tok-child', image_id: 'i' }).info('x', { 'X-Auth-Token': 'tok1', password: 'pw', Authorization: 'Basic a', cookie: 'c', client_secret: 's', credentials: 'cr', kept: 'yes' });
    expect(lines[0]).not.toMatch(/tok|pw|Basic|"c"|"s"|cr"/);
    expect(JSON.parse(lines[0]!)).toMatchObject({ image_id: 'i', kept: 'yes' });
  });

  it('keeps level and message its own, and writes values JSON cannot hold as text', () => {
    const { logger, entries } = capture('info');
    const cycle: Record<string, unknown> = { a: 1 };
    cycle.self = cycle;
    logger.info('m', { level: 'forged', message: 'forged', big: 10n, cycle });
    expect(entries()[0]).toMatchObject({ level: 'info', message: 'm', big: '10', cycle: { a: 1, self: '[Circular]' } });
  });

  it('refuses an unknown level', () => {
    expect(() => createLogger('loud')).toThrow(/unknown log level 'loud'/);
  });
});
