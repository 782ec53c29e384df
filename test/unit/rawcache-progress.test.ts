import { runCommand } from '../../src/rawcache/exec';
import { EtaEstimator, ProgressBoard, QemuProgressParser, describeProgress, formatDuration, renderProgressBar } from '../../src/rawcache/progress';
import { formatDetail, formatTable, watchFrame, type CacheDetail } from '../../src/ops/cache-commands';
import { Metrics } from '../../src/ops/metrics';

/** A clock the test moves by hand. */
function manualClock(start = 1_000_000): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}

describe("parsing qemu-img convert -p's output", () => {
  test('reads each report redrawn with \\r, the last one of a chunk winning', () => {
    const parser = new QemuProgressParser();
    expect(parser.push('    (0.00/100%)\r    (1.01/100%)\r    (12.34/100%)\r')).toBe(12.34);
    expect(parser.push('    (100.00/100%)\n')).toBe(100);
  });

  test('a report split across chunks counts once it is complete', () => {
    const parser = new QemuProgressParser();
    expect(parser.push('    (12.3')).toBeUndefined();
    expect(parser.push('4/100')).toBeUndefined();
    expect(parser.push('%)\r    (13')).toBe(12.34);
    expect(parser.push('.00/100%)\r')).toBe(13);
  });

  test('ignores what is not a progress report', () => {
    const parser = new QemuProgressParser();
    expect(parser.push('qemu-img: warning (something)\n')).toBeUndefined();
    expect(parser.push('    (250.00/100%)\r')).toBeUndefined();
  });

  test('runCommand reports the percents a command prints on stdout, in order', async () => {
    const seen: number[] = [];
    const result = await runCommand('/usr/bin/printf', ['    (0.00/100%%)\\r    (50.00/100%%)\\r    (100.00/100%%)\\n'], { onProgress: (p) => seen.push(p) });
    expect(result.code).toBe(0);
    expect(seen[seen.length - 1]).toBe(100);
    expect(seen).toEqual([...seen].sort((a, b) => a - b));
  });
});

describe('the ETA of a conversion', () => {
  test('none before enough progress, then the time left at the rate so far', () => {
    const clock = manualClock();
    const eta = new EtaEstimator(clock.now);
    expect(eta.update(0)).toBeUndefined();
    clock.advance(500);
    // 0.5 % in 0.5 s: too little progress and too soon to tell.
    expect(eta.update(0.5)).toBeUndefined();
    clock.advance(9_500);
    // 10 % in 10 s: 1 %/s, 90 s left.
    expect(eta.update(10)).toBeCloseTo(90, 0);
  });

  test('is smoothed: one fast step does not make it collapse', () => {
    const clock = manualClock();
    const eta = new EtaEstimator(clock.now);
    eta.update(0);
    for (let p = 1; p <= 20; p += 1) {
      clock.advance(1_000);
      eta.update(p);
    }
    expect(eta.eta()).toBeCloseTo(80, 0);
    // A stretch of zeroes qemu-img skips: 20 % in 1 s.
    clock.advance(1_000);
    const after = eta.update(40)!;
    // The raw rate would say 60 / 20 = 3 s; the smoothed one stays in between.
    expect(after).toBeGreaterThan(60 / 20);
    expect(after).toBeLessThan(60 / 1);
  });

  test('counts down between reports, and is gone once overdue', () => {
    const clock = manualClock();
    const eta = new EtaEstimator(clock.now);
    eta.update(0);
    clock.advance(10_000);
    eta.update(50);
    expect(eta.eta()).toBeCloseTo(10, 5);
    clock.advance(4_000);
    expect(eta.eta()).toBeCloseTo(6, 5);
    clock.advance(7_000);
    expect(eta.eta()).toBeUndefined();
  });
});

describe('the board of conversions in flight', () => {
  test('an entry starts with the first report and goes when the conversion ends', () => {
    const clock = manualClock();
    const board = new ProgressBoard(clock.now);
    expect(board.snapshot()).toEqual([]);
    board.report('a', 0);
    clock.advance(10_000);
    board.report('a', 25);
    expect(board.snapshot()).toEqual([{ image_id: 'a', percent: 25, eta_seconds: 30, started_at: new Date(1_000_000).toISOString() }]);
    board.end('a');
    expect(board.snapshot()).toEqual([]);
  });

  test('the worker gauges carry only the conversions in flight', async () => {
    const metrics = new Metrics('worker');
    metrics.setConversionsInFlight([
      { image_id: 'a', percent: 25, eta_seconds: 30 },
      { image_id: 'b', percent: 5, eta_seconds: null },
    ]);
    let text = (await metrics.render()).body;
    expect(text).toMatch(/^stx_glance_proxy_worker_conversion_progress_ratio\{image_id="a"\} 0\.25$/m);
    expect(text).toMatch(/^stx_glance_proxy_worker_conversion_eta_seconds\{image_id="a"\} 30$/m);
    expect(text).toMatch(/^stx_glance_proxy_worker_conversion_progress_ratio\{image_id="b"\} 0\.05$/m);
    expect(text).not.toMatch(/eta_seconds\{image_id="b"\}/);
    metrics.setConversionsInFlight([{ image_id: 'b', percent: 10, eta_seconds: 90 }]);
    text = (await metrics.render()).body;
    expect(text).not.toMatch(/image_id="a"/);
    expect(text).toMatch(/^stx_glance_proxy_worker_conversion_eta_seconds\{image_id="b"\} 90$/m);
  });
});

describe('showing progress', () => {
  test('durations and the one-line description', () => {
    expect(formatDuration(12.4)).toBe('12s');
    expect(formatDuration(245)).toBe('4m05s');
    expect(formatDuration(3720)).toBe('1h02m');
    expect(describeProgress({ percent: 42, eta_seconds: 245 })).toBe('42.0%, ETA 4m05s');
    expect(describeProgress({ percent: 3.456, eta_seconds: null })).toBe('3.5%');
  });

  test('the bar fills with the percent', () => {
    expect(renderProgressBar({ percent: 0, eta_seconds: null }, 10)).toBe('[..........]   0.0%');
    expect(renderProgressBar({ percent: 42, eta_seconds: 245 }, 10)).toBe('[####......]  42.0%, ETA 4m05s');
    expect(renderProgressBar({ percent: 100, eta_seconds: 0 }, 10)).toBe('[##########] 100.0%, ETA 0s');
  });

  const caching = (percent: number | null) => ({
    cache_raw_status: 'Caching',
    cache_raw_error: null,
    cache_raw_size: '-',
    progress: percent === null ? null : { percent, eta_seconds: null },
  });

  test('watch on a terminal redraws one line with \\r, and ends it with the final state', () => {
    let frame = watchFrame(caching(10), true);
    expect(frame.text).toBe(`\r\x1b[KCaching ${renderProgressBar({ percent: 10, eta_seconds: null })}`);
    frame = watchFrame(caching(10), true, frame.state);
    expect(frame.text).toBe('');
    frame = watchFrame({ cache_raw_status: 'Cached', cache_raw_error: null, cache_raw_size: '1024', progress: null }, true, frame.state);
    expect(frame.text).toBe('\r\x1b[KCached (1024 bytes)\n');
  });

  test('watch elsewhere prints a plain line per state and per 5 % step', () => {
    const lines: string[] = [];
    let state = {};
    for (const detail of [
      { ...caching(null), cache_raw_status: 'Queued' },
      caching(null),
      caching(1),
      caching(4.9),
      caching(5),
      caching(7),
      caching(12),
      { cache_raw_status: 'Error', cache_raw_error: 'broken', cache_raw_size: '-', progress: null },
    ]) {
      const frame = watchFrame(detail, false, state);
      state = frame.state;
      lines.push(frame.text);
    }
    expect(lines.join('')).toBe('Queued\nCaching\nCaching 1.0%\nCaching 5.0%\nCaching 12.0%\nError: broken\n');
  });
});

describe('cache list and show with progress', () => {
  const entry = {
    id: 'img-1',
    name: 'big',
    status: 'active',
    disk_format: 'qcow2',
    cache_raw: 'True',
    cache_raw_status: 'Caching',
    cache_raw_size: '-',
    cache_raw_url: null,
    cache_raw_error: null,
    progress: { percent: 42, eta_seconds: 245 },
  };

  test('the table has a Progress column, empty for an image not converting', () => {
    const lines = formatTable([entry, { ...entry, id: 'img-2', cache_raw_status: 'Cached', cache_raw_size: '1024', progress: null }]).split('\n');
    expect(lines[0]).toMatch(/Size +Progress +URL or error$/);
    expect(lines[1]).toMatch(/Caching +- +42\.0%, ETA 4m05s *$/);
    expect(lines[2]).toMatch(/Cached +1024 *$/);
  });

  test('show prints a progress line', () => {
    const detail: CacheDetail = { ...entry, copy_present: false, copy_url: 'file:///raw/img-1.raw', verification: 'os_hash_value (sha512)' };
    expect(formatDetail(detail)).toMatch(/^progress +42\.0%, ETA 4m05s$/m);
    expect(formatDetail({ ...detail, progress: null })).toMatch(/^progress *$/m);
  });
});
