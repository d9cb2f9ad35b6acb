//! Reading what another node answered, never more than a bound: a member that answers
//! without end (a bug, or a stolen node key) must not fill this node's memory.
//!
//! ```text
//!   Raft RPC answer                      MAX_RAFT_BODY_BYTES (the largest request, and some)
//!   a forwarded control command's answer MAX_RAFT_BODY_BYTES
//!   a leader view, a node id check       MAX_SMALL_ANSWER_BYTES
//!   an error answer's text               MAX_ERROR_TEXT_BYTES, the rest unread
//! ```
//!
//! A declared length over the bound is refused before any byte is read; an answer
//! without one is read chunk by chunk and dropped at the first chunk past the bound.

use serde::de::DeserializeOwned;

/// Largest answer to a question with a short answer (a leader view, a node id check).
pub const MAX_SMALL_ANSWER_BYTES: usize = 64 * 1024;
/// Most bytes of an error answer that go into an error message.
pub const MAX_ERROR_TEXT_BYTES: usize = 400;

/// Why an answer could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("its answer is over {limit} bytes (a peer answering without end is refused)")]
    TooLarge { limit: usize },
    #[error("its answer could not be read: {0}")]
    Read(#[from] reqwest::Error),
    #[error("its answer could not be decoded: {0}")]
    Decode(#[from] serde_json::Error),
}

/// The whole body of `response`, if it is at most `limit` bytes.
pub async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, AnswerError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(AnswerError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(AnswerError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The body of `response` as JSON, if it is at most `limit` bytes.
pub async fn json_bounded<T: DeserializeOwned>(
    response: reqwest::Response,
    limit: usize,
) -> Result<T, AnswerError> {
    let body = read_bounded(response, limit).await?;
    Ok(serde_json::from_slice(&body)?)
}

/// The first `most` bytes of an answer's body (lossy UTF-8), reading no more than that:
/// for an error message.
pub async fn text_at_most(mut response: reqwest::Response, most: usize) -> String {
    let mut kept = Vec::new();
    while kept.len() < most {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk[..chunk.len().min(most - kept.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::body::Body;
    use axum::routing::get;

    /// A peer on loopback: `/endless` answers 64 KiB chunks without end (no length),
    /// `/big` 128 KiB with its length declared, `/small` answers `{"ok":true}`.
    async fn peer() -> (String, tokio::task::JoinHandle<()>) {
        let endless = || async {
            let chunk = axum::body::Bytes::from(vec![b'x'; 64 * 1024]);
            let chunks =
                futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
            Body::from_stream(chunks)
        };
        let router = axum::Router::new()
            .route("/endless", get(endless))
            .route("/big", get(|| async { vec![b'x'; 128 * 1024] }))
            .route("/small", get(|| async { "{\"ok\":true}" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        (base, task)
    }

    #[tokio::test]
    async fn an_answer_without_end_is_refused_at_the_bound() {
        let (base, task) = peer().await;
        let http = reqwest::Client::new();
        let limit = 1024 * 1024;
        let answer = http.get(format!("{base}/endless")).send().await.unwrap();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            read_bounded(answer, limit),
        )
        .await
        .expect("the bound ends the read, not a timeout");
        let err = read.expect_err("over the bound");
        assert!(
            matches!(err, AnswerError::TooLarge { limit: 1048576 }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "its answer is over 1048576 bytes (a peer answering without end is refused)"
        );
        let text = text_at_most(
            http.get(format!("{base}/endless")).send().await.unwrap(),
            MAX_ERROR_TEXT_BYTES,
        )
        .await;
        assert_eq!(text.len(), MAX_ERROR_TEXT_BYTES);
        task.abort();
    }

    #[tokio::test]
    async fn a_declared_length_over_the_bound_is_refused_unread_and_a_small_answer_taken() {
        let (base, task) = peer().await;
        let http = reqwest::Client::new();
        let answer = http.get(format!("{base}/big")).send().await.unwrap();
        assert_eq!(answer.content_length(), Some(128 * 1024));
        let err = read_bounded(answer, MAX_SMALL_ANSWER_BYTES)
            .await
            .unwrap_err();
        assert!(matches!(err, AnswerError::TooLarge { .. }), "{err}");
        let answer = http.get(format!("{base}/small")).send().await.unwrap();
        let value: serde_json::Value = json_bounded(answer, MAX_SMALL_ANSWER_BYTES).await.unwrap();
        assert_eq!(value["ok"], true);
        task.abort();
    }
}
