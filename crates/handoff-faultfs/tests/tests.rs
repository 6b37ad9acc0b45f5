//! handoff's real binary on the fault-injecting FUSE filesystem. Every
//! scenario prints `faultfs: scenario=<name> tool=<handoff|naive> seeds=<n>
//! accepted_broken=<n>`; handoff must show 0, the naive protocol at least 1
//! (proof that the scenario can fail). Needs root and /dev/fuse; skips with a
//! message elsewhere.

mod util;

// Crashes on a lazy mount: SIGKILL at seeded requests, crash, remount.
mod crash;

// Two nodes: writer on A, reader on B with a lagging, caching view.
mod nodes;

// Retention: gc on node A while readers on node B pin (or not) and read.
mod retention;

// fsck --repair on a node that cannot read what another published.
mod repair;

// The CLI's watchdog against a filesystem call that does not return.
mod watchdog;
