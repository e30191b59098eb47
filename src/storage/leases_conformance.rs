//! The [`LeaseStore`] contract, on Postgres (the only store with leases), each test in a schema of
//! its own. Leases run out by the database's clock, so a test that needs one gone waits for the
//! store to say so (polling `holder`, bounded), never for a fixed time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::task::JoinSet;

use super::LeaseStore;
use super::postgres::{PgLeases, testing};
use crate::domain::{Epoch, GatewayId, Lease, SessionId};

/// Long enough that a lease does not run out during a test by accident.
const LONG: Duration = Duration::from_secs(60);
/// Short enough to wait for; long enough for the few statements a test makes while it is live.
const SHORT: Duration = Duration::from_millis(1000);
/// The bound on any wait for a lease or heartbeat to run out.
const PATIENCE: Duration = Duration::from_secs(10);

fn session(name: &str) -> SessionId {
    SessionId::parse(name).expect("a session id")
}

fn gateway(name: &str) -> GatewayId {
    GatewayId::parse(name).expect("a gateway id")
}

/// Waits until `session` has no live lease, as the store sees it.
async fn until_free(store: &dyn LeaseStore, session: &SessionId) {
    tokio::time::timeout(PATIENCE, async {
        while store.holder(session).await.expect("holder").is_some() {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
    .expect("the lease runs out by its ttl");
}

/// `a` claims `s` for [`SHORT`]; `b` is refused while it is live and takes it once it ran out.
/// Returns both leases.
async fn take_over(store: &dyn LeaseStore, s: &SessionId) -> (Lease, Lease) {
    let (a, b) = (gateway("gw-a"), gateway("gw-b"));
    let first = store.claim(s, &a, SHORT).await.expect("claim").expect("a free session is claimed");
    assert_eq!((&first.session, &first.owner, first.epoch), (s, &a, Epoch(1)), "the first claim is epoch 1");
    assert_eq!(store.holder(s).await.expect("holder"), Some(first.clone()));
    assert!(store.claim(s, &b, LONG).await.expect("claim").is_none(), "a live lease is not taken");
    assert_eq!(store.holder(s).await.expect("holder"), Some(first.clone()), "the refused claim changed nothing");

    until_free(store, s).await;
    assert!(store.renew(&first, LONG).await.expect("renew").is_none(), "a lease that ran out is not renewed");
    assert!(!store.is_current(s, &a, first.epoch).await.expect("is_current"), "nor current");
    assert!(!store.release(&first).await.expect("release"), "nor held, so not released");
    let second = store.claim(s, &b, LONG).await.expect("claim").expect("a lease that ran out is taken");
    assert_eq!((&second.owner, second.epoch), (&b, Epoch(2)));
    (first, second)
}

#[tokio::test]
async fn a_lease_is_taken_over_only_once_it_ran_out() {
    let test = testing::fresh(2).await;
    let store = test.db.leases();
    let s = session("tienda");
    let (_, second) = take_over(&store, &s).await;
    assert_eq!(store.holder(&s).await.expect("holder"), Some(second.clone()));
    assert_eq!(store.live().await.expect("live"), [second]);
}

#[tokio::test]
async fn the_old_holder_is_fenced_off_after_a_takeover() {
    let test = testing::fresh(2).await;
    let store = test.db.leases();
    let s = session("tienda");
    let (first, second) = take_over(&store, &s).await;

    assert!(store.renew(&first, LONG).await.expect("renew").is_none(), "the old epoch is not renewed");
    assert!(!store.is_current(&s, &first.owner, first.epoch).await.expect("is_current"));
    assert!(!store.release(&first).await.expect("release"), "the old epoch releases nothing");
    // Not even the old owner with the new epoch, nor the new owner with the old one.
    assert!(!store.is_current(&s, &first.owner, second.epoch).await.expect("is_current"));
    assert!(!store.is_current(&s, &second.owner, first.epoch).await.expect("is_current"));

    assert!(store.is_current(&s, &second.owner, second.epoch).await.expect("is_current"));
    assert_eq!(store.holder(&s).await.expect("holder"), Some(second.clone()), "the new lease is untouched");
    let renewed = store.renew(&second, LONG).await.expect("renew").expect("the new holder renews");
    assert_eq!((&renewed.owner, renewed.epoch), (&second.owner, second.epoch), "a renewal keeps the epoch");
    assert!(renewed.expires_at_ms >= second.expires_at_ms);
}

#[tokio::test]
async fn a_released_lease_is_claimed_at_once_with_a_higher_epoch() {
    let test = testing::fresh(2).await;
    let store = test.db.leases();
    let (s, other) = (session("tienda"), session("otra"));
    let (a, b) = (gateway("gw-a"), gateway("gw-b"));
    let first = store.claim(&s, &a, LONG).await.expect("claim").expect("free");
    let untouched = store.claim(&other, &a, LONG).await.expect("claim").expect("free");

    assert!(store.release(&first).await.expect("release"));
    assert_eq!(store.holder(&s).await.expect("holder"), None);
    assert!(!store.is_current(&s, &a, first.epoch).await.expect("is_current"));
    assert!(store.renew(&first, LONG).await.expect("renew").is_none(), "a released lease is not renewed");
    assert!(!store.release(&first).await.expect("release"), "released already");
    assert_eq!(store.live().await.expect("live"), std::slice::from_ref(&untouched), "only that session was released");

    let second = store.claim(&s, &b, LONG).await.expect("claim").expect("a released lease is free at once");
    assert_eq!((&second.owner, second.epoch), (&b, Epoch(2)), "a release keeps the epoch");
    assert!(!store.release(&first).await.expect("release"), "the old lease cannot release the new one");
    assert_eq!(store.holder(&s).await.expect("holder"), Some(second.clone()));
    assert_eq!(untouched.epoch, Epoch(1), "epochs are per session");

    // Released at epoch 2, the next claim is epoch 3: the epoch is kept, not reset.
    assert!(store.release(&second).await.expect("release"));
    let third = store.claim(&s, &a, LONG).await.expect("claim").expect("free again");
    assert_eq!((&third.owner, third.epoch), (&a, Epoch(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_twenty_gateways_claiming_one_free_session_at_once_exactly_one_wins() {
    const CLAIMERS: usize = 20;
    /// A race can come out right by chance; several make that unlikely.
    const ROUNDS: usize = 3;
    let test = testing::fresh(CLAIMERS as u32).await;
    let store = Arc::new(test.db.leases());
    // Every claimer has a connection ready, so the claims meet in the database, not in the pool.
    let mut warm = JoinSet::new();
    for _ in 0..CLAIMERS {
        let store = store.clone();
        warm.spawn(async move { store.holder(&session("calentando")).await.expect("holder") });
    }
    while warm.join_next().await.is_some() {}
    for round in 0..ROUNDS {
        race(&store, &session(&format!("disputada_{round}")), CLAIMERS).await;
    }
}

/// `claimers` gateways claim `s` at once; exactly one may win.
async fn race(store: &Arc<PgLeases>, s: &SessionId, claimers: usize) {
    let start = Arc::new(Barrier::new(claimers));
    let mut claims = JoinSet::new();
    for n in 0..claimers {
        let (store, s, start) = (store.clone(), s.clone(), start.clone());
        claims.spawn(async move {
            let me = gateway(&format!("gw-{n}"));
            start.wait().await;
            (me.clone(), store.claim(&s, &me, LONG).await.expect("claim"))
        });
    }
    let mut winners = Vec::new();
    let mut answers = 0;
    while let Some(joined) = tokio::time::timeout(PATIENCE, claims.join_next()).await.expect("claims answer") {
        let (me, lease) = joined.expect("a claimer");
        answers += 1;
        if let Some(lease) = lease {
            assert_eq!(lease.owner, me);
            winners.push(lease);
        }
    }
    assert_eq!(answers, claimers);
    assert_eq!(winners.len(), 1, "exactly one claim wins: {winners:?}");
    assert_eq!(winners[0].epoch, Epoch(1), "the losers did not move the epoch");
    assert_eq!(store.holder(s).await.expect("holder").as_ref(), winners.first());
}

#[tokio::test]
async fn a_gateway_claiming_again_gets_a_new_epoch_and_the_old_one_is_over() {
    let test = testing::fresh(2).await;
    let store = test.db.leases();
    let (s, a) = (session("tienda"), gateway("gw-a"));
    let first = store.claim(&s, &a, LONG).await.expect("claim").expect("free");
    let again = store.claim(&s, &a, LONG).await.expect("claim").expect("its own lease");
    assert_eq!((&again.owner, again.epoch), (&a, Epoch(2)));

    assert!(!store.is_current(&s, &a, first.epoch).await.expect("is_current"), "the old epoch is over");
    assert!(store.is_current(&s, &a, again.epoch).await.expect("is_current"));
    assert!(store.renew(&first, LONG).await.expect("renew").is_none());
    assert!(!store.release(&first).await.expect("release"), "the old epoch cannot release the new one");
    assert_eq!(store.holder(&s).await.expect("holder"), Some(again));
}

#[tokio::test]
async fn a_gateway_counts_in_the_fleet_while_it_beats_and_not_after_it_leaves() {
    let test = testing::fresh(2).await;
    let store = test.db.leases();
    let (a, b) = (gateway("gw-a"), gateway("gw-b"));
    assert!(store.live_gateways().await.expect("live").is_empty());
    store.heartbeat(&b, LONG).await.expect("heartbeat");
    store.heartbeat(&a, SHORT).await.expect("heartbeat");
    assert_eq!(store.live_gateways().await.expect("live"), [a.clone(), b.clone()], "by id");

    tokio::time::timeout(PATIENCE, async {
        while store.live_gateways().await.expect("live").contains(&a) {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
    .expect("a heartbeat runs out by its ttl");
    assert_eq!(store.live_gateways().await.expect("live"), std::slice::from_ref(&b), "the other still beats");

    store.heartbeat(&a, LONG).await.expect("heartbeat");
    assert_eq!(store.live_gateways().await.expect("live"), [a.clone(), b.clone()], "a beat brings it back");
    store.leave(&b).await.expect("leave");
    assert_eq!(store.live_gateways().await.expect("live"), [a], "a gateway that left is gone at once");
    store.leave(&b).await.expect("leaving twice is harmless");
}

#[tokio::test]
async fn a_waiter_learns_how_long_the_holders_lease_has_left_by_the_databases_clock() {
    let test = testing::fresh(2).await;
    let store = test.db.leases();
    let s = session("remaining");
    assert_eq!(store.remaining(&s).await.expect("remaining"), None, "nobody holds it");
    let lease = store.claim(&s, &gateway("gw-a"), LONG).await.expect("claim").expect("free");
    let (holder, left) = store.remaining(&s).await.expect("remaining").expect("held");
    assert_eq!(holder, lease);
    assert!(left > LONG - Duration::from_secs(5) && left <= LONG, "{left:?} of {LONG:?}");
    assert!(store.release(&lease).await.expect("release"));
    assert_eq!(store.remaining(&s).await.expect("remaining"), None, "released");
}

#[tokio::test]
async fn a_gateway_that_let_a_lease_run_out_no_longer_counts_while_its_heartbeat_lasts() {
    let test = testing::fresh(2).await;
    let store = test.db.leases();
    let (a, b) = (gateway("gw-a"), gateway("gw-b"));
    store.heartbeat(&a, LONG).await.expect("heartbeat");
    store.heartbeat(&b, LONG).await.expect("heartbeat");
    let s = session("abandoned");
    let lease = store.claim(&s, &a, SHORT).await.expect("claim").expect("free");
    assert_eq!(store.live_gateways().await.expect("live"), [a.clone(), b.clone()], "its lease is live");
    until_free(&store, &s).await;
    assert_eq!(store.live_gateways().await.expect("live"), std::slice::from_ref(&b), "presumed dead");
    // Taken over by the other: the row names the new owner, and the first counts again once it
    // beats (it was only slow, say).
    let taken = store.claim(&s, &b, LONG).await.expect("claim").expect("ran out");
    assert!(taken.epoch > lease.epoch);
    assert_eq!(store.live_gateways().await.expect("live"), [a.clone(), b.clone()]);
    // A release is no abandonment.
    let t = session("released");
    let held = store.claim(&t, &a, LONG).await.expect("claim").expect("free");
    assert!(store.release(&held).await.expect("release"));
    assert_eq!(store.live_gateways().await.expect("live"), [a, b]);
}

#[tokio::test]
async fn releases_arrivals_departures_and_registry_changes_are_announced_to_listeners() {
    use super::FleetNotice;
    let test = testing::fresh(2).await;
    let store = test.db.leases();
    let (tx, mut notices) = tokio::sync::mpsc::channel(64);
    let cancel = tokio_util::sync::CancellationToken::new();
    let listener = tokio::spawn({
        let (store, cancel) = (store.clone(), cancel.clone());
        async move { store.listen(tx, cancel).await }
    });
    let mut next =
        async || tokio::time::timeout(PATIENCE, notices.recv()).await.expect("a notice in time").expect("listening");
    assert_eq!(next().await, FleetNotice::Missed, "whatever came before the listener is missed");

    // Other tests' schemas share the channels: look for this test's own ids.
    let tag = format!("{}_{}", std::process::id(), crate::storage::now_ms());
    let (s, a) = (session(&format!("notice_{tag}")), gateway(&format!("gw-{tag}")));
    let lease = store.claim(&s, &a, LONG).await.expect("claim").expect("free");
    assert!(store.publish_state(&lease, &serde_json::json!({"status": "connected"})).await.expect("publish"));
    assert!(store.release(&lease).await.expect("release"));
    store.heartbeat(&a, LONG).await.expect("heartbeat");
    store.heartbeat(&a, LONG).await.expect("a second beat of the same run is not announced");
    store.leave(&a).await.expect("leave");
    let registry = test.db.registry();
    let entry = crate::domain::SessionEntry {
        session_id: s.clone(),
        description: None,
        metadata: None,
        extra: serde_json::Map::new(),
    };
    assert!(super::SessionRegistry::add(&registry, entry).await.expect("add"));
    assert!(super::SessionRegistry::remove(&registry, &s).await.expect("remove"));
    let (command, reply) = (format!("{{\"to\":\"{tag}\"}}"), format!("{{\"answer\":\"{tag}\"}}"));
    store.send(super::MessageKind::Command, &command).await.expect("send a command");
    store.send(super::MessageKind::Reply, &reply).await.expect("send a reply");
    // A batch's parts arrive together and in order.
    let parts: Vec<String> = (0..3).map(|part| format!("{tag} part {part}")).collect();
    store.send_all(super::MessageKind::Events, &parts).await.expect("send a batch");
    let wanted = format!("gw-{tag}");
    store.send(super::MessageKind::StatusesWanted, &wanted).await.expect("send a wish");
    let mut seen = Vec::new();
    while seen.len() < 12 {
        let notice = next().await;
        let ours = match &notice {
            FleetNotice::Released(id) | FleetNotice::SessionsChanged(id) | FleetNotice::StateChanged(id) => id == &s,
            FleetNotice::Members(id) => id == &a,
            FleetNotice::Message(_, message) => message.contains(&tag),
            FleetNotice::Missed => false,
        };
        if ours {
            seen.push(notice);
        }
    }
    assert_eq!(
        seen,
        [
            FleetNotice::StateChanged(s.clone()),
            FleetNotice::Released(s.clone()),
            FleetNotice::Members(a.clone()),
            FleetNotice::Members(a),
            FleetNotice::SessionsChanged(s.clone()),
            FleetNotice::SessionsChanged(s),
            FleetNotice::Message(super::MessageKind::Command, command),
            FleetNotice::Message(super::MessageKind::Reply, reply),
            FleetNotice::Message(super::MessageKind::Events, parts[0].clone()),
            FleetNotice::Message(super::MessageKind::Events, parts[1].clone()),
            FleetNotice::Message(super::MessageKind::Events, parts[2].clone()),
            FleetNotice::Message(super::MessageKind::StatusesWanted, wanted),
        ]
    );
    cancel.cancel();
    tokio::time::timeout(PATIENCE, listener).await.expect("the listener stops when cancelled").expect("no panic");
}

#[tokio::test]
async fn a_sessions_state_is_recorded_only_under_its_live_lease_and_never_over_a_later_epoch() {
    let test = testing::fresh(2).await;
    let store = test.db.leases();
    let s = session("state");
    let (a, b) = (gateway("gw-a"), gateway("gw-b"));
    assert_eq!(store.state_of(&s).await.expect("state"), None);

    let first = store.claim(&s, &a, SHORT).await.expect("claim").expect("free");
    let connected = serde_json::json!({"status": "connected", "me": {"phone": "51900000001"}});
    assert!(store.publish_state(&first, &connected).await.expect("publish"));
    let recorded = store.state_of(&s).await.expect("state").expect("recorded");
    assert_eq!((recorded.owner, recorded.state, recorded.live), (a.clone(), connected.clone(), true));

    // The lease runs out: the state stays, no longer live, and its old holder cannot write.
    until_free(&store, &s).await;
    assert!(!store.state_of(&s).await.expect("state").expect("recorded").live);
    assert!(!store.publish_state(&first, &serde_json::json!({"status": "error"})).await.expect("publish"));

    // The new holder writes; a lease that is not the live one (here the old epoch under the new
    // owner's name) cannot.
    let second = store.claim(&s, &b, LONG).await.expect("claim").expect("ran out");
    let connecting = serde_json::json!({"status": "connecting"});
    assert!(store.publish_state(&second, &connecting).await.expect("publish"));
    let stale = Lease { owner: b.clone(), epoch: first.epoch, ..second.clone() };
    assert!(!store.publish_state(&stale, &connected).await.expect("publish"), "not the live lease");
    let recorded = store.state_of(&s).await.expect("state").expect("recorded");
    assert_eq!((recorded.owner, recorded.state, recorded.live), (b, connecting, true));
}
