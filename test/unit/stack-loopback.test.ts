import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { assertStackServesThisHostOnly, isLoopbackHost } from '../../src/dev/stack';

const CLI = join(__dirname, '..', '..', 'dist', 'cli.js');

describe('the stack with a local development Glance serves this host only', () => {
  it.each(['127.0.0.1', '127.1.2.3', 'localhost', '::1', '::ffff:127.0.0.1'])('takes %s for loopback', (host) => {
    expect(isLoopbackHost(host)).toBe(true);
  });

  it.each(['0.0.0.0', '::', '10.0.0.5', '128.0.0.1', '127.0.0.256', 'example.org', ''])('does not take %j for loopback', (host) => {
    expect(isLoopbackHost(host)).toBe(false);
  });

  it('refuses a listener that other hosts could reach, naming the setting', () => {
    const loopback = { listen: '127.0.0.1:9292', metrics: { enabled: true, listen: '127.0.0.1:9293', worker_listen: null, worker_progress_from: [] } };
    expect(() => assertStackServesThisHostOnly(loopback)).not.toThrow();
    expect(() => assertStackServesThisHostOnly({ ...loopback, listen: '0.0.0.0:9292' })).toThrow(/^config: listen 0\.0\.0\.0:9292 is not a loopback address/);
    expect(() => assertStackServesThisHostOnly({ ...loopback, metrics: { ...loopback.metrics, listen: '[::]:9293' } })).toThrow(/^config: metrics\.listen/);
  });

  it('`stack --listen 0.0.0.0:PORT` without an upstream exits 2 before starting anything', async () => {
    const run = promisify(execFile)(process.execPath, [CLI, 'stack', '--listen', '0.0.0.0:0', '--state-dir', '/nonexistent/never-created'], {
      env: { PATH: process.env.PATH ?? '' },
    });
    await expect(run).rejects.toMatchObject({ code: 2, stderr: expect.stringMatching(/listen 0\.0\.0\.0:0 is not a loopback address/) });
  });
});
