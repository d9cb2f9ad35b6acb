//! Test-only sabotage of push streams, in debug builds alone: with
//! `FIREBREAK_SABOTAGE_PUSH=twice` every message is pushed twice, with `=reorder` each pair
//! of messages goes out swapped. It proves that the drills' messaging checker catches a
//! server that breaks "once and in order". `FIREBREAK_SABOTAGE_FENCING=off` turns epoch
//! fencing off (see [`fencing_off`]). Release builds compile them out.

use futures::{Stream, StreamExt};

/// What the sabotage does to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushSabotage {
    Twice,
    Reorder,
}

/// Whether `FIREBREAK_SABOTAGE_FENCING=off` turns the payments service's epoch fencing off
/// (debug builds alone): the drills' `fenced-writes` checker must then catch the writes of
/// a primary that lost its role.
pub fn fencing_off() -> bool {
    cfg!(debug_assertions) && std::env::var("FIREBREAK_SABOTAGE_FENCING").is_ok_and(|v| v == "off")
}

/// The sabotage the environment asks for, in debug builds.
pub fn push_sabotage() -> Option<PushSabotage> {
    if !cfg!(debug_assertions) {
        return None;
    }
    match std::env::var("FIREBREAK_SABOTAGE_PUSH").ok()?.as_str() {
        "twice" => Some(PushSabotage::Twice),
        "reorder" => Some(PushSabotage::Reorder),
        _ => None,
    }
}

/// `events`, sabotaged.
pub fn sabotage<T: Clone + Send + 'static>(
    events: impl Stream<Item = T> + Send + 'static,
    how: PushSabotage,
) -> impl Stream<Item = T> + Send + 'static {
    events
        .scan(None::<T>, move |held, event| {
            let out = match how {
                PushSabotage::Twice => vec![event.clone(), event],
                PushSabotage::Reorder => match held.take() {
                    None => {
                        *held = Some(event);
                        Vec::new()
                    }
                    Some(first) => vec![event, first],
                },
            };
            std::future::ready(Some(futures::stream::iter(out)))
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(how: PushSabotage) -> Vec<u32> {
        sabotage(futures::stream::iter(1..=4), how).collect().await
    }

    #[tokio::test]
    async fn twice_repeats_and_reorder_swaps_pairs() {
        assert_eq!(run(PushSabotage::Twice).await, [1, 1, 2, 2, 3, 3, 4, 4]);
        assert_eq!(run(PushSabotage::Reorder).await, [2, 1, 4, 3]);
    }
}
