// The handoff calls as Promises, each run in a worker thread so that the
// event loop stays free while it waits or writes (`import { wait } from
// 'handoff/promises'`, or `promises` of the main module).
//
// Each takes the arguments of its synchronous twin plus two options:
// `deadlineMs`, a limit on the whole call like the CLI's --deadline (the
// worker is stopped and the promise rejects with DeadlineExceededError), and
// `signal`, an AbortSignal (the worker is stopped and the promise rejects
// with the signal's reason). Errors are the same HandoffError subclasses, with
// the same kind, path and retryable.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import * as check from './args.js';
import { DeadlineExceededError, UsageError, fromWire } from './errors.js';

/** Workers between calls, each with its instance of the component ready. */
const idle = [];
/** At most this many idle workers are kept; more are stopped. */
const MAX_IDLE = Math.max(1, Math.min(4, availableParallelism()));
/** setTimeout's longest delay; a longer deadline is waited out in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * A worker inherits the process's Node flags, passing over those of the
 * whole process (--title, V8's own such as --trace-gc), but --input-type
 * makes it fail: it is refused for a worker's file. Then the flags are given
 * without it, and if Node refuses some of those (it does not pass over any
 * flag given explicitly), none: the worker runs this package alone, which
 * needs none of them.
 */
function newWorker(file) {
  const flags = [];
  for (let i = 0; i < process.execArgv.length; i++) {
    const flag = process.execArgv[i];
    if (flag === '--input-type') i++; // and its value
    else if (!flag.startsWith('--input-type=')) flags.push(flag);
  }
  if (flags.length === process.execArgv.length) return new Worker(file);
  try {
    return new Worker(file, { execArgv: flags });
  } catch (e) {
    if (e?.code !== 'ERR_WORKER_INVALID_EXEC_ARGV') throw e;
    return new Worker(file, { execArgv: [] });
  }
}

function spawn() {
  const worker = newWorker(new URL('./worker.js', import.meta.url));
  // A worker keeps the process alive only while it runs a call.
  worker.unref();
  // One that fails or ends between calls is dropped (and its error is not
  // left unhandled).
  const drop = () => {
    const at = idle.indexOf(worker);
    if (at >= 0) idle.splice(at, 1);
  };
  worker.on('error', drop).on('exit', drop);
  return worker;
}

/**
 * Run `name` in a worker; `optionsAt` is the index of its options argument,
 * from which `deadlineMs` and `signal` are taken.
 */
function run(name, args, optionsAt) {
  return new Promise((resolve, reject) => {
    const given = args[optionsAt];
    let deadlineMs;
    let signal;
    if (given && typeof given === 'object' && !Array.isArray(given) && ('deadlineMs' in given || 'signal' in given)) {
      ({ deadlineMs, signal, ...args[optionsAt] } = given);
      if (Object.keys(args[optionsAt]).length === 0 && optionsAt === args.length - 1) args.length = optionsAt;
    }
    const deadline = check.optionalMs(deadlineMs, 'deadlineMs');
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw check.invalid(signal, 'signal', 'expected an AbortSignal');
    signal?.throwIfAborted();

    const worker = idle.pop() ?? spawn();
    let timer = null;
    const settle = (keep) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      worker.off('message', onMessage).off('error', onError).off('exit', onExit);
      if (keep && idle.length < MAX_IDLE) {
        worker.unref();
        idle.push(worker);
      } else {
        // A stopped worker is not reused; the next call starts another.
        worker.terminate();
      }
    };
    const onMessage = ({ ok, value, error }) => {
      settle(true);
      if (ok) resolve(fromWire(value));
      else reject(fromWire(error));
    };
    const onError = (e) => {
      settle(false);
      reject(e);
    };
    const onExit = (code) => {
      settle(false);
      reject(new Error(`the worker of ${name} exited (code ${code})`));
    };
    const onAbort = () => {
      settle(false);
      reject(signal.reason);
    };
    const arm = (left) => {
      timer = setTimeout(() => {
        if (left > MAX_TIMER_MS) return arm(left - MAX_TIMER_MS);
        settle(false);
        reject(new DeadlineExceededError(`${name} was stopped at its deadline of ${deadlineMs} ms`));
      }, Math.min(left, MAX_TIMER_MS));
    };
    worker.on('message', onMessage).on('error', onError).on('exit', onExit);
    signal?.addEventListener('abort', onAbort, { once: true });
    // A deadline of 2**64 - 1 ms or more is no limit, as for every duration.
    if (deadline !== undefined && deadline < check.U64_MAX) arm(Number(deadline));
    worker.ref();
    try {
      worker.postMessage({ name, args });
    } catch (e) {
      settle(true);
      reject(new UsageError(`invalid arguments for ${name}: ${e.message}`));
    }
  });
}

/** Async `publish(root, step, source, options)`. */
export const publish = (...args) => run('publish', args, 3);
/** Async `seal(root, step, options)`. */
export const seal = (...args) => run('seal', args, 2);
/** Async `begin(root, options)`. */
export const begin = (...args) => run('begin', args, 1);
/** Async `wait(root, step, options)` or `wait(root, { latest | after | step, ...options })`. */
export const wait = (...args) => run('wait', args, typeof args[1] === 'object' && args[1] !== null ? 1 : 2);
/** Async `fetch(root, step, { to, ...options })` or `fetch(root, { latest | after | step, to, ...options })`. */
export const fetch = (...args) => run('fetch', args, typeof args[1] === 'object' && args[1] !== null ? 1 : 2);
/** Async `latest(root, options)`. */
export const latest = (...args) => run('latest', args, 1);
/** Async `ls(root, options)`. */
export const ls = (...args) => run('ls', args, 1);
/** Async `pin(root, step, holder, options)`. */
export const pin = (...args) => run('pin', args, 3);
/** Async `unpin(root, step, holder, options)`. */
export const unpin = (...args) => run('unpin', args, 3);
/** Async `gc(root, keep, options)`. */
export const gc = (...args) => run('gc', args, 2);
/** Async `fsck(root, options)`. */
export const fsck = (...args) => run('fsck', args, 1);
