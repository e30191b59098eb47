//! The fleet's leases in Postgres: one row per session that was ever claimed, and one per gateway
//! that beats.
//!
//! Every decision is one statement that tests the row as it is when the statement runs, so two
//! gateways never both win: a claim is a conditional upsert (`INSERT … ON CONFLICT DO UPDATE …
//! WHERE`), and Postgres makes a claim that meets another's uncommitted row wait for it and then
//! test the row that won. Renewals, releases and fencing checks name the owner *and* the epoch,
//! and count only a lease that has not run out by the database's `now()`.
//!
//! A release notifies the channel `fleet_leases` with the session id, at its commit. Channels are
//! per database, not per schema: a listener takes a notification as a hint to look, never as
//! proof that the session is free.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgRow};
use sqlx::{PgPool, Row};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::{Epoch, GatewayId, Lease, SessionId};
use crate::storage::leases::{FleetNotice, MessageKind, RecordedState};
use crate::storage::{LeaseStore, StorageError, int};

/// The channel a release notifies, with the session id as the payload.
/// Carries the id of every session whose lease is released.
pub const RELEASED_CHANNEL: &str = "fleet_leases";
/// Carries the id of every gateway that joins (its first heartbeat of a run) or leaves the fleet.
pub const MEMBERS_CHANNEL: &str = "fleet_gateways";
/// Carries the id of every session added to or removed from the registry.
pub const SESSIONS_CHANNEL: &str = "fleet_sessions";
/// Carries the id of every session whose state its gateway recorded.
pub const STATES_CHANNEL: &str = "fleet_states";
/// Carries the commands gateways forward to the one that runs a session.
pub const COMMANDS_CHANNEL: &str = "fleet_commands";
/// Carries the answers to those commands.
pub const REPLIES_CHANNEL: &str = "fleet_replies";
/// Carries the id of every session a gateway accepted a message for, when another runs it.
pub const QUEUED_CHANNEL: &str = "fleet_queued";
/// Carries the parts of the batches of events each gateway publishes for the others.
pub const EVENTS_CHANNEL: &str = "fleet_events";
/// Carries the id of every gateway with live subscribers of `message.status` events.
pub const STATUSES_WANTED_CHANNEL: &str = "fleet_statuses_wanted";

/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct PgLeases {
    pool: PgPool,
}

impl PgLeases {
    pub(super) fn new(pool: PgPool) -> PgLeases {
        PgLeases { pool }
    }
}

/// `ttl` as the microseconds an interval holds (an absurd one fails in the database, not here).
fn micros(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX)
}

/// The columns a lease is read from, in this order.
const LEASE_COLUMNS: &str = "session_id, owner, epoch, floor(extract(epoch FROM expires_at) * 1000)::BIGINT";

/// The fence of a write made under `lease`, in that write's own transaction: whether the lease
/// row still names this owner at this epoch, unexpired by the database's clock. The row is read
/// `FOR SHARE`, so a claim by another gateway (an `UPDATE` of it) waits until the write commits:
/// every write under a lease lands before the next holder's claim, or is refused.
pub(super) async fn hold_for_write(conn: &mut sqlx::PgConnection, lease: &Lease) -> Result<bool, sqlx::Error> {
    let held: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM fleet_leases WHERE session_id = $1 AND owner = $2 AND epoch = $3 \
         AND expires_at > now() FOR SHARE",
    )
    .bind(lease.session.as_str())
    .bind(lease.owner.as_str())
    .bind(int(lease.epoch.0))
    .fetch_optional(conn)
    .await?;
    Ok(held.is_some())
}

fn lease_from_row(row: &PgRow) -> Result<Lease, StorageError> {
    let session: String = row.try_get(0)?;
    let owner: String = row.try_get(1)?;
    let epoch: i64 = row.try_get(2)?;
    let expires_at_ms: i64 = row.try_get(3)?;
    Ok(Lease {
        session: SessionId::parse(&session)
            .map_err(|e| StorageError::Failed(format!("a lease names an invalid session id {session:?}: {e}")))?,
        owner: GatewayId::parse(&owner)
            .map_err(|e| StorageError::Failed(format!("a lease names an invalid gateway id {owner:?}: {e}")))?,
        epoch: Epoch(
            u64::try_from(epoch).map_err(|_| StorageError::Failed(format!("a lease has a negative epoch {epoch}")))?,
        ),
        expires_at_ms: u64::try_from(expires_at_ms).unwrap_or(0),
    })
}

#[async_trait]
impl LeaseStore for PgLeases {
    async fn claim(
        &self,
        session: &SessionId,
        gateway: &GatewayId,
        ttl: Duration,
    ) -> Result<Option<Lease>, StorageError> {
        // The WHERE of DO UPDATE is tested against the committed row (after waiting for a claim
        // in flight): free (released), run out, or already the caller's. Otherwise no row comes
        // back.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO fleet_leases AS l (session_id, owner, epoch, expires_at, claimed_at) \
             VALUES ($1, $2, 1, now() + $3::BIGINT * INTERVAL '1 microsecond', now()) \
             ON CONFLICT (session_id) DO UPDATE \
             SET owner = EXCLUDED.owner, epoch = l.epoch + 1, expires_at = EXCLUDED.expires_at, claimed_at = now() \
             WHERE l.owner IS NULL OR l.expires_at <= now() OR l.owner = EXCLUDED.owner \
             RETURNING {LEASE_COLUMNS}"
        )))
        .bind(session.as_str())
        .bind(gateway.as_str())
        .bind(micros(ttl))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(lease_from_row).transpose()
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, StorageError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE fleet_leases SET expires_at = now() + $4::BIGINT * INTERVAL '1 microsecond' \
             WHERE session_id = $1 AND owner = $2 AND epoch = $3 AND expires_at > now() \
             RETURNING {LEASE_COLUMNS}"
        )))
        .bind(lease.session.as_str())
        .bind(lease.owner.as_str())
        .bind(int(lease.epoch.0))
        .bind(micros(ttl))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(lease_from_row).transpose()
    }

    async fn release(&self, lease: &Lease) -> Result<bool, StorageError> {
        // One statement, so one transaction: the notification goes out with the commit of the
        // release it announces, and only when a row was released. The epoch stays, so the next
        // claim still goes above it.
        let released = sqlx::query(
            "WITH released AS ( \
                 UPDATE fleet_leases SET owner = NULL, expires_at = now() \
                 WHERE session_id = $1 AND owner = $2 AND epoch = $3 AND expires_at > now() \
                 RETURNING session_id \
             ) \
             SELECT pg_notify($4, current_schema() || ':' || session_id) FROM released",
        )
        .bind(lease.session.as_str())
        .bind(lease.owner.as_str())
        .bind(int(lease.epoch.0))
        .bind(RELEASED_CHANNEL)
        .fetch_optional(&self.pool)
        .await?;
        Ok(released.is_some())
    }

    async fn is_current(&self, session: &SessionId, owner: &GatewayId, epoch: Epoch) -> Result<bool, StorageError> {
        let current: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM fleet_leases \
             WHERE session_id = $1 AND owner = $2 AND epoch = $3 AND expires_at > now())",
        )
        .bind(session.as_str())
        .bind(owner.as_str())
        .bind(int(epoch.0))
        .fetch_one(&self.pool)
        .await?;
        Ok(current)
    }

    async fn holder(&self, session: &SessionId) -> Result<Option<Lease>, StorageError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {LEASE_COLUMNS} FROM fleet_leases \
             WHERE session_id = $1 AND owner IS NOT NULL AND expires_at > now()"
        )))
        .bind(session.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(lease_from_row).transpose()
    }

    async fn remaining(&self, session: &SessionId) -> Result<Option<(Lease, Duration)>, StorageError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {LEASE_COLUMNS}, ceil(extract(epoch FROM expires_at - now()) * 1000)::BIGINT FROM fleet_leases \
             WHERE session_id = $1 AND owner IS NOT NULL AND expires_at > now()"
        )))
        .bind(session.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let left: i64 = row.try_get(4)?;
        Ok(Some((lease_from_row(&row)?, Duration::from_millis(u64::try_from(left).unwrap_or(0)))))
    }

    async fn live(&self) -> Result<Vec<Lease>, StorageError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {LEASE_COLUMNS} FROM fleet_leases \
             WHERE owner IS NOT NULL AND expires_at > now() ORDER BY session_id"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(lease_from_row).collect()
    }

    async fn heartbeat(&self, gateway: &GatewayId, ttl: Duration) -> Result<(), StorageError> {
        // A gateway whose heartbeat had run out starts a new run.
        // A gateway starting a run (new, or back after its heartbeat ran out) is announced, so
        // that the others count it at once.
        sqlx::query(
            "WITH beat AS ( \
                 INSERT INTO fleet_gateways AS g (gateway_id, expires_at, started_at) \
                 VALUES ($1, now() + $2::BIGINT * INTERVAL '1 microsecond', now()) \
                 ON CONFLICT (gateway_id) DO UPDATE \
                 SET expires_at = EXCLUDED.expires_at, \
                     started_at = CASE WHEN g.expires_at <= now() THEN now() ELSE g.started_at END \
                 RETURNING gateway_id, started_at = now() AS joined \
             ) \
             SELECT pg_notify($3, current_schema() || ':' || gateway_id) FROM beat WHERE joined",
        )
        .bind(gateway.as_str())
        .bind(micros(ttl))
        .bind(MEMBERS_CHANNEL)
        .fetch_optional(&self.pool)
        .await?;
        Ok(())
    }

    async fn live_gateways(&self) -> Result<Vec<GatewayId>, StorageError> {
        // A gateway that let a lease run out without releasing it is presumed dead even while its
        // heartbeat lasts (the two run out at nearly the same time): the others count without it,
        // so that its numbers fit in their shares.
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT gateway_id FROM fleet_gateways g WHERE g.expires_at > now() AND NOT EXISTS ( \
                 SELECT 1 FROM fleet_leases l WHERE l.owner = g.gateway_id AND l.expires_at <= now() \
             ) ORDER BY gateway_id",
        )
        .fetch_all(&self.pool)
        .await?;
        ids.iter()
            .map(|id| {
                GatewayId::parse(id)
                    .map_err(|e| StorageError::Failed(format!("the fleet names an invalid gateway id {id:?}: {e}")))
            })
            .collect()
    }

    async fn leave(&self, gateway: &GatewayId) -> Result<(), StorageError> {
        sqlx::query(
            "WITH left_fleet AS (DELETE FROM fleet_gateways WHERE gateway_id = $1 RETURNING gateway_id) \
             SELECT pg_notify($2, current_schema() || ':' || gateway_id) FROM left_fleet",
        )
        .bind(gateway.as_str())
        .bind(MEMBERS_CHANNEL)
        .fetch_optional(&self.pool)
        .await?;
        Ok(())
    }

    async fn publish_state(&self, lease: &Lease, state: &serde_json::Value) -> Result<bool, StorageError> {
        // Fenced twice: the lease must be live and this one, and a state recorded under a later
        // epoch is never overwritten.
        let written = sqlx::query(
            "WITH written AS ( \
                 INSERT INTO fleet_session_states AS s (session_id, owner, epoch, state, updated_at) \
                 SELECT $1, $2, $3, $4::jsonb, now() WHERE EXISTS ( \
                     SELECT 1 FROM fleet_leases \
                     WHERE session_id = $1 AND owner = $2 AND epoch = $3 AND expires_at > now() \
                 ) \
                 ON CONFLICT (session_id) DO UPDATE \
                 SET owner = EXCLUDED.owner, epoch = EXCLUDED.epoch, state = EXCLUDED.state, updated_at = now() \
                 WHERE s.epoch <= EXCLUDED.epoch \
                 RETURNING session_id \
             ) \
             SELECT pg_notify($5, current_schema() || ':' || session_id) FROM written",
        )
        .bind(lease.session.as_str())
        .bind(lease.owner.as_str())
        .bind(int(lease.epoch.0))
        .bind(state.to_string())
        .bind(STATES_CHANNEL)
        .fetch_optional(&self.pool)
        .await?;
        Ok(written.is_some())
    }

    async fn state_of(&self, session: &SessionId) -> Result<Option<RecordedState>, StorageError> {
        let row = sqlx::query(
            "SELECT s.owner, s.state::text, EXISTS ( \
                 SELECT 1 FROM fleet_leases l \
                 WHERE l.session_id = s.session_id AND l.owner = s.owner AND l.epoch = s.epoch AND l.expires_at > now() \
             ) FROM fleet_session_states s WHERE s.session_id = $1",
        )
        .bind(session.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let owner: String = row.try_get(0)?;
        let state: String = row.try_get(1)?;
        let live: bool = row.try_get(2)?;
        let owner = GatewayId::parse(&owner)
            .map_err(|e| StorageError::Failed(format!("a session state names an invalid gateway id {owner:?}: {e}")))?;
        let state = serde_json::from_str(&state).map_err(StorageError::failed)?;
        Ok(Some(RecordedState { owner, state, live }))
    }

    async fn send(&self, kind: MessageKind, message: &str) -> Result<(), StorageError> {
        sqlx::query("SELECT pg_notify($1, current_schema() || ':' || $2)")
            .bind(channel(kind))
            .bind(message)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn send_all(&self, kind: MessageKind, messages: &[String]) -> Result<(), StorageError> {
        // One statement, one transaction: Postgres delivers its notifications together, in the
        // order they were made, at its commit.
        sqlx::query("SELECT pg_notify($1, current_schema() || ':' || m) FROM unnest($2::text[]) AS m")
            .bind(channel(kind))
            .bind(messages)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn listen(&self, to: mpsc::Sender<FleetNotice>, cancel: CancellationToken) {
        // Every notice is sent as `schema:payload`: fleets on other schemas of the same database
        // share the channels, and their notices are not this fleet's.
        let schema = loop {
            match sqlx::query_scalar::<_, String>("SELECT current_schema()").fetch_one(&self.pool).await {
                Ok(schema) => break format!("{schema}:"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen to the fleet's notices; trying again");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(LISTEN_RETRY) => {}
                    }
                }
            }
        };
        let mut listener = loop {
            let connected = async {
                let mut listener = PgListener::connect_with(&self.pool).await?;
                listener
                    .listen_all([
                        RELEASED_CHANNEL,
                        MEMBERS_CHANNEL,
                        SESSIONS_CHANNEL,
                        STATES_CHANNEL,
                        COMMANDS_CHANNEL,
                        REPLIES_CHANNEL,
                        QUEUED_CHANNEL,
                        EVENTS_CHANNEL,
                        STATUSES_WANTED_CHANNEL,
                    ])
                    .await?;
                Ok::<_, sqlx::Error>(listener)
            };
            match connected.await {
                Ok(listener) => break listener,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen to the fleet's notices; trying again");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(LISTEN_RETRY) => {}
                    }
                }
            }
        };
        // Whatever was announced before the listener started is missed.
        if to.send(FleetNotice::Missed).await.is_err() {
            return;
        }
        loop {
            let received = tokio::select! {
                () = cancel.cancelled() => return,
                received = listener.try_recv() => received,
            };
            let notice = match received {
                Ok(Some(notification)) => match notification
                    .payload()
                    .strip_prefix(schema.as_str())
                    .and_then(|payload| notice(notification.channel(), payload))
                {
                    Some(notice) => notice,
                    None => continue,
                },
                // The connection was lost, and what was sent meanwhile with it; the next call
                // connects again.
                Ok(None) => FleetNotice::Missed,
                Err(e) => {
                    tracing::warn!(error = %e, "the fleet's notices are interrupted; listening again");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(LISTEN_RETRY) => {}
                    }
                    FleetNotice::Missed
                }
            };
            if to.send(notice).await.is_err() {
                return;
            }
        }
    }
}

/// The channel that carries what a gateway sends as `kind`.
fn channel(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Command => COMMANDS_CHANNEL,
        MessageKind::Reply => REPLIES_CHANNEL,
        MessageKind::Queued => QUEUED_CHANNEL,
        MessageKind::Events => EVENTS_CHANNEL,
        MessageKind::StatusesWanted => STATUSES_WANTED_CHANNEL,
    }
}

/// How long to wait before listening again after a failure.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// One notification of this fleet (its schema prefix taken off) as a notice; `None` for a payload
/// that names nothing valid.
fn notice(channel: &str, payload: &str) -> Option<FleetNotice> {
    match channel {
        RELEASED_CHANNEL => SessionId::parse(payload).ok().map(FleetNotice::Released),
        MEMBERS_CHANNEL => GatewayId::parse(payload).ok().map(FleetNotice::Members),
        SESSIONS_CHANNEL => SessionId::parse(payload).ok().map(FleetNotice::SessionsChanged),
        STATES_CHANNEL => SessionId::parse(payload).ok().map(FleetNotice::StateChanged),
        COMMANDS_CHANNEL => Some(FleetNotice::Message(MessageKind::Command, payload.to_owned())),
        REPLIES_CHANNEL => Some(FleetNotice::Message(MessageKind::Reply, payload.to_owned())),
        QUEUED_CHANNEL => Some(FleetNotice::Message(MessageKind::Queued, payload.to_owned())),
        EVENTS_CHANNEL => Some(FleetNotice::Message(MessageKind::Events, payload.to_owned())),
        STATUSES_WANTED_CHANNEL => Some(FleetNotice::Message(MessageKind::StatusesWanted, payload.to_owned())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::postgres::PgListener;

    use super::*;
    use crate::storage::postgres::testing;

    fn gateway(name: &str) -> GatewayId {
        GatewayId::parse(name).expect("a gateway id")
    }

    /// Channels are shared by every schema of the database, so the sessions here have names no
    /// other test uses, and notifications for other sessions are skipped.
    #[tokio::test]
    async fn a_release_notifies_with_the_session_id_and_a_refused_one_does_not() {
        let test = testing::fresh(2).await;
        let leases = test.db.leases();
        let mut listener = PgListener::connect_with(&test.db.pool).await.expect("a listener");
        listener.listen(RELEASED_CHANNEL).await.expect("listen");

        let tag = format!("{}_{}", std::process::id(), crate::storage::now_ms());
        let refused = SessionId::parse(&format!("refused_{tag}")).expect("a session id");
        let freed = SessionId::parse(&format!("freed_{tag}")).expect("a session id");
        let a = leases.claim(&refused, &gateway("gw-a"), Duration::from_secs(60)).await.expect("claim").expect("free");
        let b = leases.claim(&freed, &gateway("gw-a"), Duration::from_secs(60)).await.expect("claim").expect("free");

        // A stale epoch is refused and announces nothing; the next release announces its session.
        let stale = Lease { epoch: Epoch(a.epoch.0 + 1), ..a.clone() };
        assert!(!leases.release(&stale).await.expect("release"));
        assert!(leases.release(&b).await.expect("release"));

        let first = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let notification = listener.recv().await.expect("a notification");
                if notification.payload().ends_with(&tag) {
                    return notification.payload().to_owned();
                }
            }
        })
        .await
        .expect("the release is announced within 10 s");
        // Sent as `schema:session`, so that fleets on other schemas can tell it is not theirs.
        assert_eq!(first.rsplit_once(':').map(|(_, id)| id), Some(freed.as_str()), "{first}");
        assert_eq!(leases.holder(&refused).await.expect("holder"), Some(a), "the refused release changed nothing");
    }

    /// A write under the live lease holds the lease row until it commits: a claim by another
    /// gateway after the lease ran out waits for it, so the write lands before the claim, or is
    /// refused after it.
    #[tokio::test]
    async fn a_claim_waits_for_a_write_in_flight_under_the_lease_it_takes() {
        let test = testing::fresh(4).await;
        let leases = test.db.leases();
        let shop = SessionId::parse("tienda").expect("a session id");
        let held = leases.claim(&shop, &gateway("gw-a"), Duration::from_secs(1)).await.expect("claim").expect("free");
        let mut write = test.db.pool.begin().await.expect("begin");
        assert!(hold_for_write(&mut write, &held).await.expect("hold"), "A holds the lease");
        // Once the lease has run out, B claims; the claim waits while A's write is open.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let claim = tokio::spawn({
            let (leases, shop) = (leases.clone(), shop.clone());
            async move { leases.claim(&shop, &gateway("gw-b"), Duration::from_secs(60)).await }
        });
        let writer: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *write).await.expect("pid");
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let blocked: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)))",
                )
                .bind(writer)
                .fetch_one(&test.db.pool)
                .await
                .expect("pg_stat_activity");
                if blocked {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("B's claim waits on A's write within 10 s");
        assert!(!claim.is_finished(), "the claim waits for the write in flight");
        write.commit().await.expect("commit");
        let claimed = tokio::time::timeout(Duration::from_secs(10), claim)
            .await
            .expect("the claim goes on once the write is committed")
            .expect("the claim's task")
            .expect("claim");
        let claimed = claimed.expect("the lease had run out");
        assert_eq!((claimed.owner.as_str(), claimed.epoch.0), ("gw-b", held.epoch.0 + 1));
        // A's lease is stale now: a write under it is refused.
        let mut late = test.db.pool.begin().await.expect("begin");
        assert!(!hold_for_write(&mut late, &held).await.expect("hold"), "a stale epoch holds nothing");
        assert!(hold_for_write(&mut late, &claimed).await.expect("hold"), "B holds it");
        // Ended here: the schema's drop would wait for its row lock.
        late.rollback().await.expect("rollback");
    }
}
