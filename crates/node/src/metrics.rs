//! `/metrics` in Prometheus text format. Each node has one recorder (not a global one, so
//! several nodes can live in one test process); every scrape sets its gauges from the
//! node's state and counters, and a series not set for [`IDLE_SERIES`] (a site or service
//! removed from the topology) ages out.
//!
//! Gauges: per group leader id, term, commit and applied index; per site up and lease age;
//! per service and site serving and healthy; days until this node's certificate expires;
//! long-poll watchers waiting (watch and route) and the most this node serves.
//! Counters: failovers proposed by this node's engine, automatic changes blocked by each
//! rule, and failed TLS handshakes per listener (a caller without a valid certificate).
//! Hooks: delivery rounds by outcome; per service, consecutive failures and epochs behind.
//! With DNS on: queries by response code, and `firebreak_dns_fail_static` (1 while this
//! node is cut off from its control group and answers from routing that may be stale).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use firebreak_model::failover::Rule;
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::clock::now_ms;
use crate::context::Api;

/// How long a series that no scrape set any more is kept.
pub const IDLE_SERIES: std::time::Duration = std::time::Duration::from_secs(300);

/// A node's metrics recorder.
pub struct Registry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for Registry {
    fn default() -> Self {
        let recorder = PrometheusBuilder::new()
            .idle_timeout(metrics_util::MetricKindMask::ALL, Some(IDLE_SERIES))
            .build_recorder();
        let handle = recorder.handle();
        Self { recorder, handle }
    }
}

/// Renders every metric.
pub async fn render(State(api): State<Arc<Api>>) -> impl IntoResponse {
    let registry = &api.metrics;
    metrics::with_local_recorder(&registry.recorder, || record(&api));
    registry.handle.run_upkeep();
    (
        [("content-type", "text/plain; version=0.0.4")],
        registry.handle.render(),
    )
}

fn record(api: &Api) {
    let most = api.config.api.max_watchers;
    gauge!("firebreak_watchers_waiting").set(api.watchers.waiting() as f64);
    gauge!("firebreak_watchers_max").set(most as f64);
    // A sync that could not open a file for lack of descriptors, tried again: an alarm
    // before the store gives up (`firebreak_store::OPEN_RETRY_FOR`).
    counter!("firebreak_store_sync_retries_total")
        .absolute(firebreak_store::SYNC_RETRIES.load(Ordering::Relaxed));
    for info in [api.control.info(), api.state.info()] {
        let group = info.name.clone();
        gauge!("firebreak_raft_leader", "group" => group.clone())
            .set(info.leader.map_or(-1.0, |l| l.0 as f64));
        gauge!("firebreak_raft_term", "group" => group.clone()).set(info.term as f64);
        gauge!("firebreak_raft_committed_index", "group" => group.clone())
            .set(info.committed_index.unwrap_or(0) as f64);
        gauge!("firebreak_raft_applied_index", "group" => group)
            .set(info.applied_index.unwrap_or(0) as f64);
    }
    let now = now_ms();
    api.control.reader.read(|c| {
        let f = &c.failover;
        let Some(topology) = &f.topology else { return };
        for site in &topology.sites {
            let name = site.name.to_string();
            gauge!("firebreak_site_up", "site" => name.clone())
                .set(if f.site_up(&site.name, now) { 1.0 } else { 0.0 });
            if let Some(lease) = f.leases.get(&site.name) {
                gauge!("firebreak_site_lease_age_seconds", "site" => name)
                    .set(now.saturating_sub(lease.renewed_at_ms) as f64 / 1000.0);
            }
        }
        for service in &topology.services {
            let Some(route) = f.routing.get(&service.name) else {
                continue;
            };
            gauge!("firebreak_service_epoch", "service" => service.name.clone())
                .set(route.epoch as f64);
            for site in service.endpoints.keys() {
                let labels = [
                    ("service", service.name.clone()),
                    ("site", site.to_string()),
                ];
                gauge!("firebreak_service_serving", &labels).set(if route.serving.contains(site) {
                    1.0
                } else {
                    0.0
                });
                gauge!("firebreak_service_healthy", &labels).set(
                    if f.healthy(&service.name, site) {
                        1.0
                    } else {
                        0.0
                    },
                );
            }
        }
    });
    record_tls(api);
    record_hooks(api);
    if api.config.dns.is_some() {
        // Answers come from the last applied routing either way; 1 while they may be stale.
        gauge!("firebreak_dns_fail_static").set(if api.control.in_contact() { 0.0 } else { 1.0 });
        let dns = &api.counters.dns;
        for (code, count) in dns.by_code() {
            counter!("firebreak_dns_queries_total", "rcode" => code).absolute(count);
        }
        for (action, count) in [("truncated", &dns.truncated), ("dropped", &dns.dropped)] {
            counter!("firebreak_dns_rate_limited_total", "action" => action)
                .absolute(count.load(Ordering::Relaxed));
        }
    }
    let counters = &api.counters;
    counter!("firebreak_failovers_total").absolute(counters.failovers.load(Ordering::Relaxed));
    for (rule, value) in [
        (Rule::MinServing, &counters.blocked_min_serving),
        (Rule::Dwell, &counters.blocked_dwell),
        (Rule::MaxSitesDown, &counters.blocked_max_sites_down),
    ] {
        counter!("firebreak_changes_blocked_total", "rule" => rule.name())
            .absolute(value.load(Ordering::Relaxed));
    }
}

/// Days to the certificate's expiry; per listener, failed handshakes and refused and open
/// connections.
fn record_tls(api: &Api) {
    let counters = &api.counters;
    if let Some(keys) = &api.keys {
        gauge!("firebreak_tls_cert_expiry_days").set(keys.days_to_expiry() as f64);
    }
    for (listener, seen) in [
        ("peer", &counters.peer_listener),
        ("client", &counters.client_listener),
        ("admin", &counters.admin_listener),
    ] {
        counter!("firebreak_tls_handshake_failures_total", "listener" => listener)
            .absolute(seen.handshake_failures.load(Ordering::Relaxed));
        counter!("firebreak_connections_refused_total", "listener" => listener)
            .absolute(seen.refused.load(Ordering::Relaxed));
        gauge!("firebreak_connections_open", "listener" => listener)
            .set(seen.open.load(Ordering::Relaxed) as f64);
    }
}

/// Per hook: delivery rounds by outcome; per hook and service: consecutive failed rounds,
/// and epochs not yet acknowledged.
fn record_hooks(api: &Api) {
    for (hook, ok, failed) in api.counters.hooks.snapshot() {
        counter!("firebreak_hook_rounds_total", "hook" => hook.clone(), "outcome" => "ok")
            .absolute(ok);
        counter!("firebreak_hook_rounds_total", "hook" => hook, "outcome" => "failed")
            .absolute(failed);
    }
    api.control.reader.read(|c| {
        for hook in &api.config.hooks {
            for (service, route) in &c.failover.routing {
                let record = c.hooks.get(&hook.name).and_then(|r| r.get(service));
                let labels = [("hook", hook.name.clone()), ("service", service.clone())];
                gauge!("firebreak_hook_failures", &labels)
                    .set(record.map_or(0, |r| r.failures) as f64);
                gauge!("firebreak_hook_behind", &labels).set(
                    route
                        .epoch
                        .saturating_sub(record.map_or(0, |r| r.acked_epoch))
                        as f64,
                );
            }
        }
    });
}
