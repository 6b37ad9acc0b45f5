//! A progress bar on stderr for long hashes and copies.
//!
//! Shown only when stderr is a terminal and the output is not `--json`
//! (main decides), and only for a file whose hashing or copying has run
//! for longer than [`SHOW_AFTER`]: short work never flickers a bar.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use handoff_runtime::{BulkWork, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long one file's work runs before its bar appears.
const SHOW_AFTER: Duration = Duration::from_millis(500);

/// The bar of the file being hashed or copied, once it has been shown.
pub struct StderrBar {
    show_after: Duration,
    current: Mutex<Option<Current>>,
}

struct Current {
    started: Instant,
    work: BulkWork,
    len: u64,
    bar: Option<ProgressBar>,
}

impl StderrBar {
    pub fn new() -> StderrBar {
        StderrBar::showing_after(SHOW_AFTER)
    }

    fn showing_after(show_after: Duration) -> StderrBar {
        StderrBar {
            show_after,
            current: Mutex::new(None),
        }
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Progress for StderrBar {
    fn start(&self, work: BulkWork, len: u64) {
        let mut current = self.current();
        *current = Some(Current {
            started: Instant::now(),
            work,
            len,
            bar: None,
        });
    }

    fn advance(&self, done: u64) {
        let mut current = self.current();
        let Some(current) = current.as_mut() else {
            return;
        };
        match &current.bar {
            Some(bar) => bar.set_position(done),
            None if current.started.elapsed() >= self.show_after => {
                current.bar = Some(bar(current.work, current.len, done));
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.current().take().and_then(|c| c.bar) {
            bar.finish_and_clear();
        }
    }
}

/// A bar that starts at `done`, its rate and eta measured from there on
/// (not from the bytes done before it was shown).
fn bar(work: BulkWork, len: u64, done: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
    let style = ProgressStyle::with_template(
        "{msg:8} [{bar:32}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(match work {
        BulkWork::Hashing => "hashing",
        _ => "copying",
    });
    bar.set_position(done);
    bar.reset_eta();
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(bar: &StderrBar) -> Option<u64> {
        bar.current()
            .as_ref()
            .and_then(|c| c.bar.as_ref())
            .map(|b| b.position())
    }

    #[test]
    fn the_bar_appears_only_once_the_work_is_long() {
        let quick = StderrBar::showing_after(Duration::from_secs(3600));
        quick.start(BulkWork::Hashing, 100);
        quick.advance(50);
        assert_eq!(shown(&quick), None);

        let long = StderrBar::showing_after(Duration::ZERO);
        long.start(BulkWork::Copying, 100);
        long.advance(50);
        assert_eq!(shown(&long), Some(50));
        long.advance(100);
        assert_eq!(shown(&long), Some(100));
        long.finish();
        assert!(long.current().is_none());
    }

    #[test]
    fn each_file_starts_afresh() {
        let bar = StderrBar::showing_after(Duration::ZERO);
        bar.start(BulkWork::Hashing, 10);
        bar.advance(10);
        bar.finish();
        bar.advance(5); // after finish: nothing to move
        assert_eq!(shown(&bar), None);
        bar.start(BulkWork::Hashing, 20);
        bar.advance(5);
        assert_eq!(shown(&bar), Some(5));
    }
}
