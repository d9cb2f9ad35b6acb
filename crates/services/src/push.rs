//! Reading a push stream (server-sent events) as the client does: bytes from the
//! connection, bounded and watched for silence, into whole events.
//!
//! ```text
//!   connection ─► chunks (each within the silence limit; at most MAX_EVENT_BYTES
//!                 without an event boundary) ─► eventsource-stream ─► Event
//!                 { data (multi-line joined), id, retry }
//! ```
//!
//! The parser is a kept crate (`eventsource-stream`): it keeps a UTF-8 character that a
//! chunk boundary splits whole (a Korean message body must arrive as sent), joins the
//! `data:` lines of one event with newlines and reads `retry:`, the server's reconnect
//! window.

use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};

/// Largest push event the client buffers; a stream sending more without a blank line is
/// broken, and the client reconnects.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Shortest and longest reconnect window the client takes from a server (`retry:` or
/// [`firebreak_model::RECONNECT_WINDOW_HEADER`]).
pub const WINDOW_BOUNDS: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(300));

/// Why a push stream's bytes stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamFault {
    #[error("silent for {0:?}, past its keepalive")]
    Silent(Duration),
    #[error("more than {MAX_EVENT_BYTES} bytes without an event boundary")]
    TooLarge,
    #[error("connection failed: {0}")]
    Transport(String),
}

/// What the parser yields: an event, or why the stream cannot go on.
pub type EventResult = Result<Event, EventStreamError<StreamFault>>;

/// The events of `chunks`, which must each arrive within `silence` (`None`: no limit)
/// and may not carry more than [`MAX_EVENT_BYTES`] without a blank line.
pub fn events<S, B, E>(chunks: S, silence: Option<Duration>) -> impl Stream<Item = EventResult>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    // `pending`: bytes since the last event boundary; `None` once a fault ended it.
    let bounded = futures::stream::unfold(Some((chunks, 0usize)), move |state| async move {
        let (mut chunks, pending) = state?;
        let next = match silence {
            Some(limit) => match tokio::time::timeout(limit, chunks.next()).await {
                Ok(next) => next,
                Err(_) => return Some((Err(StreamFault::Silent(limit)), None)),
            },
            None => chunks.next().await,
        };
        let chunk = match next? {
            Ok(chunk) => chunk,
            Err(err) => return Some((Err(StreamFault::Transport(err.to_string())), None)),
        };
        let bytes = chunk.as_ref();
        let pending = if has_boundary(bytes) {
            0
        } else {
            pending + bytes.len()
        };
        if pending > MAX_EVENT_BYTES {
            return Some((Err(StreamFault::TooLarge), None));
        }
        Some((Ok(chunk), Some((chunks, pending))))
    });
    Box::pin(bounded).eventsource()
}

/// Whether `chunk` ends an event somewhere (a blank line).
fn has_boundary(chunk: &[u8]) -> bool {
    chunk
        .windows(2)
        .any(|w| w == b"\n\n" || w == b"\r\r" || w == b"\n\r")
}

/// A server's reconnect window, within [`WINDOW_BOUNDS`].
pub fn window(suggested: Duration) -> Duration {
    suggested.clamp(WINDOW_BOUNDS.0, WINDOW_BOUNDS.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events of `chunks`, delivered as given.
    async fn parse(chunks: Vec<Vec<u8>>) -> Vec<EventResult> {
        let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
        events(stream, None).collect().await
    }

    #[tokio::test]
    async fn a_korean_body_split_at_every_byte_survives_whole() {
        let body = r#"{"seq":7,"body":"판교 데이터센터 화재: 카카오톡 복구 중 🔥"}"#;
        let wire = format!("id: 7\ndata: {body}\n\n").into_bytes();
        for cut in 1..wire.len() {
            let got = parse(vec![wire[..cut].to_vec(), wire[cut..].to_vec()]).await;
            assert_eq!(got.len(), 1, "cut at byte {cut}");
            let event = got[0].as_ref().expect("one event");
            assert_eq!(event.data, body, "cut at byte {cut}");
            assert_eq!(event.id, "7");
        }
    }

    #[tokio::test]
    async fn multi_line_data_is_joined_and_retry_is_read() {
        let wire =
            b": keepalive\n\nretry: 2500\ndata: {\"seq\":1,\ndata: \"body\":\"x\"}\n\n".to_vec();
        let got = parse(vec![wire]).await;
        assert_eq!(got.len(), 1);
        let event = got[0].as_ref().unwrap();
        assert_eq!(event.data, "{\"seq\":1,\n\"body\":\"x\"}");
        assert_eq!(event.retry, Some(Duration::from_millis(2500)));
        let message: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(message["body"], "x");
    }

    #[tokio::test]
    async fn a_stream_without_boundaries_is_cut_at_the_bound() {
        let chunks = vec![vec![b'x'; 64 * 1024]; MAX_EVENT_BYTES / (64 * 1024) + 2];
        let got = parse(chunks).await;
        assert!(
            matches!(
                got.last(),
                Some(Err(EventStreamError::Transport(StreamFault::TooLarge)))
            ),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn a_silent_stream_ends_with_silent() {
        let never = futures::stream::pending::<Result<Vec<u8>, std::io::Error>>();
        let got: Vec<_> = events(never, Some(Duration::from_millis(20)))
            .collect()
            .await;
        assert!(
            matches!(
                got.as_slice(),
                [Err(EventStreamError::Transport(StreamFault::Silent(_)))]
            ),
            "{got:?}"
        );
    }
}
