import { lstat, open } from 'node:fs/promises';
import { resolve } from 'node:path';
import { RawCacheError } from './types';
import { runCommand, stderrSummary, type RunResult } from './exec';

/**
 * Decides whether a downloaded image may be converted, before anything converts it.
 *
 * `qemu-img info` on a hostile image is a known attack surface: CVE-2015-5162 (an image built to
 * exhaust qemu-img's memory and CPU, hence prlimit), CVE-2022-47951 (VMDK extents naming host files),
 * CVE-2024-32498 (qcow2 external data files naming host files), and backing files. So, in this order:
 *  1. the first bytes are read here, without qemu-img, and a qcow2 with a backing file, an external
 *     data file or encryption, or a VMDK descriptor (whose extents are other files) is refused;
 *  2. `qemu-img info` probes the format WITHOUT -f (the detected format must match disk_format:
 *     a "raw" image whose data is qcow2 is the classic attack), under prlimit like Glance and Nova,
 *     with -U and without --backing-chain, so it opens the image with no backing file and takes
 *     no lock;
 *  3. its answer is checked again (backing file, data file, encryption, VMDK type and extents);
 *  4. `qemu-img check -f <format>` runs only after that, because check, unlike info, opens the
 *     backing chain. From here on every qemu-img call names the format with -f, so nothing re-probes.
 */

export interface ImageInspection {
  /** The format as qemu-img names it (qcow2, raw, vmdk, vdi, vpc, vhdx, parallels). */
  format: string;
  virtualSize: number;
  actualSize?: number;
}

/**
 * Glance disk_format -> qemu-img format. iso is a raw byte stream; ami (an Amazon machine image)
 * is a raw disk. aki and ari (kernel, ramdisk) are not disks at all: refused, see qemuFormatFor.
 */
export const QEMU_FORMAT_OF_DISK_FORMAT: Readonly<Record<string, string>> = Object.freeze({
  qcow2: 'qcow2',
  raw: 'raw',
  vmdk: 'vmdk',
  vdi: 'vdi',
  vhd: 'vpc',
  vhdx: 'vhdx',
  iso: 'raw',
  ploop: 'parallels',
  ami: 'raw',
});

/** Glance's default vmdk_allowed_types: the types whose data is all inside the one file. */
const VMDK_ALLOWED_CREATE_TYPES = new Set(['monolithicSparse', 'streamOptimized']);

/** Limits for qemu-img info/check, as Glance and Nova run it (QEMU_IMG_PROC_LIMITS: 30 s CPU, 1 GiB). */
export const INSPECT_LIMITS = Object.freeze({
  addressSpaceBytes: 1024 * 1024 * 1024,
  infoCpuSeconds: 30,
  /** check walks every metadata table of the image: more CPU than info, still bounded. */
  checkCpuSeconds: 120,
  /** Wall clock, for a process stuck on I/O where the CPU limit never bites. */
  infoWallMs: 60_000,
  checkWallMs: 600_000,
});

const HEADER_BYTES = 4096;

/** The qemu-img format for a Glance disk_format, or a permanent refusal. */
export function qemuFormatFor(diskFormat: string): string {
  if (diskFormat === 'aki' || diskFormat === 'ari') {
    throw new RawCacheError(
      `disk_format ${diskFormat} is a ${diskFormat === 'aki' ? 'kernel' : 'ramdisk'} image, not a disk: no raw copy is made for it; set cache_raw to False`,
      true,
    );
  }
  const format = QEMU_FORMAT_OF_DISK_FORMAT[diskFormat];
  if (format === undefined) {
    throw new RawCacheError(
      `disk_format '${diskFormat}' cannot be converted to raw (supported: ${Object.keys(QEMU_FORMAT_OF_DISK_FORMAT).join(', ')})`,
      true,
    );
  }
  return format;
}

/** What the first bytes of a file say, read without qemu-img. */
export type HeaderFinding =
  | { kind: 'qcow2'; version: number; backingFile: string | null; externalDataFile: boolean; encrypted: boolean }
  | { kind: 'vmdk-descriptor' }
  | { kind: 'vpc-footer-at-end' }
  | { kind: 'other' };

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"
/** qcow2 incompatible feature bit 2: the guest data lives in an external data file. */
const QCOW2_INCOMPAT_DATA_FILE = 1n << 2n;

/** Parses the header bytes of an image (the first HEADER_BYTES; fewer for a short file). */
export function sniffHeader(head: Buffer): HeaderFinding {
  if (head.length >= 72 && head.readUInt32BE(0) === QCOW2_MAGIC) {
    const version = head.readUInt32BE(4);
    const backingOffset = head.readBigUInt64BE(8);
    const backingSize = head.readUInt32BE(16);
    const cryptMethod = head.readUInt32BE(32);
    const incompatible = version >= 3 && head.length >= 80 ? head.readBigUInt64BE(72) : 0n;
    let backingFile: string | null = null;
    if (backingOffset !== 0n) {
      const start = Number(backingOffset);
      const name = start < head.length ? head.subarray(start, Math.min(head.length, start + Math.min(backingSize, 1023))) : Buffer.alloc(0);
      backingFile = printable(name.toString('latin1')) || '(name not in the first bytes)';
    }
    return {
      kind: 'qcow2',
      version,
      backingFile,
      externalDataFile: (incompatible & QCOW2_INCOMPAT_DATA_FILE) !== 0n,
      encrypted: cryptMethod !== 0,
    };
  }
  // A VMDK descriptor file is text; its extents are other files, named by whoever wrote it.
  if (/^\s*# Disk DescriptorFile/.test(head.subarray(0, 64).toString('latin1'))) return { kind: 'vmdk-descriptor' };
  return { kind: 'other' };
}

/** Refusals that need no qemu-img at all. */
export function refuseByHeader(finding: HeaderFinding): void {
  if (finding.kind === 'vmdk-descriptor') {
    throw new RawCacheError(
      'the image is a VMDK descriptor whose data lives in other files (extents): only monolithicSparse and streamOptimized VMDK images are accepted; export the disk as a single-file VMDK and upload that',
      true,
    );
  }
  if (finding.kind !== 'qcow2') return;
  if (finding.backingFile !== null) {
    throw new RawCacheError(
      `the qcow2 image has a backing file (${finding.backingFile}): a raw copy needs a self-contained image; flatten it (qemu-img convert -O qcow2 image.qcow2 flat.qcow2) and upload the result`,
      true,
    );
  }
  if (finding.externalDataFile) {
    throw new RawCacheError(
      'the qcow2 image keeps its data in an external data file (data_file): refused, as Glance and Nova refuse it; convert it to a self-contained qcow2 and upload that',
      true,
    );
  }
  if (finding.encrypted) {
    throw new RawCacheError('the qcow2 image is encrypted: it cannot be converted to raw without its key', true);
  }
}

interface QemuImgInfo {
  format?: unknown;
  'virtual-size'?: unknown;
  'actual-size'?: unknown;
  'backing-filename'?: unknown;
  'full-backing-filename'?: unknown;
  encrypted?: unknown;
  'format-specific'?: { type?: unknown; data?: Record<string, unknown> };
}

/**
 * Checks `qemu-img info --output=json` of `path` against the declared format (pure; throws the
 * permanent refusal a person can act on).
 */
export function assessQemuInfo(info: QemuImgInfo, declaredDiskFormat: string, path: string): ImageInspection {
  const expected = qemuFormatFor(declaredDiskFormat);
  const detected = typeof info.format === 'string' ? info.format : '(unknown)';
  if (detected !== expected) throw mismatch(declaredDiskFormat, expected, detected);

  const backing = info['backing-filename'] ?? info['full-backing-filename'];
  if (backing !== undefined) {
    throw new RawCacheError(
      `the ${detected} image has a backing file (${printable(String(backing))}): a raw copy needs a self-contained image; flatten it and upload the result`,
      true,
    );
  }
  const specific = info['format-specific']?.data ?? {};
  if (specific['data-file'] !== undefined) {
    throw new RawCacheError(
      `the ${detected} image keeps its data in an external data file (${printable(String(specific['data-file']))}): refused; convert it to a self-contained image and upload that`,
      true,
    );
  }
  if (info.encrypted === true || (specific.encrypt !== undefined && specific.encrypt !== null)) {
    throw new RawCacheError(`the ${detected} image is encrypted: it cannot be converted to raw without its key`, true);
  }
  if (detected === 'vmdk') {
    const createType = String(specific['create-type'] ?? '(unknown)');
    if (!VMDK_ALLOWED_CREATE_TYPES.has(createType)) {
      throw new RawCacheError(
        `VMDK create type ${printable(createType)} keeps data outside the image file: only monolithicSparse and streamOptimized are accepted`,
        true,
      );
    }
    const extents = Array.isArray(specific.extents) ? (specific.extents as Array<{ filename?: unknown }>) : [];
    const foreign = extents.find((extent) => extent.filename !== path);
    if (foreign !== undefined) {
      throw new RawCacheError(`the VMDK image names another file as an extent (${printable(String(foreign.filename))}): refused`, true);
    }
  }
  const virtualSize = info['virtual-size'];
  if (typeof virtualSize !== 'number' || !Number.isSafeInteger(virtualSize) || virtualSize < 0) {
    throw new RawCacheError(`qemu-img reports no usable virtual size for the ${detected} image: it is corrupt`, true);
  }
  if (virtualSize === 0) throw new RawCacheError('the image is empty (virtual size 0): there is nothing to cache', true);
  const actualSize = info['actual-size'];
  return {
    format: detected,
    virtualSize,
    ...(typeof actualSize === 'number' && Number.isSafeInteger(actualSize) ? { actualSize } : {}),
  };
}

function mismatch(declared: string, expected: string, detected: string): RawCacheError {
  if (expected === 'raw') {
    return new RawCacheError(
      `disk_format is ${declared} but the data is a ${detected} image: refused, since an image that is not what it claims can make a hypervisor read host files; upload it again with disk_format ${glanceNameOf(detected)}`,
      true,
    );
  }
  if (detected === 'raw') {
    return new RawCacheError(
      `disk_format is ${declared} but the data is not a ${expected} image (it reads as raw bytes): if it is a raw disk, create the image with disk_format raw (a raw image needs no raw copy); otherwise the upload is damaged`,
      true,
    );
  }
  return new RawCacheError(
    `disk_format is ${declared} but the data is a ${detected} image: upload it again with disk_format ${glanceNameOf(detected)}`,
    true,
  );
}

function glanceNameOf(qemuFormat: string): string {
  if (qemuFormat === 'vpc') return 'vhd';
  if (qemuFormat === 'parallels') return 'ploop';
  return qemuFormat;
}

/** Control characters out, length bounded: names inside a hostile image end up in a user-visible message. */
function printable(text: string): string {
  const clean = text.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > 200 ? `${clean.slice(0, 200)}...` : clean;
}

/**
 * What qemu-img is given to open: a local path made absolute, so qemu-img can never read
 * "something:rest" as a protocol prefix (rbd:, nbd:, json:); or an `rbd:` spec, which only the
 * rbd target builds, from names it has validated (RbdRawCopyTarget.qemuSpec).
 */
export function qemuSourceName(path: string): string {
  return path.startsWith('rbd:') ? path : resolve(path);
}

/**
 * Inspects an image that claims to be `declaredDiskFormat` (Glance's name): a LOCAL file, or, with
 * `head` (its first bytes, read by whoever reads the data to verify it), an image qemu-img reads
 * in place through an `rbd:` spec. Resolves with the qemu-img format and sizes, or rejects with a
 * permanent RawCacheError saying why the image is refused; an unreadable file of ours is a
 * transient RawCacheError; an abort rejects with an AbortError.
 */
export async function inspectImage(path: string, declaredDiskFormat: string, signal: AbortSignal, given?: { head: Buffer }): Promise<ImageInspection> {
  const expected = qemuFormatFor(declaredDiskFormat);
  const file = qemuSourceName(path);
  const { head, tail } = given === undefined ? await readEnds(file) : { head: given.head, tail: Buffer.alloc(0) };
  const finding = sniffHeader(head);
  refuseByHeader(finding);

  let info = parseInfo(await qemuImg(['info', '--output=json', '-U', file], INSPECT_LIMITS.infoCpuSeconds, INSPECT_LIMITS.infoWallMs, signal), declaredDiskFormat);
  if (expected === 'vpc' && info.format === 'raw' && isVpcFooter(tail)) {
    // A fixed VHD has its footer only at the end, and qemu-img probes only the start.
    info = parseInfo(await qemuImg(['info', '--output=json', '-U', '-f', 'vpc', file], INSPECT_LIMITS.infoCpuSeconds, INSPECT_LIMITS.infoWallMs, signal), declaredDiskFormat);
  }
  const inspection = assessQemuInfo(info, declaredDiskFormat, file);
  if (inspection.format !== 'raw') await checkConsistency(file, inspection.format, signal);
  return inspection;
}

async function readEnds(file: string): Promise<{ head: Buffer; tail: Buffer }> {
  try {
    const stats = await lstat(file);
    if (!stats.isFile()) throw new RawCacheError(`the downloaded image ${file} is not a regular file`, false);
    const handle = await open(file, 'r');
    try {
      const head = Buffer.alloc(Math.min(HEADER_BYTES, stats.size));
      await handle.read(head, 0, head.length, 0);
      const tail = Buffer.alloc(Math.min(512, stats.size));
      await handle.read(tail, 0, tail.length, Math.max(0, stats.size - tail.length));
      return { head, tail };
    } finally {
      await handle.close();
    }
  } catch (error) {
    if (error instanceof RawCacheError) throw error;
    throw new RawCacheError(`cannot read the downloaded image ${file}: ${(error as Error).message}`, false);
  }
}

function isVpcFooter(tail: Buffer): boolean {
  return tail.length === 512 && tail.subarray(0, 8).toString('latin1') === 'conectix';
}

function qemuImg(args: string[], cpuSeconds: number, wallMs: number, signal: AbortSignal, maxStdout = 4 * 1024 * 1024): Promise<RunResult> {
  return runCommand(
    'prlimit',
    [`--as=${INSPECT_LIMITS.addressSpaceBytes}`, `--cpu=${cpuSeconds}`, '--', 'qemu-img', ...args],
    { signal, timeoutMs: wallMs, maxStdout },
  );
}

/** prlimit could not start qemu-img (126/127): our installation, not the image, is at fault. */
function notStarted(result: RunResult): RawCacheError | undefined {
  if (result.code !== 126 && result.code !== 127) return undefined;
  return new RawCacheError(`qemu-img could not be started under prlimit (${stderrSummary(result)}); install qemu-utils`, false);
}

function overLimits(result: RunResult): boolean {
  // The CPU limit ends the process with SIGXCPU (then SIGKILL); the address-space limit makes
  // allocations fail, which qemu-img reports as "Cannot allocate memory".
  return result.timedOut || result.signal !== null || /Cannot allocate memory|Out of memory/i.test(result.stderr);
}

function parseInfo(result: RunResult, declaredDiskFormat: string): QemuImgInfo {
  const missing = notStarted(result);
  if (missing) throw missing;
  if (overLimits(result)) {
    throw new RawCacheError(
      `qemu-img info gave up on the image within its limits (${INSPECT_LIMITS.infoCpuSeconds} s CPU, ${INSPECT_LIMITS.addressSpaceBytes / 2 ** 20} MiB): the image is corrupt or built to exhaust the inspector; refused`,
      true,
    );
  }
  if (result.code !== 0) {
    throw new RawCacheError(`the image cannot be read as a ${declaredDiskFormat} disk (qemu-img info: ${stderrSummary(result)}): the upload is corrupt or truncated`, true);
  }
  try {
    const parsed: unknown = JSON.parse(result.stdout);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
    return parsed as QemuImgInfo;
  } catch (error) {
    throw new RawCacheError(`qemu-img info printed something that is not JSON (${(error as Error).message})`, false);
  }
}

/** What the RAW copy of an image will be, from the image's own tables. */
export interface RawCopyMeasure {
  /** Bytes of the RAW copy (`qemu-img measure -O raw`): the disk's virtual size. */
  size: number;
  /**
   * Bytes of guest data (`qemu-img map`: extents with data that are not zero): what the copy
   * occupies on a thin target (a sparse file, a thin RBD image), since the conversion skips zeroes.
   */
  dataBytes: number;
}

/** `qemu-img map` output kept; beyond it (a very fragmented image) the copy is taken as fully allocated. */
export const MAP_OUTPUT_LIMIT_BYTES = 16 * 1024 * 1024;

/**
 * Measures the RAW copy of an inspected image (`format` as qemu-img names it, `virtualSize` as its
 * inspection found it), without writing anything. The copy's size is the virtual size (what
 * `qemu-img measure -O raw` reports as required: the inspection already read it from the image's
 * header, so no second command asks again); the guest data in it comes from `qemu-img map`, under
 * the same limits as inspection. A compressed qcow2 is small on disk and large as RAW: only the
 * image's tables tell how large.
 */
export async function measureRawCopy(path: string, format: string, virtualSize: number, signal: AbortSignal): Promise<RawCopyMeasure> {
  const file = qemuSourceName(path);
  const size = Math.ceil(virtualSize / 512) * 512;
  let mapped: RunResult;
  try {
    mapped = await qemuImg(['map', '--output=json', '-f', format, file], INSPECT_LIMITS.checkCpuSeconds, INSPECT_LIMITS.checkWallMs, signal, MAP_OUTPUT_LIMIT_BYTES);
  } catch (error) {
    // Millions of extents: counting them is not worth the memory; every byte may be data.
    if (error instanceof Error && /printed more than/.test(error.message)) return { size, dataBytes: size };
    throw error;
  }
  return { size, dataBytes: Math.min(size, dataBytesOfMap(expectAnswer(mapped, 'map', format, INSPECT_LIMITS.checkCpuSeconds).stdout)) };
}

/** `required` of `qemu-img measure --output=json -O raw`: the RAW copy's size. */
export function parseMeasure(stdout: string): number {
  const required = parseJsonAnswer<{ required?: unknown }>(stdout, 'measure').required;
  if (typeof required !== 'number' || !Number.isSafeInteger(required) || required < 0) {
    throw new RawCacheError('qemu-img measure printed no usable required size', false);
  }
  return required;
}

/** Sum of the lengths of the extents of `qemu-img map --output=json` that hold data and are not zero. */
export function dataBytesOfMap(stdout: string): number {
  const extents = parseJsonAnswer<unknown>(stdout, 'map');
  if (!Array.isArray(extents)) throw new RawCacheError('qemu-img map printed something that is not a list of extents', false);
  let total = 0;
  for (const extent of extents as Array<{ length?: unknown; data?: unknown; zero?: unknown }>) {
    if (typeof extent?.length !== 'number' || !Number.isSafeInteger(extent.length) || extent.length < 0) {
      throw new RawCacheError('qemu-img map printed an extent without a usable length', false);
    }
    if (extent.data === true && extent.zero !== true) total += extent.length;
  }
  return total;
}

function expectAnswer(result: RunResult, what: 'measure' | 'map', format: string, cpuSeconds: number): RunResult {
  const missing = notStarted(result);
  if (missing) throw missing;
  if (overLimits(result)) {
    throw new RawCacheError(
      `qemu-img ${what} gave up on the ${format} image within its limits (${cpuSeconds} s CPU, ${INSPECT_LIMITS.addressSpaceBytes / 2 ** 20} MiB): refused as corrupt`,
      true,
    );
  }
  if (result.code !== 0) throw new RawCacheError(`the raw copy could not be measured (qemu-img ${what}: ${stderrSummary(result)}); will retry`, false);
  return result;
}

function parseJsonAnswer<T>(stdout: string, what: string): T {
  try {
    return JSON.parse(stdout) as T;
  } catch {
    throw new RawCacheError(`qemu-img ${what} printed something that is not JSON`, false);
  }
}

/** `qemu-img check` exit codes: 0 clean, 1 not completed, 2 corruptions, 3 leaks only, 63 unsupported. */
async function checkConsistency(file: string, format: string, signal: AbortSignal): Promise<void> {
  const result = await qemuImg(['check', '--output=json', '-U', '-f', format, file], INSPECT_LIMITS.checkCpuSeconds, INSPECT_LIMITS.checkWallMs, signal);
  const missing = notStarted(result);
  if (missing) throw missing;
  if (overLimits(result)) {
    throw new RawCacheError(
      `qemu-img check gave up on the ${format} image within its limits (${INSPECT_LIMITS.checkCpuSeconds} s CPU, ${INSPECT_LIMITS.addressSpaceBytes / 2 ** 20} MiB): refused as corrupt`,
      true,
    );
  }
  if (result.code === 0 || result.code === 3 || result.code === 63) return;
  let corruptions: unknown;
  try {
    corruptions = (JSON.parse(result.stdout) as { corruptions?: unknown }).corruptions;
  } catch {
    corruptions = undefined;
  }
  if (result.code === 2) {
    throw new RawCacheError(
      `the ${format} image is corrupt (qemu-img check found ${typeof corruptions === 'number' ? corruptions : 'some'} corruptions): upload an intact image`,
      true,
    );
  }
  throw new RawCacheError(`the ${format} image could not be checked (qemu-img check: ${stderrSummary(result)}): refused as corrupt`, true);
}

/**
 * For an image declared `raw`, which the worker does not convert: the format its first bytes show
 * when they are not raw at all. A "raw" image whose data is really qcow2 (or another container
 * format) is the classic image attack on whoever later uses it as raw.
 */
export function containerFormatInHeader(head: Buffer): string | undefined {
  const finding = sniffHeader(head);
  if (finding.kind === 'qcow2') return 'qcow2';
  if (finding.kind === 'vmdk-descriptor') return 'vmdk';
  const ascii = head.subarray(0, 8).toString('latin1');
  if (ascii.startsWith('KDMV')) return 'vmdk';
  if (ascii === 'vhdxfile') return 'vhdx';
  if (ascii.startsWith('QED\0')) return 'qed';
  if (head.length >= 0x44 && head.readUInt32LE(0x40) === 0xbeda107f) return 'vdi';
  return undefined;
}
