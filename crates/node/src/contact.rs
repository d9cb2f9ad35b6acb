//! Whether this node's control group is in reach, as one watch that thousands of relayed
//! streams wait on: the gateway ends what it relays when it turns false.

use std::time::Duration;

use firebreak_model::control::ControlState;

use crate::group::Group;

/// How often the gateway checks that its control group is in reach.
const CONTACT_POLL: Duration = Duration::from_millis(250);
/// How long contact must stay lost before the gateway ends the streams it relays: a leader
/// whose quorum acks are late for a moment (a busy machine) must not push thousands of
/// clients into a reconnect storm; a real partition lasts longer than this.
const CUT_STREAMS_AFTER: Duration = Duration::from_secs(1);

/// A watch of [`Group::in_contact`] that turns false once contact has been lost for
/// [`CUT_STREAMS_AFTER`] and true as soon as it is back, changing only on those
/// transitions (one poller per node, so thousands of streams wait on it without waking
/// on every heartbeat).
pub(crate) fn watch_contact(control: Group<ControlState>) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(true);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CONTACT_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lost_since: Option<tokio::time::Instant> = None;
        while !tx.is_closed() {
            tick.tick().await;
            let now = if control.in_contact() {
                lost_since = None;
                true
            } else {
                let since = *lost_since.get_or_insert_with(tokio::time::Instant::now);
                since.elapsed() < CUT_STREAMS_AFTER
            };
            tx.send_if_modified(|was| std::mem::replace(was, now) != now);
        }
    });
    rx
}
