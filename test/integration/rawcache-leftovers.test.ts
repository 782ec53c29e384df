import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { createServer, request as httpRequest, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCeph, type CephCluster } from '../harness/ceph';
import { startGlance, type RunningGlance } from '../harness/glance';
import { HttpClient } from '../harness/http';
import { makeQcow2 } from '../harness/images';
import { freePort } from '../harness/ports';
import { startProxy, startWorker, type RunningProxy } from '../harness/proxy';
import { waitUntil } from '../harness/queue-contract';
import { imageSteps, writeRawCacheConfig } from '../harness/rawcache';

/**
 * A worker SIGKILLed at each stage of a conversion (fetch, inspect, convert, rbd import, snapshot,
 * record) leaves files in flight behind; the next worker removes every one of them as it starts
 * (logging each), and every image still ends Cached with only its final copy left.
 *
 * One worker runs one image per stage at once, each held at its stage: the fetch and the record by
 * a relay in front of Glance (the download stops after its first chunk; the PATCH that records
 * Cached is never forwarded), the others by wrappers of qemu-img and rbd on the worker's PATH that
 * run the real tool and then wait (or wait before it). Each stage is seen by its marker and by the
 * state it leaves (a file in the work dir, a partial, a protected snapshot), then the worker is
 * killed once.
 */

type Stage = 'fetch' | 'inspect' | 'convert' | 'import' | 'snapshot' | 'record';

/**
 * Wraps qemu-img and rbd (`$0`'s name). Rules `<stage> <image id>` in $HOLD_RULES say which call to
 * hold: it writes its pid to $HOLD_DIR/<stage>-<id> and waits until killed. With $NO_QEMU_RBD,
 * qemu-img says it has no rbd driver, so the rbd target writes through a local file and `rbd import`.
 */
const WRAPPER = `#!/bin/bash
tool=$(basename "$0")
real=/usr/bin/$tool
args=" $* "
hold() { echo $$ > "$HOLD_DIR/.$1"; mv "$HOLD_DIR/.$1" "$HOLD_DIR/$1"; exec sleep infinity; }
if [ "$tool" = qemu-img ] && [ -n "$NO_QEMU_RBD" ] && [ "$args" = " info --image-opts driver=rbd " ]; then
  echo "qemu-img: Could not open 'driver=rbd': Unknown driver 'rbd'" >&2
  exit 1
fi
mapfile -t rules < "\${HOLD_RULES:-/dev/null}"
for rule in "\${rules[@]}"; do
  stage=\${rule%% *}
  id=\${rule#* }
  [[ "$args" == *"$id"* ]] || continue
  case "$tool $stage" in
    "qemu-img inspect") [[ "$1" == info ]] && hold "$stage-$id" ;;
    "qemu-img convert") if [[ "$1" == convert ]]; then "$real" "$@" || exit $?; hold "$stage-$id"; fi ;;
    "rbd import") if [[ "$args" == *" import "* ]]; then "$real" "$@" || exit $?; hold "$stage-$id"; fi ;;
    "rbd snapshot") [[ "$args" == *" rename "* ]] && hold "$stage-$id" ;;
  esac
done
exec "$real" "$@"
`;

interface GlanceRelay {
  url: string;
  close(): Promise<void>;
}

/**
 * Forwards the worker's requests to Glance, except that it holds the download of the images in
 * `fetch` after its first chunk, and never forwards the PATCH that records Cached on those in
 * `record`; `held(stage, id)` marks each hold.
 */
async function startHoldingRelay(upstream: string, fetch: Set<string>, record: Set<string>, held: (stage: Stage, id: string) => void): Promise<GlanceRelay> {
  const waiting = new Set<ServerResponse>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const id = /^\/v2\/images\/([0-9a-f-]{36})/.exec(req.url ?? '')?.[1] ?? '';
      if (req.method === 'PATCH' && record.has(id) && body.includes('"Cached"')) {
        waiting.add(res);
        held('record', id);
        return;
      }
      const forwarded = httpRequest(`${upstream}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        if (req.method === 'GET' && req.url === `/v2/images/${id}/file` && fetch.has(id)) {
          answer.once('data', (chunk: Buffer) => {
            answer.pause();
            res.write(chunk);
            held('fetch', id);
          });
          res.once('close', () => answer.destroy());
          return;
        }
        answer.pipe(res);
      });
      forwarded.once('error', (error) => res.destroy(error));
      forwarded.end(body);
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        for (const res of waiting) res.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('leftovers of a worker killed at each stage', () => {
  let glance: RunningGlance;
  let ceph: CephCluster;
  let dir: string;
  let wrappers: string;

  beforeAll(async () => {
    [glance, ceph] = await Promise.all([startGlance(), startCeph()]);
    dir = await mkdtemp(join(tmpdir(), 'stx-rawcache-leftovers-'));
    wrappers = join(dir, 'bin');
    await mkdir(wrappers);
    for (const tool of ['qemu-img', 'rbd']) {
      writeFileSync(join(wrappers, tool), WRAPPER);
      chmodSync(join(wrappers, tool), 0o755);
    }
  }, 180_000);

  afterAll(async () => {
    await glance?.stop();
    await ceph?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 120_000);

  /**
   * Runs one image per stage through a worker with `target`, kills the worker once every image is
   * held at its stage, and starts another. Returns what the killed worker left and the second
   * worker's logs, once every image is Cached.
   */
  async function killAtEachStage(name: string, target: Record<string, unknown>, stages: Stage[], env: Record<string, string>, stageState: (stage: Stage, id: string, work: string) => Promise<boolean>) {
    const base = join(dir, name);
    const work = join(base, 'work');
    const holdDir = join(base, 'holds');
    const rules = join(base, 'rules');
    await mkdir(holdDir, { recursive: true });
    const fetch = new Set<string>();
    const record = new Set<string>();
    const heldByRelay = new Set<string>();
    const relay = await startHoldingRelay(glance.url, fetch, record, (stage, id) => heldByRelay.add(`${stage}-${id}`));
    const config = writeRawCacheConfig(base, {
      upstream: glance.url,
      rawcache: { glance_url: relay.url },
      target,
      worker: { concurrency: stages.length, max_attempts: 3 },
    });
    const proxy = await startProxy({ upstream: glance.url, config });
    const client = new HttpClient(proxy.url);
    let worker: RunningProxy | undefined;
    const steps = imageSteps(client, () => worker?.logs().slice(-4000) ?? '');
    const workerEnv = { ...env, PATH: `${wrappers}:${process.env.PATH}`, HOLD_RULES: rules, HOLD_DIR: holdDir };
    const holders: number[] = [];
    try {
      const qcow2 = makeQcow2(base, 'image.qcow2', 8, 1);
      const ids = new Map<Stage, string>();
      for (const stage of stages) {
        const image = await steps.create({ name: `${name}-${stage}`, cache_raw: 'True' });
        ids.set(stage, image.id);
        await steps.upload(image.id, qcow2);
      }
      if (ids.has('fetch')) fetch.add(ids.get('fetch')!);
      if (ids.has('record')) record.add(ids.get('record')!);
      writeFileSync(rules, stages.map((stage) => `${stage} ${ids.get(stage)}\n`).join(''));

      worker = await startWorker({ config, opsPort: await freePort(), env: workerEnv });
      const running = worker;
      for (const stage of stages) {
        const id = ids.get(stage)!;
        const marker = `${stage}-${id}`;
        await waitUntil(async () => heldByRelay.has(marker) || (await readdir(holdDir)).includes(marker), 60_000, `${name}: the ${stage} stage of ${id}\n${running.logs().slice(-3000)}`);
        if (!heldByRelay.has(marker)) holders.push(Number(readFileSync(join(holdDir, marker), 'utf8')));
        await waitUntil(() => stageState(stage, id, work), 30_000, `${name}: what the ${stage} stage leaves`);
      }
      worker.kill('SIGKILL');
      await worker.exited;
      for (const pid of holders.splice(0)) process.kill(pid, 'SIGKILL');
      writeFileSync(rules, '');
      fetch.clear();
      record.clear();

      const leftInWork = await readdir(work);
      const leftOnTarget = await listTarget(target, ids);
      worker = await startWorker({ config, opsPort: await freePort(), env: workerEnv });
      for (const id of ids.values()) await steps.waitForImage(id, (image) => image.cache_raw_status === 'Cached', 90_000);
      return { ids, leftInWork, leftOnTarget, work, logs: worker.logs() };
    } finally {
      for (const pid of holders) process.kill(pid, 'SIGKILL');
      await worker?.stop();
      client.destroy();
      await proxy.stop();
      await relay.close();
    }
  }

  const poolImages = async (): Promise<string[]> => JSON.parse(await ceph.rbd(['ls', '--pool', ceph.pool, '--format', 'json']));

  async function listTarget(target: Record<string, unknown>, ids: Map<Stage, string>): Promise<string[]> {
    const all = target.kind === 'rbd' ? await poolImages() : await readdir(String(target.file_dir));
    return all.filter((entry) => [...ids.values()].some((id) => entry.startsWith(id)));
  }

  /** Each leftover was named in a "leftover removed" line of the worker's log. */
  function expectRemovalsLogged(logs: string, leftovers: string[]): void {
    const removed = logs.split('\n').filter((line) => line.includes('"leftover removed"'));
    for (const leftover of leftovers) expect(removed.filter((line) => line.includes(leftover))).toHaveLength(1);
  }

  /** A name in flight without its attempt tag (`<host>-<pid>-<process>-<random>`, all of them present). */
  const withoutAttempt = (name: string) => name.replace(/[0-9a-f]{8}-\d+-[0-9a-f]{8}-[0-9a-f]{6}$/, '');

  const workFiles = async (work: string, id: string, kind: 'src' | 'raw-import') => (await readdir(work).catch(() => [] as string[])).filter((n) => n.startsWith(`${id}.${kind}.`));

  test('on the file target: fetch, inspect, convert, record', async () => {
    const rawDir = join(dir, 'file', 'raw');
    const stages: Stage[] = ['fetch', 'inspect', 'convert', 'record'];
    const result = await killAtEachStage('file', { kind: 'file', file_dir: rawDir }, stages, {}, async (stage, id, work) => {
      const partials = (await readdir(rawDir).catch(() => [] as string[])).filter((n) => n.startsWith(`${id}.raw.partial-`));
      if (stage === 'convert') return partials.length === 1 && (await workFiles(work, id, 'src')).length === 1;
      if (stage === 'record') return (await readdir(rawDir)).includes(`${id}.raw`) && (await workFiles(work, id, 'src')).length === 0;
      return (await workFiles(work, id, 'src')).length === 1;
    });
    const id = (stage: Stage) => result.ids.get(stage)!;
    expect(result.leftInWork.map(withoutAttempt).sort()).toEqual([`${id('convert')}.src.`, `${id('fetch')}.src.`, `${id('inspect')}.src.`].sort());
    expect(result.leftOnTarget.filter((n) => n.includes('.partial-')).map(withoutAttempt)).toEqual([`${id('convert')}.raw.partial-`]);
    expectRemovalsLogged(result.logs, [...result.leftInWork, ...result.leftOnTarget.filter((n) => n.includes('.partial-'))]);
    expect(await readdir(result.work)).toEqual([]);
    expect((await readdir(rawDir)).sort()).toEqual(stages.map((stage) => `${id(stage)}.raw`).sort());
  }, 240_000);

  // fetch and inspect leave only the download, as on the file target.
  test('on the rbd target, through rbd import: convert, import, snapshot (protected), record', async () => {
    const stages: Stage[] = ['convert', 'import', 'snapshot', 'record'];
    const partialsOf = async (id: string) => (await poolImages()).filter((n) => n.startsWith(`${id}_raw_partial`));
    const target = { kind: 'rbd', rbd_pool: ceph.pool, rbd_user: ceph.user, ceph_conf: ceph.confPath };
    const result = await killAtEachStage('rbd', target, stages, { NO_QEMU_RBD: '1' }, async (stage, id, work) => {
      const sources = (await workFiles(work, id, 'src')).length;
      const imports = (await workFiles(work, id, 'raw-import')).length;
      if (stage === 'convert') return sources === 1 && imports === 1;
      if (stage === 'import') return sources === 1 && imports === 1 && (await partialsOf(id)).length === 1;
      if (stage === 'snapshot') {
        const [partial] = await partialsOf(id);
        if (partial === undefined || imports !== 0) return false;
        const snaps: Array<{ name: string; protected: string }> = JSON.parse(await ceph.rbd(['snap', 'ls', '--format', 'json', `${ceph.pool}/${partial}`]));
        return sources === 1 && snaps.some((snap) => snap.name === 'snap' && snap.protected === 'true');
      }
      if (stage === 'record') return (await poolImages()).includes(`${id}_raw`) && sources === 0;
      return sources === 1;
    });
    const id = (stage: Stage) => result.ids.get(stage)!;
    expect(result.leftInWork.filter((n) => n.includes('.raw-import.')).map(withoutAttempt).sort()).toEqual([`${id('convert')}.raw-import.`, `${id('import')}.raw-import.`].sort());
    expect(result.leftOnTarget.filter((n) => n.includes('_raw_partial')).map(withoutAttempt).sort()).toEqual([`${id('import')}_raw_partial-`, `${id('snapshot')}_raw_partial-`].sort());
    expectRemovalsLogged(result.logs, [...result.leftInWork, ...result.leftOnTarget.filter((n) => n.includes('_raw_partial'))]);
    expect(await readdir(result.work)).toEqual([]);
    expect((await poolImages()).sort()).toEqual(stages.map((stage) => `${id(stage)}_raw`).sort());
  }, 240_000);
});
