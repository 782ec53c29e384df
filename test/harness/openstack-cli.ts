import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Debian's `glance` and `openstack` CLIs, run the way the tests need them. */

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs an OpenStack CLI with a HOME of its own: glanceclient caches Glance's image schema in
 * ~/.glanceclient and, from the second command on, dies on the cached `stores` property clashing with
 * its own --stores option (a client bug seen against Glance 25 directly). Only `settings` (OS_*
 * variables, for example) reach it of the cloud configuration.
 */
export function runCli(command: string, args: string[], settings: Record<string, string> = {}): Promise<CliResult> {
  const home = mkdtempSync(join(tmpdir(), 'stx-cli-home-'));
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: home };
  // Debian's /usr/bin/python3 runs these; settings meant for another Python, or a user's cloud, must not leak in.
  for (const name of Object.keys(env)) {
    if (name.startsWith('OS_') || name === 'PYTHONHOME' || name === 'PYTHONPATH') delete env[name];
  }
  Object.assign(env, settings);
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('error', reject);
    child.once('close', (code) => {
      rmSync(home, { recursive: true, force: true });
      resolve({ code, stdout, stderr });
    });
  });
}

/** `glance` against an endpoint, with a dummy token (the test Glance's fake identity ignores it). */
export const glanceCli = (endpoint: string, ...args: string[]) => runCli('/usr/bin/glance', ['--os-image-url', endpoint, '--os-auth-token', 'dummy', ...args]);

/** `openstack` against an image endpoint (…/v2 is added: openstacksdk needs it, or it meets the 300 versions page). */
export const openstackCli = (endpoint: string, ...args: string[]) =>
  runCli('/usr/bin/openstack', ['--os-auth-type', 'admin_token', '--os-endpoint', `${endpoint}/v2`, '--os-token', 'dummy', ...args]);

/** The rows of glanceclient's `| Property | Value |` table. */
export function glanceTable(output: string): Record<string, string> {
  const rows: Record<string, string> = {};
  let last: string | undefined;
  for (const line of output.split('\n')) {
    const match = /^\| (\S+)\s+\| (.*?)\s*\|$/.exec(line);
    if (match && match[1] !== 'Property') {
      last = match[1];
      rows[last] = match[2];
      continue;
    }
    // glanceclient wraps values longer than 80 characters onto rows whose first column is empty.
    const wrapped = /^\|\s+\| (.*?)\s*\|$/.exec(line);
    if (wrapped && last !== undefined) rows[last] += wrapped[1];
  }
  return rows;
}
