import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Logger } from '../../ops/log';
import { runCommand, stderrSummary, throwIfAborted, type RunResult } from '../exec';
import { removeLeftovers, type FileInFlight, type LeftoverPlace } from '../leftovers';
import { RawCacheError, type RawCopyTarget } from '../types';
import { formatBytes } from '../source';
import { DeadlineError, type StepLimits } from '../deadline';
import { keepAlive, keepFileAlive, newAttempt } from '../writer';
import { convertToRaw, ensureRoom, ensureWorkDirRoom, filesystemFreeBytes, measureRawCopyWithin, spaceLimits, type ConvertSource, type Room, type SpaceLimits } from './convert';
import { assertImageId, idsFromNames, rbdNames, workNames } from './names';

/**
 * Raw copies in Ceph RBD, as StarlingX made them: image `<pool>/<id>_raw` with a protected
 * snapshot `snap` (so Cinder can clone volumes from it), cache_raw_url `rbd://<fsid>/<pool>/<id>_raw/snap`.
 *
 * A write goes to `<id>_raw_partial-<attempt>` (../writer.ts), gets its snapshot created and
 * protected, and only then is renamed to `<id>_raw`: an image under the final name is always
 * complete. A crash leaves only a partial, which the leftover sweep removes once its writer is gone
 * (../leftovers.ts). Every command runs as `--id <user> --conf <ceph_conf>`.
 */

export const RAW_SNAPSHOT = 'snap';
/** The image-meta key a writer refreshes on its partial (ms since the epoch) while it writes. */
export const HEARTBEAT_KEY = 'stx-glance-proxy.heartbeat';

export interface RbdTargetOptions {
  pool: string;
  /** Ceph client name without 'client.'. */
  user: string;
  cephConf: string;
  /**
   * How data gets into RBD. qemu-rbd: qemu-img writes to `rbd:` directly (needs Debian's
   * qemu-block-extra). import: qemu-img writes a sparse raw file next to the source, then
   * `rbd import`. auto (default): qemu-rbd when qemu-img has the rbd driver.
   */
  writeMode?: 'auto' | 'qemu-rbd' | 'import';
  /** Wall-clock limit of the short rbd/ceph commands (ls, info, snap, rename, df). */
  commandTimeoutMs?: number;
  /** Wall-clock limit of `rbd rm` and `rbd snap purge`, which delete every object of a copy. */
  removeTimeoutMs?: number;
  /** rawcache.target.reserve_bytes and max_virtual_size_bytes (their defaults when absent). */
  limits?: Partial<SpaceLimits>;
}

interface SnapshotInfo {
  name: string;
  protected: boolean;
}

const NAME = /^[A-Za-z0-9_.-]+$/;
const DEFAULT_COMMAND_TIMEOUT_MS = 120_000;
const DEFAULT_REMOVE_TIMEOUT_MS = 30 * 60_000;

export class RbdRawCopyTarget implements RawCopyTarget, LeftoverPlace {
  readonly kind = 'rbd';
  readonly pool: string;
  readonly user: string;
  readonly cephConf: string;
  private fsid: string | undefined;
  private fsidFromCluster: Promise<string> | undefined;
  private qemuHasRbd: Promise<boolean> | undefined;
  private readonly writeMode: 'auto' | 'qemu-rbd' | 'import';
  private readonly commandTimeoutMs: number;
  private readonly removeTimeoutMs: number;
  readonly limits: SpaceLimits;

  constructor(
    options: RbdTargetOptions,
    private readonly logger: Logger,
  ) {
    if (!NAME.test(options.pool)) throw new Error(`rawcache.target.rbd_pool '${options.pool}' is not a valid pool name`);
    if (!NAME.test(options.user)) throw new Error(`rawcache.target.rbd_user '${options.user}' is not a valid Ceph client name (without 'client.')`);
    this.pool = options.pool;
    this.user = options.user;
    this.cephConf = options.cephConf;
    this.writeMode = options.writeMode ?? 'auto';
    this.commandTimeoutMs = options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    this.removeTimeoutMs = options.removeTimeoutMs ?? DEFAULT_REMOVE_TIMEOUT_MS;
    this.limits = spaceLimits(options.limits);
    this.fsid = fsidInConf(this.cephConf);
  }

  /**
   * Needs the cluster fsid: from ceph.conf's `fsid` when it has one, else learned by the first
   * async call (see clusterFsid); before that it throws.
   */
  urlFor(imageId: string): string {
    assertImageId(imageId);
    if (this.fsid === undefined) {
      throw new Error(`the Ceph fsid is not known yet (${this.cephConf} has no fsid); call clusterFsid() first`);
    }
    return `rbd://${this.fsid}/${this.pool}/${rbdNames.copy(imageId)}/${RAW_SNAPSHOT}`;
  }

  /** The cluster's fsid as `ceph fsid` reports it, asked once (a failure is not remembered). */
  clusterFsid(): Promise<string> {
    this.fsidFromCluster ??= this.ceph(['fsid', '--format', 'json']).then(
      (result) => {
        const fsid = parseJson<{ fsid?: unknown }>(this.check(result, 'ceph fsid'), 'ceph fsid').fsid;
        if (typeof fsid !== 'string' || fsid === '') throw new RawCacheError('ceph fsid printed no fsid', false);
        if (this.fsid !== undefined && this.fsid !== fsid) {
          this.logger.warn('ceph.conf names another fsid than the cluster; using the cluster one', { conf: this.fsid, cluster: fsid });
        }
        this.fsid = fsid;
        return fsid;
      },
      (error: unknown) => {
        this.fsidFromCluster = undefined;
        throw error;
      },
    );
    return this.fsidFromCluster;
  }

  /**
   * Converts `source` into `<id>_raw@snap`. A complete copy already there (protected `snap`, same
   * size) is kept: Glance image data never changes, and a copy with clones could not be replaced
   * anyway. An incomplete one (no protected snapshot: a crashed StarlingX import) is replaced.
   */
  async write(imageId: string, source: ConvertSource, signal: AbortSignal): Promise<{ url: string; size: number }> {
    assertImageId(imageId);
    throwIfAborted(signal, 'raw copy');
    const finalName = rbdNames.copy(imageId);
    await this.clusterFsid();

    // Independent questions, asked at once: each is a process start and a cluster connection.
    // Their answers are used only once the existing copy (if any) has been dealt with.
    const measuring = measureRawCopyWithin(source, this.limits, signal);
    const pooling = this.poolRoom('warn');
    measuring.catch(() => undefined);
    const existing = await this.describe(finalName);
    if (existing !== null) {
      if (existing.complete && existing.size === source.virtualSize) {
        this.logger.info('raw copy already present', { imageId, url: this.urlFor(imageId) });
        return { url: this.urlFor(imageId), size: existing.size };
      }
      this.logger.warn('replacing a raw copy that is incomplete or not of the image size', { imageId, image: `${this.pool}/${finalName}`, size: existing.size });
      await this.removeImage(finalName, false);
    }
    // Nothing is written before the copy is known to fit: in the pool, and (rbd import) in the work dir.
    const measure = await measuring;
    ensureRoom(await pooling, measure, this.limits.reserveBytes, `Ceph pool ${this.pool}`);
    const throughQemu = await this.writesThroughQemu();
    if (!throughQemu) {
      if (source.path.startsWith('rbd:')) throw new RawCacheError('qemu-img has no rbd driver: an image in RBD cannot be converted in place', false);
      ensureWorkDirRoom(await filesystemFreeBytes(dirname(source.path)), measure, dirname(source.path));
    }

    const attempt = newAttempt();
    const partialName = rbdNames.partial(imageId, attempt);
    const stopHeartbeat = keepAlive(attempt, () => this.beat(partialName));
    let size: number;
    try {
      if (throughQemu) {
        // -W: out-of-order writes, about twice as fast into RBD (no ordering is needed for a new image).
        // qemu-img creates the RBD image at the copy's size before writing, so it needs no rbd info after.
        await convertToRaw(source, this.qemuSpec(partialName), signal, ['-W']);
        size = source.virtualSize;
      } else {
        await this.importViaFile(imageId, source, partialName, signal);
        throwIfAborted(signal, 'raw copy');
        size = (await this.describe(partialName))?.size ?? -1;
      }
      throwIfAborted(signal, 'raw copy');
      if (size !== source.virtualSize) {
        throw new RawCacheError(`the raw copy has ${size} bytes where the image's virtual size is ${source.virtualSize}: refused`, true);
      }
      const snapSpec = `${this.pool}/${partialName}@${RAW_SNAPSHOT}`;
      this.check(await this.rbd(['snap', 'create', '--no-progress', snapSpec], signal), `rbd snap create ${snapSpec}`);
      this.check(await this.rbd(['snap', 'protect', snapSpec], signal), `rbd snap protect ${snapSpec}`);
      throwIfAborted(signal, 'raw copy');
      await source.commit?.();
      this.check(
        await this.rbd(['rename', `${this.pool}/${partialName}`, `${this.pool}/${finalName}`], signal),
        `rbd rename ${this.pool}/${partialName}`,
      );
    } catch (error) {
      await this.removeImage(partialName, true).catch((cleanupError: unknown) =>
        this.logger.warn('could not remove a partial raw copy; the sweep will retry', {
          imageId,
          image: `${this.pool}/${partialName}`,
          error: (cleanupError as Error).message,
        }),
      );
      throw error;
    } finally {
      stopHeartbeat();
    }
    const url = this.urlFor(imageId);
    this.logger.info('raw copy written', { imageId, url, size });
    return { url, size };
  }

  /** True when `<id>_raw` exists with its protected snapshot: a complete copy. */
  async exists(imageId: string): Promise<boolean> {
    assertImageId(imageId);
    return (await this.describe(rbdNames.copy(imageId)))?.complete ?? false;
  }

  /**
   * Removes `<id>_raw` (unprotect, purge snapshots, rm) and the partials of `imageId` whose writer
   * is gone (a live write's stays). Succeeds when there is none. Fails (transiently) while volumes
   * cloned from the copy still exist.
   */
  async remove(imageId: string): Promise<void> {
    assertImageId(imageId);
    let failure: unknown;
    try {
      await this.removeImage(rbdNames.copy(imageId), false);
    } catch (error) {
      failure = error;
    }
    await removeLeftovers([this], this.logger, imageId.toLowerCase());
    if (failure !== undefined) throw failure;
  }

  /**
   * The partials in the pool (`<id>_raw_partial-<attempt>`, and `<id>_raw_partial` of older
   * versions), for the leftover sweep. Their heartbeat is the image-meta key HEARTBEAT_KEY that
   * their writer refreshes, or else the image's own create and modify times.
   */
  async filesInFlight(): Promise<FileInFlight[]> {
    return (await this.poolImages()).flatMap((name) => {
      const match = rbdNames.partialPattern.exec(name);
      if (!match) return [];
      return [
        {
          where: `${this.pool}/${name}`,
          imageId: match[1].toLowerCase(),
          attempt: match[2],
          lastBeat: () => this.lastBeat(name),
          remove: () => this.removeImage(name, true),
        },
      ];
    });
  }

  async list(): Promise<string[]> {
    return idsFromNames(await this.poolImages(), rbdNames.pattern);
  }

  private async poolImages(): Promise<string[]> {
    const result = this.check(await this.rbd(['ls', '--pool', this.pool, '--format', 'json']), `rbd ls ${this.pool}`);
    const names = parseJson<unknown>(result, 'rbd ls');
    if (!Array.isArray(names)) throw new RawCacheError('rbd ls printed something that is not a list', false);
    return names.filter((name): name is string => typeof name === 'string');
  }

  /** One heartbeat of a partial being written: true while it may still appear or exists. */
  private async beat(imageName: string): Promise<boolean> {
    const spec = `${this.pool}/${imageName}`;
    const result = await this.rbd(['image-meta', 'set', spec, HEARTBEAT_KEY, String(Date.now())]);
    // Missing: qemu-img or rbd import has not created it yet; the writer ends the heartbeat itself.
    if (!isMissing(result)) this.check(result, `rbd image-meta set ${spec}`);
    return true;
  }

  /** The latest sign of life of a partial: its heartbeat key, its creation or last write. */
  private async lastBeat(imageName: string): Promise<number> {
    const spec = `${this.pool}/${imageName}`;
    const times: number[] = [];
    const meta = await this.rbd(['image-meta', 'get', spec, HEARTBEAT_KEY]);
    if (meta.code === 0) times.push(Number(meta.stdout.trim()));
    const info = await this.rbd(['info', '--format', 'json', spec]);
    if (info.code === 0) {
      const parsed = parseJson<{ create_timestamp?: unknown; modify_timestamp?: unknown }>(info, 'rbd info');
      // ctime-style local times ("Wed Dec  2 13:05:01 2026"), as rbd prints them.
      for (const stamp of [parsed.create_timestamp, parsed.modify_timestamp]) if (typeof stamp === 'string') times.push(Date.parse(stamp));
    }
    const known = times.filter(Number.isFinite);
    return known.length > 0 ? Math.max(...known) : Number.NaN;
  }

  /** What the space check before each write sees: the pool's room from Ceph (see poolRoom). */
  async freeBytes(): Promise<number | undefined> {
    return (await this.poolRoom('debug'))?.free;
  }

  /**
   * The pool's MAX AVAIL (`ceph df detail`), lowered to what its byte quota (`ceph osd pool
   * get-quota`, else df's own quota_bytes) leaves; undefined when Ceph cannot tell, and then the
   * space check is skipped (with a log line at `level`).
   */
  private async poolRoom(level: 'warn' | 'debug'): Promise<Room | undefined> {
    try {
      const [dfResult, quotaResult] = await Promise.all([
        this.ceph(['df', 'detail', '--format', 'json']),
        this.ceph(['osd', 'pool', 'get-quota', this.pool, '--format', 'json']),
      ]);
      const df = parseJson<unknown>(this.check(dfResult, 'ceph df detail'), 'ceph df detail');
      let quota: unknown;
      try {
        quota = parseJson<unknown>(this.check(quotaResult, `ceph osd pool get-quota ${this.pool}`), 'ceph osd pool get-quota');
      } catch (error) {
        this.logger.debug("the pool's quota unknown; using the one ceph df detail shows", { pool: this.pool, error: (error as Error).message });
      }
      const room = roomInPool(df, quota, this.pool);
      if (room === undefined) this.logger[level]('ceph df detail shows no MAX AVAIL for the pool; raw copies are written without a space check', { pool: this.pool });
      return room;
    } catch (error) {
      this.logger[level]('free space of the Ceph pool unknown; raw copies are written without a space check', { pool: this.pool, error: (error as Error).message });
      return undefined;
    }
  }

  /** `rbd:<pool>/<image>:id=<user>:conf=<path>`, with qemu's backslash escapes for ':' and '\'. */
  qemuSpec(imageName: string): string {
    const escape = (text: string): string => text.replace(/[\\:]/g, (c) => `\\${c}`);
    return `rbd:${this.pool}/${imageName}:id=${this.user}:conf=${escape(this.cephConf)}`;
  }

  /**
   * The `rbd:` spec of a snapshot to read in place on this target's cluster, with this target's
   * identity: `pool`, `image` and `snap` must be names parseRbdLocation accepted (no ':', '@', '/').
   */
  qemuSourceSpec(pool: string, image: string, snap: string): string {
    for (const name of [pool, image, snap]) {
      if (!NAME.test(name) || name.startsWith('-')) throw new RawCacheError(`'${name.slice(0, 80)}' is not an RBD name the worker reads in place`, true);
    }
    const escape = (text: string): string => text.replace(/[\\:]/g, (c) => `\\${c}`);
    return `rbd:${pool}/${image}@${snap}:id=${this.user}:conf=${escape(this.cephConf)}`;
  }

  /**
   * Whether qemu-img can write to `rbd:` targets. `qemu-img --help` lists rbd even when Debian's
   * qemu-block-extra (block-rbd.so) is missing, so ask the driver itself: without it qemu-img
   * answers "Unknown driver 'rbd'", with it "Parameter 'pool' is missing".
   */
  writesThroughQemu(): Promise<boolean> {
    if (this.writeMode !== 'auto') return Promise.resolve(this.writeMode === 'qemu-rbd');
    this.qemuHasRbd ??= runCommand('qemu-img', ['info', '--image-opts', 'driver=rbd'], { timeoutMs: 30_000 }).then((result) => {
      const has = !/Unknown (driver|protocol) 'rbd'/.test(result.stderr);
      this.logger.info(has ? 'qemu-img writes raw copies into RBD directly' : 'qemu-img has no rbd driver: raw copies go through a local file and rbd import', {});
      return has;
    });
    return this.qemuHasRbd;
  }

  private async importViaFile(imageId: string, source: ConvertSource, partialName: string, signal: AbortSignal): Promise<void> {
    // Beside the source, in the worker's work dir, whose room write() checked first.
    const attempt = newAttempt();
    const temporary = join(dirname(source.path), workNames.rawImport(imageId, attempt));
    const stopHeartbeat = keepFileAlive(attempt, temporary);
    try {
      await convertToRaw(source, temporary, signal);
      // rbd import skips zeroed blocks by default (--sparse-size 4K): the RBD image stays sparse.
      const spec = `${this.pool}/${partialName}`;
      // With its progress report, which the stall limit watches (rawcache.worker.stall_timeout_seconds).
      const result = await this.run('rbd', ['import', '--image-format', '2', temporary, spec], signal, 0, source.limits);
      this.check(result, `rbd import ${spec}`);
    } finally {
      await rm(temporary, { force: true });
      stopHeartbeat();
    }
  }

  /** Size and completeness of an RBD image, or null when it does not exist. */
  private async describe(imageName: string): Promise<{ size: number; complete: boolean } | null> {
    const spec = `${this.pool}/${imageName}`;
    const info = await this.rbd(['info', '--format', 'json', spec]);
    if (isMissing(info)) return null;
    const size = parseJson<{ size?: unknown }>(this.check(info, `rbd info ${spec}`), 'rbd info').size;
    const snapshots = await this.snapshots(imageName);
    if (snapshots === null) return null;
    return {
      size: typeof size === 'number' ? size : -1,
      complete: snapshots.some((snap) => snap.name === RAW_SNAPSHOT && snap.protected),
    };
  }

  private async snapshots(imageName: string): Promise<SnapshotInfo[] | null> {
    const spec = `${this.pool}/${imageName}`;
    const result = await this.rbd(['snap', 'ls', '--format', 'json', spec]);
    if (isMissing(result)) return null;
    const list = parseJson<unknown>(this.check(result, `rbd snap ls ${spec}`), 'rbd snap ls');
    if (!Array.isArray(list)) return [];
    return list.map((entry: { name?: unknown; protected?: unknown }) => ({
      name: String(entry.name),
      // rbd prints "true"/"false" as strings here.
      protected: entry.protected === true || entry.protected === 'true',
    }));
  }

  /**
   * Unprotects and purges the snapshots, then removes the image; nothing to do when it is missing.
   * An image with watchers is open in a live client (a watch lasts only as long as its client keeps
   * renewing it: the OSD drops a dead client's watch after its timeout, 30 s by default), so it is
   * left alone and the removal fails, to be retried: never blocklisted, which would cut that client
   * off the whole cluster. Once no watch is left, librbd breaks a dead writer's exclusive lock by
   * itself. `ownedPartial` names our own temporary copy in messages.
   */
  private async removeImage(imageName: string, ownedPartial: boolean): Promise<void> {
    const spec = `${this.pool}/${imageName}`;
    await this.refuseWhileOpen(spec, ownedPartial);
    const snapshots = await this.snapshots(imageName);
    if (snapshots === null) return;
    for (const snap of snapshots.filter((s) => s.protected)) {
      const result = await this.rbd(['snap', 'unprotect', `${spec}@${snap.name}`]);
      if (result.code === 0 || isMissing(result) || /not protected/i.test(result.stderr)) continue;
      if (/Device or resource busy|\(16\)|child/i.test(result.stderr)) {
        throw new RawCacheError(
          `the raw copy ${spec}@${snap.name} has clones (volumes created from it): flatten or delete them, then it can be removed`,
          false,
        );
      }
      this.check(result, `rbd snap unprotect ${spec}@${snap.name}`);
    }
    if (snapshots.length > 0) {
      const purge = await this.rbd(['snap', 'purge', '--no-progress', spec], undefined, this.removeTimeoutMs);
      if (!isMissing(purge)) this.check(purge, `rbd snap purge ${spec}`);
    }
    const removal = await this.rbd(['rm', '--no-progress', spec], undefined, this.removeTimeoutMs);
    if (isMissing(removal)) return;
    if (/still has watchers/i.test(removal.stderr)) throw this.openByClients(spec, ownedPartial, []);
    this.check(removal, `rbd rm ${spec}`);
    this.logger.info('rbd image removed', { image: spec });
  }

  /** Fails (transiently) while `rbd status` lists watchers of the image: a client has it open. */
  private async refuseWhileOpen(spec: string, ownedPartial: boolean): Promise<void> {
    const status = await this.rbd(['status', '--format', 'json', spec]);
    if (isMissing(status)) return;
    const watchers = parseJson<{ watchers?: Array<{ address?: unknown }> }>(this.check(status, `rbd status ${spec}`), 'rbd status').watchers ?? [];
    const addresses = watchers.map((watcher) => String(watcher.address ?? 'unknown address'));
    if (addresses.length > 0) throw this.openByClients(spec, ownedPartial, addresses);
  }

  private openByClients(spec: string, ownedPartial: boolean, addresses: string[]): RawCacheError {
    this.logger.warn('not removing an RBD image that a client has open; will retry', { image: spec, watchers: addresses, partial: ownedPartial });
    const who = addresses.length > 0 ? ` (watchers: ${addresses.join(', ')})` : '';
    const hint = ownedPartial
      ? 'a conversion that stopped mid-copy keeps its watch until the OSD drops it (about 30 s)'
      : 'find the client with `rbd status` and close it (an rbd map, a running export or a VM)';
    return new RawCacheError(`the RBD image ${spec} is open by a client${who}, so it is not removed: ${hint}; will retry`, false);
  }

  private rbd(args: string[], signal?: AbortSignal, timeoutMs: number = this.commandTimeoutMs): Promise<RunResult> {
    return this.run('rbd', args, signal, timeoutMs);
  }

  private ceph(args: string[], signal?: AbortSignal): Promise<RunResult> {
    return this.run('ceph', ['--connect-timeout', String(Math.ceil(this.commandTimeoutMs / 2000)), ...args], signal, this.commandTimeoutMs);
  }

  private async run(command: 'rbd' | 'ceph', args: string[], signal: AbortSignal | undefined, timeoutMs: number, limits?: StepLimits): Promise<RunResult> {
    try {
      return await runCommand(command, ['--id', this.user, '--conf', this.cephConf, ...args], {
        signal,
        ...(timeoutMs > 0 ? { timeoutMs } : {}),
        ...(limits ? { limits } : {}),
      });
    } catch (error) {
      if ((error as Error).name === 'AbortError' || error instanceof DeadlineError) throw error;
      throw new RawCacheError(`${command} could not run: ${(error as Error).message}`, false);
    }
  }

  /** The result when it succeeded; otherwise a transient RawCacheError with the command's own words. */
  private check(result: RunResult, what: string): RunResult {
    if (result.code === 0) return result;
    const why = result.timedOut ? `no answer from Ceph within ${Math.round(this.commandTimeoutMs / 1000)} s` : stderrSummary(result);
    throw new RawCacheError(`${what} failed: ${why}`, false);
  }
}

/** True when rbd says the image or snapshot does not exist (also used by src/consumer). */
export function isMissing(result: RunResult): boolean {
  return result.code !== 0 && /No such file or directory|\(2\)/.test(result.stderr);
}

export function parseJson<T>(result: RunResult, what: string): T {
  try {
    return JSON.parse(result.stdout) as T;
  } catch {
    throw new RawCacheError(`${what} printed something that is not JSON`, false);
  }
}

interface PoolStats {
  max_avail?: unknown;
  stored?: unknown;
  quota_bytes?: unknown;
}

/**
 * The room for new data in `pool`, from `ceph df detail --format json` and `ceph osd pool get-quota
 * <pool> --format json` (undefined: df's quota_bytes instead): MAX AVAIL (already net of replication
 * and the full ratio), lowered to quota_max_bytes minus what the pool stores when a byte quota is
 * set (the quota counts stored bytes, before replication, as `stored` does). Undefined when df does
 * not know the pool.
 */
export function roomInPool(df: unknown, quota: unknown, pool: string): Room | undefined {
  const pools = (df as { pools?: Array<{ name?: unknown; stats?: PoolStats }> } | null)?.pools;
  const stats = Array.isArray(pools) ? pools.find((entry) => entry?.name === pool)?.stats : undefined;
  const maxAvail = stats?.max_avail;
  if (typeof maxAvail !== 'number' || !Number.isFinite(maxAvail)) return undefined;
  const maxBytes = quota === undefined ? stats?.quota_bytes : (quota as { quota_max_bytes?: unknown } | null)?.quota_max_bytes;
  if (typeof maxBytes !== 'number' || maxBytes <= 0) return { free: maxAvail, limitedBy: 'MAX AVAIL in ceph df detail' };
  const stored = typeof stats?.stored === 'number' ? stats.stored : 0;
  const underQuota = Math.max(0, maxBytes - stored);
  if (underQuota < maxAvail) return { free: underQuota, limitedBy: `what its quota of ${formatBytes(maxBytes)} leaves` };
  return { free: maxAvail, limitedBy: 'MAX AVAIL in ceph df detail' };
}

/** `fsid = <uuid>` from a ceph.conf (any section: client confs keep it in [global]), if readable. */
export function fsidInConf(confPath: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(confPath, 'utf8');
  } catch {
    return undefined;
  }
  const match = /^\s*fsid\s*=\s*([0-9a-fA-F-]{36})\s*$/m.exec(text);
  return match?.[1].toLowerCase();
}
