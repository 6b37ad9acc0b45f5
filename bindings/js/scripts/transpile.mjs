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
await writeFiles(files);
console.log(`transpiled ${wasm} -> ${outDir}`);
