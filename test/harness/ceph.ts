import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { appendFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { requireExecutable } from '../../src/dev/local-glance';
import { freePort, isPortFree } from './ports';
import { ServiceProcess } from './service-process';

/**
 * A real single-node Ceph 16 (Debian's packages) for one test suite: one mon, one mgr, one OSD on
 * memstore (data in RAM), in a fresh temp dir, on free 127.0.0.1 ports, with a pool `images`
 * (application rbd) and a user `client.glance` that has rbd rights on it. The daemons run in the
 * foreground as children of the test process, each in its own process group tied to it by a
 * watchdog, so a crashed suite leaves nothing running; stop() kills them and removes the dir.
 */

export interface CephCluster {
  dir: string;
  fsid: string;
  confPath: string;
  /** Holds the client.admin and client.glance keys; ceph.conf names it, so clients need nothing else. */
  keyringPath: string;
  user: 'glance';
  pool: 'images';
  /** Runs `ceph` as client.admin (for test setup and assertions). */
  admin(args: string[]): Promise<string>;
  /** Runs `rbd` as client.glance. */
  rbd(args: string[]): Promise<string>;
  logs(daemon: 'mon.a' | 'mgr.x' | 'osd.0'): string;
  /** Process ids of the daemons, by name (mon.a, mgr.x, osd.0). */
  pids: Record<string, number>;
  stop(): Promise<void>;
}

export interface CephOptions {
  /** Start the mgr (needed by `ceph df`); it costs ~300 MB of RSS. Default true. */
  withMgr?: boolean;
  /** memstore capacity (the OSD's reported size). Default 8 GiB; RAM is used only for data written. */
  osdBytes?: number;
  startTimeoutMs?: number;
}

const INSTALL_HINT = 'bash scripts/ensure-system-deps.sh ceph';
const DEFAULT_START_TIMEOUT_MS = 90_000;
/** The OSD binds 8 ports (public, cluster, heartbeat front and back, msgr v1 and v2), the mgr 2. */
const DAEMON_PORT_COUNT = 16;
const CLIENT_TIMEOUT_MS = 30_000;
const run = promisify(execFile);

export async function startCeph(options: CephOptions = {}): Promise<CephCluster> {
  for (const tool of ['ceph', 'ceph-mon', 'ceph-mgr', 'ceph-osd', 'ceph-authtool', 'monmaptool', 'rbd']) requireExecutable(tool, INSTALL_HINT);
  const withMgr = options.withMgr ?? true;
  const deadline = Date.now() + (options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);
  const dir = await mkdtemp(join(tmpdir(), 'stx-ceph-'));
  const confPath = join(dir, 'ceph.conf');
  const keyringPath = join(dir, 'keyring');
  const daemons = new Map<string, ServiceProcess>();
  const fsid = randomUUID();

  const stop = async (): Promise<void> => {
    // osd, then mgr, then mon: the reverse of the start. SIGKILL: the data is thrown away anyway.
    for (const name of ['osd.0', 'mgr.x', 'mon.a']) await daemons.get(name)?.stop('SIGKILL', { group: true });
    if (process.env.KEEP_TEST_DIRS !== '1') await rm(dir, { recursive: true, force: true });
  };
  const logs = (daemon: string): string => {
    try {
      return readFileSync(join(dir, 'log', `${daemon}.log`), 'utf8');
    } catch {
      return '';
    }
  };
  const admin = async (args: string[]): Promise<string> =>
    (await run('ceph', ['--conf', confPath, '--connect-timeout', '20', ...args], { timeout: CLIENT_TIMEOUT_MS })).stdout;
  const rbd = async (args: string[]): Promise<string> =>
    (await run('rbd', ['--conf', confPath, '--id', 'glance', ...args], { timeout: CLIENT_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024 })).stdout;

  const startDaemon = async (type: 'mon' | 'mgr' | 'osd', id: string): Promise<void> => {
    const logFd = openSync(join(dir, 'log', `${type}.${id}.stdout`), 'a');
    try {
      // -f: stay in the foreground (a child of ours, reaped by us), still logging to its log file.
      daemons.set(`${type}.${id}`, await ServiceProcess.start(`ceph-${type}`, ['-f', '-c', confPath, '-i', id], { stdio: ['ignore', logFd, logFd] }));
    } finally {
      closeSync(logFd);
    }
  };

  try {
    for (const sub of ['run', 'log', 'crash', 'mon.a', 'mgr.x', 'osd.0']) await mkdir(join(dir, sub));
    const monPort = await freePort();
    const monPortV1 = await freePort();
    const msPortMin = await freePortRange(DAEMON_PORT_COUNT, [monPort, monPortV1]);
    await writeFile(confPath, cephConf({ dir, fsid, monPort, monPortV1, msPortMin, msPortMax: msPortMin + DAEMON_PORT_COUNT - 1, osdBytes: options.osdBytes }));

    await run('ceph-authtool', ['--create-keyring', keyringPath, '--gen-key', '-n', 'mon.', '--cap', 'mon', 'allow *']);
    await run('ceph-authtool', [keyringPath, '--gen-key', '-n', 'client.admin', '--cap', 'mon', 'allow *', '--cap', 'osd', 'allow *', '--cap', 'mds', 'allow *', '--cap', 'mgr', 'allow *']);
    const monAddress = `[v2:127.0.0.1:${monPort},v1:127.0.0.1:${monPortV1}]`;
    await run('monmaptool', ['--create', '--clobber', '--fsid', fsid, '--addv', 'a', monAddress, join(dir, 'monmap')]);
    await run('ceph-mon', ['-c', confPath, '--mkfs', '-i', 'a', '--monmap', join(dir, 'monmap'), '--keyring', keyringPath]);
    await startDaemon('mon', 'a');

    if (withMgr) await admin(['auth', 'get-or-create', 'mgr.x', 'mon', 'allow profile mgr', 'mds', 'allow *', 'osd', 'allow *', '-o', join(dir, 'mgr.x', 'keyring')]);
    const osdUuid = randomUUID();
    const osdKey = (await run('ceph-authtool', ['--gen-print-key'])).stdout.trim();
    const secretFile = join(dir, 'osd.0', 'new.json');
    await writeFile(secretFile, JSON.stringify({ cephx_secret: osdKey }));
    const osdId = (await admin(['osd', 'new', osdUuid, '0', '-i', secretFile])).trim();
    await rm(secretFile);
    if (osdId !== '0') throw new Error(`ceph osd new returned '${osdId}', expected 0`);
    await writeFile(join(dir, 'osd.0', 'keyring'), `[osd.0]\n\tkey = ${osdKey}\n`);
    await run('ceph-osd', ['-c', confPath, '-i', '0', '--mkfs', '--osd-uuid', osdUuid]);
    if (withMgr) await startDaemon('mgr', 'x');
    await startDaemon('osd', '0');

    await waitFor('osd.0 up', deadline, daemons, async () => {
      const dump = JSON.parse(await admin(['osd', 'dump', '--format', 'json'])) as { osds?: Array<{ osd: number; up: number }> };
      return dump.osds?.some((osd) => osd.osd === 0 && osd.up === 1) ?? false;
    });
    await admin(['osd', 'pool', 'create', 'images', '8', '8']);
    await admin(['osd', 'pool', 'application', 'enable', 'images', 'rbd']);
    const glanceKey = await admin(['auth', 'get-or-create', 'client.glance', 'mon', 'profile rbd', 'osd', 'profile rbd pool=images', 'mgr', 'profile rbd']);
    await appendFile(keyringPath, glanceKey);
    await waitFor('pool images usable by client.glance', deadline, daemons, async () => {
      await rbd(['ls', 'images']);
      return true;
    });
    if (withMgr) {
      await waitFor('an active mgr', deadline, daemons, async () => (JSON.parse(await admin(['mgr', 'stat', '--format', 'json'])) as { available?: boolean }).available === true);
    }
  } catch (error) {
    const detail = ['mon.a', 'osd.0', 'mgr.x'].map((daemon) => `--- ${daemon}\n${tail(logs(daemon))}`).join('\n');
    await stop();
    throw new Error(`single-node Ceph did not come up in ${dir}: ${(error as Error).message}\n${detail}`);
  }

  let stopping: Promise<void> | undefined;
  return {
    dir,
    fsid,
    confPath,
    keyringPath,
    user: 'glance',
    pool: 'images',
    admin,
    rbd,
    logs,
    pids: Object.fromEntries([...daemons].map(([name, daemon]) => [name, daemon.pid])),
    stop: () => (stopping ??= stop()),
  };
}

/**
 * An extra Glance config (for `startGlance({ store: 'rbd', extraConf })`) whose default backend
 * `ceph` stores images in `images` on this cluster as client.glance, next to the file backend `fs`.
 */
export async function writeGlanceRbdConf(ceph: CephCluster, file = join(ceph.dir, 'glance-rbd.conf')): Promise<string> {
  await writeFile(
    file,
    `# Glance backends for the test Ceph in ${ceph.dir}; read after the harness's own config.
[DEFAULT]
enabled_backends = ceph:rbd, fs:file

[glance_store]
default_backend = ceph

[ceph]
rbd_store_pool = ${ceph.pool}
rbd_store_user = ${ceph.user}
rbd_store_ceph_conf = ${ceph.confPath}
rbd_store_chunk_size = 8
`,
  );
  return file;
}

interface ConfValues {
  dir: string;
  fsid: string;
  monPort: number;
  monPortV1: number;
  msPortMin: number;
  msPortMax: number;
  osdBytes?: number;
}

function cephConf(v: ConfValues): string {
  // Admin sockets, pid and log files only in the daemon sections: in [global] every client
  // (rbd, qemu-img, Glance) would share one socket and one log.
  const daemonSection = (type: string): string => `[${type}]
admin socket = ${v.dir}/run/$name.asok
log file = ${v.dir}/log/$name.log
log to stderr = false
err to stderr = false
keyring = ${v.dir}/$name/keyring
`;
  return `# Throw-away single-node test cluster (test/harness/ceph.ts).
[global]
fsid = ${v.fsid}
mon initial members = a
mon host = [v2:127.0.0.1:${v.monPort},v1:127.0.0.1:${v.monPortV1}]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv4 = true
ms bind ipv6 = false
ms bind port min = ${v.msPortMin}
ms bind port max = ${v.msPortMax}
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = ${v.dir}/keyring
run dir = ${v.dir}/run
crash dir = ${v.dir}/crash
mon cluster log file = ${v.dir}/log/cluster.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
mon data avail warn = 2
mon data avail crit = 1
mon max pg per osd = 1000
# The mon batches map changes (snapshot ids, blocklist entries) for up to a second by default;
# a test cluster has no load to batch.
paxos propose interval = 0.05
paxos min wait = 0.01

[client]
log file = ${v.dir}/log/$name.$pid.log

${daemonSection('mon')}mon data = ${v.dir}/mon.$id

${daemonSection('mgr')}mgr data = ${v.dir}/mgr.$id

${daemonSection('osd')}osd data = ${v.dir}/osd.$id
osd objectstore = memstore
memstore device bytes = ${v.osdBytes ?? 8 * 1024 ** 3}
osd memory target = 1073741824
osd op num shards = 1
osd op num threads per shard = 2
`;
}

/** The first of `count` consecutive free ports below the kernel's ephemeral range. */
async function freePortRange(count: number, avoid: number[]): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 10_000);
    let free = true;
    for (let port = base; port < base + count && free; port++) free = !avoid.includes(port) && (await isPortFree(port));
    if (free) return base;
  }
  throw new Error(`no ${count} consecutive free ports found`);
}

async function waitFor(what: string, deadline: number, daemons: Map<string, ServiceProcess>, probe: () => Promise<boolean>): Promise<void> {
  let last = '';
  for (;;) {
    for (const [name, daemon] of daemons) if (!daemon.isRunning()) throw new Error(`ceph ${name} exited while waiting for ${what}`);
    try {
      if (await probe()) return;
    } catch (error) {
      last = (error as Error).message.split('\n')[0];
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? ` (last: ${last})` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function tail(text: string): string {
  return text.trimEnd().split('\n').slice(-15).join('\n');
}
