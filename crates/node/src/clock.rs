//! This node's clock for control stamps: wall time that never steps, and never runs
//! behind what the control group has already stamped.
//!
//! ```text
//!   now = max(anchor.wall + anchor.at.elapsed(),   anchored at the first reading
//!             floor.stamp + floor.at.elapsed())    the group's latest stamp, followed
//! ```
//!
//! - **Anchored.** The wall clock is read once, when the node starts; from then on the
//!   clock advances with the monotonic clock. An NTP step or a bad RTC during the run moves
//!   nothing: a leader whose clock stepped an hour back used to keep dead sites alive and
//!   block every change on dwell for that hour, and one stepped ahead dropped every lease.
//! - **Following.** Every stamp the control group applies raises the floor ([`observe`]),
//!   so a node whose clock is behind the group's continues from the latest stamp instead of
//!   stamping into the past: a new leader an hour behind the old one judges leases and
//!   dwell as the old one would have. A node ahead moves the group's time forward, never
//!   back (like a hybrid logical clock).
//!
//! Drift of the monotonic clock against true time (parts per million) is not corrected
//! until the node restarts. Wall time is for display, audit and evacuation expiry; what
//! failover judges (lease ages, dwell) are differences on this one timeline.

use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A time in ms since the Unix epoch, and the monotonic instant it was true at.
#[derive(Clone, Copy)]
struct Mark {
    ms: u64,
    at: Instant,
}

impl Mark {
    fn now(&self) -> u64 {
        self.ms + self.at.elapsed().as_millis() as u64
    }
}

static ANCHOR: OnceLock<Mark> = OnceLock::new();
static FLOOR: Mutex<Option<Mark>> = Mutex::new(None);

/// Milliseconds since the Unix epoch on this node's control clock.
pub fn now_ms() -> u64 {
    let anchored = ANCHOR
        .get_or_init(|| Mark {
            ms: wall_ms(),
            at: Instant::now(),
        })
        .now();
    let floor = FLOOR.lock().expect("clock floor").map_or(0, |f| f.now());
    anchored.max(floor)
}

/// Takes note of a stamp the control group applied: the clock never reads behind it.
pub fn observe(stamp_ms: u64) {
    if stamp_ms <= now_ms() {
        return;
    }
    *FLOOR.lock().expect("clock floor") = Some(Mark {
        ms: stamp_ms,
        at: Instant::now(),
    });
}

/// The system's wall clock, in ms since the Unix epoch, stepped by the test hook below.
fn wall_ms() -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    wall.saturating_add_signed(debug_step_ms())
}

/// Test-only clock steps, in debug builds alone: with `FIREBREAK_DEBUG_CLOCK_STEP_FILE`
/// naming a file that holds a signed number of milliseconds, the wall clock reads that
/// much ahead (or behind), as after an NTP step. Release builds compile it out.
fn debug_step_ms() -> i64 {
    if !cfg!(debug_assertions) {
        return 0;
    }
    let Some(path) = std::env::var_os("FIREBREAK_DEBUG_CLOCK_STEP_FILE") else {
        return 0;
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_follows_a_stamp_ahead_of_it_and_never_goes_back() {
        let before = now_ms();
        let ahead = before + 3_600_000;
        observe(ahead);
        let after = now_ms();
        assert!(
            after >= ahead && after < ahead + 1_000,
            "{after} vs {ahead}"
        );
        observe(before);
        assert!(now_ms() >= after, "an older stamp moved the clock back");
    }
}
