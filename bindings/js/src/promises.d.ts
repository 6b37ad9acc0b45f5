// Types of `handoff/promises` (src/promises.js): the calls of the main
// module, each run in a worker thread and returning a Promise. Every options
// object also takes `deadlineMs` and `signal`.
import type {
  Duration,
  FetchOptions,
  FetchReport,
  FsckEntry,
  GcReport,
  Path,
  PinInfo,
  PublishReport,
  StepInfo,
  U32,
  U64,
  Verify,
  Version,
  WaitOptions,
  WaitTarget,
  WriteOptions,
} from './index.js';

export interface CallOptions {
  /** Stop the call after this long, like the CLI's --deadline: its worker is terminated and the
   * promise rejects with DeadlineExceededError. Default: no limit. */
  deadlineMs?: Duration;
  /** Abort the call: its worker is terminated and the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

export function publish(root: Path, step: U64, source: Path, options?: WriteOptions & CallOptions): Promise<PublishReport>;
export function seal(root: Path, step: U64, options?: WriteOptions & CallOptions): Promise<PublishReport>;
export function begin(root: Path, options?: { prefix?: string } & CallOptions): Promise<number>;
export function wait(root: Path, step: U64, options?: WaitOptions & CallOptions): Promise<Version>;
export function wait(root: Path, options: WaitTarget & WaitOptions & CallOptions): Promise<Version>;
export function fetch(root: Path, step: U64, options: FetchOptions & CallOptions): Promise<FetchReport>;
export function fetch(root: Path, options: WaitTarget & FetchOptions & CallOptions): Promise<FetchReport>;
export function latest(root: Path, options?: { verify?: Verify; prefix?: string } & CallOptions): Promise<Version | null>;
export function ls(root: Path, options?: { prefix?: string } & CallOptions): Promise<StepInfo[]>;
export function pin(root: Path, step: U64, holder: string, options?: { ttlMs?: Duration; prefix?: string } & CallOptions): Promise<PinInfo>;
export function unpin(root: Path, step: U64, holder: string, options?: { prefix?: string } & CallOptions): Promise<void>;
export function gc(root: Path, keep: U32, options?: { graceMs?: Duration; skewMs?: Duration; prefix?: string } & CallOptions): Promise<GcReport>;
export function fsck(root: Path, options?: { repair?: boolean; prefix?: string } & CallOptions): Promise<FsckEntry[]>;
