// The package as a dependency: require() from CommonJS and import from ESM,
// of the main entry point and of handoff/promises.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { fixture } from './fixture.js';

const packageDir = fileURLToPath(new URL('..', import.meta.url));
const pkg = JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8'));

/** A project with handoff in its node_modules (a link, as `npm install <path>` makes). */
function project() {
  const { dir, root, src } = fixture();
  const app = join(dir, 'app');
  mkdirSync(join(app, 'node_modules'), { recursive: true });
  symlinkSync(packageDir, join(app, 'node_modules', 'handoff'), 'dir');
  return { app, root, src };
}

function run(app, file, body) {
  writeFileSync(join(app, file), body);
  return execFileSync(process.execPath, [join(app, file)], { cwd: app, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

test('engines allows exactly the Node versions where require() of the package works', () => {
  // require(esm) is on by default from 20.19.0 on 20.x, and from 22.12.0 (and 23.0.0) on;
  // 21.x and 22.0-22.11 have it only behind --experimental-require-module.
  assert.equal(pkg.engines.node, '^20.19.0 || >=22.12.0');
  const [major, minor] = process.versions.node.split('.').map(Number);
  assert.ok((major === 20 && minor >= 19) || (major === 22 && minor >= 12) || major > 22, process.version);
});

test('require() from CommonJS, of the package and of handoff/promises', () => {
  const { app, root, src } = project();
  const out = run(
    app,
    'main.cjs',
    `const handoff = require('handoff');
     const promises = require('handoff/promises');
     const report = handoff.publish(${JSON.stringify(root)}, 1, ${JSON.stringify(src)});
     promises.wait(${JSON.stringify(root)}, 1, { timeoutMs: 1000 }).then(async (v) => {
       const again = await handoff.promises.latest(${JSON.stringify(root)});
       console.log(JSON.stringify([report.version.step, v.step, again.step, promises.wait === handoff.promises.wait]));
     });`,
  );
  assert.deepEqual(JSON.parse(out), [1, 1, 1, true]);
});

test('import from ESM, of the package and of handoff/promises', () => {
  const { app, root, src } = project();
  const out = run(
    app,
    'main.mjs',
    `import * as handoff from 'handoff';
     import { wait } from 'handoff/promises';
     const report = handoff.publish(${JSON.stringify(root)}, 1, ${JSON.stringify(src)});
     const v = await wait(${JSON.stringify(root)}, { latest: true, timeoutMs: 1000 });
     const again = await handoff.promises.ls(${JSON.stringify(root)});
     console.log(JSON.stringify([report.version.step, v.step, again[0].step, wait === handoff.promises.wait]));`,
  );
  assert.deepEqual(JSON.parse(out), [1, 1, 1, true]);
});
