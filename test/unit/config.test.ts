import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig } from '../../src/config/load';

describe('configuration loading', () => {
  const dir = mkdtempSync(join(tmpdir(), 'stx-config-unit-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };

  it('fills every default from the schema', () => {
    const config = loadConfig({ env: {}, overrides: { upstream: 'http://127.0.0.1:19292' } });
    expect(config).toMatchObject({
      listen: '127.0.0.1:9292',
      public_url: null,
      timeouts: { client_idle: 900, upstream_idle: 900, request_headers: 60, keep_alive: 65, shutdown_grace: 60 },
      upstream_pool: { max_sockets: 256, max_free_sockets: 64 },
      log: { level: 'info' },
    });
  });

  it('layers file < environment < flags', () => {
    const path = file('layers.yaml', 'upstream: http://file:1\nlisten: 127.0.0.1:1\nlog:\n  level: debug\n');
    const config = loadConfig({
      file: path,
      env: { STX_GLANCE_PROXY_LISTEN: '127.0.0.1:2', STX_GLANCE_PROXY_UPSTREAM: 'http://env:2' },
      overrides: { upstream: 'http://flag:3/' },
    });
    expect(config.listen).toBe('127.0.0.1:2');
    expect(config.upstream).toBe('http://flag:3');
    expect(config.log.level).toBe('debug');
  });

  it('reads JSON files too, and the file named by STX_GLANCE_PROXY_CONFIG', () => {
    const path = file('c.json', JSON.stringify({ upstream: 'http://json:1', timeouts: { upstream_idle: 5 } }));
    const config = loadConfig({ env: { STX_GLANCE_PROXY_CONFIG: path } });
    expect(config.upstream).toBe('http://json:1');
    expect(config.timeouts.upstream_idle).toBe(5);
    expect(config.timeouts.client_idle).toBe(900);
  });

  it('names an unknown key and the file', () => {
    const path = file('unknown.yaml', 'upstream: http://x:1\nlimits:\n  max_json: 1\n');
    expect(() => loadConfig({ file: path, env: {} })).toThrow(new ConfigError(`config: unknown key 'limits.max_json' in ${path}`));
  });

  it('names a key whose value is out of range', () => {
    const path = file('range.yaml', 'timeouts:\n  request_headers: 0\n');
    expect(() => loadConfig({ file: path, env: {} })).toThrow(/config: 'timeouts.request_headers' must be >= 1 in/);
  });

  it('says when the file is not YAML', () => {
    const path = file('broken.yaml', 'upstream: [unclosed\n');
    expect(() => loadConfig({ file: path, env: {} })).toThrow(/is not valid YAML or JSON/);
  });

  it('clears public_url with an empty environment value', () => {
    const path = file('pub.yaml', 'public_url: https://x.example\n');
    expect(loadConfig({ file: path, env: { STX_GLANCE_PROXY_PUBLIC_URL: '' } }).public_url).toBeNull();
  });
});
