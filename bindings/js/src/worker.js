// A worker thread of the async API (src/promises.js): runs one synchronous
// call at a time with its own instance of the component, and posts back the
// result or the error.
import { parentPort } from 'node:worker_threads';
import * as handoff from './index.js';
import { toWire } from './errors.js';

const CALLS = new Set(['publish', 'seal', 'begin', 'wait', 'fetch', 'latest', 'ls', 'pin', 'unpin', 'gc', 'fsck']);

parentPort.on('message', ({ name, args }) => {
  let reply;
  try {
    if (!CALLS.has(name)) throw new Error(`no call ${name}`);
    reply = { ok: true, value: toWire(handoff[name](...args)) };
  } catch (e) {
    reply = { ok: false, error: toWire(e) };
  }
  parentPort.postMessage(reply);
});
