//! Benchmark (not a test): the fake server holding N linked devices at once.
//!
//! The fake server runs as a child process (the crate's own binary) so that its memory can be
//! read from `/proc/<pid>/status` apart from the clients. N real whatsapp-rust clients
//! (in-memory stores) are then linked from this process, each to its own phone number, a few at a
//! time: wait for the QR, `POST /admin/scan`, wait for `Connected`. With all N linked it reads the
//! server's RSS, checks `GET /admin/devices` reports N connected devices, measures the server's
//! CPU while it holds them idle, sends a text from every 100th client to the next client's phone
//! and checks both that phone (`GET /admin/phones/{phone}/messages`) and its linked device got it,
//! and shuts everything down. Every wait is bounded; any failure exits non-zero.
//!
//! ```text
//! cargo bench -p fake-whatsapp --bench devices --profile dev -- 1000
//! DEVICES=50 cargo bench -p fake-whatsapp --bench devices --profile dev
//! ```
//!
//! Knobs (environment): `DEVICES` (default 1000, or the first numeric argument),
//! `CONCURRENCY` (links in flight, default 16), `PREKEYS` (one-time prekeys each client uploads,
//! default 10; whatsapp-rust's default is 812), `IDLE_SECS` (idle CPU window, default 10),
//! `BENCH_TIMEOUT_SECS` (hard limit for the whole run, default 1800), `FAKE_LOG` (the child's
//! `RUST_LOG`, default `warn`; its stderr goes to a file whose warnings are summarised at the end).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use whatsapp_rust::Jid;
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::http::UreqHttpClient;
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::{Event, EventKind};

/// Waiting for the child's address line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Each step of one link (QR shown, scan answered, `Connected`).
const STEP_TIMEOUT: Duration = Duration::from_secs(90);
/// One admin HTTP request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// A sent text reaching the phone and the recipient's device.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Graceful stops (clients, then the server).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Give up linking after this many failures.
const MAX_FAILURES: usize = 10;
/// Linux's USER_HZ, the unit of utime/stime in /proc/<pid>/stat.
const CLOCK_TICKS: f64 = 100.0;

type BenchResult<T> = Result<T, String>;

struct Settings {
    devices: usize,
    concurrency: usize,
    prekeys: usize,
    idle: Duration,
    deadline: Duration,
    fake_log: String,
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

impl Settings {
    fn from_env() -> Self {
        // `cargo bench` passes `--bench`; the device count is the first plain number.
        let from_args = std::env::args().skip(1).find_map(|a| a.parse::<usize>().ok());
        Self {
            devices: from_args.or_else(|| env_usize("DEVICES")).unwrap_or(1000),
            concurrency: env_usize("CONCURRENCY").unwrap_or(16).max(1),
            prekeys: env_usize("PREKEYS").unwrap_or(10),
            idle: Duration::from_secs(env_usize("IDLE_SECS").unwrap_or(10) as u64),
            deadline: Duration::from_secs(env_usize("BENCH_TIMEOUT_SECS").unwrap_or(1800) as u64),
            fake_log: std::env::var("FAKE_LOG").unwrap_or_else(|_| "warn".into()),
        }
    }
}

/// The JSON line the fake-whatsapp binary prints when it is ready.
#[derive(Debug, Clone, Deserialize)]
struct Addresses {
    ws_url: String,
    admin_url: String,
    media_host: String,
    ca_file: PathBuf,
}

// ---------------------------------------------------------------------------------------------
// /proc readings

fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:").unwrap_or(0)
}

fn threads(pid: u32) -> u64 {
    proc_status_kib(pid, "Threads:").unwrap_or(0)
}

/// User + system CPU time of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return 0.0 };
    // After the command name: field 3 (state) is index 0, utime (14) index 11, stime (15) index 12.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (tick(11) + tick(12)) as f64 / CLOCK_TICKS
}

/// Whole-machine CPU from /proc/stat: (busy seconds, all seconds), summed over every CPU.
fn machine_cpu_secs() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let all: u64 = ticks.iter().take(8).sum();
    // idle and iowait are fields 4 and 5
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    ((all - idle) as f64 / CLOCK_TICKS, all as f64 / CLOCK_TICKS)
}

/// Where the machine's CPU went between two readings: the fake server, this process, the rest.
struct CpuWindow {
    fake: f64,
    bench: f64,
    machine: (f64, f64),
    at: Instant,
}

impl CpuWindow {
    fn start(fake_pid: u32) -> Self {
        Self {
            fake: cpu_secs(fake_pid),
            bench: cpu_secs(std::process::id()),
            machine: machine_cpu_secs(),
            at: Instant::now(),
        }
    }

    /// "fake server X s, clients Y s, other processes Z s; machine W% busy"
    fn report(&self, fake_pid: u32) -> String {
        let fake = cpu_secs(fake_pid) - self.fake;
        let bench = cpu_secs(std::process::id()) - self.bench;
        let (busy, all) = machine_cpu_secs();
        let (busy, all) = (busy - self.machine.0, all - self.machine.1);
        let wall = self.at.elapsed().as_secs_f64();
        format!(
            "CPU over {wall:.1} s: fake server {fake:.1} s ({:.0}% of a core), clients {bench:.1} s, other processes {:.1} s; machine {:.0}% busy",
            fake * 100.0 / wall,
            (busy - fake - bench).max(0.0),
            if all > 0.0 { busy * 100.0 / all } else { 0.0 }
        )
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------
// The fake server as a child process

struct FakeProcess {
    child: Child,
    log: PathBuf,
}

impl FakeProcess {
    fn start(dir: &std::path::Path, rust_log: &str) -> BenchResult<(Self, Addresses)> {
        let log = dir.join("fake-whatsapp.log");
        let stderr = std::fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_fake-whatsapp"))
            .args(["--listen", "127.0.0.1:0", "--media-listen", "127.0.0.1:0", "--ca-out"])
            .arg(dir.join("ca.pem"))
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| format!("spawn fake-whatsapp: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let mut this = Self { child, log };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = tx.send(reader.read_line(&mut line).map(|_| line));
            // Keep draining so the child can never block on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) if !line.trim().is_empty() => line,
            other => {
                this.kill();
                return Err(format!(
                    "fake-whatsapp printed no address line ({other:?}); its log:\n{}",
                    this.log_tail(20)
                ));
            }
        };
        let addrs: Addresses = match serde_json::from_str(line.trim()) {
            Ok(a) => a,
            Err(e) => {
                this.kill();
                return Err(format!("fake-whatsapp address line {line:?}: {e}"));
            }
        };
        Ok((this, addrs))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Ctrl-C (SIGINT), as an operator would, then waits for a clean exit.
    fn stop(&mut self) -> BenchResult<Duration> {
        let started = Instant::now();
        let sent = Command::new("kill").args(["-INT", &self.pid().to_string()]).status();
        if !sent.is_ok_and(|s| s.success()) {
            self.kill();
            return Err("could not send SIGINT to fake-whatsapp".into());
        }
        while started.elapsed() < STOP_TIMEOUT {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(started.elapsed()),
                Ok(Some(status)) => return Err(format!("fake-whatsapp exited with {status}")),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("waiting for fake-whatsapp: {e}")),
            }
        }
        self.kill();
        Err(format!("fake-whatsapp did not exit within {STOP_TIMEOUT:?} of SIGINT; killed"))
    }

    fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for FakeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Admin API over HTTP (blocking ureq, always called from spawn_blocking)

#[derive(Clone)]
struct AdminHttp {
    agent: ureq::Agent,
    base: String,
}

impl AdminHttp {
    fn new(base: &str) -> Self {
        let config =
            ureq::config::Config::builder().http_status_as_error(false).timeout_global(Some(HTTP_TIMEOUT)).build();
        Self { agent: ureq::Agent::new_with_config(config), base: base.trim_end_matches('/').to_owned() }
    }

    fn get_blocking(&self, path: &str) -> BenchResult<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let mut resp = self.agent.get(&url).call().map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().map_err(|e| format!("GET {url} body: {e}"))?;
        Ok((status, body))
    }

    fn post_blocking(&self, path: &str, json: String) -> BenchResult<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let mut resp = self
            .agent
            .post(&url)
            .header("content-type", "application/json")
            .send(json)
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().map_err(|e| format!("POST {url} body: {e}"))?;
        Ok((status, body))
    }

    async fn get(&self, path: &str) -> BenchResult<(u16, String)> {
        let this = self.clone();
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || this.get_blocking(&path)).await.map_err(|e| format!("join: {e}"))?
    }

    async fn post(&self, path: &str, json: String) -> BenchResult<(u16, String)> {
        let this = self.clone();
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || this.post_blocking(&path, json)).await.map_err(|e| format!("join: {e}"))?
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> BenchResult<T> {
        let (status, body) = self.get(path).await?;
        if status != 200 {
            return Err(format!("GET {path}: HTTP {status}: {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}: {body}"))
    }
}

#[derive(Debug, Deserialize)]
struct DeviceInfo {
    jid: String,
    phone: String,
    connected: bool,
    removed: bool,
}

#[derive(Debug, Deserialize)]
struct ReceivedMessage {
    id: String,
    from: String,
    text: Option<String>,
}

/// (connected and not removed among ours, total listed)
async fn connected_devices(admin: &AdminHttp, phones: &HashSet<String>) -> BenchResult<(usize, usize)> {
    let devices: Vec<DeviceInfo> = admin.get_json("/admin/devices").await?;
    let ours = devices.iter().filter(|d| d.connected && !d.removed && phones.contains(&d.phone)).count();
    if let Some(bad) = devices.iter().find(|d| !d.jid.contains(&d.phone)) {
        return Err(format!("device listed with a JID that is not its phone's: {bad:?}"));
    }
    Ok((ours, devices.len()))
}

// ---------------------------------------------------------------------------------------------
// Clients

struct Shared {
    addrs: Addresses,
    admin: AdminHttp,
    http: UreqHttpClient,
    prekeys: usize,
}

struct LinkedClient {
    index: usize,
    phone: String,
    jid: String,
    handle: BotHandle,
    events: mpsc::UnboundedReceiver<Arc<Event>>,
    /// QR shown → scan answered (the client confirmed the pairing).
    scan: Duration,
    /// QR shown → `Connected` (scan, 515 restart, login, prekeys, app state).
    scan_to_connected: Duration,
    /// Client built → first QR.
    to_qr: Duration,
}

fn phone_for(i: usize) -> String {
    format!("1555{i:07}")
}

fn event_name(e: &Event) -> &'static str {
    match e {
        Event::PairingQrCode(_) => "PairingQrCode",
        Event::PairSuccess(_) => "PairSuccess",
        Event::PairError(_) => "PairError",
        Event::Connected(_) => "Connected",
        Event::Disconnected(_) => "Disconnected",
        Event::LoggedOut(_) => "LoggedOut",
        Event::Messages(_) => "Messages",
        Event::StreamError(_) => "StreamError",
        Event::ConnectFailure(_) => "ConnectFailure",
        Event::PairingQrCodesExhausted(_) => "PairingQrCodesExhausted",
        _ => "other",
    }
}

/// Waits (bounded) for the first event `pick` accepts; the error lists what came instead.
async fn wait_for<T>(
    events: &mut mpsc::UnboundedReceiver<Arc<Event>>,
    what: &str,
    timeout: Duration,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> BenchResult<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen: Vec<&'static str> = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => return Err(format!("timed out after {timeout:?} waiting for {what} (saw {seen:?})")),
            Ok(None) => return Err(format!("event stream ended waiting for {what} (saw {seen:?})")),
            Ok(Some(event)) => {
                if let Some(found) = pick(&event) {
                    return Ok(found);
                }
                seen.push(event_name(&event));
            }
        }
    }
}

fn message_text(e: &Event) -> Vec<String> {
    match e {
        Event::Messages(batch) => batch
            .messages
            .iter()
            .filter_map(|m| {
                m.message
                    .conversation
                    .clone()
                    .or_else(|| m.message.extended_text_message.as_option().and_then(|x| x.text.clone()))
            })
            .collect(),
        _ => Vec::new(),
    }
}

async fn link_one(shared: Arc<Shared>, index: usize) -> BenchResult<LinkedClient> {
    let phone = phone_for(index);
    let (tx, mut events) = mpsc::unbounded_channel();
    let built = Instant::now();
    let bot = Bot::builder()
        .with_backend(whatsapp_rust::wacore::store::InMemoryBackend::new())
        .with_transport_factory(TokioWebSocketTransportFactory::new().with_url(shared.addrs.ws_url.clone()))
        .with_http_client(shared.http.clone())
        .with_version((2, 3000, 1))
        .skip_history_sync()
        .with_wanted_pre_key_count(shared.prekeys)
        .on_event_for(
            &[
                EventKind::PairingQrCode,
                EventKind::PairSuccess,
                EventKind::PairError,
                EventKind::Connected,
                EventKind::Disconnected,
                EventKind::LoggedOut,
                EventKind::Messages,
                EventKind::StreamError,
                EventKind::ConnectFailure,
                EventKind::PairingQrCodesExhausted,
            ],
            move |event, _client| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(event);
                }
            },
        )
        .build()
        .await
        .map_err(|e| format!("device {index}: bot build: {e}"))?;
    // Dropping `handle` on any error below aborts the client.
    let handle = bot.spawn();
    let qr = wait_for(&mut events, "a QR code", STEP_TIMEOUT, |e| match e {
        Event::PairingQrCode(qr) => Some(qr.code.clone()),
        _ => None,
    })
    .await
    .map_err(|e| format!("device {index}: {e}"))?;
    let to_qr = built.elapsed();

    let shown = Instant::now();
    let body = serde_json::json!({ "qr": qr, "phone": phone }).to_string();
    let (status, answer) = shared.admin.post("/admin/scan", body).await.map_err(|e| format!("device {index}: {e}"))?;
    if status != 200 {
        return Err(format!("device {index}: scan answered HTTP {status}: {answer}"));
    }
    let scan = shown.elapsed();
    let jid = serde_json::from_str::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| v["jid"].as_str().map(str::to_owned))
        .ok_or_else(|| format!("device {index}: scan answer without a jid: {answer}"))?;
    wait_for(&mut events, "Connected", STEP_TIMEOUT, |e| matches!(e, Event::Connected(_)).then_some(()))
        .await
        .map_err(|e| format!("device {index} ({jid}): {e}"))?;
    let scan_to_connected = shown.elapsed();
    Ok(LinkedClient { index, phone, jid, handle, events, scan, scan_to_connected, to_qr })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(label: &str, mut values: Vec<Duration>) -> String {
    values.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "{label}: p50 {:.0} ms  p90 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
        ms(percentile(&values, 0.5)),
        ms(percentile(&values, 0.9)),
        ms(percentile(&values, 0.99)),
        ms(values.last().copied().unwrap_or_default())
    )
}

// ---------------------------------------------------------------------------------------------

fn main() -> ExitCode {
    let settings = Settings::from_env();
    if settings.devices < 2 {
        eprintln!("devices: need at least 2 (one sends, another receives)");
        return ExitCode::from(2);
    }
    let dir = std::env::temp_dir().join(format!("fake-wa-bench-devices-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("devices: create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let outcome = run(&settings, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Ok(()) => {
            println!("RESULT: ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("RESULT: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(settings: &Settings, dir: &std::path::Path) -> BenchResult<()> {
    let (mut fake, addrs) = FakeProcess::start(dir, &settings.fake_log)?;
    let pid = fake.pid();

    // Never hang: past the deadline the child is killed and the bench exits non-zero.
    let deadline = settings.deadline;
    let watchdog_dir = dir.to_path_buf();
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        eprintln!("RESULT: FAILED: the whole run exceeded {deadline:?}; killing fake-whatsapp (pid {pid})");
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        let _ = std::fs::remove_dir_all(&watchdog_dir);
        std::process::exit(3);
    });

    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| format!("tokio runtime: {e}"))?;
    let result = runtime.block_on(bench(settings, pid, addrs));
    // Aborts whatever client task is still alive (only on error paths).
    runtime.shutdown_timeout(Duration::from_secs(5));

    let stop = match result {
        Ok(()) => fake.stop().map(Some),
        Err(_) => {
            fake.kill();
            Ok(None)
        }
    };
    let log = fake.log_text();
    let warnings: Vec<&str> =
        log.lines().filter(|l| l.contains(" WARN ") || l.contains("ERROR") || l.contains("panicked")).collect();
    println!("fake server log: {} warning/error lines (RUST_LOG={})", warnings.len(), settings.fake_log);
    for line in warnings.iter().take(10) {
        println!("  {line}");
    }
    result?;
    if let Some(took) = stop? {
        println!("fake server: clean exit {took:.0?} after SIGINT");
    }
    if !warnings.is_empty() {
        return Err(format!("the fake server logged {} warnings/errors", warnings.len()));
    }
    Ok(())
}

async fn bench(settings: &Settings, pid: u32, addrs: Addresses) -> BenchResult<()> {
    let n = settings.devices;
    let admin = AdminHttp::new(&addrs.admin_url);
    let (status, _) = admin.get("/health").await?;
    if status != 200 {
        return Err(format!("/health answered HTTP {status}"));
    }
    // A ureq agent trusting only the fake media server's CA, shared by every client.
    let pem = std::fs::read(&addrs.ca_file).map_err(|e| format!("read {}: {e}", addrs.ca_file.display()))?;
    let http = {
        use ureq::tls::{Certificate, RootCerts, TlsConfig};
        let ca = Certificate::from_pem(&pem).map_err(|e| format!("CA PEM: {e}"))?.to_owned();
        let tls = TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(vec![ca]))).build();
        let config = ureq::config::Config::builder().tls_config(tls).http_status_as_error(false).build();
        UreqHttpClient::with_agent(ureq::Agent::new_with_config(config))
    };

    println!(
        "devices bench: {n} real whatsapp-rust clients, {} linking at a time, {} one-time prekeys each, {} build, {} CPUs",
        settings.concurrency,
        settings.prekeys,
        if cfg!(debug_assertions) { "debug" } else { "optimized" },
        std::thread::available_parallelism().map(|p| p.get()).unwrap_or(0),
    );
    println!("fake server: pid {pid}, {} (media {})", addrs.ws_url, addrs.media_host);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib(pid);
    let cpu_before = cpu_secs(pid);
    let bench_rss_before = rss_kib(std::process::id());
    println!("fake server RSS before linking: {rss_before} KiB ({:.1} MiB), {} threads", mib(rss_before), threads(pid));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average before linking: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    let cpu_window = CpuWindow::start(pid);

    // ---- link N devices, `concurrency` at a time
    let shared = Arc::new(Shared { addrs, admin: admin.clone(), http, prekeys: settings.prekeys });
    let permits = Arc::new(Semaphore::new(settings.concurrency));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    let mut clients: Vec<LinkedClient> = Vec::with_capacity(n);
    let mut errors: Vec<String> = Vec::new();
    let started = Instant::now();
    let mut next_progress = 100usize;
    let mut take =
        |clients: &mut Vec<LinkedClient>, errors: &mut Vec<String>, r: Result<BenchResult<LinkedClient>, _>| {
            match r {
                Ok(Ok(c)) => clients.push(c),
                Ok(Err(e)) => errors.push(e),
                Err(e) => errors.push(format!("link task: {e}")),
            }
            if clients.len() >= next_progress {
                eprintln!(
                    "  {:>5} linked in {:>6.1?}   fake RSS {:>7.1} MiB",
                    clients.len(),
                    started.elapsed(),
                    mib(rss_kib(pid))
                );
                next_progress += 100;
            }
        };
    for i in 0..n {
        if failures.load(Ordering::Relaxed) >= MAX_FAILURES {
            break;
        }
        let permit = permits.clone().acquire_owned().await.map_err(|e| e.to_string())?;
        while let Some(r) = tasks.try_join_next() {
            take(&mut clients, &mut errors, r);
        }
        let (shared, failures) = (shared.clone(), failures.clone());
        tasks.spawn(async move {
            let r = link_one(shared, i).await;
            if r.is_err() {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
            r
        });
    }
    while let Some(r) = tasks.join_next().await {
        take(&mut clients, &mut errors, r);
    }
    let link_time = started.elapsed();
    let cpu_linking = cpu_secs(pid) - cpu_before;
    if !errors.is_empty() {
        for e in errors.iter().take(10) {
            eprintln!("  link failure: {e}");
        }
        return Err(format!("{} of {n} devices failed to link ({} linked)", errors.len(), clients.len()));
    }
    clients.sort_by_key(|c| c.index);
    println!(
        "linked {n} devices in {link_time:.1?}: {:.1} devices/s; fake server CPU {cpu_linking:.1} s ({:.1} ms per link)",
        n as f64 / link_time.as_secs_f64(),
        cpu_linking * 1000.0 / n as f64
    );
    println!("  {}", cpu_window.report(pid));
    println!("  {}", summary("client built -> QR        ", clients.iter().map(|c| c.to_qr).collect()));
    println!("  {}", summary("QR -> scan answered       ", clients.iter().map(|c| c.scan).collect()));
    println!("  {}", summary("scan -> Connected         ", clients.iter().map(|c| c.scan_to_connected).collect()));

    // ---- hold them: memory, connection check, idle CPU
    tokio::time::sleep(Duration::from_secs(3)).await;
    let phones: HashSet<String> = clients.iter().map(|c| c.phone.clone()).collect();
    let (connected, listed) = connected_devices(&admin, &phones).await?;
    let rss_after = rss_kib(pid);
    let hwm = proc_status_kib(pid, "VmHWM:").unwrap_or(0);
    let logged_in = clients.iter().filter(|c| c.handle.client().is_logged_in()).count();
    println!(
        "fake server RSS with {n} linked and connected devices: {rss_after} KiB ({:.1} MiB; peak {:.1} MiB), {} threads, {} fds",
        mib(rss_after),
        mib(hwm),
        threads(pid),
        open_fds(pid)
    );
    println!(
        "  => {:.1} KiB per linked device ({:.1} MiB for {n})",
        rss_after.saturating_sub(rss_before) as f64 / n as f64,
        mib(rss_after.saturating_sub(rss_before))
    );
    println!("/admin/devices: {connected} of {n} connected ({listed} listed); clients logged in: {logged_in} of {n}");
    if connected != n || logged_in != n {
        return Err(format!("only {connected} devices connected on the server, {logged_in} clients logged in, of {n}"));
    }
    let bench_rss = rss_kib(std::process::id());
    println!(
        "(bench process with the {n} clients: {:.1} MiB, {:.0} KiB per client)",
        mib(bench_rss),
        bench_rss.saturating_sub(bench_rss_before) as f64 / n as f64
    );

    let idle_window = CpuWindow::start(pid);
    tokio::time::sleep(settings.idle).await;
    println!("idle with {n} connections: {}", idle_window.report(pid));

    // ---- routing while holding N connections: every 100th client texts the next client's phone
    let mut latencies = Vec::new();
    let senders: Vec<usize> = (0..n).step_by(100).collect();
    for &s in &senders {
        let r = (s + 1) % n;
        let (from_jid, to_phone) = (clients[s].jid.clone(), clients[r].phone.clone());
        let text = format!("bench {s} -> {r} {}", std::process::id());
        let sent_at = Instant::now();
        let sent = tokio::time::timeout(
            DELIVERY_TIMEOUT,
            clients[s].handle.client().send_text(Jid::pn(to_phone.clone()), text.clone()),
        )
        .await
        .map_err(|_| format!("device {s}: send_text timed out after {DELIVERY_TIMEOUT:?}"))?
        .map_err(|e| format!("device {s}: send_text: {e}"))?;
        // The recipient's phone (device 0 on the fake) decrypts and records it...
        let path = format!("/admin/phones/{to_phone}/messages");
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        loop {
            let messages: Vec<ReceivedMessage> = admin.get_json(&path).await?;
            if let Some(m) = messages.iter().find(|m| m.id == sent.message_id) {
                if m.text.as_deref() != Some(text.as_str()) || !m.from.starts_with(&clients[s].phone) {
                    return Err(format!("phone {to_phone} recorded {m:?}, expected {text:?} from {from_jid}"));
                }
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("phone {to_phone} never recorded message {} from {from_jid}", sent.message_id));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let recorded = sent_at.elapsed();
        // ...and the recipient's linked device receives and decrypts it too.
        wait_for(&mut clients[r].events, "the text on the recipient's linked device", DELIVERY_TIMEOUT, |e| {
            message_text(e).contains(&text).then_some(())
        })
        .await
        .map_err(|e| format!("device {r}: {e}"))?;
        latencies.push((recorded, sent_at.elapsed()));
    }
    println!(
        "routing with {n} connected: {} texts (every 100th device -> the next device's phone) recorded by the phone and decrypted by its linked device",
        senders.len()
    );
    println!("  {}", summary("send -> phone recorded    ", latencies.iter().map(|l| l.0).collect()));
    println!("  {}", summary("send -> device decrypted  ", latencies.iter().map(|l| l.1).collect()));
    let (connected, _) = connected_devices(&admin, &phones).await?;
    if connected != n {
        return Err(format!("after messaging only {connected} of {n} devices are connected"));
    }
    println!("after messaging: {connected} of {n} still connected; fake RSS {:.1} MiB", mib(rss_kib(pid)));

    // ---- stop the clients gracefully, then check the server let go of them
    let stopping = Instant::now();
    let mut stops = JoinSet::new();
    for c in clients {
        // On timeout the shutdown future, and with it the handle, is dropped: that aborts the client.
        stops.spawn(async move { tokio::time::timeout(STOP_TIMEOUT, c.handle.shutdown()).await.is_ok() });
    }
    let mut stopped = 0;
    while let Some(r) = stops.join_next().await {
        stopped += usize::from(r.unwrap_or(false));
    }
    let stop_time = stopping.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    let remaining = loop {
        let (connected, _) = connected_devices(&admin, &phones).await?;
        if connected == 0 || Instant::now() > deadline {
            break connected;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "stopped {stopped} of {n} clients gracefully in {stop_time:.1?}; server shows {remaining} still connected; fake RSS {:.1} MiB",
        mib(rss_kib(pid))
    );
    if stopped != n || remaining != 0 {
        return Err(format!("{stopped} of {n} clients stopped, {remaining} still connected on the server"));
    }
    Ok(())
}
