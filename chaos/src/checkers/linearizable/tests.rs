use super::*;

fn op(op: RegisterOp, called_ms: u64, returned_ms: Option<u64>) -> Timed {
    Timed {
        op,
        called_ms,
        returned_ms,
    }
}

fn read(v: Option<&str>, from: u64, to: u64) -> Timed {
    op(RegisterOp::Read(v.map(str::to_string)), from, Some(to))
}

fn write(v: &str, from: u64, to: Option<u64>) -> Timed {
    op(RegisterOp::Write(v.into()), from, to)
}

fn cas(expected: &str, value: &str, succeeded: bool, from: u64, to: u64) -> Timed {
    let op_ = RegisterOp::Cas {
        expected: Some(expected.into()),
        value: value.into(),
        succeeded,
    };
    op(op_, from, Some(to))
}

fn linearizable(history: &[Timed]) -> bool {
    match check(history, 1_000_000) {
        Verdict::Linearizable => true,
        Verdict::NotLinearizable { .. } => false,
        Verdict::TooLarge => panic!("too large"),
    }
}

#[test]
fn a_sequential_history_is_linearizable() {
    assert!(linearizable(&[
        read(None, 0, 5),
        write("v1", 10, Some(20)),
        read(Some("v1"), 30, 40),
        cas("v1", "v2", true, 50, 60),
        cas("v1", "v3", false, 70, 80),
        read(Some("v2"), 90, 95),
    ]));
}

#[test]
fn a_stale_read_is_not_linearizable_and_is_named() {
    let history = [
        write("v1", 0, Some(10)),
        write("v2", 20, Some(30)),
        read(Some("v1"), 40, 50),
    ];
    assert_eq!(
        check(&history, 1_000_000),
        Verdict::NotLinearizable { culprit: 2 }
    );
}

#[test]
fn a_read_overlapping_a_write_may_see_either_value() {
    for seen in ["v1", "v2"] {
        assert!(linearizable(&[
            write("v1", 0, Some(10)),
            write("v2", 20, Some(40)),
            read(Some(seen), 25, 30),
        ]));
    }
}

/// A write whose answer was lost may apply at any moment after its call, or never; but
/// once a read saw it, a later read cannot miss it.
#[test]
fn an_indeterminate_write_may_apply_late_or_never_but_not_undo() {
    assert!(linearizable(&[write("v1", 0, None), read(None, 5, 8)]));
    assert!(linearizable(&[
        write("v1", 0, None),
        read(Some("v1"), 50, 60)
    ]));
    assert!(!linearizable(&[
        write("v1", 0, None),
        read(Some("v1"), 10, 20),
        read(None, 30, 40),
    ]));
}

#[test]
fn compare_and_swap_follows_the_value() {
    assert!(!linearizable(&[
        write("v1", 0, Some(10)),
        cas("v1", "v2", true, 20, 30),
        cas("v1", "v3", true, 40, 50),
    ]));
    assert!(!linearizable(&[
        write("v1", 0, Some(10)),
        cas("v1", "x", false, 20, 30)
    ]));
    let unknown = RegisterOp::CasUnknown {
        expected: Some("v1".into()),
        value: "v2".into(),
    };
    assert!(linearizable(&[
        write("v1", 0, Some(10)),
        op(unknown.clone(), 20, None),
        read(Some("v2"), 30, 40),
    ]));
    assert!(!linearizable(&[
        write("v1", 0, Some(10)),
        op(unknown, 20, None),
        read(Some("v2"), 30, 40),
        read(Some("v1"), 50, 60),
    ]));
}

#[test]
fn the_search_stops_at_its_bound() {
    let history: Vec<Timed> = (0..8)
        .map(|i| write(&format!("v{i}"), 0, Some(100)))
        .chain([read(Some("v0"), 200, 210), read(Some("v1"), 220, 230)])
        .collect();
    assert_eq!(check(&history, 10), Verdict::TooLarge);
    assert!(!linearizable(&history));
}
