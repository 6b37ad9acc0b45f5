// The errors of the handoff Node API, shared by the calling thread and the
// workers of the async API (src/promises.js).

/**
 * Any handoff failure. `kind` is the CLI's (`handoff --json`): the WIT
 * `error-kind`, or `usage`, `deadline-exceeded`, `trap`, `bad-component`,
 * `unsafe-integer` for failures found outside the protocol; `exitCode` is the
 * CLI's exit code for the same failure; `path` is the file or directory
 * concerned, or null; `retryable` says whether the same call may succeed
 * later with nothing changed. `options` is Error's (`cause`) plus `path` and
 * `retryable`.
 */
export class HandoffError extends Error {
  exitCode = 1;
  constructor(message, kind = 'io', options = {}) {
    super(message, options);
    this.name = new.target.name;
    this.kind = kind;
    this.path = options.path ?? null;
    this.retryable = options.retryable ?? false;
  }
}
/** The deadline passed and the step was never committed (CLI exit 3). */
export class TimedOutError extends HandoffError {
  name = 'TimeoutError';
  exitCode = 3;
  code = 'ETIMEDOUT';
}
/** Committed, but a file is missing, short, differs from its hash, or the
 * manifest is unsafe; retried for `settleMs` first (CLI exit 4). */
export class IntegrityError extends HandoffError {
  exitCode = 4;
}
/** The step is already published, or another writer is at it; what is there is intact (CLI exit 5). */
export class ConflictError extends HandoffError {
  exitCode = 5;
}
/** A step, pin or path the call names does not exist. */
export class NotFoundError extends HandoffError {}
/** The arguments are invalid (a bad prefix, holder, source entry). */
export class InvalidInputError extends HandoffError {}
/** A flush failed; nothing was announced. Do not retry the same publish. */
export class DurabilityError extends HandoffError {}
/** The component could not be loaded (kind `bad-component`) or trapped (`trap`). */
export class ComponentError extends HandoffError {
  constructor(message, kind = 'trap', options = {}) {
    super(message, kind, options);
  }
}
/** An argument of the wrong type or out of range, a missing or conflicting
 * target, a stray argument (kind `usage`, CLI exit 2). Thrown before the
 * component runs: nothing was written. */
export class UsageError extends HandoffError {
  exitCode = 2;
  constructor(message, kind = 'usage', options = {}) {
    super(message, kind, options);
  }
}
/** The call ran past its `deadlineMs` and its worker was stopped (kind
 * `deadline-exceeded`, CLI exit 3). A write stopped this way leaves at most a
 * staging directory, which gc and `fsck --repair` remove. */
export class DeadlineExceededError extends HandoffError {
  exitCode = 3;
  code = 'ETIMEDOUT';
  constructor(message, kind = 'deadline-exceeded', options = {}) {
    super(message, kind, options);
  }
}

const BY_KIND = {
  'timed-out': TimedOutError,
  integrity: IntegrityError,
  conflict: ConflictError,
  'not-found': NotFoundError,
  'invalid-input': InvalidInputError,
  durability: DurabilityError,
  io: HandoffError,
  usage: UsageError,
  'deadline-exceeded': DeadlineExceededError,
  trap: ComponentError,
  'bad-component': ComponentError,
};

/** The HandoffError subclass for a kind, as the WIT `error` record or the CLI names it. */
export function errorOf(kind, message, options = {}) {
  return new (BY_KIND[kind] ?? HandoffError)(message, kind, options);
}

// A worker's results cross to the calling thread by structured clone, which
// keeps an Error's message but not its class or fields: errors travel as
// tagged plain objects and are rebuilt on arrival.
const TAG = '__handoffError';

/** `value` with every error in it made cloneable. */
export function toWire(value) {
  if (value instanceof Error) {
    const { name, message, stack, kind, path, retryable } = value;
    return { [TAG]: { handoff: value instanceof HandoffError, name, message, stack, kind, path, retryable } };
  }
  if (Array.isArray(value)) return value.map(toWire);
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toWire(v)]));
  return value;
}

/** The value `toWire` made, with its errors rebuilt. */
export function fromWire(value) {
  if (Array.isArray(value)) return value.map(fromWire);
  if (value && typeof value === 'object') {
    const e = value[TAG];
    if (e) {
      const error = e.handoff ? errorOf(e.kind, e.message, { path: e.path, retryable: e.retryable }) : new Error(e.message);
      if (!e.handoff) error.name = e.name;
      error.stack = e.stack;
      return error;
    }
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, fromWire(v)]));
  }
  return value;
}
