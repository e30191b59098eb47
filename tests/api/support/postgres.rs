//! A Postgres schema of its own for a test, in `TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), dropped when the handle goes. A test that cannot
//! reach Postgres fails and says why; it never skips.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

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

/// A TCP proxy in front of Postgres that can cut every connection and refuse new ones, as a
/// restarting server or a broken network does.
pub struct Cuttable {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Cuttable {
    pub async fn start(target: SocketAddr) -> Cuttable {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = tokio::spawn({
            let (cut, links) = (Arc::clone(&cut), Arc::clone(&links));
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue; // dropped: the client sees its connection closed at once
                    }
                    let link = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    links.lock().unwrap().push(link.abort_handle());
                }
            }
        })
        .abort_handle();
        Cuttable { addr, cut, links, accept }
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
