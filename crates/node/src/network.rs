//! Raft RPCs over HTTP: the client side (openraft's `RaftNetworkFactory`) and the server
//! routes that hand requests to the local Raft.
//!
//! ```text
//!   leader Raft ──RaftNetwork──► POST https://peer/raft/{group}/{append|vote|snapshot}
//!                                  (MessagePack; this group's own reqwest pool; mutual TLS)
//!   peer listener ─► member check ─► sender check ─► Raft::{append_entries, vote,
//!                                  install_snapshot} ──► MessagePack Result
//! ```
//!
//! The encoding is [`crate::raft_wire`]'s. A body in any other content type is refused
//! with 415 (a peer running a firebreak from before MessagePack).
//!
//! The server side accepts an RPC only from the node it claims to come from: the node id
//! that the caller's certificate names must be the leader or candidate in the RPC's vote.
//! A member cannot speak for another (`crate::access` already made sure it is a member).
//!
//! Each group has its own HTTP client and so its own connections: a flood of `state`
//! replication never queues `control` heartbeats behind it on one socket. Every request
//! times out after openraft's TTL for it (the heartbeat interval for AppendEntries).
//!
//! An AppendEntries carries at most what its peer's link lately carried in time
//! ([`firebreak_model::append_budget`]): the entries over budget are left for the next one,
//! and openraft hears `PartialSuccess` up to the last entry sent. An RPC openraft's timeout
//! dropped is noticed when the next one comes (`awaiting` is still set).

use std::marker::PhantomData;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use firebreak_model::append_budget::{entries_within, AppendBudget};
use firebreak_model::{Member, NodeId};
use firebreak_store::GroupTypes;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Raft, RaftLogId};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::access::PeerNode;
use crate::election_gate::LeaderContact;
use crate::peer_answer;
use crate::raft_wire::{self, SnapshotChunk};

/// Largest Raft RPC body accepted: an AppendEntries of the largest `raft.max_append_bytes`
/// (plus the one entry that may cross it) or a snapshot chunk of the largest
/// `raft.snapshot_chunk_bytes`, with room for the framing.
pub const MAX_RAFT_BODY_BYTES: usize = crate::config::MAX_RPC_PAYLOAD_BYTES as usize + 1024 * 1024;

/// Creates connections to peers for one group.
pub struct HttpNetwork<C> {
    client: reqwest::Client,
    tls: firebreak_tls::ClientTls,
    /// This node, the sender of every RPC.
    from: NodeId,
    /// `raft.max_append_bytes`: the most an AppendEntries carries on a link that keeps up.
    max_append_bytes: usize,
    _types: PhantomData<C>,
}

impl<C> HttpNetwork<C> {
    /// Node `from`'s network, with its own connection pool, presenting its certificate;
    /// an AppendEntries carries at most `max_append_bytes` of entries, less on a link that
    /// cannot carry that much within its timeout.
    pub fn new(tls: firebreak_tls::ClientTls, from: NodeId, max_append_bytes: usize) -> Self {
        // Idle connections close after 30 s and TCP keepalive probes every 10 s, so a pooled
        // connection to a peer that restarted or vanished is noticed and dropped rather than
        // reused (openraft issue #1770: stale pooled connections kept candidates alive).
        let client = tls
            .apply(reqwest::Client::builder())
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .tcp_keepalive(std::time::Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()
            .expect("reqwest client builds with static options");
        Self {
            client,
            tls,
            from,
            max_append_bytes,
            _types: PhantomData,
        }
    }
}

impl<C: GroupTypes> RaftNetworkFactory<C> for HttpNetwork<C> {
    type Network = HttpConnection<C>;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Self::Network {
        HttpConnection {
            client: self.client.clone(),
            from: self.from,
            target,
            base: self.tls.url(&node.addr, &format!("/raft/{}/", C::NAME)),
            budget: AppendBudget::new(self.max_append_bytes),
            awaiting: false,
            _types: PhantomData,
        }
    }
}

/// The connection to one peer for one group.
pub struct HttpConnection<C> {
    client: reqwest::Client,
    from: NodeId,
    target: NodeId,
    /// `https://host:port/raft/<group>/`.
    base: String,
    /// What the next AppendEntries may carry (`firebreak_model::append_budget`).
    budget: AppendBudget,
    /// An AppendEntries was sent and has not returned: if the next one comes first,
    /// openraft's timeout dropped it.
    awaiting: bool,
    _types: PhantomData<C>,
}

impl<C: GroupTypes> HttpConnection<C> {
    /// `rpc` encoded, its entries first cut to those that fit the budget (at least one);
    /// whether any were cut.
    fn encode_within_budget(
        &self,
        rpc: &mut AppendEntriesRequest<C>,
    ) -> Result<(Vec<u8>, bool), rmp_serde::encode::Error> {
        let mut cut = false;
        loop {
            let body = raft_wire::encode(rpc)?;
            let keep = entries_within(rpc.entries.len(), body.len(), self.budget.bytes());
            if keep == rpc.entries.len() {
                return Ok((body, cut));
            }
            rpc.entries.truncate(keep);
            cut = true;
        }
    }

    async fn send<Req, Resp, Err>(
        &self,
        rpc: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Member, Err>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        Err: std::error::Error + DeserializeOwned,
    {
        let body =
            raft_wire::encode(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send_body(rpc, body, option).await
    }

    /// Sends `body`, an encoded request, as `rpc`.
    async fn send_body<Resp, Err>(
        &self,
        rpc: &str,
        body: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Member, Err>>
    where
        Resp: DeserializeOwned,
        Err: std::error::Error + DeserializeOwned,
    {
        if crate::sabotage::rpc_cut(C::NAME, self.from, self.target, rpc) {
            let cut = std::io::Error::other(format!("{rpc} to node {} cut by a test", self.target));
            return Err(RPCError::Unreachable(Unreachable::new(&cut)));
        }
        let url = format!("{}{rpc}", self.base);
        let response = self
            .client
            .post(url)
            .timeout(option.hard_ttl())
            .header(header::CONTENT_TYPE, raft_wire::CONTENT_TYPE)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        let status = response.status();
        if !status.is_success() {
            let body = peer_answer::text_at_most(response, peer_answer::MAX_ERROR_TEXT_BYTES).await;
            let err = std::io::Error::other(format!("peer answered {status}: {body}"));
            return Err(RPCError::Network(NetworkError::new(&err)));
        }
        let bytes = peer_answer::read_bounded(response, MAX_RAFT_BODY_BYTES)
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let result: Result<Resp, Err> =
            raft_wire::decode(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl<C: GroupTypes> RaftNetwork<C> for HttpConnection<C> {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        if std::mem::replace(&mut self.awaiting, true) {
            // The previous one never returned: openraft's timeout dropped it.
            self.budget.lost();
        }
        let (body, cut) = self
            .encode_within_budget(&mut rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let last_sent = rpc.entries.last().map(|e| *e.get_log_id());
        let (sent, started) = (body.len(), Instant::now());
        let answer = self.send_body("append", body, &option).await;
        self.awaiting = false;
        match &answer {
            Ok(_) => self
                .budget
                .answered(sent, started.elapsed(), option.hard_ttl()),
            Err(RPCError::Network(_)) => self.budget.lost(),
            Err(_) => {}
        }
        match answer? {
            AppendEntriesResponse::Success if cut => {
                Ok(AppendEntriesResponse::PartialSuccess(last_sent))
            }
            other => Ok(other),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send("snapshot", &SnapshotChunk::from(rpc), &option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.send("vote", &rpc, &option).await
    }
}

/// The server side of one group's Raft RPCs, mounted under `/raft/{group}/`; an
/// AppendEntries accepted from the leader is recorded in `contact`.
pub fn routes<C: GroupTypes>(raft: Raft<C>, contact: LeaderContact) -> Router {
    let append_routes = Router::new()
        .route(&format!("/raft/{}/append", C::NAME), post(append::<C>))
        .with_state((raft.clone(), contact));
    Router::new()
        .route(&format!("/raft/{}/vote", C::NAME), post(vote::<C>))
        .route(&format!("/raft/{}/snapshot", C::NAME), post(snapshot::<C>))
        .with_state(raft)
        .merge(append_routes)
}

/// Refuses an RPC whose vote names another node than the caller's certificate. Without
/// TLS (`plaintext_for_debugging`) there is no certificate and nothing to check.
fn check_sender(
    peer: Option<Extension<PeerNode>>,
    vote: &openraft::Vote<NodeId>,
) -> Result<(), Box<Response>> {
    let Some(Extension(PeerNode(caller))) = peer else {
        return Ok(());
    };
    match vote.leader_id().voted_for() {
        Some(claimed) if claimed == caller => Ok(()),
        claimed => Err(Box::new(
            (
                StatusCode::FORBIDDEN,
                format!("node {caller} sent a Raft RPC on behalf of {claimed:?}: a node speaks only for itself"),
            )
                .into_response(),
        )),
    }
}

/// The request in `body`, or the answer refusing it: 415 for another encoding, 400 for a
/// body that does not decode.
fn decode_body<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, Box<Response>> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if content_type != Some(raft_wire::CONTENT_TYPE) {
        return Err(Box::new(
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Raft RPCs are {}, not {content_type:?}: the sending node runs an older firebreak; upgrade it",
                    raft_wire::CONTENT_TYPE
                ),
            )
                .into_response(),
        ));
    }
    raft_wire::decode(body).map_err(|e| {
        Box::new((StatusCode::BAD_REQUEST, format!("malformed Raft RPC: {e}")).into_response())
    })
}

/// `value` as a MessagePack answer.
fn reply<T: Serialize>(value: &T) -> Response {
    match raft_wire::encode(value) {
        Ok(bytes) => ([(header::CONTENT_TYPE, raft_wire::CONTENT_TYPE)], bytes).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the answer: {e}"),
        )
            .into_response(),
    }
}

async fn append<C: GroupTypes>(
    State((raft, contact)): State<(Raft<C>, LeaderContact)>,
    peer: Option<Extension<PeerNode>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: AppendEntriesRequest<C> = match decode_body(&headers, &body) {
        Ok(request) => request,
        Err(refused) => return *refused,
    };
    if let Err(refused) = check_sender(peer, &request.vote) {
        return *refused;
    }
    let result = raft.append_entries(request).await;
    if matches!(&result, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
        contact.heard();
    }
    reply(&result)
}

async fn vote<C: GroupTypes>(
    State(raft): State<Raft<C>>,
    peer: Option<Extension<PeerNode>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: VoteRequest<NodeId> = match decode_body(&headers, &body) {
        Ok(request) => request,
        Err(refused) => return *refused,
    };
    if let Err(refused) = check_sender(peer, &request.vote) {
        return *refused;
    }
    reply(&raft.vote(request).await)
}

async fn snapshot<C: GroupTypes>(
    State(raft): State<Raft<C>>,
    peer: Option<Extension<PeerNode>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let chunk: SnapshotChunk = match decode_body(&headers, &body) {
        Ok(chunk) => chunk,
        Err(refused) => return *refused,
    };
    if let Err(refused) = check_sender(peer, chunk.vote()) {
        return *refused;
    }
    reply(&raft.install_snapshot(chunk.into_request::<C>()).await)
}
