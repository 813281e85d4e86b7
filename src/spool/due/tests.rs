use std::collections::BTreeSet;

use super::super::{Envelope, Notice, Recipient, Spool, State};
use super::*;

fn on(route: &str, at: u64) -> Slot {
    Slot {
        route: route.into(),
        at,
    }
}

/// A slot on the route `Spool::open` gives every message.
fn d(at: u64) -> Slot {
    on("default", at)
}

#[test]
fn keys_sort_by_route_then_due_time_and_parse_back() {
    let a = key(&d(5), "0000000000000B");
    let b = key(&d(256), "0000000000000A");
    assert!(a < b, "due time first, id second");
    assert_eq!(parse(&b), Some((d(256), "0000000000000A".to_string())));
    // A route's keys are together, and a route named after the start of
    // another's name is not among them.
    let short = key(&on("mx", u64::MAX), "A");
    let long = key(&on("mx2", 0), "A");
    assert!(short < long);
    assert!(short.starts_with(&prefix("mx")) && !long.starts_with(&prefix("mx")));
    assert_eq!(parse(b"w123"), None);
    assert_eq!(parse(b"wr\x001234567"), None);
    assert_eq!(parse(&key(&d(1), "")), None);
}

#[test]
fn a_meta_record_of_the_reverted_index_still_reads() {
    #[derive(serde::Deserialize)]
    struct M {
        #[serde(default, deserialize_with = "lenient")]
        due: Option<Slot>,
    }
    let read = |json: &str| serde_json::from_str::<M>(json).unwrap().due;
    assert_eq!(read(r#"{"due":42}"#), None);
    assert_eq!(read(r#"{}"#), None);
    assert_eq!(read(r#"{"due":null}"#), None);
    assert_eq!(read(r#"{"due":{"route":"r","at":42}}"#), Some(on("r", 42)));
}

fn envelope(spool: &Spool, recipients: usize, at: u64) -> Envelope {
    let sender = if at.is_multiple_of(2) {
        "a@example.com"
    } else {
        "b@example.org"
    };
    Envelope {
        id: spool.new_id().unwrap(),
        sender: sender.into(),
        route_sender: sender.into(),
        recipients: (0..recipients)
            .map(|i| Recipient::new(format!("r{i}@example.net"), at + i as u64))
            .collect(),
        client: "t".into(),
        ..Default::default()
    }
}

type Entries = BTreeSet<(String, u64, String)>;

/// The index as stored, and as the queued messages and the router in
/// force say it must be.
fn index_and_truth(spool: &Spool) -> (Entries, Entries) {
    let index = spool
        .store
        .scan_keys(&[KIND])
        .map(|k| parse(&k.unwrap()).unwrap())
        .map(|(slot, id)| (slot.route, slot.at, id))
        .collect();
    let truth = spool
        .messages()
        .map(Result::unwrap)
        .filter_map(|env| spool.slot(&env).map(|s| (s.route, s.at, env.id)))
        .collect();
    (index, truth)
}

/// Index entries of the one route `Spool::open` has.
fn on_default(entries: Entries) -> BTreeSet<(u64, String)> {
    entries
        .into_iter()
        .map(|(route, at, id)| {
            assert_eq!(route, "default");
            (at, id)
        })
        .collect()
}

/// Senders at example.org on route "org", the rest on "com"; or the other
/// way round.
fn by_domain(swapped: bool) -> Router {
    Router::new(move |sender| {
        let org = sender.ends_with("@example.org") != swapped;
        if org { "org" } else { "com" }.to_string()
    })
}

/// The index and the counts are what the queue says.
fn check(spool: &Spool, step: &str) {
    let (index, truth) = index_and_truth(spool);
    assert_eq!(index, truth, "after {step}");
    let mut counts = std::collections::BTreeMap::<String, (u64, u64, u64)>::new();
    for env in spool.messages().filter_map(Result::ok) {
        let route = spool.router().place(&env).route;
        let c = counts.entry(route).or_default();
        c.0 += 1;
        c.1 += env.unfinished().count() as u64;
        c.2 += u64::from(env.held);
    }
    let tally = spool.tally();
    let got: std::collections::BTreeMap<String, (u64, u64, u64)> = tally
        .routes
        .iter()
        .map(|(r, c)| (r.clone(), (c.messages, c.recipients, c.held)))
        .collect();
    assert_eq!(got, counts, "counts after {step}");
    assert_eq!(
        tally.total.messages,
        counts.values().map(|c| c.0).sum::<u64>()
    );
}

/// A small deterministic generator: the sequence is the same every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Every operation that changes a message keeps the index exactly the set
/// of (route, due time, id) of the queued messages that are not held and
/// have a recipient to try: checked after each of 400 random operations,
/// after a new routing table and the repair of every message (what a
/// reload and the start do), and again after reopening.
#[tokio::test]
async fn every_change_keeps_the_index_exact() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open_routed(dir.path(), 1 << 20, by_domain(false)).unwrap();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut ids: Vec<String> = Vec::new();
    for step in 0..400 {
        if step == 200 {
            spool.set_router(by_domain(true));
            for env in spool.messages() {
                spool.repair_due(&env.unwrap()).unwrap();
            }
            check(&spool, "a new routing table");
        }
        let op = rng.below(9);
        let pick = (!ids.is_empty()).then(|| ids[rng.below(ids.len() as u64) as usize].clone());
        let loaded = pick.and_then(|id| spool.load(&id).unwrap());
        let name = change(&spool, &mut rng, op, loaded, &mut ids).await;
        check(&spool, &format!("step {step}: {name}"));
    }
    assert!(!ids.is_empty());
    let (index, _) = index_and_truth(&spool);
    for route in ["org", "com"] {
        assert!(index.iter().any(|(r, ..)| r == route), "{route} used");
    }
    drop(spool);
    let spool = Spool::open_routed(dir.path(), 1 << 20, by_domain(true)).unwrap();
    check(&spool, "reopening");
}

async fn change(
    spool: &Spool,
    rng: &mut Rng,
    op: u64,
    env: Option<Envelope>,
    ids: &mut Vec<String>,
) -> &'static str {
    let (op, mut env) = match env {
        Some(env) if op > 0 => (op, env),
        _ => {
            let mut env = envelope(spool, 1 + rng.below(3) as usize, 100 + rng.below(50));
            spool.accept_bytes(&mut env, &[], b"x\r\n").await.unwrap();
            ids.push(env.id);
            return "accept";
        }
    };
    let now = 200 + rng.below(100);
    match op {
        1 => spool.hold(&mut env, now).await.unwrap(),
        2 => spool.release(&mut env, now).await.unwrap(),
        3 => spool.flush(&mut env, now).await.unwrap(),
        4 => {
            let i = rng.below(env.recipients.len() as u64) as usize;
            env.recipients[i].state = State::Deferred;
            env.recipients[i].next_attempt = now + rng.below(5000);
            spool.record(&env, &[i], "deferred", &mut []).await.unwrap();
        }
        5 => {
            let i = rng.below(env.recipients.len() as u64) as usize;
            env.recipients[i].state = State::Delivered;
            let mut notice = Notice {
                envelope: envelope(spool, 1, now),
                body: b"notice\r\n".to_vec(),
                what: "non-delivery",
            };
            spool
                .record(&env, &[i], "delivered", std::slice::from_mut(&mut notice))
                .await
                .unwrap();
            ids.push(notice.envelope.id);
        }
        6 => spool.delete(&mut env, now).await.unwrap(),
        7 => {
            for r in &mut env.recipients {
                r.next_attempt = now + 7;
            }
            spool.reschedule(&[&env], None).await.unwrap();
        }
        _ => {
            spool.discard(&env.id).await.unwrap();
        }
    }
    [
        "accept",
        "hold",
        "release",
        "flush",
        "defer",
        "deliver",
        "delete",
        "reschedule",
        "discard",
    ][op as usize]
}

/// A queue from before the index: built at the first open, and only then.
#[tokio::test]
async fn a_queue_without_the_index_gets_it_at_the_first_open() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let mut held = envelope(&spool, 1, 10);
    spool.accept_bytes(&mut held, &[], b"x\r\n").await.unwrap();
    spool.hold(&mut held, 11).await.unwrap();
    for n in 0..2500u64 {
        let mut env = envelope(&spool, 1 + (n % 3) as usize, 1000 - n % 700);
        spool.accept_bytes(&mut env, &[], b"x\r\n").await.unwrap();
    }
    // What an older version left: no entries, no marker, no due times.
    let mut changes = Changes::new();
    for (at, id) in spool.due_after("default", None, usize::MAX).unwrap() {
        changes.remove(key(&d(at), &id));
    }
    changes.remove(BUILT.to_vec());
    spool.store.apply(changes).unwrap();
    let mut changes = Changes::new();
    for item in spool.store.scan(b"m") {
        let (k, v) = item.unwrap();
        let mut meta: serde_json::Value = serde_json::from_slice(&v).unwrap();
        meta.as_object_mut().unwrap().remove("due");
        changes.insert(k.to_vec(), serde_json::to_vec(&meta).unwrap());
    }
    spool.store.apply(changes).unwrap();
    assert!(spool.due_after("default", None, 10).unwrap().is_empty());
    drop(spool);

    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let (index, truth) = index_and_truth(&spool);
    assert_eq!(index.len(), 2500, "the held message is not indexed");
    assert_eq!(index, truth);
    let index = on_default(index);
    // Paged reads give the same, in order.
    let mut paged = Vec::new();
    let mut after: Option<(u64, String)> = None;
    loop {
        let page = spool
            .due_after(
                "default",
                after.as_ref().map(|(at, id)| (*at, id.as_str())),
                333,
            )
            .unwrap();
        let Some(last) = page.last().cloned() else {
            break;
        };
        paged.extend(page);
        after = Some(last);
    }
    assert_eq!(paged, index.into_iter().collect::<Vec<_>>());
    assert_eq!(spool.build_due_index().unwrap(), 0, "built once");
}

/// Every prefix of an in-order change that moves a message's due time
/// leaves an entry for the due time its records say: the new entry is the
/// first write, the old one goes last.
#[tokio::test]
async fn a_change_writes_the_new_entry_first_and_removes_the_old_last() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let mut env = envelope(&spool, 2, 100);
    spool.accept_bytes(&mut env, &[], b"x\r\n").await.unwrap();
    env.recipients[0].next_attempt = 500;
    env.recipients[1].next_attempt = 700;
    let mut changes = Changes::in_order();
    let place = Place {
        route: "default".into(),
        at: Some(500),
    };
    super::super::writes::put_changed(&mut changes, &env, &[0, 1], Some(&d(100)), &place);
    let ops: Vec<(Vec<u8>, bool)> = changes
        .ops
        .iter()
        .map(|(k, v)| (k.to_vec(), v.is_some()))
        .collect();
    assert_eq!(ops.first(), Some(&(key(&d(500), &env.id), true)));
    assert_eq!(ops.last(), Some(&(key(&d(100), &env.id), false)));
}

/// What a cut change or an older version leaves (records due at one time,
/// the index at another, or no entry) is repaired from the records.
#[tokio::test]
async fn a_disagreeing_index_is_repaired_from_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let mut env = envelope(&spool, 2, 100);
    spool.accept_bytes(&mut env, &[], b"x\r\n").await.unwrap();
    // Only the recipient records of a change made it: they say 300.
    env.recipients[0].next_attempt = 300;
    env.recipients[1].next_attempt = 400;
    let mut changes = Changes::new();
    for i in 0..2 {
        super::super::writes::put_recipient(&mut changes, &env, i);
    }
    spool.store.apply(changes).unwrap();
    let stored = spool.load(&env.id).unwrap().unwrap();
    assert!(spool.repair_due(&stored).unwrap());
    let (index, truth) = index_and_truth(&spool);
    assert_eq!(index, truth);
    assert_eq!(on_default(truth), [(300, env.id.clone())].into());
    assert!(
        !spool.repair_due(&stored).unwrap(),
        "nothing left to repair"
    );
    // An entry without its message goes at the sweep after a crash.
    let mut changes = Changes::new();
    changes.insert(key(&d(50), "0000000000FFFF"), Vec::new());
    spool.store.apply(changes).unwrap();
    assert_eq!(spool.sweep_orphans().unwrap(), 1);
    assert_eq!(spool.sweep_orphans().unwrap(), 0);
}
