//! `firebreak bench dns`: UDP queries against one node's DNS server, `--clients` sockets
//! each with one query in flight, for `--duration-secs` or `--max-queries`; prints answers
//! per second, p50/p99 latency, and queries that got no answer within 1 s.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use hickory_server::proto::op::{Message, Query};
use hickory_server::proto::rr::{Name, RecordType};

use crate::bench::{check_range, MAX_DURATION_SECS};
use crate::exit::{self, fail};

/// Most clients allowed.
const MAX_CLIENTS: usize = 256;
/// How long one query waits for its answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(clap::Args)]
pub struct DnsArgs {
    /// The DNS server (`firebreak up` serves 127.0.N.1:8053).
    #[arg(long, default_value = "127.0.1.1:8053")]
    server: SocketAddr,
    /// The name asked for (type A).
    #[arg(long, default_value = "payments.svc.firebreak.")]
    name: String,
    /// Sockets, each with one query in flight.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    #[arg(long, default_value_t = 10_000_000)]
    max_queries: u64,
}

pub async fn run(args: DnsArgs) -> Result<()> {
    check_range("--clients", args.clients as u64, 1, MAX_CLIENTS as u64)?;
    check_range("--duration-secs", args.duration_secs, 1, MAX_DURATION_SECS)?;
    let name = Name::from_ascii(&args.name)
        .map_err(|e| fail(exit::USAGE, format!("--name {:?}: {e}", args.name)))?;
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.duration_secs);
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (name, issued, server, max) =
            (name.clone(), issued.clone(), args.server, args.max_queries);
        tasks.push(tokio::spawn(async move {
            client(server, name, issued, max, deadline).await
        }));
    }
    let mut latencies = Histogram::<u64>::new(3).expect("3 significant figures is valid");
    let (mut answered, mut lost) = (0u64, 0u64);
    for task in tasks {
        let (histogram, no_answer) = task.await??;
        answered += histogram.len();
        lost += no_answer;
        latencies.add(histogram)?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "dns {} at {}: {answered} answers in {elapsed:.1} s = {:.0}/s; p50 {} us, p99 {} us; {lost} unanswered",
        args.name,
        args.server,
        answered as f64 / elapsed,
        latencies.value_at_quantile(0.5),
        latencies.value_at_quantile(0.99),
    );
    if answered == 0 {
        return Err(fail(
            exit::UNAVAILABLE,
            format!("no answer from {}", args.server),
        ));
    }
    Ok(())
}

async fn client(
    server: SocketAddr,
    name: Name,
    issued: Arc<AtomicU64>,
    max: u64,
    deadline: Instant,
) -> Result<(Histogram<u64>, u64)> {
    let socket = tokio::net::UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .await?;
    socket.connect(server).await?;
    let mut latencies = Histogram::<u64>::new(3)?;
    let mut lost = 0;
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max {
        let id = (issued.load(Ordering::Relaxed) % 65_536) as u16;
        let mut query = Message::new();
        query
            .set_id(id)
            .add_query(Query::query(name.clone(), RecordType::A));
        let sent = Instant::now();
        socket.send(&query.to_vec()?).await?;
        match tokio::time::timeout(QUERY_TIMEOUT, socket.recv(&mut buf)).await {
            Ok(Ok(_)) => latencies.record(sent.elapsed().as_micros() as u64)?,
            _ => lost += 1,
        }
    }
    Ok((latencies, lost))
}
