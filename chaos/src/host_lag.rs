//! The drill host's own lag: how late a timer in the drill's runtime wakes, and how long
//! a small synced write takes on the disk under the sites' data.
//!
//! A drill measures latency at its clients, which run in the drill's own process. When the
//! host is starved (another load, a noisy neighbour, CPU steal), the clients' timers and
//! sockets wake late and every latency the drill records includes that wait, whatever the
//! system under test did. When the disk under the sites' data stalls (a throttled cloud
//! volume, writeback of gigabytes written just before), every Raft append waits for it. A
//! failed latency check on such a host says little about the system, so the report says
//! the host stalled and by how much: the engineer reading a FAILED can tell a starved
//! harness from a slow service.
//!
//! ```text
//!   timer: sleep TICK ─► woke late by L ──────────────┐
//!   disk:  every SYNC_EVERY, write 4 KiB + fdatasync ─┴─► ≥ NOTE_FROM? ─► count, keep the worst
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// How often the monitor's timer should wake.
pub const TICK: Duration = Duration::from_millis(50);
/// A wake-up this late is a stall worth a note: a tenth of the shipped playbooks' tightest
/// p99 limit (1,000 ms), far above a timer's usual jitter (about 1 ms).
pub const NOTE_FROM: Duration = Duration::from_millis(100);

/// How often the disk probe syncs a small write.
pub const SYNC_EVERY: Duration = Duration::from_millis(500);
/// The probe file, in the directory the monitor is given (removed when it stops).
const PROBE_FILE: &str = ".host-lag-probe";

/// Stalls of one kind, times in milliseconds since the monitor started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stalls {
    /// Waits of at least [`NOTE_FROM`].
    pub count: u64,
    /// The longest wait, and when it began.
    pub worst_ms: u64,
    pub worst_at_ms: u64,
}

impl Stalls {
    /// Counts one wait of `took` that began at `at_ms`.
    pub fn record(&mut self, at_ms: u64, took: Duration) {
        if took < NOTE_FROM {
            return;
        }
        self.count += 1;
        let took_ms = took.as_millis() as u64;
        if took_ms > self.worst_ms {
            self.worst_ms = took_ms;
            self.worst_at_ms = at_ms;
        }
    }
}

/// What the monitor saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lag {
    /// Wake-ups of the drill's timer, late by the wait.
    pub timer: Stalls,
    /// Synced 4 KiB writes under the sites' data, by how long they took.
    pub disk: Stalls,
}

impl Lag {
    /// Notes for the report, one per kind of stall seen.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let t = &self.timer;
        if t.count > 0 {
            notes.push(format!(
                "the drill host stalled: a {} ms timer in the drill's own process woke up to {} ms late ({} s into the workload; {} wake-ups {} ms or more late). Latencies measured at the clients include that stall; before reading a latency failure as the system's, run the drill again on a quieter host",
                TICK.as_millis(), t.worst_ms, t.worst_at_ms / 1000, t.count, NOTE_FROM.as_millis()
            ));
        }
        let d = &self.disk;
        if d.count > 0 {
            notes.push(format!(
                "the disk under the sites' data stalled: a synced 4 KiB write took up to {} ms ({} s into the workload; {} of them {} ms or more). Every Raft append waits for such a sync; before reading a latency failure as the system's, run the drill again on a quieter disk",
                d.worst_ms, d.worst_at_ms / 1000, d.count, NOTE_FROM.as_millis()
            ));
        }
        notes
    }
}

/// A running monitor; [`HostLag::stop`] ends it and returns what it saw.
pub struct HostLag {
    seen: Arc<Mutex<Lag>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    probe: Option<PathBuf>,
}

impl HostLag {
    /// Starts the monitor on the current runtime (the one the drill's clients run on),
    /// with a disk probe in `data_dir` if one is given.
    pub fn start(data_dir: Option<&Path>) -> Self {
        let seen = Arc::new(Mutex::new(Lag::default()));
        let start = Instant::now();
        let mut tasks = vec![tokio::spawn(watch_timer(seen.clone(), start))];
        let probe = data_dir.map(|dir| dir.join(PROBE_FILE));
        if let Some(path) = &probe {
            tasks.push(tokio::spawn(watch_disk(seen.clone(), start, path.clone())));
        }
        Self { seen, tasks, probe }
    }

    pub fn stop(self) -> Lag {
        *self.seen.lock().expect("the lag monitor does not panic")
    }
}

impl Drop for HostLag {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(path) = &self.probe {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn since(start: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(start).as_millis() as u64
}

async fn watch_timer(seen: Arc<Mutex<Lag>>, start: Instant) {
    loop {
        let due = Instant::now() + TICK;
        tokio::time::sleep_until(due).await;
        let late = Instant::now().saturating_duration_since(due);
        let mut seen = seen.lock().expect("the lag monitor does not panic");
        seen.timer.record(since(start, due), late);
    }
}

/// Syncs a small write every [`SYNC_EVERY`]; a probe that cannot write stops quietly (the
/// drill's own checks say what a broken disk did to the system).
async fn watch_disk(seen: Arc<Mutex<Lag>>, start: Instant, path: PathBuf) {
    loop {
        tokio::time::sleep(SYNC_EVERY).await;
        let began = Instant::now();
        let path = path.clone();
        let synced = tokio::task::spawn_blocking(move || sync_once(&path)).await;
        if !matches!(synced, Ok(Ok(()))) {
            return;
        }
        let mut seen = seen.lock().expect("the lag monitor does not panic");
        seen.disk.record(since(start, began), began.elapsed());
    }
}

fn sync_once(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    file.write_all(&[0u8; 4096])?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_jitter_is_no_stall() {
        let mut lag = Lag::default();
        lag.timer.record(50, Duration::from_millis(3));
        lag.disk.record(100, NOTE_FROM - Duration::from_millis(1));
        assert!(lag.notes().is_empty());
    }

    #[test]
    fn a_stall_is_noted_with_its_worst_wait_and_when() {
        let mut lag = Lag::default();
        lag.timer.record(6_200, Duration::from_millis(1_050));
        lag.timer.record(7_000, Duration::from_millis(150));
        assert_eq!(
            lag.timer,
            Stalls {
                count: 2,
                worst_ms: 1_050,
                worst_at_ms: 6_200
            }
        );
        let notes = lag.notes();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("up to 1050 ms late (6 s into the workload; 2 wake-ups"),
            "{notes:?}"
        );
        lag.disk.record(8_000, Duration::from_millis(400));
        assert!(lag.notes()[1].contains("took up to 400 ms (8 s into the workload"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_blocked_runtime_is_seen_as_a_stall() {
        let dir = tempfile::tempdir().unwrap();
        let monitor = HostLag::start(Some(dir.path()));
        tokio::time::sleep(TICK / 2).await;
        // Hold the only worker: the monitor's timer cannot be served until it is let go,
        // as when the host does not run the drill's process.
        std::thread::sleep(Duration::from_millis(400));
        tokio::time::sleep(TICK * 2).await;
        let lag = monitor.stop();
        assert!(lag.timer.count >= 1, "{lag:?}");
        assert!(lag.timer.worst_ms >= 300, "{lag:?}");
        assert!(
            !dir.path().join(PROBE_FILE).exists(),
            "the probe file is removed when the monitor stops"
        );
    }
}
