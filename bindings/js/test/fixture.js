// Fixture folders for the tests, removed when a test file is done.
import { after } from 'node:test';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const fixtures = [];
after(() => {
  for (const dir of fixtures) rmSync(dir, { recursive: true, force: true });
});

/** A folder with an empty `root` and a small payload in `src`. */
export function fixture(base = tmpdir()) {
  const dir = mkdtempSync(join(base, 'handoff-js-'));
  fixtures.push(dir);
  const root = join(dir, 'root');
  const src = join(dir, 'src');
  mkdirSync(root);
  mkdirSync(join(src, 'sub'), { recursive: true });
  writeFileSync(join(src, 'adapter_model.safetensors'), randomBytes(4096));
  writeFileSync(join(src, 'adapter_config.json'), '{"r": 8}');
  writeFileSync(join(src, 'sub', 'extra.bin'), 'x'.repeat(10));
  return { dir, root, src };
}

/** Every path under `dir` with its size and mtime: equal snapshots, nothing written. */
export function snapshot(dir) {
  const out = [];
  const walk = (d, rel) => {
    for (const name of readdirSync(d).sort()) {
      const st = statSync(join(d, name));
      out.push(`${rel}${name} ${st.size} ${st.mtimeMs}`);
      if (st.isDirectory()) walk(join(d, name), `${rel}${name}/`);
    }
  };
  walk(dir, '');
  return out;
}

/** A seeded generator (mulberry32): the same cases on every run, the seed in each message. */
export function random(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  return {
    next,
    int: (n) => Math.floor(next() * n),
    pick: (list) => list[Math.floor(next() * list.length)],
    /** A uniform bigint of `bits` bits. */
    bits: (bits) => {
      let v = 0n;
      for (let i = 0; i < bits; i += 16) v = (v << 16n) | BigInt(Math.floor(next() * 65536));
      return v & ((1n << BigInt(bits)) - 1n);
    },
  };
}
