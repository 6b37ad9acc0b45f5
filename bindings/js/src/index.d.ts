// Types of the handoff Node API (src/index.js). Steps, sizes and times come
// back as numbers, always: a value above Number.MAX_SAFE_INTEGER throws a
// HandoffError (kind 'unsafe-integer') naming the field and value. Arguments
// may be numbers or bigints. Durations are milliseconds. Every function here
// is synchronous and throws a HandoffError subclass; `promises` has the same
// calls returning Promises.

/** The protocol core's defaults (crates/handoff-core/src/types.rs); durations in milliseconds. */
export const DEFAULT_PREFIX: 'step_';
export const DEFAULT_SETTLE_MS: 30000;
export const DEFAULT_POLL_MS: 100;
export const DEFAULT_TTL_MS: 600000;
export const DEFAULT_GRACE_MS: 3600000;
export const DEFAULT_SKEW_MS: 120000;

/** An integer in 0..=2**64-1, as a number (an integer) or a bigint. */
export type U64 = number | bigint;
/** An integer in 1..=2**32-1, as a number or a bigint. */
export type U32 = number | bigint;
/** Milliseconds, a non-negative number (a fraction rounds up) or bigint; 2**64 and above, and
 * Infinity, saturate to 2**64-1 ms: no limit. */
export type Duration = number | bigint;
/** A directory: a non-empty path, or a file: URL. */
export type Path = string | URL;
export type Verify = 'size' | 'hash';

export interface FileEntry {
  /** Path relative to the step directory, `/`-separated. */
  path: string;
  size: number;
  /** BLAKE3 hash, 64 lowercase hex digits. */
  blake3: string;
}

/** A committed version: every listed file was seen with its size (and hash
 * with verify 'hash') before it was returned. */
export interface Version {
  /** For step n of run g > 0: g * 10**12 + n. */
  step: number;
  /** The run the step belongs to (0 unless a writer began one). */
  run: number;
  /** The step directory under the root's canonical absolute path. */
  path: string;
  writer: string;
  createdMs: number;
  files: FileEntry[];
  /** Total payload bytes. */
  bytes: number;
}

export interface GcReport {
  removed: number[];
  kept: number[];
  /** Kept because an unexpired pin holds them. */
  pinned: number[];
  stagingRemoved: string[];
  /** Committed but not valid, newer than the oldest kept: left alone, not counted toward keep. */
  invalid: number[];
  /** What gc could not remove, each with why; it went on with the rest (the CLI exits 6). */
  failed: GcFailure[];
}

/** Something gc should have removed but could not. */
export interface GcFailure {
  /** The entry, relative to the root: `step_3`, `.handoff/staging/step_4.<random>`, `.handoff/trash/...`. */
  name: string;
  /** Why, as the error a call failing that way throws. */
  error: HandoffError;
}

/** What publish or seal did; the version is durable and visible. */
export interface PublishReport {
  version: Version;
  /** Flushes issued, each an fsync(2) through the durability import. */
  fsyncs: number;
  warnings: string[];
  /** The gc run afterwards, when `keep` was given. */
  gc: GcReport | null;
}

/** What fetch did; `version` is the local copy, durable and committed. */
export interface FetchReport {
  /** The local copy: `path` is under `to`. */
  version: Version;
  /** The shared step directory it was copied from. */
  source: string;
  /** False when `to` already held the step with the same manifest: nothing was copied. */
  copied: boolean;
  bytesCopied: number;
  /** Flushes the component asked for under `to`. */
  fsyncs: number;
  /** What did not stop the fetch, such as a pin that could not be released. */
  warnings: string[];
  /** The gc of `to` afterwards, when `keep` was given. */
  gc: GcReport | null;
}

export interface StepInfo {
  step: number;
  path: string;
  state: 'committed' | 'incomplete' | 'corrupt';
  files: number;
  bytes: number;
}

export interface PinInfo {
  step: number;
  holder: string;
  /** Milliseconds since the Unix epoch, by the file server's clock (by this
   * machine's on a step written by protocol version 1). */
  expiresMs: number;
}

export interface FsckEntry {
  name: string;
  state: 'committed' | 'incomplete' | 'corrupt' | 'staging' | 'trash' | 'stray';
  detail: string | null;
  action: string | null;
}

export interface WriteOptions {
  /** Recorded in the manifest; default `<hostname>:<pid>`. */
  writer?: string;
  /** Recorded in the manifest; default now. Same input + same values = same manifest bytes. */
  createdMs?: U64;
  prefix?: string;
  /** Run gc afterwards, keeping the newest `keep` steps; checked before anything is written. */
  keep?: U32;
  /** The run to write for, from `begin`; default 0. */
  run?: U64;
}

export interface WaitOptions {
  /** Default: wait forever. */
  timeoutMs?: Duration;
  /** Default 'size'. */
  verify?: Verify;
  /** Default `DEFAULT_SETTLE_MS`. */
  settleMs?: Duration;
  /** Default `DEFAULT_POLL_MS`. */
  pollMs?: Duration;
  /** Pin the version for this holder before returning it. The holder's other pins stay: unpin the
   * version served before once switched over to this one. */
  pin?: string;
  /** Default `DEFAULT_TTL_MS`. */
  ttlMs?: Duration;
  prefix?: string;
}

export interface FetchOptions {
  /** The local root to copy into; made if missing; not the shared root, inside it, nor holding it. */
  to: Path;
  /** Run gc on `to` afterwards, keeping the newest `keep` steps. */
  keep?: U32;
  /** Default: wait forever. */
  timeoutMs?: Duration;
  /** Default `DEFAULT_SETTLE_MS`; also how long a copy that does not match its hash is retried. */
  settleMs?: Duration;
  /** Default `DEFAULT_POLL_MS`. */
  pollMs?: Duration;
  /** Who holds the pin on the shared step while it is copied; default `<hostname>:<pid>`. */
  holder?: string;
  /** Default `DEFAULT_TTL_MS`; renewed while copying. */
  ttlMs?: Duration;
  prefix?: string;
}

export type WaitTarget = { step: U64; latest?: false; after?: undefined } | { latest: true; step?: undefined; after?: undefined } | { after: U64; step?: undefined; latest?: false };

export function publish(root: Path, step: U64, source: Path, options?: WriteOptions): PublishReport;
export function seal(root: Path, step: U64, options?: WriteOptions): PublishReport;
export function begin(root: Path, options?: { prefix?: string }): number;
export function wait(root: Path, step: U64, options?: WaitOptions): Version;
export function wait(root: Path, options: WaitTarget & WaitOptions): Version;
export function fetch(root: Path, step: U64, options: FetchOptions): FetchReport;
export function fetch(root: Path, options: WaitTarget & FetchOptions): FetchReport;
export function latest(root: Path, options?: { verify?: Verify; prefix?: string }): Version | null;
export function ls(root: Path, options?: { prefix?: string }): StepInfo[];
/** `ttlMs` defaults to `DEFAULT_TTL_MS`. */
export function pin(root: Path, step: U64, holder: string, options?: { ttlMs?: Duration; prefix?: string }): PinInfo;
export function unpin(root: Path, step: U64, holder: string, options?: { prefix?: string }): void;
/** `graceMs` defaults to `DEFAULT_GRACE_MS`, `skewMs` to `DEFAULT_SKEW_MS`. */
export function gc(root: Path, keep: U32, options?: { graceMs?: Duration; skewMs?: Duration; prefix?: string }): GcReport;
export function fsck(root: Path, options?: { repair?: boolean; prefix?: string }): FsckEntry[];
export function defaultWriterId(): string;
/** A call that grows the component's linear memory past this many bytes (16 MiB) releases its
 * instance afterwards; the next call makes a new one (~30 ms). */
export const RELEASE_ABOVE_BYTES: number;
/** Bytes of linear memory this thread's instance of the component holds now (0 with none). */
export function memoryBytes(): number;

/** The same calls, run in worker threads, returning Promises (also `handoff/promises`). */
export * as promises from './promises.js';

/** The CLI's error kinds (`handoff --json`): the WIT `error-kind`, or a failure found outside the protocol. */
export type ErrorKind =
  | 'timed-out'
  | 'integrity'
  | 'conflict'
  | 'not-found'
  | 'invalid-input'
  | 'durability'
  | 'io'
  /** An argument of the wrong type or out of range, a missing or conflicting target, a stray argument (exit 2). */
  | 'usage'
  /** The call was stopped at its `deadlineMs` (exit 3). */
  | 'deadline-exceeded'
  /** The component trapped. */
  | 'trap'
  /** The component could not be loaded. */
  | 'bad-component'
  /** A result above Number.MAX_SAFE_INTEGER, which a number cannot hold exactly. */
  | 'unsafe-integer';

/** Any handoff failure; `exitCode` is the CLI's code for the same failure. */
export class HandoffError extends Error {
  constructor(message: string, kind?: ErrorKind, options?: ErrorOptions & { path?: string | null; retryable?: boolean });
  kind: ErrorKind;
  exitCode: number;
  /** The file or directory concerned, where there is one. */
  path: string | null;
  /** Whether the same call may succeed later with nothing changed: a timeout,
   * a step that did not validate yet (a lagging cache), a transient
   * filesystem error. */
  retryable: boolean;
}
/** name 'TimeoutError', code 'ETIMEDOUT', exitCode 3. */
export class TimedOutError extends HandoffError {
  code: 'ETIMEDOUT';
}
/** exitCode 4. */
export class IntegrityError extends HandoffError {}
/** exitCode 5; the existing version is intact. */
export class ConflictError extends HandoffError {}
export class NotFoundError extends HandoffError {}
export class InvalidInputError extends HandoffError {}
export class DurabilityError extends HandoffError {}
/** kind 'trap' or 'bad-component'. */
export class ComponentError extends HandoffError {}
/** kind 'usage', exitCode 2: thrown before the component runs, so nothing was written. */
export class UsageError extends HandoffError {}
/** kind 'deadline-exceeded', exitCode 3, code 'ETIMEDOUT': the async call's `deadlineMs` passed. */
export class DeadlineExceededError extends HandoffError {
  code: 'ETIMEDOUT';
}
