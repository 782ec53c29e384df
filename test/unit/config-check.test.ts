import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configProblems, loadConfig } from '../../src/config/load';
import { renderEffectiveConfig } from '../../src/config/show';

const CLI = join(__dirname, '..', '..', 'dist', 'cli.js');

describe('config check and config show', () => {
  let dir: string;
  let bad: string;
  let good: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'stx-config-check-'));
    bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'listen: nope\nrawcache:\n  worker:\n    concurrency: 0\n    colour: blue\n');
    good = join(dir, 'good.yaml');
    writeFileSync(
      good,
      [
        'upstream: http://127.0.0.1:19292',
        'rawcache:',
        '  queue:',
        '    backend: amqp',
        '    amqp_url: amqp://proxy:hunter2@rabbit.example:5672/stx',
        'service_auth:',
        '  auth_url: http://keystone.example:5000/v3',
        '  username: glance',
        '  password: s3cret-pass',
        '  application_credential_secret: s3cret-credential',
        '',
      ].join('\n'),
    );
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('lists every problem of a file, one line each naming the key path', () => {
    expect(configProblems({ file: bad, env: {} })).toEqual([
      expect.stringMatching(/^config: 'listen' must match pattern .* in .*bad\.yaml$/),
      `config: unknown key 'rawcache.worker.colour' in ${bad}`,
      `config: 'rawcache.worker.concurrency' must be >= 1 in ${bad}`,
    ]);
    expect(configProblems({ file: good, env: {} })).toEqual([]);
    expect(configProblems({ file: join(dir, 'missing.yaml'), env: {} })).toEqual([expect.stringMatching(/^config: cannot read .*missing\.yaml: /)]);
  });

  it('stx-glance-proxy config check FILE exits 1 with those lines, and 0 with one OK line', () => {
    const refused = spawnSync(process.execPath, [CLI, 'config', 'check', bad], { encoding: 'utf8' });
    expect(refused.status).toBe(1);
    expect(refused.stdout.trim().split('\n')).toHaveLength(3);
    expect(execFileSync(process.execPath, [CLI, 'config', 'check', good], { encoding: 'utf8' })).toBe(`${good}: OK\n`);
  });

  it('shows the effective configuration with every secret masked, and the rest as loaded', () => {
    const config = loadConfig({ file: good, env: { STX_GLANCE_PROXY_LOG_LEVEL: 'debug' } });
    for (const format of ['yaml', 'json'] as const) {
      const shown = renderEffectiveConfig(config, format);
      expect(shown).not.toMatch(/hunter2|s3cret/);
      expect(shown).toContain('amqp://proxy:*****@rabbit.example:5672/stx');
    }
    const json = JSON.parse(renderEffectiveConfig(config, 'json'));
    expect(json.service_auth).toMatchObject({ username: 'glance', password: '*****', application_credential_secret: '*****' });
    expect(json.log.level).toBe('debug');
    expect(json.rawcache.worker.concurrency).toBe(2);
    const cli = execFileSync(process.execPath, [CLI, 'config', 'show', '--config', good, '--json'], { encoding: 'utf8', env: { ...process.env, STX_GLANCE_PROXY_LOG_LEVEL: 'warn' } });
    expect(JSON.parse(cli)).toMatchObject({ upstream: 'http://127.0.0.1:19292', log: { level: 'warn' }, service_auth: { password: '*****' } });
  });
});
