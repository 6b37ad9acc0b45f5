// CPU used by a wait on a step that never comes, with the default poll
// options: the share of one core used by the whole process (every thread,
// from getrusage) over SECONDS (default 10) of the wait, for the synchronous
// call and for the async one (in a worker thread).
//
//   node scripts/idle-cpu.mjs [SECONDS]
//
// Each call is measured in a process of its own, started for it, so that
// neither pays for what starting the other left to do. There the component
// is first instantiated (by an `ls`, in the thread that then waits), and two
// waits follow: one from 2 s after that first call, and one from 15 s after
// it (or as soon as the first ends). About 8 s after the first call, each V8
// isolate of the process (the main thread, the worker of the async call, the
// shim's I/O worker of each thread that runs the component) runs two rounds
// of memory-reducing GC, once: the first wait pays for that start-up tail,
// the second measures the steady state, what a long idle wait costs.
//
// Each line ends with the same CPU split by thread, from
// /proc/self/task/*/schedstat (nanoseconds): `wait`, the thread that ran the
// wait; `other`, the busiest other threads (V8's helper threads for GC and
// compilation, the shim's I/O worker, the idle main thread of the async call).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { argv, cpuUsage, execArgv, execPath } from 'node:process';
import { fileURLToPath } from 'node:url';
import * as handoff from '../src/index.js';

const seconds = Number(argv[2] ?? 10);
const call = argv[3]; // set in the process made for one call

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
  const before = cpuUsage();
  const threadsBefore = threadMs();
  try {
    await wait();
  } catch (e) {
    if (e.kind !== 'timed-out') throw e;
  }
  const wall = (performance.now() - start) / 1000;
  const { user, system } = cpuUsage(before);
  const used = (user + system) / 1e6;
  const threads = split(threadsBefore, threadMs());
  console.log(`${label}: ${((100 * used) / wall).toFixed(2)} % of a core (${(used * 1000).toFixed(0)} ms CPU in ${wall.toFixed(1)} s; ${threads})`);
}

if (call === undefined) {
  for (const which of ['sync', 'async']) {
    execFileSync(execPath, [...execArgv, fileURLToPath(import.meta.url), String(seconds), which], { stdio: 'inherit' });
  }
} else {
  const root = mkdtempSync(join(tmpdir(), 'handoff-idle-'));
  const api = call === 'sync' ? handoff : handoff.promises;
  try {
    // Instantiate first, so that only waiting is measured.
    const start = performance.now();
    await api.ls(root);
    // One wait with the start-up tail in it, one once it is over.
    for (const [after, label] of [[2, 'from 2 s after the first call'], [15, 'from 15 s (steady)']]) {
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, start + after * 1000 - performance.now())));
      await measure(`${call} wait, ${label}`.padEnd(41), () => api.wait(root, 9, { timeoutMs: seconds * 1000 }));
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
