// CPU used by a wait on a step that never comes, with the default poll
// options: the share of one core, from /proc/self/stat (utime + stime of
// every thread of the process), over SECONDS (default 10) of the wait, for
// the synchronous call and for the async one (in a worker thread).
//
//   node scripts/idle-cpu.mjs [SECONDS] [SETTLE_SECONDS]
//
// The waits start SETTLE_SECONDS (default 2) after the component was first
// instantiated in this thread and in a worker. Each isolate (this thread,
// the worker, and the shim's I/O worker of each) runs one round of
// memory-reducing GC about 8 s after it started, so with the default the
// synchronous wait also pays that start-up tail; with SETTLE_SECONDS 15 or
// more, both waits measure the steady state only.
//
// Each line ends with the same CPU split by thread, from
// /proc/self/task/*/schedstat (nanoseconds): `wait`, the thread that ran the
// wait; `other`, the busiest other threads (V8's helper threads for GC and
// compilation, the shim's I/O workers, the idle thread of the other call).
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as handoff from '../src/index.js';

const seconds = Number(process.argv[2] ?? 10);
const settle = Number(process.argv[3] ?? 2);
const ticksPerSecond = 100; // USER_HZ on Linux

/** CPU seconds used by this process so far. */
export function cpuSeconds() {
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}

/** CPU milliseconds used by each thread of this process so far (thread id -> ms). */
function threadMs() {
  const byThread = new Map();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      byThread.set(tid, Number(readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]) / 1e6);
    } catch {
      // the thread ended meanwhile
    }
  }
  return byThread;
}

function split(before, after) {
  const used = [...after].map(([tid, ms]) => [tid, ms - (before.get(tid) ?? 0)]).sort((a, b) => b[1] - a[1]);
  const [[, wait], ...others] = used;
  const shown = others.filter(([, ms]) => ms >= 1).map(([, ms]) => ms.toFixed(0));
  const total = used.reduce((sum, [, ms]) => sum + ms, 0);
  return `wait ${wait.toFixed(0)} ms, other ${(total - wait).toFixed(0)} ms${shown.length ? ` (${shown.join(' + ')})` : ''}`;
}

async function measure(label, wait) {
  const start = performance.now();
  const before = cpuSeconds();
  const threadsBefore = threadMs();
  try {
    await wait();
  } catch (e) {
    if (e.kind !== 'timed-out') throw e;
  }
  const wall = (performance.now() - start) / 1000;
  const used = cpuSeconds() - before;
  const threads = split(threadsBefore, threadMs());
  console.log(`${label}: ${((100 * used) / wall).toFixed(2)} % of a core (${(used * 1000).toFixed(0)} ms CPU in ${wall.toFixed(1)} s; ${threads})`);
}

const root = mkdtempSync(join(tmpdir(), 'handoff-idle-'));
try {
  // Instantiate first (and start a worker), so that only the waiting is
  // measured,
  handoff.ls(root);
  await handoff.promises.ls(root);
  // and let the compilation and GC of the start settle.
  await new Promise((resolve) => setTimeout(resolve, settle * 1000));
  await measure('sync wait ', () => handoff.wait(root, 9, { timeoutMs: seconds * 1000 }));
  await measure('async wait', () => handoff.promises.wait(root, 9, { timeoutMs: seconds * 1000 }));
} finally {
  rmSync(root, { recursive: true, force: true });
}
