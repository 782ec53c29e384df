import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import YAML from 'yaml';
import { loadConfig, type ProxyConfig } from '../../src/config/load';

const CONFIG_DIR = join(__dirname, '..', '..', 'config');
/** The local Glance's own configuration, not stx-glance-proxy's. */
const NOT_OURS = new Set([join(CONFIG_DIR, 'dev-glance')]);

function exampleFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return NOT_OURS.has(path) ? [] : exampleFiles(path);
    return /\.ya?ml$/.test(entry.name) ? [path] : [];
  });
}

/**
 * The secrets an example leaves to the environment, as a deployment would set them: only the one
 * its service_auth method uses (the loader refuses a password next to an application credential).
 */
function secretEnvironmentFor(path: string): NodeJS.ProcessEnv {
  const auth = (YAML.parse(readFileSync(path, 'utf8')) ?? {}).service_auth as Record<string, unknown> | null | undefined;
  const env: NodeJS.ProcessEnv = {};
  if (auth?.application_credential_id !== undefined && auth.application_credential_secret === undefined) {
    env.STX_GLANCE_PROXY_SERVICE_APPLICATION_CREDENTIAL_SECRET = 'secret-from-the-environment';
  }
  if (auth?.username !== undefined && auth.password === undefined) env.STX_GLANCE_PROXY_SERVICE_PASSWORD = 'password-from-the-environment';
  return env;
}

function load(path: string): ProxyConfig {
  return loadConfig({ file: path, env: secretEnvironmentFor(path) });
}

const examples = exampleFiles(CONFIG_DIR);

describe('example configurations in config/', () => {
  it('include the generic and the StarlingX examples', () => {
    const names = examples.map((path) => relative(CONFIG_DIR, path));
    expect(names).toEqual(expect.arrayContaining(['stx-glance-proxy.example.yaml', 'starlingx-example.yaml']));
  });

  it.each(examples.map((path) => [relative(CONFIG_DIR, path), path]))('%s is valid against schemas/config.schema.json and names an upstream', (_name, path) => {
    const config = load(path);
    expect(config.upstream).toMatch(/^https?:\/\//);
  });

  it('starlingx-example.yaml keeps the Keystone secret out of the file and gets it from the environment', () => {
    const path = join(CONFIG_DIR, 'starlingx-example.yaml');
    const file = YAML.parse(readFileSync(path, 'utf8'));
    expect(file.service_auth).not.toHaveProperty('application_credential_secret');
    expect(file.service_auth).not.toHaveProperty('password');
    expect(load(path).service_auth).toMatchObject({ application_credential_secret: 'secret-from-the-environment' });
  });

  it('starlingx-example.yaml runs the raw cache on RabbitMQ into Ceph RBD, with a drain file', () => {
    const config = load(join(CONFIG_DIR, 'starlingx-example.yaml'));
    expect(config.rawcache).toMatchObject({ enabled: true, queue: { backend: 'amqp' }, target: { kind: 'rbd' } });
    expect(config.rawcache.queue.amqp_url).toMatch(/^amqps?:\/\//);
    expect(config.rawcache.queue.amqp_queue).not.toMatch(/notifications/);
    expect(config.public_url).not.toBeNull();
    expect(config.health.disable_by_file).not.toBeNull();
  });

  describe.each(['stx-glance-proxy.service', 'stx-glance-proxy-worker.service'])('systemd/%s', (unit) => {
    const text = readFileSync(join(CONFIG_DIR, 'systemd', unit), 'utf8');
    const setting = (key: string): string[] =>
      text
        .split('\n')
        .filter((line) => line.startsWith(`${key}=`))
        .map((line) => line.slice(key.length + 1));

    it('runs the command on the installed configuration file', () => {
      const command = unit === 'stx-glance-proxy.service' ? 'serve' : 'worker';
      expect(setting('ExecStart')).toEqual([
        `/opt/stx-glance-proxy/runtime/bin/node /opt/stx-glance-proxy/dist/cli.js ${command} --config /etc/stx-glance-proxy/stx-glance-proxy.yaml`,
      ]);
    });

    it('waits longer than every example\'s shutdown grace before it kills the process', () => {
      const stopSeconds = Number(setting('TimeoutStopSec')[0]);
      for (const path of examples) expect(stopSeconds).toBeGreaterThan(load(path).timeouts.shutdown_grace);
    });
  });
});
