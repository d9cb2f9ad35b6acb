//! openraft's storage conformance suite against both groups' sled stores, plus the
//! restart behaviour the suite does not cover.

use firebreak_model::control::ControlState;
use firebreak_model::kv::KvStore;
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use tempfile::TempDir;

use crate::{LogStore, Machine, StateMachineStore};

struct Builder;

impl<M: Machine> StoreBuilder<M::Types, LogStore<M::Types>, StateMachineStore<M>, TempDir>
    for Builder
{
    async fn build(
        &self,
    ) -> Result<
        (TempDir, LogStore<M::Types>, StateMachineStore<M>),
        StorageError<firebreak_model::NodeId>,
    > {
        let dir = TempDir::new().expect("create temp dir");
        let (log, sm) = crate::open::<M>(dir.path()).expect("open store");
        Ok((dir, log, sm))
    }
}

#[test]
fn state_group_store_passes_openraft_suite() -> Result<(), StorageError<firebreak_model::NodeId>> {
    Suite::<_, _, StateMachineStore<KvStore>, _, _>::test_all(Builder)
}

#[test]
fn control_group_store_passes_openraft_suite() -> Result<(), StorageError<firebreak_model::NodeId>>
{
    Suite::<_, _, StateMachineStore<ControlState>, _, _>::test_all(Builder)
}

mod restart {
    use std::path::Path;

    #[tokio::test]
    async fn a_leader_comes_back_as_a_candidate_not_as_the_leader() {
        use openraft::storage::RaftLogStorage;
        let dir = tempfile::TempDir::new().unwrap();
        let voted = openraft::Vote::new_committed(7, NodeId(1));
        {
            let (mut log, _sm) = crate::open::<KvStore>(dir.path()).unwrap();
            log.save_vote(&voted).await.unwrap();
        }
        let (mut log, _sm) = reopen_both(dir.path());
        let read = log.read_vote().await.unwrap().expect("the vote survives");
        assert_eq!(
            read,
            openraft::Vote::new(7, NodeId(1)),
            "same term and choice, uncommitted"
        );
        assert!(!read.is_committed());
    }
    use std::time::{Duration, Instant};

    use firebreak_model::kv::{KvCommand, KvStore};
    use firebreak_model::NodeId;
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};

    use crate::snapshot_file::SnapshotFile;
    use crate::types::StateTypes;
    use crate::StateMachineStore;

    fn put_entry(index: u64, key: &str) -> Entry<StateTypes> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, NodeId(1)), index),
            payload: EntryPayload::Normal(vec![KvCommand::Put {
                key: key.into(),
                value: format!("v{index}"),
            }]),
        }
    }

    /// Reopens a store, waiting for the previous instance's flusher to release the Db.
    fn reopen(dir: &Path) -> StateMachineStore<KvStore> {
        reopen_both(dir).1
    }

    /// Opens again once the last store's flusher let go of sled's lock.
    fn reopen_both(dir: &Path) -> (crate::LogStore<StateTypes>, StateMachineStore<KvStore>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match crate::open::<KvStore>(dir) {
                Ok(both) => return both,
                Err(err) if Instant::now() < deadline => {
                    let _ = err;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(err) => panic!("reopen failed: {err}"),
            }
        }
    }

    #[tokio::test]
    async fn applied_records_survive_reopen() {
        let dir = tempfile::TempDir::new().unwrap();
        {
            let (_log, mut sm) = crate::open::<KvStore>(dir.path()).unwrap();
            sm.apply((1..=3).map(|i| put_entry(i, &format!("k{i}"))))
                .await
                .unwrap();
        }
        let mut sm = reopen(dir.path());
        let (last_applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(last_applied.map(|l| l.index), Some(3));
        let reader = sm.reader();
        assert_eq!(
            reader.read(|kv| kv.get("k2").map(|e| e.value.clone())),
            Some("v2".into())
        );
        assert_eq!(reader.read(|kv| kv.revision()), 3);
    }

    #[tokio::test]
    async fn snapshot_newer_than_records_wins_on_open() {
        // Simulates a crash after a received snapshot was written but before the records
        // were replaced: the next open must finish the install.
        let source_dir = tempfile::TempDir::new().unwrap();
        let (_log, mut source) = crate::open::<KvStore>(source_dir.path()).unwrap();
        source
            .apply((1..=5).map(|i| put_entry(i, &format!("k{i}"))))
            .await
            .unwrap();
        let snapshot = source.build_snapshot().await.unwrap();

        let dir = tempfile::TempDir::new().unwrap();
        {
            let (_log, mut sm) = crate::open::<KvStore>(dir.path()).unwrap();
            sm.apply([put_entry(1, "old")]).await.unwrap();
        }
        SnapshotFile::open(dir.path())
            .unwrap()
            .write(&snapshot.meta, snapshot.snapshot.get_ref())
            .unwrap();
        let mut sm = reopen(dir.path());
        let (last_applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(last_applied.map(|l| l.index), Some(5));
        assert_eq!(
            sm.reader().read(|kv| (kv.len(), kv.get("old").is_none())),
            (5, true)
        );
    }
}
