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
// jco's glue calls `_debugLog` about a thousand times per attempt of a wait,
// and each call read process.env.JCO_DEBUG (a getenv in Node): read it once.
// Fail the build if the glue changed, rather than lose this silently.
const glue = 'handoff.js';
const name = Object.keys(files).find((f) => f.endsWith(glue));
const check = '    if (!globalThis?.process?.env?.JCO_DEBUG) { return; }\n';
const source = new TextDecoder().decode(files[name]);
if (!name || source.split(check).length !== 2) throw new Error(`${glue}: jco's _debugLog is not as expected; update scripts/transpile.mjs`);
files[name] = new TextEncoder().encode(
  source.replace('  const _debugLog = (...args) => {\n' + check, '  const JCO_DEBUG = globalThis?.process?.env?.JCO_DEBUG;\n  const _debugLog = (...args) => {\n    if (!JCO_DEBUG) { return; }\n'),
);
await writeFiles(files);
console.log(`transpiled ${wasm} -> ${outDir}`);
