//! WAN delay in user space, for kernels without netem (`sch_netem`): an iptables rule in
//! the sender's namespace queues what it sends to the chosen peers to NFQUEUE, and a
//! thread of the drill holds each packet for its delay before it lets it go on.
//!
//! ```text
//!   site namespace: OUTPUT ─ -d peer ─► NFQUEUE --queue-num Q --queue-bypass
//!       ─► thread (joined to that namespace): hold delay ± jitter, then accept
//! ```
//!
//! Bypass: while no thread listens (before it starts, after it stops) packets go on
//! undelayed rather than dropped. The kernel holds at most [`MAX_HELD`] packets in the
//! queue; beyond, it lets them through undelayed (fail-open) rather than drop them. A
//! stopped delay lets every packet it held go at once. Jitter is uniform in ±`jitter`, but
//! packets leave in the order they came (unlike netem's jitter, which reorders them).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

/// Most packets the kernel holds for one delay.
pub const MAX_HELD: u32 = 16_384;
/// Longest the thread sleeps between looks at its queue.
const TICK: Duration = Duration::from_millis(1);

/// A running delay; [`PacketDelay::stop`] (or drop) ends it.
pub struct PacketDelay {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl PacketDelay {
    /// Starts delaying what is queued to `queue` in the namespace at `netns` by `delay`
    /// ± `jitter`; returns once the queue is bound.
    pub fn start(
        netns: &Path,
        queue: u16,
        delay: Duration,
        jitter: Duration,
        seed: u64,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (path, flag) = (netns.to_path_buf(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("packet-delay-{queue}"))
            .spawn(move || {
                let bound = bind(&path, queue);
                let mut nfq = match bound {
                    Ok(nfq) => {
                        let _ = ready_tx.send(Ok(()));
                        nfq
                    }
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return 0;
                    }
                };
                hold(&mut nfq, &flag, delay, jitter, seed)
            })
            .map_err(|e| Error::CouldNotRun(format!("failed to start a delay thread: {e}")))?;
        let delay = Self {
            stop,
            thread: Some(thread),
        };
        ready_rx
            .recv()
            .map_err(|_| Error::CouldNotRun("the delay thread ended at start".into()))??;
        Ok(delay)
    }

    /// Lets every held packet go and ends the thread; how many packets it delayed.
    pub fn stop(mut self) -> u64 {
        self.halt()
    }

    fn halt(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

impl Drop for PacketDelay {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Joins the namespace (this thread only) and binds the queue there.
fn bind(netns: &Path, queue: u16) -> Result<nfq::Queue> {
    crate::netns::enter(netns)?;
    let fail = |what: &str, e: std::io::Error| {
        Error::CouldNotRun(format!(
            "NFQUEUE {queue} in {}: {what}: {e} (the kernel needs nfnetlink_queue)",
            netns.display()
        ))
    };
    let mut nfq = nfq::Queue::open().map_err(|e| fail("open", e))?;
    nfq.bind(queue).map_err(|e| fail("bind", e))?;
    nfq.set_fail_open(queue, true)
        .map_err(|e| fail("fail-open", e))?;
    nfq.set_queue_max_len(queue, MAX_HELD)
        .map_err(|e| fail("max length", e))?;
    nfq.set_copy_range(queue, 0)
        .map_err(|e| fail("copy range", e))?;
    nfq.set_nonblocking(true);
    Ok(nfq)
}

/// Holds each packet until its time, until `stop`; then lets the rest go.
fn hold(
    nfq: &mut nfq::Queue,
    stop: &AtomicBool,
    delay: Duration,
    jitter: Duration,
    seed: u64,
) -> u64 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut held: BTreeMap<(Instant, u64), nfq::Message> = BTreeMap::new();
    let mut count = 0u64;
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        loop {
            match nfq.recv() {
                Ok(message) => {
                    let spread = jitter.as_secs_f64() * rng.gen_range(-1.0..=1.0);
                    let wait = (delay.as_secs_f64() + spread).max(0.0);
                    // In order: a packet never overtakes one sent before it (TCP across a
                    // real WAN rarely sees reordering, and reordering alone halves its
                    // throughput), so jitter only ever holds packets longer.
                    let at = (Instant::now() + Duration::from_secs_f64(wait)).max(last);
                    last = at;
                    held.insert((at, count), message);
                    count += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(cause = %e, "packet delay: receive failed");
                    break;
                }
            }
        }
        let now = Instant::now();
        while held
            .first_key_value()
            .is_some_and(|((at, _), _)| *at <= now)
        {
            let (_, message) = held.pop_first().expect("checked");
            accept(nfq, message);
        }
        let next = held.first_key_value().map_or(TICK, |((at, _), _)| {
            at.saturating_duration_since(Instant::now()).min(TICK)
        });
        std::thread::sleep(next);
    }
    for (_, message) in std::mem::take(&mut held) {
        accept(nfq, message);
    }
    count
}

fn accept(nfq: &mut nfq::Queue, mut message: nfq::Message) {
    message.set_verdict(nfq::Verdict::Accept);
    if let Err(e) = nfq.verdict(message) {
        tracing::warn!(cause = %e, "packet delay: verdict failed");
    }
}
