//! `firebreak bench failover`: what one client sees of a failover, through the gateways
//! or through DNS. It reads `--path` every `--interval-ms` until `--duration-secs` and
//! reports the longest outage: from the first failed read to the next good one.
//!
//! ```text
//!   --via gateway   GET https://<node><path>, moving to the next node on a failure
//!   --via dns       a stub resolver: SRV _<service>._tcp.<zone> then A of its target,
//!                   asking the --dns servers in turn, cached for the records' TTL (a
//!                   failed read does not re-resolve early, as with any caching
//!                   resolver); GET https://<instance><path>
//! ```
//!
//! Run it during a fire (scripts/dns-failover.sh does) to compare the two.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Result;
use hickory_server::proto::op::{Message, Query};
use hickory_server::proto::rr::{Name, RData, RecordType};

use crate::bench::{check_range, MAX_DURATION_SECS};
use crate::client::Nodes;

/// Shortest interval allowed.
const MIN_INTERVAL_MS: u64 = 10;
/// How long one DNS server gets to answer before the next is asked.
const DNS_TIMEOUT: Duration = Duration::from_millis(300);

#[derive(clap::Args)]
pub struct FailoverArgs {
    #[command(flatten)]
    nodes: Nodes,
    /// `gateway` or `dns`.
    #[arg(long, value_parser = ["gateway", "dns"])]
    via: String,
    /// The service.
    #[arg(long, default_value = "payments")]
    service: String,
    /// What each probe reads.
    #[arg(long, default_value = "/payments/accounts?limit=1")]
    path: String,
    /// DNS servers, asked in turn (with --via dns).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.1.1:8053,127.0.2.1:8053,127.0.3.1:8053"
    )]
    dns: Vec<SocketAddr>,
    /// The zone (with --via dns).
    #[arg(long, default_value = "svc.firebreak.")]
    zone: String,
    #[arg(long, default_value_t = 50)]
    interval_ms: u64,
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
}

/// A resolved instance, good until `expires`.
struct Cached {
    addr: SocketAddr,
    expires: Instant,
}

pub async fn run(args: FailoverArgs) -> Result<()> {
    check_range("--duration-secs", args.duration_secs, 1, MAX_DURATION_SECS)?;
    check_range("--interval-ms", args.interval_ms, MIN_INTERVAL_MS, 60_000)?;
    let tls = args.nodes.tls()?;
    let http = tls
        .apply(reqwest::Client::builder())
        .timeout(Duration::from_millis(args.nodes.timeout_ms.min(1000)))
        .build()?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.duration_secs);
    let (mut node, mut cached) = (0usize, None::<Cached>);
    let (mut good, mut bad, mut longest) = (0u64, 0u64, Duration::ZERO);
    let (mut failing_since, mut worst_at) = (None::<Instant>, Duration::ZERO);
    while Instant::now() < deadline {
        let url = match args.via.as_str() {
            "dns" => {
                if cached.as_ref().is_none_or(|c| Instant::now() >= c.expires) {
                    cached = resolve(&args).await;
                }
                cached
                    .as_ref()
                    .map(|c| tls.url(&c.addr.to_string(), &args.path))
            }
            _ => Some(tls.url(&args.nodes.nodes[node % args.nodes.nodes.len()], &args.path)),
        };
        let ok = match url {
            Some(url) => http
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()),
            None => false,
        };
        let now = Instant::now();
        if ok {
            good += 1;
            if let Some(since) = failing_since.take() {
                if now - since > longest {
                    (longest, worst_at) = (now - since, since - start);
                }
            }
        } else {
            bad += 1;
            failing_since.get_or_insert(now);
            node += 1;
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    if let Some(since) = failing_since {
        (longest, worst_at) = (longest.max(Instant::now() - since), since - start);
    }
    println!(
        "failover via {} ({}): longest outage {:.2} s from {:.1} s; {good} good reads, {bad} failed",
        args.via,
        args.service,
        longest.as_secs_f64(),
        worst_at.as_secs_f64()
    );
    Ok(())
}

/// The service's first instance by SRV and A, with the shorter of their TTLs.
async fn resolve(args: &FailoverArgs) -> Option<Cached> {
    let zone = firebreak_model::dns::absolute(&args.zone);
    let srv_name = format!("_{}._tcp.{zone}", args.service);
    let srv = ask(&args.dns, &srv_name, RecordType::SRV).await?;
    let (target, port, srv_ttl) = srv.answers().iter().find_map(|r| match r.data() {
        RData::SRV(s) => Some((s.target().to_ascii(), s.port(), r.ttl())),
        _ => None,
    })?;
    let a = ask(&args.dns, &target, RecordType::A).await?;
    let (ip, a_ttl) = a.answers().iter().find_map(|r| match r.data() {
        RData::A(ip) => Some((IpAddr::V4(ip.0), r.ttl())),
        _ => None,
    })?;
    Some(Cached {
        addr: SocketAddr::new(ip, port),
        expires: Instant::now() + Duration::from_secs(u64::from(srv_ttl.min(a_ttl))),
    })
}

/// Asks the servers in turn; the first answer.
async fn ask(servers: &[SocketAddr], name: &str, rtype: RecordType) -> Option<Message> {
    let name = Name::from_ascii(name).ok()?;
    for server in servers {
        let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.ok()?;
        let mut query = Message::new();
        let id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u16);
        query
            .set_id(id)
            .add_query(Query::query(name.clone(), rtype));
        if socket.send_to(&query.to_vec().ok()?, server).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(DNS_TIMEOUT, socket.recv(&mut buf)).await {
            if let Ok(answer) = Message::from_vec(&buf[..n]) {
                return Some(answer);
            }
        }
    }
    None
}
