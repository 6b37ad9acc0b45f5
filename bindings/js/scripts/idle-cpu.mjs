// CPU used by a wait on a step that never comes, with the default poll
// options: the share of one core, from /proc/self/stat (utime + stime of
// every thread of the process), over SECONDS (default 10) of the wait, for
// the synchronous call and for the async one (in a worker thread).
//
//   node scripts/idle-cpu.mjs [SECONDS]
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as handoff from '../src/index.js';

const seconds = Number(process.argv[2] ?? 10);
const ticksPerSecond = 100; // USER_HZ on Linux

/** CPU seconds used by this process so far. */
export function cpuSeconds() {
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}

async function measure(label, wait) {
  const start = performance.now();
  const before = cpuSeconds();
  try {
    await wait();
  } catch (e) {
    if (e.kind !== 'timed-out') throw e;
  }
  const wall = (performance.now() - start) / 1000;
  const used = cpuSeconds() - before;
  console.log(`${label}: ${((100 * used) / wall).toFixed(2)} % of a core (${(used * 1000).toFixed(0)} ms CPU in ${wall.toFixed(1)} s)`);
}

const root = mkdtempSync(join(tmpdir(), 'handoff-idle-'));
try {
  // Instantiate first (and start a worker), so that only the waiting is
  // measured,
  handoff.ls(root);
  await handoff.promises.ls(root);
  // and let the compilation and GC of the start settle.
  await new Promise((resolve) => setTimeout(resolve, 2000));
  await measure('sync wait ', () => handoff.wait(root, 9, { timeoutMs: seconds * 1000 }));
  await measure('async wait', () => handoff.promises.wait(root, 9, { timeoutMs: seconds * 1000 }));
} finally {
  rmSync(root, { recursive: true, force: true });
}
