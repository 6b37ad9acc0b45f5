// Parity driver for the Node binding: the same two commands as drive.py.
//
//   drive.mjs publish ROOT STEP SRC WRITER CREATED_MS
//   drive.mjs wait ROOT STEP TIMEOUT_SECONDS        (verify: 'hash')
//
// Prints the version as one JSON object (snake_case, as the CLI's --json);
// a failure exits with the CLI's code.
import * as handoff from '../js/src/index.js';

const [cmd, ...args] = process.argv.slice(2);
try {
  let v;
  if (cmd === 'publish') {
    const [root, step, src, writer, created] = args;
    v = handoff.publish(root, Number(step), src, { writer, createdMs: Number(created) }).version;
  } else if (cmd === 'wait') {
    const [root, step, timeout] = args;
    v = handoff.wait(root, Number(step), { verify: 'hash', timeoutMs: Number(timeout) * 1000 });
  } else {
    throw new Error(`unknown command ${cmd}`);
  }
  const { step, path, writer, createdMs, files } = v;
  console.log(JSON.stringify({ step, path, writer, created_ms: createdMs, files }));
} catch (e) {
  console.error(`handoff (node): ${e.message}`);
  process.exit(e instanceof handoff.HandoffError ? e.exitCode : 1);
}
