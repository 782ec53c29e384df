import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

/**
 * OpenStack's own image API tests (Debian's tempest 33, tempest.api.image.v2) against a real
 * Keystone and a keystone-mode Glance, directly and then through the proxy: every test that passes
 * directly must pass through the proxy, so the request gate refuses nothing a real client does.
 * scripts/tempest/run.sh does the work (see its header); this test runs it and reads its verdict.
 */
interface Comparison {
  runs: Record<string, { counts: { passed: number; failed: number; skipped: number } } | undefined>;
  regressions: unknown[];
  flaky: unknown[];
}

const SCRIPT = resolve(__dirname, '..', '..', 'scripts', 'tempest', 'run.sh');
// Two tempest runs of 83 tests, with Keystone and Glance, take about five minutes on two cores.
const RUN_TIMEOUT_MS = 30 * 60 * 1000;

describe('tempest image API v2 tests', () => {
  let out: string;

  beforeAll(async () => {
    out = await mkdtemp(join(tmpdir(), 'stx-tempest-test-'));
  });

  afterAll(async () => {
    await rm(out, { recursive: true, force: true });
  });

  it('pass through the proxy wherever they pass against Glance directly', async () => {
    const { status, output } = await new Promise<{ status: number | null; output: string }>((done) => {
      const child = spawn('bash', [SCRIPT, '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.on('close', (code) => done({ status: code, output }));
    });
    const report = await readFile(join(out, 'report.md'), 'utf8').catch(() => '(no report.md)');
    if (status !== 0) throw new Error(`scripts/tempest/run.sh exited ${status}\n${report}\n--- output ---\n${output.slice(-20_000)}`);
    const comparison = JSON.parse(await readFile(join(out, 'comparison.json'), 'utf8')) as Comparison;
    expect(comparison.regressions).toEqual([]);
    // Both runs really ran the suite: a run that executed nothing would compare equal too.
    expect(comparison.runs.direct?.counts.passed).toBeGreaterThan(50);
    expect(comparison.runs.proxy?.counts.passed ?? 0).toBeGreaterThanOrEqual((comparison.runs.direct?.counts.passed ?? 0) - comparison.flaky.length);
  }, RUN_TIMEOUT_MS);
});
