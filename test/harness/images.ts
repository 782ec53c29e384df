import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';

/** Disk images made with the real qemu tools, for raw-cache tests. */

/** A qcow2 of `virtualMiB` with `dataMiB` of a byte pattern written at 1 MiB, so conversion has real work. */
export function makeQcow2(dir: string, name: string, virtualMiB: number, dataMiB: number, pattern = 0x5a): string {
  const path = join(dir, name);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, `${virtualMiB}M`]);
  if (dataMiB > 0) execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -q -P ${pattern} 1M ${dataMiB}M`, path]);
  return path;
}

/**
 * A qcow2 of `virtualMiB` whose `dataMiB` of one byte pattern (at 1 MiB) are stored compressed: a file
 * of well under 1 MiB whose RAW copy holds all `dataMiB`.
 */
export function makeCompressedQcow2(dir: string, name: string, virtualMiB: number, dataMiB: number, pattern = 0x5a): string {
  const path = join(dir, name);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, `${virtualMiB}M`]);
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -c -q -P ${pattern} 1M ${dataMiB}M`, path]);
  return path;
}

/** A qcow2 whose header names a backing file: a known image attack. */
export function makeQcow2WithBackingFile(dir: string, name: string): string {
  const base = makeQcow2(dir, `${name}.base`, 16, 1);
  const path = join(dir, name);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base, path]);
  return path;
}

/** What `qemu-img convert -O raw` makes of `path`, as a sha256. */
export function rawSha256Of(dir: string, path: string): Promise<string> {
  const out = join(dir, `expected-${Date.now()}-${Math.random().toString(16).slice(2)}.raw`);
  execFileSync('qemu-img', ['convert', '-O', 'raw', path, out]);
  return sha256File(out);
}

export function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path)
      .on('data', (c) => hash.update(c))
      .on('end', () => resolve(hash.digest('hex')))
      .on('error', reject);
  });
}

/** sha256 of a command's stdout, streamed (`rbd export <image>@<snap> -`). */
export function sha256OfOutput(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const hash = createHash('sha256');
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => hash.update(chunk));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(hash.digest('hex')) : reject(new Error(`${command} ${args.join(' ')}: ${stderr}`))));
  });
}
