import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../ops/log';
import { runCommand, stderrSummary, type RunResult } from '../rawcache/exec';
import { GlanceHttpError, type GlanceClient } from '../rawcache/glance-client';
import { inspectImage } from '../rawcache/inspect';
import { dataRecordOf, fetchVerifiedSource, formatBytes } from '../rawcache/source';
import type { CachedImage } from '../rawcache/state';
import { convertToRaw } from '../rawcache/targets/convert';
import { workNames } from '../rawcache/targets/names';
import { isMissing, parseJson, RbdRawCopyTarget } from '../rawcache/targets/rbd';
import { keepFileAlive, newAttempt } from '../rawcache/writer';
import { assertRbdName, cloneSourceOf, VolumeFromImageError, type CloneSource } from './clone-source';

/**
 * "Create a volume from an image" as Cinder's RBD driver does it with StarlingX's raw cache: the
 * volume is a copy-on-write clone of the image's RAW copy (`<pool>/<id>_raw@snap`, protected), so
 * it takes the time of a few Ceph metadata operations whatever the image's size. Without a usable
 * copy, and only when asked (`fallback`), the volume is made the way Cinder does for any other
 * image: download from Glance (verified against its checksum), inspect, `qemu-img convert` to RAW,
 * `rbd import`.
 *
 * The consumer talks to Ceph as its own client (Cinder's `client.cinder`: write rights on the volume
 * pool, read rights on the image pool) and to Glance with the configured service identity.
 */

export interface VolumeFromImageRequest {
  imageId: string;
  /** Where the volume goes: `<volumePool>/<volumeName>`. */
  volumePool: string;
  volumeName: string;
  /** The volume's size; the image's size when absent. Never smaller than the image. */
  sizeBytes?: number;
  /** Download + convert + import when the image's raw copy cannot be cloned. */
  fallback: boolean;
}

export interface VolumeFromImageOptions {
  glance: GlanceClient;
  /** Ceph client name without 'client.', and its ceph.conf. */
  cephUser: string;
  cephConf: string;
  /** Pools a raw copy may be cloned from. */
  imagePools: readonly string[];
  /** Where the fallback downloads and converts (rawcache.worker.work_dir). */
  workDir: string;
  logger: Logger;
  commandTimeoutMs?: number;
}

export interface VolumeMade {
  volume: string;
  method: 'clone' | 'import';
  /** `pool/image@snap` for a clone. */
  parent?: string;
  sizeBytes: number;
  /** For an import: why there was no clone. */
  why?: string;
}

const DEFAULT_COMMAND_TIMEOUT_MS = 120_000;

export async function volumeFromImage(request: VolumeFromImageRequest, options: VolumeFromImageOptions, signal: AbortSignal): Promise<VolumeMade> {
  const { imageId, volumePool, volumeName } = request;
  assertRbdName('the volume pool', volumePool);
  assertRbdName('the volume name', volumeName);
  const ceph = new CephCommands(options);
  const image = await options.glance.getImage(imageId).catch((error: Error) => {
    if (error instanceof GlanceHttpError) throw error;
    throw new VolumeFromImageError(`Glance at ${options.glance.baseUrl} did not answer: ${error.message}`);
  });
  if (image === undefined) throw new VolumeFromImageError(`no image ${imageId} in Glance`);
  const destination = `${volumePool}/${volumeName}`;
  await ceph.refuseExisting(destination);

  let source: CloneSource;
  let parentSize: number;
  try {
    source = cloneSourceOf(image, { fsid: await ceph.fsid(volumePool, options.logger), imagePools: options.imagePools });
    parentSize = await ceph.protectedSnapshotSize(source);
  } catch (error) {
    if (!(error instanceof VolumeFromImageError && error.fallbackPossible && request.fallback)) throw error;
    options.logger.info('no clone possible; downloading, converting and importing', { image_id: imageId, why: error.message });
    return importFromGlance(image, destination, request.sizeBytes, options, ceph, error.message, signal);
  }
  const sizeBytes = volumeSize(request.sizeBytes, parentSize, imageId);
  const parent = `${source.pool}/${source.image}@${source.snap}`;
  ceph.check(await ceph.rbd(['clone', parent, destination], signal), `rbd clone ${parent} ${destination}`);
  await ceph.growTo(destination, parentSize, sizeBytes, signal);
  return { volume: destination, method: 'clone', parent, sizeBytes };
}

/** Cinder's path for an image it cannot clone: download, verify, inspect, convert to RAW, `rbd import`. */
async function importFromGlance(
  image: CachedImage,
  destination: string,
  requestedBytes: number | undefined,
  options: VolumeFromImageOptions,
  ceph: CephCommands,
  why: string,
  signal: AbortSignal,
): Promise<VolumeMade> {
  const downloaded = await fetchVerifiedSource(dataRecordOf(image), (s) => options.glance.download(image.id, s), options.workDir, signal);
  const attempt = newAttempt();
  const rawPath = join(options.workDir, workNames.rawImport(image.id, attempt));
  const stopHeartbeat = keepFileAlive(attempt, rawPath);
  try {
    const info = await inspectImage(downloaded.path, String(image.disk_format), signal);
    const sizeBytes = volumeSize(requestedBytes, info.virtualSize, image.id);
    await convertToRaw({ path: downloaded.path, format: info.format, virtualSize: info.virtualSize }, rawPath, signal);
    await rm(downloaded.path, { force: true });
    ceph.check(await ceph.rbd(['import', '--no-progress', '--image-format', '2', rawPath, destination], signal, 0), `rbd import ${destination}`);
    await ceph.growTo(destination, info.virtualSize, sizeBytes, signal);
    return { volume: destination, method: 'import', sizeBytes, why };
  } finally {
    stopHeartbeat();
    await rm(downloaded.path, { force: true });
    await rm(rawPath, { force: true });
  }
}

/** The volume's size: the request's, refused when the image does not fit in it (as Cinder refuses it). */
function volumeSize(requested: number | undefined, imageBytes: number, imageId: string): number {
  if (requested === undefined) return imageBytes;
  if (requested < imageBytes) {
    throw new VolumeFromImageError(`image ${imageId} is ${formatBytes(imageBytes)} (${imageBytes} bytes): it does not fit in a volume of ${formatBytes(requested)}`);
  }
  return requested;
}

/** The rbd and ceph commands of a volume creation, run as `--id <user> --conf <ceph.conf>` (as the raw-cache target runs them). */
class CephCommands {
  private readonly timeoutMs: number;

  constructor(private readonly options: VolumeFromImageOptions) {
    this.timeoutMs = options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
  }

  /** The cluster's fsid, asked the way the raw-cache target asks it (`ceph fsid`). */
  fsid(pool: string, logger: Logger): Promise<string> {
    return new RbdRawCopyTarget({ pool, user: this.options.cephUser, cephConf: this.options.cephConf, commandTimeoutMs: this.timeoutMs }, logger).clusterFsid();
  }

  async rbd(args: string[], signal?: AbortSignal, timeoutMs = this.timeoutMs): Promise<RunResult> {
    return runCommand('rbd', ['--id', this.options.cephUser, '--conf', this.options.cephConf, ...args], { signal, ...(timeoutMs > 0 ? { timeoutMs } : {}) });
  }

  check(result: RunResult, what: string): RunResult {
    if (result.code === 0) return result;
    throw new VolumeFromImageError(`${what} failed: ${result.timedOut ? 'no answer from Ceph in time' : stderrSummary(result)}`);
  }

  async refuseExisting(spec: string): Promise<void> {
    const info = await this.rbd(['info', '--format', 'json', spec]);
    if (isMissing(info)) return;
    this.check(info, `rbd info ${spec}`);
    throw new VolumeFromImageError(`the destination ${spec} already exists: refused (choose another name or remove it)`);
  }

  /** The size of the snapshot a clone is made from, once it is known to exist and be protected. */
  async protectedSnapshotSize(source: CloneSource): Promise<number> {
    const imageSpec = `${source.pool}/${source.image}`;
    const snapshots = await this.rbd(['snap', 'ls', '--format', 'json', imageSpec]);
    if (isMissing(snapshots)) throw new VolumeFromImageError(`the raw copy ${imageSpec} does not exist in Ceph (the image says Cached): ask an operator to run stx-glance-proxy cache retry`, true);
    const list = parseJson<Array<{ name?: unknown; protected?: unknown; size?: unknown }>>(this.check(snapshots, `rbd snap ls ${imageSpec}`), 'rbd snap ls');
    const snap = Array.isArray(list) ? list.find((entry) => entry.name === source.snap) : undefined;
    const spec = `${imageSpec}@${source.snap}`;
    if (snap === undefined) throw new VolumeFromImageError(`the raw copy has no snapshot ${spec}: nothing to clone`, true);
    // rbd prints "true"/"false" as strings here.
    if (!(snap.protected === true || snap.protected === 'true')) throw new VolumeFromImageError(`the snapshot ${spec} is not protected: a clone needs a protected snapshot`, true);
    if (typeof snap.size !== 'number') throw new VolumeFromImageError(`rbd snap ls ${imageSpec} shows no size for ${source.snap}`);
    return snap.size;
  }

  /** Resizes a new volume to `sizeBytes` when that is larger than what it was made from; removes it if that fails. */
  async growTo(spec: string, currentBytes: number, sizeBytes: number, signal: AbortSignal): Promise<void> {
    if (sizeBytes <= currentBytes) return;
    const resize = await this.rbd(['resize', '--no-progress', '--size', `${sizeBytes}B`, spec], signal);
    if (resize.code === 0) return;
    await this.rbd(['rm', '--no-progress', spec]);
    this.check(resize, `rbd resize ${spec}`);
  }
}
