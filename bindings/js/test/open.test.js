// src/open.js answers stat-at, and open-at that fail, in the calling thread:
// every answer must be the shim's own, for paths that exist or not, through
// symlinks inside and outside the preopen, loops, escapes and files used as
// directories.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
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
  fastOpen(imports['wasi:filesystem/types']);
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
    if (value === undefined) return 'done';
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

test('a directory opened to read answers every call as the shim does', () => {
  const root = tree();
  const both = [true, false].map((tracked) => rootDescriptor(root, tracked).openAt({ symlinkFollow: false }, 'd', { directory: true }, { read: true }));
  const [ours, shim] = both;
  const listing = (d) => {
    const stream = d.readDirectory();
    const names = [];
    for (let entry = stream.readDirectoryEntry(); entry !== undefined; entry = stream.readDirectoryEntry()) names.push(entry);
    stream[dispose]();
    return names.sort((a, b) => a.name.localeCompare(b.name));
  };
  const same = (what, f) => assert.deepEqual(outcome(() => f(ours)), outcome(() => f(shim)), what);
  assert.deepEqual(listing(ours), [{ name: 'x', type: 'regular-file' }]);
  same('readDirectory', listing);
  same('stat', (d) => d.stat());
  same('getType', (d) => d.getType());
  same('getFlags', (d) => d.getFlags());
  same('sync', (d) => d.sync());
  same('metadataHash', (d) => d.metadataHash());
  same('metadataHashAt', (d) => d.metadataHashAt({ symlinkFollow: false }, 'x'));
  same('read', (d) => d.read(1n, 0n));
  same('isSameObject', (d) => d.isSameObject(d));
  same('statAt', (d) => d.statAt({ symlinkFollow: false }, 'x'));
  same('openAt', (d) => d.openAt({ symlinkFollow: false }, 'x', {}, { read: true }));
  same('openAt missing', (d) => d.openAt({ symlinkFollow: false }, 'nothing', {}, { read: true }));
  // The calls that change the directory, each on a directory of its own.
  for (const [i, d] of both.entries()) {
    d.createDirectoryAt(`new${i}`);
    d.renameAt(`new${i}`, d, `moved${i}`);
    d.symlinkAt('x', `link${i}`);
  }
  same('readlinkAt', (d) => d.readlinkAt(`link${both.indexOf(d)}`));
  same('listing after changes', (d) => listing(d).filter((e) => !/\d$/.test(e.name)));
  for (const [i, d] of both.entries()) {
    d.unlinkFileAt(`link${i}`);
    d.removeDirectoryAt(`moved${i}`);
  }
  same('listing after removals', listing);
  // One removed since its open: the listing fails as the shim's does.
  const gone = both.map((d) => d.openAt({ symlinkFollow: false }, '.', { directory: true }, { read: true }));
  rmSync(join(root, 'd'), { recursive: true });
  assert.deepEqual(outcome(() => listing(gone[0])), outcome(() => listing(gone[1])));
  for (const d of [...both, ...gone]) d[dispose]();
});

test('links above the root moved during a call: the same answers as the shim', () => {
  const { dir } = fixture();
  for (const side of ['a', 'b']) {
    mkdirSync(join(dir, side, 'root'), { recursive: true });
    writeFileSync(join(dir, side, 'root', side), side);
  }
  symlinkSync('a', join(dir, 'link'));
  const both = [true, false].map((tracked) => rootDescriptor(join(dir, 'link', 'root'), tracked));
  const sees = () => both.map((d) => ['a', 'b'].filter((name) => outcome(() => d.statAt({ symlinkFollow: false }, name)) !== 'no-entry'));
  assert.deepEqual(sees(), [['a'], ['a']]);
  // The link the root was named by, repointed: both descriptors hold the
  // path it resolved to, and stay there.
  rmSync(join(dir, 'link'));
  symlinkSync('b', join(dir, 'link'));
  assert.deepEqual(sees(), [['a'], ['a']]);
  // A directory of that path replaced by a link: both follow it.
  renameSync(join(dir, 'a'), join(dir, 'a.old'));
  symlinkSync('b', join(dir, 'a'));
  assert.deepEqual(sees(), [['b'], ['b']]);
  for (const d of both) d[dispose]();
});
