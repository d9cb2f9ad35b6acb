//! The embedded authoritative DNS server: what `firebreak_model::dns::lookup` answers from
//! this node's applied routing, served on UDP and TCP with hickory-server.
//!
//! ```text
//!   query ─► hickory (codec; a malformed message gets FORMERR) ─► handle_request
//!         ─► model::dns::lookup(local replica) ─► NOERROR + records | NODATA + SOA
//!                                               | NXDOMAIN + SOA | REFUSED (not our zone)
//!                                               | ANY: one HINFO (RFC 8482)
//! ```
//!
//! UDP answers are rate-limited per source network (`dns.responses_per_sec`,
//! `firebreak_model::response_rate`): a forged flood gets truncated answers or none, so
//! the server is no amplifier; TCP, whose source cannot be forged, is not limited.
//!
//! Fail-static: the answers come from the last applied routing, whether or not the control
//! group has a quorum; `firebreak_dns_fail_static` is 1 while this node is cut off from
//! its control group (its answers may be stale), and `/v1/health`'s `in_contact` says
//! the same. Who may call it: anyone who reaches the port, like any public authoritative
//! server; it answers only names of its zone and holds nothing secret (the endpoints it
//! names are what clients dial anyway).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firebreak_model::dns::{self, Answer, QueryType, RecordData};
use firebreak_model::response_rate::{ResponseRate, Verdict};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::proto::op::{Header, MessageType, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, HINFO, NS, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::proto::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;
use tokio::net::{TcpListener, UdpSocket};

use crate::config::DnsConfig;
use crate::context::Api;
use crate::{Error, Result};

/// How long a TCP client may keep a connection idle.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// SOA timings (refresh, retry, expire): no secondaries transfer this zone, so they only
/// need to be sane.
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 86_400;
/// Source networks whose UDP rate is tracked at once (about 4 MB at most).
const MAX_RATE_SOURCES: usize = 65_536;

/// A running DNS server; dropping it does not stop it: call [`DnsServer::shutdown`].
pub struct DnsServer {
    pub addr: SocketAddr,
    server: ServerFuture<Handler>,
}

impl DnsServer {
    /// Stops taking queries and waits for those in flight.
    pub async fn shutdown(mut self) {
        if let Err(err) = self.server.shutdown_gracefully().await {
            tracing::warn!(cause = %err, "dns server stopped with an error");
        }
    }
}

/// Binds UDP and TCP on `config.listen` (port 0: one free port for both) and serves.
pub async fn serve(api: Arc<Api>, config: &DnsConfig) -> Result<DnsServer> {
    let bind_error = |source: std::io::Error| Error::Bind {
        addr: config.listen,
        source,
    };
    let tcp = TcpListener::bind(config.listen).await.map_err(bind_error)?;
    let addr = tcp.local_addr().map_err(bind_error)?;
    let udp = UdpSocket::bind(addr).await.map_err(bind_error)?;
    let handler = Handler {
        api,
        zone: dns::absolute(&config.zone),
        ttl: config.ttl_secs,
        rate: (config.responses_per_sec > 0).then(|| {
            let per_sec = config.responses_per_sec;
            Mutex::new(ResponseRate::new(
                per_sec,
                per_sec.saturating_mul(2),
                MAX_RATE_SOURCES,
            ))
        }),
        started: Instant::now(),
    };
    let mut server = ServerFuture::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_TIMEOUT);
    tracing::info!(%addr, zone = %config.zone, ttl_secs = config.ttl_secs, "dns serving");
    Ok(DnsServer { addr, server })
}

struct Handler {
    api: Arc<Api>,
    zone: String,
    ttl: u32,
    /// UDP answers per source network; `None`: no limit.
    rate: Option<Mutex<ResponseRate>>,
    /// The rate limit's clock.
    started: Instant,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut header = Header::response_from_request(request.header());
        match self.rate_verdict(request) {
            Verdict::Answer => {}
            Verdict::Truncate => {
                self.api
                    .counters
                    .dns
                    .truncated
                    .fetch_add(1, Ordering::Relaxed);
                header.set_truncated(true);
                let message =
                    MessageResponseBuilder::from_message_request(request).build_no_records(header);
                return response
                    .send_response(message)
                    .await
                    .unwrap_or_else(not_sent);
            }
            Verdict::Drop => {
                self.api
                    .counters
                    .dns
                    .dropped
                    .fetch_add(1, Ordering::Relaxed);
                return header.into();
            }
        }
        let (code, answers, authority) = self.answer(request);
        header.set_response_code(code);
        header.set_authoritative(code != ResponseCode::Refused);
        self.api.counters.dns.count(code);
        let message = MessageResponseBuilder::from_message_request(request).build(
            header,
            answers.iter(),
            authority.iter(),
            std::iter::empty(),
            std::iter::empty(),
        );
        response
            .send_response(message)
            .await
            .unwrap_or_else(not_sent)
    }
}

/// What to report of an answer that could not be sent.
fn not_sent(err: std::io::Error) -> ResponseInfo {
    tracing::debug!(cause = %err, "dns answer not sent");
    let mut failed = Header::new();
    failed.set_response_code(ResponseCode::ServFail);
    failed.into()
}

impl Handler {
    /// Whether to answer `request`: TCP always, UDP within its source network's rate.
    fn rate_verdict(&self, request: &Request) -> Verdict {
        match &self.rate {
            Some(rate) if request.protocol() == Protocol::Udp => {
                let now_ms = self.started.elapsed().as_millis() as u64;
                rate.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .check(request.src().ip(), now_ms)
            }
            _ => Verdict::Answer,
        }
    }

    /// The response code, answer records and authority records for `request`.
    fn answer(&self, request: &Request) -> (ResponseCode, Vec<Record>, Vec<Record>) {
        if request.message_type() != MessageType::Query || request.op_code() != OpCode::Query {
            return (ResponseCode::NotImp, vec![], vec![]);
        }
        let Ok(info) = request.request_info() else {
            return (ResponseCode::FormErr, vec![], vec![]);
        };
        let name = info.query.name().to_string();
        let qtype = query_type(info.query.query_type());
        // The SOA goes only with an empty answer (NXDOMAIN, NODATA): not built otherwise.
        let (answer, soa) = self.api.control.reader.read(|c| {
            let answer = dns::lookup(c, &self.zone, &name, qtype);
            let empty = matches!(&answer, Answer::NxDomain)
                || matches!(&answer, Answer::Records(r) if r.is_empty());
            (answer, empty.then(|| dns::soa(c, &self.zone)))
        });
        let soa: Vec<Record> = soa.and_then(|soa| self.record(soa)).into_iter().collect();
        match answer {
            Answer::NotOurs => (ResponseCode::Refused, vec![], vec![]),
            Answer::NxDomain => (ResponseCode::NXDomain, vec![], soa),
            Answer::Records(records) if records.is_empty() => (ResponseCode::NoError, vec![], soa),
            Answer::Records(records) => {
                let records = records.into_iter().filter_map(|r| self.record(r)).collect();
                (ResponseCode::NoError, records, vec![])
            }
        }
    }

    /// A model record as a DNS record; `None` if a name in it is not a valid DNS name.
    fn record(&self, record: dns::Record) -> Option<Record> {
        let name = |text: &str| Name::from_ascii(text).ok();
        let data = match record.data {
            RecordData::A(ip) => RData::A(A(ip)),
            RecordData::Aaaa(ip) => RData::AAAA(AAAA(ip)),
            RecordData::Srv { port, target } => RData::SRV(SRV::new(0, 1, port, name(&target)?)),
            RecordData::Ns(target) => RData::NS(NS(name(&target)?)),
            RecordData::Hinfo => RData::HINFO(HINFO::new("RFC8482".into(), String::new())),
            RecordData::Soa {
                mname,
                rname,
                serial,
            } => RData::SOA(SOA::new(
                name(&mname)?,
                name(&rname)?,
                serial,
                SOA_REFRESH,
                SOA_RETRY,
                SOA_EXPIRE,
                self.ttl,
            )),
        };
        Some(Record::from_rdata(name(&record.name)?, self.ttl, data))
    }
}

fn query_type(qtype: RecordType) -> QueryType {
    match qtype {
        RecordType::A => QueryType::A,
        RecordType::AAAA => QueryType::Aaaa,
        RecordType::SRV => QueryType::Srv,
        RecordType::NS => QueryType::Ns,
        RecordType::SOA => QueryType::Soa,
        RecordType::ANY => QueryType::Any,
        _ => QueryType::Other,
    }
}

/// Queries answered, by response code, for `/metrics`.
#[derive(Debug, Default)]
pub struct DnsCounters {
    pub answered: std::sync::atomic::AtomicU64,
    pub nxdomain: std::sync::atomic::AtomicU64,
    pub refused: std::sync::atomic::AtomicU64,
    pub other: std::sync::atomic::AtomicU64,
    /// UDP queries over their source network's rate: answered empty and truncated.
    pub truncated: std::sync::atomic::AtomicU64,
    /// The same, not answered at all.
    pub dropped: std::sync::atomic::AtomicU64,
}

impl DnsCounters {
    fn count(&self, code: ResponseCode) {
        let counter = match code {
            ResponseCode::NoError => &self.answered,
            ResponseCode::NXDomain => &self.nxdomain,
            ResponseCode::Refused => &self.refused,
            _ => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (response code, count) pairs for `/metrics`.
    pub fn by_code(&self) -> [(&'static str, u64); 4] {
        [
            ("noerror", self.answered.load(Ordering::Relaxed)),
            ("nxdomain", self.nxdomain.load(Ordering::Relaxed)),
            ("refused", self.refused.load(Ordering::Relaxed)),
            ("other", self.other.load(Ordering::Relaxed)),
        ]
    }
}
