use super::*;
use crate::spool::{Recipient, State};

fn share(route: &str, pending: u64, held: bool) -> Share {
    Share {
        route: route.into(),
        pending,
        held,
    }
}

/// A walk counts what it has passed, and a change to a message behind it
/// is added; one ahead of it is left for the walk to see.
#[test]
fn a_walk_counts_changes_behind_it_and_leaves_those_ahead() {
    let t = Tallies::default();
    t.restore(Tally::default());
    t.begin_walk();
    assert!(!t.snapshot().complete);
    // The page read: "A" and "C". The walk passes "A" (one message, 2
    // recipients on "r").
    {
        let mut state = t.lock();
        let walk = state.walk.as_mut().unwrap();
        walk.page_end = Some("C".into());
        walk.ahead = ["A".to_string(), "C".to_string()].into();
        walk.counted.add(&share("r", 2, false), 1);
        walk.ahead.remove("A");
        walk.passed = Some("A".into());
    }
    // "A" is delivered (behind the walk); "B" is accepted inside the page
    // but not in it (its id was taken before "C"'s): the walk will not see
    // it. "C" changes ahead of the walk, "D" after the page.
    t.counting().change("A", Some(&share("r", 2, false)), None);
    t.counting().change("B", None, Some(&share("r", 1, false)));
    t.counting().change(
        "C",
        Some(&share("r", 1, false)),
        Some(&share("r", 3, false)),
    );
    t.counting().change("D", None, Some(&share("r", 1, false)));
    assert_eq!(t.snapshot().total.messages, 1, "A gone, B counted");
    // The walk reaches "C" and sees it as it is now.
    {
        let mut state = t.lock();
        let walk = state.walk.as_mut().unwrap();
        walk.counted.add(&share("r", 3, false), 1);
        walk.ahead.remove("C");
        walk.passed = Some("C".into());
    }
    // The next page: "D", seen as it is now.
    {
        let mut state = t.lock();
        let walk = state.walk.as_mut().unwrap();
        walk.page_end = Some("D".into());
        walk.ahead = ["D".to_string()].into();
        walk.counted.add(&share("r", 1, false), 1);
        walk.ahead.remove("D");
        walk.passed = Some("D".into());
    }
    t.end_walk();
    let tally = t.snapshot();
    assert!(tally.complete);
    assert_eq!(
        tally.total,
        Counts {
            messages: 3,
            recipients: 5,
            held: 0
        }
    );
    assert_eq!(tally.routes.len(), 1);
}

#[test]
fn shares_move_between_routes_and_empty_routes_go() {
    let mut t = Tally::default();
    t.change(None, Some(&share("a", 3, false)));
    t.change(None, Some(&share("a", 1, true)));
    t.change(Some(&share("a", 1, true)), Some(&share("b", 1, true)));
    assert_eq!(t.routes["a"].messages, 1);
    assert_eq!(t.routes["b"].held, 1);
    t.change(Some(&share("a", 3, false)), None);
    assert!(!t.routes.contains_key("a"));
    assert_eq!(
        t.total,
        Counts {
            messages: 1,
            recipients: 1,
            held: 1
        }
    );
}

fn envelope(spool: &Spool) -> Envelope {
    Envelope {
        id: spool.new_id().unwrap(),
        sender: "a@example.com".into(),
        route_sender: "a@example.com".into(),
        recipients: vec![
            Recipient::new("x@example.net", 100),
            Recipient::new("y@example.net", 100),
        ],
        client: "t".into(),
        ..Default::default()
    }
}

/// A clean close stores the counts and the next open takes them back; a
/// crash leaves none, and the queue is counted again.
#[tokio::test]
async fn counts_survive_a_clean_close_and_are_made_again_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    assert!(
        !spool.needs_recount(),
        "a new queue is counted: it is empty"
    );
    for _ in 0..3 {
        let mut env = envelope(&spool);
        spool.accept_bytes(&mut env, &[], b"x\r\n").await.unwrap();
    }
    let mut env = envelope(&spool);
    spool.accept_bytes(&mut env, &[], b"x\r\n").await.unwrap();
    env.recipients[0].state = State::Delivered;
    spool
        .record(&env, &[0], "delivered", &mut [])
        .await
        .unwrap();
    spool.hold(&mut env, 101).await.unwrap();
    let want = Counts {
        messages: 4,
        recipients: 7,
        held: 1,
    };
    assert_eq!(spool.tally().total, want);
    drop(spool);

    let spool = crate::spool::tests::when_released(|| Spool::open(dir.path(), 1 << 20));
    assert!(!spool.needs_recount());
    assert_eq!(spool.tally().total, want);
    assert_eq!(spool.tally().routes["default"], want);
    // What a crash leaves: no clean-close marker, so whatever counts are
    // stored are not trusted.
    drop(spool);
    let marker = dir.path().join(crate::spool::store::CLEAN_MARKER);
    std::fs::remove_file(marker).unwrap();
    let spool = crate::spool::tests::when_released(|| Spool::open(dir.path(), 1 << 20));
    assert!(spool.needs_recount());
    spool.recount(|_| {}).unwrap();
    assert!(!spool.needs_recount());
    assert_eq!(spool.tally().total, want);
}
