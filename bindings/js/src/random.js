// `wasi:random/random` with `get-random-u64` served from a buffer of random
// bytes filled 4 KiB at a time: the component draws one for the jitter of
// every attempt of a wait, and the shim's crypto.randomBytes(8) per draw was
// a visible part of an idle wait's CPU. Same source (the OS CSPRNG).
import { randomFillSync } from 'node:crypto';

const pool = new BigUint64Array(512);
let next = pool.length;

export function random(shimRandom) {
  return {
    ...shimRandom,
    getRandomU64() {
      if (next === pool.length) {
        randomFillSync(pool);
        next = 0;
      }
      return pool[next++];
    },
  };
}
