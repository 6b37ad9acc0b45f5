// src/open.js answers stat-at, and open-at that fail, in the calling thread:
// every answer must be the shim's own, for paths that exist or not, through
// symlinks inside and outside the preopen, loops, escapes and files used as
// directories.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { WASIShim } from '@bytecodealliance/preview2-shim/instantiation';
import { fastOpen, trackPreopen } from '../src/open.js';
import { fixture } from './fixture.js';

const dispose = Symbol.dispose || Symbol.for('dispose');

function tree() {
  const { root } = fixture();
  writeFileSync(join(root, 'f'), 'file');
  mkdirSync(join(root, 'd'));
  writeFileSync(join(root, 'd', 'x'), 'x');
  symlinkSync('d', join(root, 'ln'));
  symlinkSync('/etc', join(root, 'abs'));
  symlinkSync('loop', join(root, 'loop'));
  symlinkSync('../..', join(root, 'esc'));
  symlinkSync('nothing', join(root, 'dangling'));
  symlinkSync('f', join(root, 'lf'));
  return root;
}

/** A directory descriptor on `root` from the shim, tracked by src/open.js or not. */
function rootDescriptor(root, tracked) {
  const imports = new WASIShim({ sandbox: { preopens: { [root]: root } } }).getImportObject();
  fastOpen(imports['wasi:filesystem/types'].Descriptor);
  const [[preopen, path]] = imports['wasi:filesystem/preopens'].getDirectories();
  const flags = { symlinkFollow: false };
  const d = preopen.openAt(flags, '.', { directory: true }, { read: true });
  if (tracked) trackPreopen(d, path, flags, '.');
  return d;
}

function outcome(f) {
  try {
    let value = f();
    // A returned WIT result is what jco's glue takes it as (src/open.js
    // returns `{ tag: 'err', val: code }` where the shim throws the code).
    if (value && (value.tag === 'ok' || value.tag === 'err') && 'val' in value) {
      if (value.tag === 'err') return value.val;
      value = value.val;
    }
    if (value && typeof value[dispose] === 'function') {
      value[dispose]();
      return 'opened';
    }
    const { dataAccessTimestamp, ...rest } = value; // an open may not change it, but a read elsewhere might
    return rest;
  } catch (e) {
    return typeof e === 'string' ? e : `${e?.constructor?.name}: ${e?.code ?? e?.message}`;
  }
}

const paths = ['missing', 'missing/x', 'f', 'f/', 'f/x', 'd', 'd/', 'd/x', 'd/x/', 'd/../f', 'ln', 'ln/x', 'ln/', 'abs', 'abs/passwd', 'loop', 'loop/x', 'esc', 'esc/x', 'dangling', 'dangling/x', 'lf', 'lf/x', '../x', '/etc', '.', '', 'd//x', 'nul\0'];

test('stat-at and open-at answer as the shim does', () => {
  const root = tree();
  const ours = rootDescriptor(root, true);
  const shim = rootDescriptor(root, false);
  let answered = 0;
  for (const path of paths) {
    for (const symlinkFollow of [false, true]) {
      const pathFlags = { symlinkFollow };
      assert.deepEqual(outcome(() => ours.statAt(pathFlags, path)), outcome(() => shim.statAt(pathFlags, path)), `statAt ${JSON.stringify(path)} ${symlinkFollow}`);
      for (const directory of [false, true]) {
        for (const flags of [{ read: true }, { read: true, write: true }, { write: true }]) {
          const open = (d) => outcome(() => d.openAt(pathFlags, path, { directory }, flags));
          const got = open(ours);
          assert.deepEqual(got, open(shim), `openAt ${JSON.stringify(path)} follow ${symlinkFollow} directory ${directory} ${JSON.stringify(flags)}`);
          if (typeof got === 'string' && got !== 'opened') answered++;
        }
      }
    }
  }
  assert.ok(answered > 0);
  ours[dispose]();
  shim[dispose]();
});

test('a descriptor opened from ours is ours too, with the same answers', () => {
  const root = tree();
  const ours = rootDescriptor(root, true).openAt({ symlinkFollow: false }, 'd', { directory: true }, { read: true });
  const shim = rootDescriptor(root, false).openAt({ symlinkFollow: false }, 'd', { directory: true }, { read: true });
  for (const path of ['x', 'missing', 'x/y', '../f', '../../x']) {
    for (const symlinkFollow of [false, true]) {
      const pathFlags = { symlinkFollow };
      assert.deepEqual(outcome(() => ours.statAt(pathFlags, path)), outcome(() => shim.statAt(pathFlags, path)), `statAt ${path}`);
      assert.deepEqual(outcome(() => ours.openAt(pathFlags, path, {}, { read: true })), outcome(() => shim.openAt(pathFlags, path, {}, { read: true })), `openAt ${path}`);
    }
  }
});
