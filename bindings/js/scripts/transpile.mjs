// Transpile the handoff component into JavaScript with jco (build time).
//
// Input: $HANDOFF_GUEST_WASM, else the component built (or found up to
// date) by bindings/build-component.sh, the same build the CLI embeds.
// Output: gen/handoff.js (+ core .wasm files and .d.ts), instantiated by
// src/index.js once per call with the preview2-shim WASI imports.
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { transpile, writeFiles } from '@bytecodealliance/jco-transpile';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const wasm =
  process.env.HANDOFF_GUEST_WASM ||
  execFileSync('bash', [here('../../build-component.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();

const outDir = here('../gen/');
rmSync(outDir, { recursive: true, force: true });
const { files } = await transpile(wasm, {
  name: 'handoff',
  // `instantiate(getCoreModule, imports)`: imports are supplied per call, so
  // each call gets a fresh instance that sees only its own preopens.
  instantiation: 'sync',
  outDir,
  emitTypescriptDeclarations: true,
});
const glue = 'handoff.js';
const name = Object.keys(files).find((f) => f.endsWith(glue));
if (!name) throw new Error(`${glue}: not among jco's output`);
let source = new TextDecoder().decode(files[name]);

/** Replace `pattern` in `source`, failing the build unless it matched `count` times. */
function rewrite(what, pattern, replacement, count) {
  let n = 0;
  source = source.replaceAll(pattern, (...m) => {
    n++;
    return typeof replacement === 'function' ? replacement(...m) : replacement;
  });
  if (n !== count) throw new Error(`${glue}: ${what}: ${n} matches, not ${count}: jco's glue changed; update scripts/transpile.mjs`);
}

// jco's glue calls `_debugLog` about a thousand times per attempt of a wait,
// and each call read process.env.JCO_DEBUG (a getenv in Node): read it once.
rewrite(
  '_debugLog',
  '  const _debugLog = (...args) => {\n    if (!globalThis?.process?.env?.JCO_DEBUG) { return; }\n',
  '  const JCO_DEBUG = globalThis?.process?.env?.JCO_DEBUG;\n  const _debugLog = (...args) => {\n    if (!JCO_DEBUG) { return; }\n',
  1,
);

// Its arguments (often an object literal) are built before it checks the
// flag: guard each call with the flag, so that the ~15 calls of an idle
// wait's attempt build nothing unless it is set.
rewrite(
  '_debugLog calls',
  /^( *)_debugLog\(/gm,
  (_, indent) => `${indent}JCO_DEBUG && _debugLog(`,
  [...source.matchAll(/^ *_debugLog\(/gm)].length || 1,
);

// Host imports without the component model's async-ABI bookkeeping. Around
// every call of an import, jco's glue makes a subtask of the calling export's
// task (_lowerImportBackwardsCompat), then a task for the host function
// (createNewCurrentTask, enterSync, _withGlobalCurrentTaskMeta), resolves
// both and removes them: more than half of an idle wait's CPU in the
// calling thread, every ~75 ms. They serve the async ABI (async-lowered imports,
// waitables, callbacks), which this component does not use: every import is
// a synchronous function, lowered synchronously (checked below, per import).
// The rewritten imports keep the rest of the glue as it is: the may-leave
// check, lifting and lowering, resource borrows, and what a throwing host
// function does (markTrapped, then the error result or the exception).
const trampolines = [...source.matchAll(/^ {2}const _trampoline(\d+) = function\(/gm)].length;
if (trampolines === 0) throw new Error(`${glue}: no import trampolines: jco's glue changed; update scripts/transpile.mjs`);
rewrite(
  'trampolines',
  /^ {2}const _trampoline\d+ = function\([^)]*\) \{\n[\s\S]*?\n {2}_trampoline\d+\.fnName = [^\n]*\n/gm,
  (body) => {
    const start = body.indexOf('    const hostProvided = true;\n');
    const enter = '    const started = task.enterSync();\n';
    const end = body.indexOf(enter);
    const bookkeeping = body.slice(start, end);
    if (start < 0 || end < start || !bookkeeping.includes('        isAsync: false,\n') || body.indexOf(enter, end + 1) >= 0) {
      throw new Error(`${glue}: an import trampoline is not a synchronous one as expected; update scripts/transpile.mjs`);
    }
    let lean = body.slice(0, start) + '    const task = HOST_TASK;\n' + body.slice(end + enter.length);
    let n = 0;
    lean = lean.replace(
      /_withGlobalCurrentTaskMeta\(\{\n\s*componentIdx: task\.componentIdx\(\),\n\s*taskID: task\.id\(\),\n\s*fn: \(\) => (_trackHostOperation\(\(\) => [^\n]*\)),\n\s*\}\)\n/g,
      (_, call) => (n++, `${call}\n`),
    );
    lean = lean.replace(/\n {4}task\.resolve\(\[[^\n]*\]\);\n {4}task\.exit\(\);\n/g, () => (n++, '\n'));
    const left = lean.match(/\btask\.(\w+)/g)?.filter((m) => !['task.id', 'task.getParentSubtask', 'task.setErrored', 'task.reject', 'task.exit'].includes(m)) ?? [];
    if (n !== 2 || left.length || /\b(parentTask|subtask|createNewCurrentTask|started)\b/.test(lean)) {
      throw new Error(`${glue}: an import trampoline is not as expected; update scripts/transpile.mjs`);
    }
    return lean;
  },
  trampolines,
);
rewrite(
  'lowered imports',
  /\) : _lowerImportBackwardsCompat\.bind\(\n {2}null,\n {2}\{\n {4}trampolineIdx: \d+,\n {4}componentIdx: 0,\n {4}isAsync: false,\n {4}isManualAsync: _trampoline\d+\.manuallyAsync,\n(?: {4}[^\n]*\n)*? {4}funcTypeIsAsync: false,\n(?: {4}[^\n]*\n)*? {4}importFn: (_trampoline\d+),\n {2}\},\n {2}\);/g,
  (_, trampoline) => `) : _syncImport(${trampoline});`,
  trampolines,
);
if (source.includes(') : _lowerImportBackwardsCompat.bind(')) throw new Error(`${glue}: an import is still lowered by jco's task machinery; update scripts/transpile.mjs`);
rewrite(
  'helpers',
  '\nfunction _trackHostOperation(operation) {\n',
  `
// (scripts/transpile.mjs) What the rewritten host imports call: the task of a
// host function is this stand-in, used only on the error path; and the core
// import is the trampoline itself, after the may-leave check.
const HOST_TASK = { id: () => null, getParentSubtask: () => null, setErrored() {}, reject() {}, exit() {} };
function _syncImport(importFn) {
  return function (...params) {
    _checkMayLeave(0);
    return importFn(...params);
  };
}

function _trackHostOperation(operation) {
`,
  1,
);
// src/open.js answers a missing path from `statAt` and `openAt` by returning
// the WIT result `{ tag: 'err', val: code }` instead of throwing the code:
// the glue of both must take a returned result as the error.
for (const method of ['statAt', 'openAt']) {
  const taken = new RegExp(
    `const (hostRet\\d+) = _trackHostOperation\\(\\(\\) => rsc0\\.${method}\\([^\\n]*\\)\\)\\n\\s*;\\n\\s*ret = \\1 !== null && typeof \\1 === 'object' && \\(\\1\\.tag === 'ok' \\|\\| \\1\\.tag === 'err'\\)\\n\\s*\\? \\1\\n`,
    'g',
  );
  const n = [...source.matchAll(taken)].length;
  if (n !== 1) throw new Error(`${glue}: ${method}: a returned result is not taken as such (${n} matches): jco's glue changed; update scripts/transpile.mjs and src/open.js`);
}
files[name] = new TextEncoder().encode(source);
await writeFiles(files);
console.log(`transpiled ${wasm} -> ${outDir}`);
