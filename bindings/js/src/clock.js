// `wasi:clocks/monotonic-clock` for the component's sleeps.
//
// The shim answers `subscribe-duration` with a pollable that lives in its I/O
// worker: every `block()` is a synchronous round trip to that thread, which
// then sleeps with setTimeout and, for the last 10 ms (and whenever a timer
// fires a little early, as Node's millisecond timers do), spins on
// setImmediate: a good part of what an idle `wait`, sleeping every 100 ms,
// cost. The pollables made here sleep in the calling thread itself, in
// Atomics.wait: no worker, no spinning.
import { hrtime } from 'node:process';

const cabiRep = Symbol.for('cabiRep');
const dispose = Symbol.dispose || Symbol.for('dispose');
// Reps of these pollables sit above the shim's (small counters from its
// worker) and below the component's handle flag bit (1 << 30).
const FIRST_REP = 1 << 29;
let nextRep = 0;
const parked = new Int32Array(new SharedArrayBuffer(4));
/** The longest single Atomics.wait, in ms: a huge duration stays a number. */
const LONGEST = 2n ** 52n;

/** The monotonic clock of the shim's `clocks`, with sleeps done here. */
export function monotonicClock(shimClock, Pollable) {
  // The generated bindings take any object whose prototype chain has the
  // shim's Pollable, and call its own block(); it is dropped with
  // [Symbol.dispose]. One prototype holds the methods, so a sleep (one per
  // attempt of a wait) makes one small object and no closures.
  const Sleeper = Object.create(Pollable.prototype, {
    ready: { value: function ready() { return hrtime.bigint() >= this.until; } },
    block: {
      value: function block() {
        const until = this.until;
        for (let left = until - hrtime.bigint(); left > 0n; left = until - hrtime.bigint()) {
          // Whole milliseconds, rounded up, capped so a huge duration stays a number.
          Atomics.wait(parked, 0, 0, Number(left > LONGEST ? LONGEST : (left + 999_999n) / 1_000_000n));
        }
      },
    },
    [dispose]: { value: function dispose() {} },
  });
  const sleeper = (until) => {
    const p = Object.create(Sleeper);
    p.until = until;
    Object.defineProperty(p, cabiRep, { value: FIRST_REP + (nextRep = (nextRep + 1) % FIRST_REP) });
    return p;
  };
  return {
    ...shimClock,
    subscribeInstant: (instant) => sleeper(BigInt(instant)),
    subscribeDuration: (duration) => sleeper(hrtime.bigint() + BigInt(duration)),
  };
}
