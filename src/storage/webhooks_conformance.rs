//! One suite for every [`WebhookStore`]: SQLite in a temporary folder, Postgres in a schema of
//! its own. Times are given, not read from the clock, so retries and leases are checked exactly.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::WebhookStore;
use super::webhooks::Claim;
use crate::domain::{
    DeliveryOutcome, Endpoint, EnvEndpoint, EventKind, GONE, NewDelivery, OUTBOX_FULL, Owner, Viewer,
    WebhookDeliveryStatus, WebhookFormat, WebhookSecret,
};

const T0: u64 = 1_000_000;
const LEASE: Duration = Duration::from_secs(60);

pub(super) fn endpoint(owner: Owner, created_at: u64) -> Endpoint {
    Endpoint {
        id: Endpoint::new_id(),
        url: format!("http://receiver.test/{created_at}"),
        secret: WebhookSecret::generate(),
        events: None,
        sessions: None,
        created_at,
        disabled: None,
        owner,
        format: WebhookFormat::Standard,
    }
}

fn delivery(endpoint: &Endpoint, event_id: &str, session: &str) -> NewDelivery {
    NewDelivery {
        endpoint_id: endpoint.id.clone(),
        event_id: event_id.to_owned(),
        event: EventKind::SessionStatus,
        session_id: session.to_owned(),
        body: format!("{{\"id\":\"{event_id}\"}}"),
        path: String::new(),
    }
}

fn events(claim: &Claim) -> Vec<&str> {
    claim.deliveries.iter().map(|d| d.event_id.as_str()).collect()
}

async fn claim(store: &dyn WebhookStore, endpoint: &Endpoint, limit: usize, now: u64) -> Claim {
    store.claim(&endpoint.id, limit, now, LEASE).await.expect("claim").expect("an enabled endpoint")
}

async fn endpoints_and_owners(store: &dyn WebhookStore) {
    let sales = Owner { name: "ventas".into(), admin: false };
    let mut first = endpoint(sales.clone(), 10);
    first.events = Some(vec![EventKind::MessageReceived, EventKind::MessageStatus]);
    first.sessions = Some(vec!["tienda".into(), "otra".into()]);
    first.format = WebhookFormat::Seed002;
    let second = endpoint(Owner::admin(), 20);
    store.create(&first).await.expect("create");
    store.create(&second).await.expect("create");

    // Everything comes back as it was written.
    let got = store.endpoint(&first.id).await.expect("get").expect("stored");
    assert_eq!(
        (&got.url, &got.secret, &got.events, &got.sessions, got.created_at, &got.owner, got.format, &got.disabled),
        (&first.url, &first.secret, &first.events, &first.sessions, 10, &sales, WebhookFormat::Seed002, &None)
    );
    assert!(got.wants(EventKind::MessageReceived, "tienda"));
    assert!(!got.wants(EventKind::MessageReceived, "nadie"), "another session");
    assert!(!got.wants(EventKind::SessionQr, "tienda"), "another event");
    assert!(store.endpoint("wh_nobody").await.expect("get").is_none());

    // The admin sees every endpoint, oldest first; a token only its own; another none.
    let ids = |list: Vec<Endpoint>| list.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(store.endpoints(&Viewer::Admin).await.expect("list")), [first.id.clone(), second.id.clone()]);
    assert_eq!(ids(store.endpoints(&Viewer::Token("ventas".into())).await.expect("list")), [first.id.clone()]);
    assert!(store.endpoints(&Viewer::Token("otro".into())).await.expect("list").is_empty());
    let with_pending = store.endpoints_with_pending(&Viewer::Token("ventas".into())).await.expect("list");
    assert_eq!(with_pending.iter().map(|(e, n)| (e.id.as_str(), *n)).collect::<Vec<_>>(), [(first.id.as_str(), 0)]);

    // Another token can neither see nor touch it.
    let other = Viewer::Token("otro".into());
    assert!(store.deliveries(&first.id, &other, None, 10).await.expect("deliveries").is_none());
    assert!(store.retry(&first.id, &other, None, T0).await.expect("retry").is_none());
    assert!(!store.delete(&first.id, &other).await.expect("delete"));
    assert!(store.delete(&first.id, &Viewer::Token("ventas".into())).await.expect("delete"));
    assert!(!store.delete(&first.id, &Viewer::Admin).await.expect("gone already"));
    assert!(store.delete(&second.id, &Viewer::Admin).await.expect("delete"));
    assert!(store.endpoints(&Viewer::Admin).await.expect("list").is_empty());
}

async fn environment_endpoints(store: &dyn WebhookStore) {
    let secret = WebhookSecret::generate();
    let env = EnvEndpoint {
        url: "http://backend.test/hooks".into(),
        secret: None,
        events: Some(vec![EventKind::SessionQr]),
        format: WebhookFormat::Standard,
    };
    store.sync_env_endpoint("env", Some(&env)).await.expect("create");
    let generated = store.endpoint("env").await.expect("get").expect("created").secret;
    // Again without a secret: the generated one stays; the rest follows the variables.
    let moved = EnvEndpoint { url: "http://backend.test/other".into(), format: WebhookFormat::Seed000, ..env.clone() };
    store.sync_env_endpoint("env", Some(&moved)).await.expect("update");
    let got = store.endpoint("env").await.expect("get").expect("kept");
    assert_eq!(
        (&got.secret, got.url.as_str(), got.format),
        (&generated, "http://backend.test/other", WebhookFormat::Seed000)
    );
    assert_eq!(got.owner, Owner::admin());
    let with_secret = EnvEndpoint { secret: Some(secret.clone()), ..env.clone() };
    store.sync_env_endpoint("env", Some(&with_secret)).await.expect("update");
    assert_eq!(store.endpoint("env").await.expect("get").expect("kept").secret, secret);

    // A variable unset removes the endpoint and its deliveries: set again, it starts empty.
    let env_endpoint = store.endpoint("env").await.expect("get").expect("kept");
    store.enqueue(&[delivery(&env_endpoint, "e1", "a")], 10, T0).await.expect("enqueue");
    store.sync_env_endpoint("env", None).await.expect("remove");
    assert!(store.endpoint("env").await.expect("get").is_none());
    store.sync_env_endpoint("env", Some(&env)).await.expect("again");
    let listed = store.deliveries("env", &Viewer::Admin, None, 10).await.expect("deliveries").expect("visible");
    assert!(listed.is_empty(), "nothing of the endpoint before");
    store.sync_env_endpoint("env", None).await.expect("remove");
}

async fn claims_in_order(store: &dyn WebhookStore) {
    let target = endpoint(Owner::admin(), 1);
    let quiet = endpoint(Owner::admin(), 2);
    store.create(&target).await.expect("create");
    store.create(&quiet).await.expect("create");

    // Written in order across sessions, each event once per endpoint.
    let batch: Vec<NewDelivery> = [("e1", "a"), ("e2", "b"), ("e3", "a"), ("e4", "c"), ("e5", "b")]
        .iter()
        .map(|(id, session)| delivery(&target, id, session))
        .collect();
    let written = store.enqueue(&batch, 100, T0).await.expect("enqueue");
    assert_eq!(written.len(), 1);
    assert_eq!(
        (written[0].endpoint_id.as_str(), written[0].pending, written[0].outbox_full),
        (target.id.as_str(), 5, 0)
    );
    let again = store.enqueue(&batch[..2], 100, T0).await.expect("again");
    assert_eq!(again[0].pending, 5, "the same events are not written twice");
    assert!(store.enqueue(&[], 100, T0).await.expect("nothing").is_empty());

    // Nothing is claimed before it is due.
    let early = claim(store, &target, 10, T0 - 1).await;
    assert!(early.deliveries.is_empty());
    assert_eq!(early.until, Some(T0), "when the head is due");
    let empty = claim(store, &quiet, 10, T0).await;
    assert_eq!((empty.deliveries.len(), empty.until), (0, None), "nothing pending");

    // The head, in order, under a lease; nobody else gets anything of the endpoint meanwhile.
    let first = claim(store, &target, 3, T0).await;
    assert_eq!(events(&first), ["e1", "e2", "e3"]);
    let first_delivery = &first.deliveries[0];
    assert_eq!(
        (
            first_delivery.session_id.as_str(),
            first_delivery.body.as_str(),
            first_delivery.status,
            first_delivery.attempts
        ),
        ("a", "{\"id\":\"e1\"}", WebhookDeliveryStatus::Pending, 0)
    );
    let until = first.until.expect("a lease");
    assert_eq!(until, T0 + 60_000);
    let held = claim(store, &target, 10, T0 + 1).await;
    assert_eq!((held.deliveries.len(), held.until), (0, Some(until)), "the lease holds the endpoint");

    // Two delivered, then the third fails: retried later, and everything waits behind it.
    let ids: Vec<i64> = first.deliveries.iter().map(|d| d.id).collect();
    let retry = DeliveryOutcome::Retry { error: "the endpoint answered 503".into(), next_attempt_at: T0 + 5_000 };
    let pending = store.settle(&target.id, until, &ids[..2], Some((ids[2], retry)), T0 + 10).await.expect("settle");
    assert_eq!(pending, 3);
    let waiting = claim(store, &target, 10, T0 + 20).await;
    assert_eq!((waiting.deliveries.len(), waiting.until), (0, Some(T0 + 5_000)), "the lease ended; the head waits");
    let retried = claim(store, &target, 10, T0 + 5_000).await;
    assert_eq!(events(&retried), ["e3", "e4", "e5"], "the failed one first, then the rest in order");
    assert_eq!(
        (retried.deliveries[0].attempts, retried.deliveries[0].last_error.as_deref()),
        (1, Some("the endpoint answered 503"))
    );
    let until = retried.until.expect("a lease");
    let all: Vec<i64> = retried.deliveries.iter().map(|d| d.id).collect();
    assert_eq!(store.settle(&target.id, until, &all, None, T0 + 5_001).await.expect("settle"), 0);

    let listed = store.deliveries(&target.id, &Viewer::Admin, None, 10).await.expect("list").expect("visible");
    assert_eq!(
        listed.iter().map(|d| (d.event_id.as_str(), d.status, d.attempts)).collect::<Vec<_>>(),
        [
            ("e5", WebhookDeliveryStatus::Delivered, 1),
            ("e4", WebhookDeliveryStatus::Delivered, 1),
            ("e3", WebhookDeliveryStatus::Delivered, 2),
            ("e2", WebhookDeliveryStatus::Delivered, 1),
            ("e1", WebhookDeliveryStatus::Delivered, 1),
        ],
        "newest first"
    );
    let limited = store.deliveries(&target.id, &Viewer::Admin, None, 2).await.expect("list").expect("visible");
    assert_eq!(limited.len(), 2);
    assert!(claim(store, &target, 10, T0 + 6_000).await.deliveries.is_empty(), "nothing left");
}

async fn leases_end(store: &dyn WebhookStore) {
    let target = endpoint(Owner::admin(), 1);
    store.create(&target).await.expect("create");
    store.enqueue(&[delivery(&target, "e1", "a"), delivery(&target, "e2", "a")], 100, T0).await.expect("enqueue");
    let short = Duration::from_secs(1);
    let first = store.claim(&target.id, 10, T0, short).await.expect("claim").expect("enabled");
    assert_eq!(events(&first), ["e1", "e2"]);
    // A claimer that never settles: its lease ends by itself, and the same deliveries go out again.
    let second = store.claim(&target.id, 10, T0 + 1_000, short).await.expect("claim").expect("enabled");
    assert_eq!(events(&second), ["e1", "e2"], "the lease ended");
    // The first claimer settling late records its outcomes, but leaves the new lease alone.
    let late = [first.deliveries[0].id];
    store.settle(&target.id, first.until.expect("lease"), &late, None, T0 + 1_001).await.expect("settle");
    let held = store.claim(&target.id, 10, T0 + 1_002, short).await.expect("claim").expect("enabled");
    assert_eq!((held.deliveries.len(), held.until), (0, second.until), "still the second claimer's");
    let rest = [second.deliveries[1].id];
    store.settle(&target.id, second.until.expect("lease"), &rest, None, T0 + 1_003).await.expect("settle");
    assert_eq!(store.claim(&target.id, 10, T0 + 1_004, short).await.expect("claim").expect("enabled").until, None);
}

/// A claimer extends its lease while it posts; once its lease is taken over or ended, it cannot.
async fn leases_extend(store: &dyn WebhookStore) {
    let target = endpoint(Owner::admin(), 1);
    store.create(&target).await.expect("create");
    store.enqueue(&[delivery(&target, "e1", "a"), delivery(&target, "e2", "a")], 100, T0).await.expect("enqueue");
    let short = Duration::from_secs(1);
    let first = store.claim(&target.id, 10, T0, short).await.expect("claim").expect("enabled");
    let until = first.until.expect("lease");
    assert_eq!(until, T0 + 1_000);

    // Extended from now, and the extension is what holds others off.
    let extended = store.extend(&target.id, until, short, T0 + 600).await.expect("extend");
    assert_eq!(extended, Some(T0 + 1_600));
    let held = store.claim(&target.id, 10, T0 + 1_200, short).await.expect("claim").expect("enabled");
    assert_eq!((held.deliveries.len(), held.until), (0, extended), "still the first claimer's");
    // Only the lease as it is now: the old end no longer names it.
    assert_eq!(store.extend(&target.id, until, short, T0 + 1_300).await.expect("extend"), None);
    // Never shortened.
    let until = extended.expect("extended");
    assert_eq!(store.extend(&target.id, until, short, T0).await.expect("extend"), Some(until));
    // Past its end but not taken over: still the claim's.
    let late = store.extend(&target.id, until, short, T0 + 2_000).await.expect("extend");
    assert_eq!(late, Some(T0 + 3_000));
    let until = late.expect("extended");

    // Taken over once it ended: the first claimer's extension is refused; it settles what it
    // delivered, and what stopped it does not touch the new claimer's deliveries.
    let second = store.claim(&target.id, 10, until, short).await.expect("claim").expect("enabled");
    assert_eq!(events(&second), ["e1", "e2"], "the lease ended");
    assert_eq!(store.extend(&target.id, until, short, until + 1).await.expect("extend"), None, "taken over");
    let second_until = second.until.expect("lease");
    assert_eq!(store.extend(&target.id, second_until, short, until + 1).await.expect("extend"), Some(until + 1_001));
    let second_until = until + 1_001;
    let e1 = first.deliveries[0].id;
    let e2 = first.deliveries[1].id;
    store.settle(&target.id, second_until, &[e2], None, until + 2).await.expect("settle");
    let stale = Some((e2, DeliveryOutcome::Dead("the endpoint answered 500".into())));
    assert_eq!(store.settle(&target.id, until, &[e1], stale, until + 3).await.expect("settle"), 0);
    let listed = store.deliveries(&target.id, &Viewer::Admin, None, 10).await.expect("list").expect("visible");
    assert_eq!(
        listed.iter().map(|d| d.status).collect::<Vec<_>>(),
        [WebhookDeliveryStatus::Delivered, WebhookDeliveryStatus::Delivered],
        "a stale claimer's failure does not undo a delivery"
    );
    // Ended: nothing left to extend.
    assert_eq!(store.extend(&target.id, second_until, short, until + 4).await.expect("extend"), None, "settled");
    assert_eq!(store.extend("wh_nobody", second_until, short, until + 4).await.expect("extend"), None, "unknown");
}

async fn dead_letters_and_replay(store: &dyn WebhookStore) {
    let owner = Owner { name: "ventas".into(), admin: false };
    let viewer = Viewer::Token("ventas".into());
    let target = endpoint(owner, 1);
    store.create(&target).await.expect("create");

    // Beyond the outbox's bound, deliveries are written as failed at once.
    let batch: Vec<NewDelivery> = ["e1", "e2", "e3", "e4"].iter().map(|id| delivery(&target, id, "a")).collect();
    let written = store.enqueue(&batch, 2, T0).await.expect("enqueue");
    assert_eq!((written[0].pending, written[0].outbox_full), (2, 2));
    let failed = store
        .deliveries(&target.id, &viewer, Some(WebhookDeliveryStatus::Failed), 10)
        .await
        .expect("list")
        .expect("visible");
    assert_eq!(
        failed.iter().map(|d| (d.event_id.as_str(), d.last_error.as_deref())).collect::<Vec<_>>(),
        [("e4", Some(OUTBOX_FULL)), ("e3", Some(OUTBOX_FULL))]
    );

    // Out of retries: a dead letter.
    let first = claim(store, &target, 1, T0).await;
    let dead = first.deliveries[0].id;
    let outcome = Some((dead, DeliveryOutcome::Dead("the endpoint answered 500".into())));
    assert_eq!(store.settle(&target.id, first.until.expect("lease"), &[], outcome, T0 + 1).await.expect("settle"), 1);
    let listed = store.deliveries(&target.id, &viewer, Some(WebhookDeliveryStatus::Failed), 10).await.expect("list");
    let listed = listed.expect("visible");
    assert_eq!(listed.len(), 3);
    assert_eq!((listed[2].event_id.as_str(), listed[2].attempts), ("e1", 1));
    assert_eq!(listed[2].last_error.as_deref(), Some("the endpoint answered 500"));
    assert_eq!(events(&claim(store, &target, 10, T0 + 2).await), ["e2"], "the dead letter no longer holds the queue");
    let lease = claim(store, &target, 10, T0 + 2).await.until.expect("held");
    store.settle(&target.id, lease, &[], None, T0 + 3).await.expect("release");

    // Replay one: pending again, due now, its age counted from now.
    assert_eq!(store.retry(&target.id, &viewer, Some(dead), T0 + 100).await.expect("retry"), Some(1));
    assert_eq!(store.retry(&target.id, &viewer, Some(dead), T0 + 100).await.expect("again"), Some(0), "not failed");
    let replayed = claim(store, &target, 10, T0 + 100).await;
    assert_eq!(events(&replayed), ["e1", "e2"]);
    assert_eq!((replayed.deliveries[0].created_at, replayed.deliveries[0].next_attempt_at), (T0 + 100, T0 + 100));
    let ids: Vec<i64> = replayed.deliveries.iter().map(|d| d.id).collect();
    store.settle(&target.id, replayed.until.expect("lease"), &ids, None, T0 + 101).await.expect("settle");
    // Replay all the rest.
    assert_eq!(store.retry(&target.id, &viewer, None, T0 + 200).await.expect("retry all"), Some(2));
    assert_eq!(events(&claim(store, &target, 10, T0 + 200).await), ["e3", "e4"]);
}

async fn gone_disables_until_replayed(store: &dyn WebhookStore) {
    let target = endpoint(Owner::admin(), 1);
    store.create(&target).await.expect("create");
    store.enqueue(&[delivery(&target, "e1", "a"), delivery(&target, "e2", "a")], 10, T0).await.expect("enqueue");
    let first = claim(store, &target, 10, T0).await;
    let gone = Some((first.deliveries[0].id, DeliveryOutcome::Gone));
    store.settle(&target.id, first.until.expect("lease"), &[], gone, T0 + 1).await.expect("settle");
    let disabled = store.endpoint(&target.id).await.expect("get").expect("kept");
    assert_eq!(disabled.disabled.as_deref(), Some(GONE));
    assert!(!disabled.wants_kind(EventKind::SessionStatus));
    assert!(store.claim(&target.id, 10, T0 + 2, LEASE).await.expect("claim").is_none(), "a disabled endpoint");
    let listed = store.deliveries(&target.id, &Viewer::Admin, None, 10).await.expect("list").expect("visible");
    assert_eq!(
        listed.iter().map(|d| (d.status, d.last_error.as_deref())).collect::<Vec<_>>(),
        [(WebhookDeliveryStatus::Pending, None), (WebhookDeliveryStatus::Failed, Some(GONE))]
    );
    // Replaying is how an operator says it is back.
    assert_eq!(store.retry(&target.id, &Viewer::Admin, None, T0 + 3).await.expect("retry"), Some(1));
    assert!(store.endpoint(&target.id).await.expect("get").expect("kept").disabled.is_none());
    assert_eq!(events(&claim(store, &target, 10, T0 + 3).await), ["e1", "e2"]);
}

async fn deletes_cascade(store: &dyn WebhookStore) {
    let target = endpoint(Owner::admin(), 1);
    let other = endpoint(Owner::admin(), 2);
    store.create(&target).await.expect("create");
    store.create(&other).await.expect("create");
    let batch = [delivery(&target, "e1", "a"), delivery(&other, "e1", "a")];
    let written = store.enqueue(&batch, 10, T0).await.expect("enqueue");
    assert_eq!(
        written.iter().map(|e| (e.endpoint_id.as_str(), e.pending)).collect::<Vec<_>>(),
        [(target.id.as_str(), 1), (other.id.as_str(), 1)]
    );
    assert!(store.delete(&target.id, &Viewer::Admin).await.expect("delete"));
    assert!(store.deliveries(&target.id, &Viewer::Admin, None, 10).await.expect("list").is_none());
    assert!(store.claim(&target.id, 10, T0, LEASE).await.expect("claim").is_none());
    // Events for an endpoint deleted meanwhile are dropped; the others are written.
    let written = store.enqueue(&[delivery(&target, "e2", "a"), delivery(&other, "e2", "a")], 10, T0).await;
    let written = written.expect("enqueue");
    assert_eq!(
        written.iter().map(|e| (e.endpoint_id.as_str(), e.pending)).collect::<Vec<_>>(),
        [(other.id.as_str(), 2)]
    );
    let left = store.endpoints_with_pending(&Viewer::Admin).await.expect("list");
    assert!(left.iter().all(|(e, _)| e.id != target.id), "deleted");
    assert_eq!(left.iter().find(|(e, _)| e.id == other.id).map(|(_, n)| *n), Some(2));
}

/// Last in the suite: a prune deletes every endpoint's settled deliveries, so those of the
/// checks before (all settled before `T1`) go first.
async fn prunes_only_what_is_settled_and_old(store: &dyn WebhookStore) {
    const T1: u64 = T0 + 1_000_000_000;
    store.prune(T1, usize::MAX).await.expect("the suite's earlier deliveries");
    let target = endpoint(Owner::admin(), 1);
    store.create(&target).await.expect("create");
    let batch: Vec<NewDelivery> = ["e1", "e2", "e3", "e4"].iter().map(|id| delivery(&target, id, "a")).collect();
    store.enqueue(&batch, 10, T1).await.expect("enqueue");
    // e1 and e2 delivered at T1 + 10; e3 a dead letter at T1 + 20; e4 claimed and left pending.
    let claimed = claim(store, &target, 10, T1).await;
    let ids: Vec<i64> = claimed.deliveries.iter().map(|d| d.id).collect();
    let dead = Some((ids[2], DeliveryOutcome::Dead("the endpoint answered 500".into())));
    store.settle(&target.id, claimed.until.expect("lease"), &ids[..2], None, T1 + 10).await.expect("settle");
    let again = claim(store, &target, 10, T1 + 20).await;
    assert_eq!(events(&again), ["e3", "e4"]);
    store.settle(&target.id, again.until.expect("lease"), &[], dead, T1 + 20).await.expect("settle");
    let left = async || {
        let all = store.deliveries(&target.id, &Viewer::Admin, None, 10).await.expect("list").expect("visible");
        all.into_iter().map(|d| d.event_id).collect::<Vec<_>>()
    };

    assert_eq!(store.prune(T1 + 10, 10).await.expect("prune"), 0, "changed at the cut-off: kept");
    assert_eq!(store.prune(T1 + 11, 10).await.expect("prune"), 2, "the delivered ones");
    assert_eq!(left().await, ["e4", "e3"]);
    assert_eq!(store.prune(u64::MAX / 2, 10).await.expect("prune"), 1, "the dead letter");
    assert_eq!(left().await, ["e4"], "a pending delivery is never pruned, however old");

    // At most `limit` a round.
    let more: Vec<NewDelivery> = (5..10).map(|n| delivery(&target, &format!("e{n}"), "a")).collect();
    store.enqueue(&more, 10, T1 + 30).await.expect("enqueue");
    let claimed = claim(store, &target, 10, T1 + 30).await;
    let ids: Vec<i64> = claimed.deliveries.iter().map(|d| d.id).collect();
    assert_eq!(ids.len(), 6);
    store.settle(&target.id, claimed.until.expect("lease"), &ids, None, T1 + 40).await.expect("settle");
    let mut rounds = Vec::new();
    for _ in 0..4 {
        rounds.push(store.prune(T1 + 41, 2).await.expect("prune"));
    }
    assert_eq!(rounds, [2, 2, 2, 0]);
    assert!(left().await.is_empty());
}

/// Several claimers at once, as several gateways would: the endpoint's deliveries go to exactly
/// one of them.
async fn claimers_never_share(store: Arc<dyn WebhookStore>) {
    let target = endpoint(Owner::admin(), 1);
    store.create(&target).await.expect("create");
    let batch: Vec<NewDelivery> = (0..20).map(|n| delivery(&target, &format!("e{n}"), "a")).collect();
    store.enqueue(&batch, 100, T0).await.expect("enqueue");
    for round in 0..4u64 {
        let now = T0 + round * 100_000;
        let claims = (0..8).map(|_| {
            let (store, id) = (Arc::clone(&store), target.id.clone());
            tokio::spawn(async move { store.claim(&id, 5, now, LEASE).await })
        });
        let mut seen = HashSet::new();
        let mut winners = Vec::new();
        for handle in claims.collect::<Vec<_>>() {
            let claim = handle.await.expect("claimer").expect("claim").expect("enabled");
            if !claim.deliveries.is_empty() {
                for delivery in &claim.deliveries {
                    assert!(seen.insert(delivery.id), "delivery {} claimed twice", delivery.id);
                }
                winners.push(claim);
            }
        }
        assert_eq!(winners.len(), 1, "one claimer holds the endpoint at a time");
        let winner = &winners[0];
        let expected: Vec<String> = (round * 5..round * 5 + 5).map(|n| format!("e{n}")).collect();
        assert_eq!(events(winner), expected, "in order");
        let ids: Vec<i64> = winner.deliveries.iter().map(|d| d.id).collect();
        store.settle(&target.id, winner.until.expect("lease"), &ids, None, now + 1).await.expect("settle");
    }
}

async fn suite(store: Arc<dyn WebhookStore>) {
    endpoints_and_owners(store.as_ref()).await;
    environment_endpoints(store.as_ref()).await;
    claims_in_order(store.as_ref()).await;
    leases_end(store.as_ref()).await;
    leases_extend(store.as_ref()).await;
    dead_letters_and_replay(store.as_ref()).await;
    gone_disables_until_replayed(store.as_ref()).await;
    deletes_cascade(store.as_ref()).await;
    claimers_never_share(Arc::clone(&store)).await;
    prunes_only_what_is_settled_and_old(store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("wg-storage-webhooks-{}-{}", std::process::id(), super::now_ms()));
    crate::files::private_dir(&dir).expect("dir");
    let store = super::sqlite::SqliteWebhooks::open(&dir.join("webhooks.db")).expect("open");
    suite(Arc::new(store)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_on_postgres() {
    let test = super::postgres::testing::fresh(8).await;
    suite(Arc::new(test.db.webhooks())).await;
}
