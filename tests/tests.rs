//! End-to-end tests of the `handoff` binary, across processes.
//!
//! One integration binary; a module per topic.

/// Running the binary, temporary roots and payloads.
mod util;

/// publish, seal, wait and ls: the happy paths and their JSON.
mod publish_wait;

/// Bad input: every case ends in a clear error and loses nothing.
mod bad_input;

/// The compiled-component cache: what it trusts.
mod cache;

/// The syscall order of `seal`, observed with strace.
mod strace;

/// pin, unpin, gc, fsck and watch.
mod retention;

/// Many processes at once: racing publishers, readers against gc.
mod concurrency;

/// The WASI command (crates/handoff-command) under wasmtime and jco, against
/// the native binary; run for real by crates/handoff-command/test.sh.
mod wasi_command;

/// The Python and Node packages' restated defaults against the core's.
mod defaults;

/// Runs: begin, --run, and writers of older runs refused.
mod runs;

/// Every failure names its path and cause; exit codes; --json failures.
mod errors;
/// Special files and unreadable steps: nothing blocks, nothing hides.
mod hostile;

/// fetch and watch --to: verified local copies, the shared step pinned
/// while it is copied, crashes and corruption mid-copy.
mod fetch;
