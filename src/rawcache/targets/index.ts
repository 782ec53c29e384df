import type { RawCacheConfig } from '../../config/load';
import type { Logger } from '../../ops/log';
import type { RawCopyTarget } from '../types';
import { FileRawCopyTarget } from './file';
import { RbdRawCopyTarget } from './rbd';

export { FileRawCopyTarget } from './file';
export { RbdRawCopyTarget, RAW_SNAPSHOT, type RbdTargetOptions } from './rbd';

/** The raw-copy target that `rawcache.target` configures. */
export function createRawCopyTarget(config: RawCacheConfig['target'], logger: Logger): RawCopyTarget {
  const limits = { reserveBytes: config.reserve_bytes, maxVirtualSize: config.max_virtual_size_bytes };
  switch (config.kind) {
    case 'file':
      return new FileRawCopyTarget(config.file_dir, logger, limits);
    case 'rbd':
      return new RbdRawCopyTarget({ pool: config.rbd_pool, user: config.rbd_user, cephConf: config.ceph_conf, limits }, logger);
    default:
      throw new Error(`unknown rawcache.target.kind '${String((config as { kind: unknown }).kind)}'`);
  }
}
