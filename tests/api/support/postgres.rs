//! A Postgres schema of its own for a test, in `TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), dropped when the handle goes. A test that cannot
//! reach Postgres fails and says why; it never skips.

use std::sync::atomic::{AtomicU32, Ordering};

use whatsapp_gateway::storage::postgres::Database;

/// Where the tests' Postgres is.
pub fn url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh, empty schema.
pub struct Schema {
    name: String,
}

impl Schema {
    pub async fn fresh() -> Schema {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name =
            format!("api_{}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), rand::random::<u32>());
        let url = url();
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap_or_else(|e| {
            panic!("this test needs Postgres at {url} (set TEST_DATABASE_URL; `bash .ci/run` starts one): {e}")
        });
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut conn)
            .await
            .expect("create the test schema");
        Schema { name }
    }

    /// The URL of this schema, as `DATABASE_URL` would name it.
    pub fn url(&self) -> String {
        let url = url();
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}options[search_path]={}", self.name)
    }

    /// The URL of this schema through another address (a proxy in front of the same server).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        let url = self.url();
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (user, rest) = rest.split_once('@').map_or(("", rest), |(user, rest)| (user, rest));
        let path = rest.find('/').map_or("", |slash| &rest[slash..]);
        let user = if user.is_empty() { String::new() } else { format!("{user}@") };
        format!("{scheme}://{user}{addr}{path}")
    }

    /// The host and port the tests' Postgres listens on.
    pub fn server_addr() -> std::net::SocketAddr {
        let url = url();
        let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        let rest = rest.split_once('@').map_or(rest, |(_, rest)| rest);
        let host_port = rest.split(['/', '?']).next().unwrap_or_default();
        let host_port = if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:5432") };
        std::net::ToSocketAddrs::to_socket_addrs(&host_port)
            .ok()
            .and_then(|mut addrs| addrs.next())
            .unwrap_or_else(|| panic!("TEST_DATABASE_URL names no reachable host:port ({host_port})"))
    }

    /// A pool on this schema, migrated: what a gateway connects at start.
    pub async fn connect(&self) -> Database {
        Database::connect(&self.url(), 4).await.expect("connect to the test schema")
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (url(), self.name.clone());
        // Drop runs outside any runtime guarantee: a short thread of its own does the SQL.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            runtime.block_on(async {
                if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {name} CASCADE")))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}
