//! Headless Chromium driven over the W3C WebDriver protocol by Debian's `chromedriver`.
//!
//! The protocol is JSON over HTTP, so this is a thin client on the tests' own HTTP client
//! (`ureq`) rather than a WebDriver crate and its forty dependencies. Waits are event-driven:
//! [`Browser::wait_for`] runs an async script that resolves from a `MutationObserver` as soon as
//! the page matches, bounded by the script timeout, never a sleep-and-poll loop. A wait returns
//! what it saw (the element, the text), never a second look that a later render may have
//! changed: pages re-render, and a second look on a loaded machine can see the next state.
//!
//! `chromium` and `chromium-driver` must be installed (`.ci/run` installs them). Without them the
//! test fails and says so: it never skips.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// How long any one wait may take.
pub const BROWSER_WAIT: Duration = Duration::from_secs(30);

/// An element reference.
#[derive(Debug, Clone)]
pub struct Element(String);

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    profile: PathBuf,
    /// Where failures leave a screenshot.
    shots: PathBuf,
}

/// The W3C key for element references.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(env: &str, names: &[&str]) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        return PathBuf::from(path);
    }
    for name in names {
        for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/bin", "/usr/lib/chromium"]) {
            let candidate = Path::new(dir).join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "{} not found: the admin page is tested in a real browser. Install Debian's chromium and \
         chromium-driver (`bash .ci/run` does), or set {env}",
        names.join(" or ")
    );
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session in
    /// `language`, with a fresh profile.
    pub async fn start(language: &str, shots: &Path) -> Browser {
        let driver_path = find_program("CHROMEDRIVER", &["chromedriver"]);
        let chromium = find_program("CHROMIUM", &["chromium", "chromium-browser"]);
        let mut driver = Command::new(&driver_path)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_path.display()));
        let stdout = driver.stdout.take().expect("chromedriver stdout");
        // "ChromeDriver was started successfully on port 38219."
        let port = tokio::time::timeout(
            BROWSER_WAIT,
            tokio::task::spawn_blocking(move || {
                let mut lines = BufReader::new(stdout).lines();
                for line in lines.by_ref() {
                    let line = line.ok()?;
                    if let Some(rest) = line.split("started successfully on port ").nth(1) {
                        let port = rest.trim_end_matches('.').trim().parse::<u16>().ok();
                        // Keep draining, so chromedriver never blocks on a full pipe.
                        std::thread::spawn(move || for _ in lines {});
                        return port;
                    }
                }
                None
            }),
        )
        .await
        .expect("chromedriver starts in time")
        .expect("chromedriver reader")
        .expect("chromedriver says its port");
        let profile =
            std::env::temp_dir().join(format!("wg-chromium-{}-{}", std::process::id(), rand::random::<u64>()));
        std::fs::create_dir_all(&profile).expect("profile dir");
        std::fs::create_dir_all(shots).expect("screenshot dir");
        let base = format!("http://127.0.0.1:{port}");
        // The flags keep a headless Chromium off the (closed) network: no update, sync or
        // background checks.
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--no-default-browser-check",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-extensions", "--window-size=1280,1100", format!("--lang={language}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {"intl.accept_languages": language},
            },
        }}});
        let answer = request(&base, "POST", "/session", Some(capabilities)).await;
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_owned();
        let browser = Browser { driver, base, session, profile, shots: shots.to_path_buf() };
        let wait_ms = u64::try_from(BROWSER_WAIT.as_millis()).expect("ms");
        browser.call("POST", "/timeouts", Some(json!({"script": wait_ms, "pageLoad": wait_ms}))).await;
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let answer = request(&self.base, method, &format!("/session/{}{path}", self.session), body).await;
        answer["value"].clone()
    }

    /// Like `call`, but a WebDriver error is returned, not a panic.
    async fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let answer = try_request(&self.base, method, &format!("/session/{}{path}", self.session), body).await;
        match answer.get("value").and_then(|v| v.get("error")).and_then(Value::as_str) {
            Some(error) => Err(format!("{error}: {}", answer["value"]["message"].as_str().unwrap_or_default())),
            None => Ok(answer["value"].clone()),
        }
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url}))).await;
    }

    pub async fn current_url(&self) -> String {
        self.call("GET", "/url", None).await.as_str().unwrap_or_default().to_owned()
    }

    /// The element `css` matches now.
    pub async fn find(&self, css: &str) -> Element {
        let value = self.call("POST", "/element", Some(json!({"using": "css selector", "value": css}))).await;
        Element(value[ELEMENT_KEY].as_str().unwrap_or_else(|| panic!("no element {css}: {value}")).to_owned())
    }

    /// Waits until `predicate` (a JavaScript expression) is truthy in the page, re-checking on
    /// every DOM change, and returns its value. On timeout it saves a screenshot and panics
    /// with `what`.
    pub async fn wait_until(&self, what: &str, predicate: &str) -> Value {
        let script = format!(
            r#"const done = arguments[arguments.length - 1];
            const check = () => {{ try {{ return ({predicate}); }} catch (e) {{ return null; }} }};
            const first = check();
            if (first) {{ done(first); return; }}
            const observer = new MutationObserver(() => {{
                const value = check();
                if (value) {{ observer.disconnect(); done(value); }}
            }});
            observer.observe(document, {{ subtree: true, childList: true, attributes: true, characterData: true }});"#
        );
        match self.try_call("POST", "/execute/async", Some(json!({"script": script, "args": []}))).await {
            Ok(value) => value,
            Err(error) => {
                let shot = self.shots.join("failure.png");
                self.screenshot(&shot).await;
                let body = self
                    .try_call(
                        "POST",
                        "/execute/sync",
                        Some(json!({"script": "return document.body.innerText", "args": []})),
                    )
                    .await
                    .unwrap_or_default();
                panic!("waiting for {what} ({predicate}): {error}\npage text:\n{body}\nscreenshot: {}", shot.display());
            }
        }
    }

    /// Waits for an element matching `css` and returns the one that matched (from the same
    /// look, not a second query that a re-render could answer differently).
    pub async fn wait_for(&self, css: &str) -> Element {
        let selector = serde_json::to_string(css).expect("selector");
        let found = self.wait_until(css, &format!("document.querySelector({selector})")).await;
        Element(
            found[ELEMENT_KEY].as_str().unwrap_or_else(|| panic!("no element reference for {css}: {found}")).to_owned(),
        )
    }

    pub async fn click(&self, element: &Element) {
        self.call("POST", &format!("/element/{}/click", element.0), Some(json!({}))).await;
    }

    /// Types `text` into a field (for a file input: the path of the file to choose).
    pub async fn type_into(&self, element: &Element, text: &str) {
        self.call("POST", &format!("/element/{}/value", element.0), Some(json!({"text": text}))).await;
    }

    pub async fn clear(&self, element: &Element) {
        self.call("POST", &format!("/element/{}/clear", element.0), Some(json!({}))).await;
    }

    pub async fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        self.call("GET", &format!("/element/{}/attribute/{name}", element.0), None).await.as_str().map(str::to_owned)
    }

    /// The element's rendered text.
    pub async fn text(&self, element: &Element) -> String {
        self.call("GET", &format!("/element/{}/text", element.0), None).await.as_str().unwrap_or_default().to_owned()
    }

    /// Runs a script in the page and returns its value.
    pub async fn script(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    /// Resizes the window, e.g. to a phone's width.
    pub async fn resize(&self, width: u32, height: u32) {
        self.call("POST", "/window/rect", Some(json!({"width": width, "height": height}))).await;
    }

    /// Saves a PNG of the window.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        if let Ok(Value::String(png)) = self.try_call("GET", "/screenshot", None).await
            && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(png)
        {
            let _ = std::fs::write(path, bytes);
        }
    }

    /// Ends the WebDriver session (Chromium exits) and chromedriver.
    pub async fn quit(mut self) {
        let _ = try_request(&self.base, "DELETE", &format!("/session/{}", self.session), None).await;
        self.stop_driver();
    }

    fn stop_driver(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Killing chromedriver closes the Chromium it started.
        self.stop_driver();
    }
}

async fn request(base: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let answer = try_request(base, method, path, body).await;
    if let Some(error) = answer.get("value").and_then(|v| v.get("error")) {
        panic!("WebDriver {method} {path}: {error} {}", answer["value"]["message"]);
    }
    answer
}

async fn try_request(base: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let url = format!("{base}{path}");
    let method = method.to_owned();
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::config::Config::builder()
                .http_status_as_error(false)
                .timeout_global(Some(BROWSER_WAIT + Duration::from_secs(10)))
                .build(),
        );
        let req = ureq::http::Request::builder().method(method.as_str()).uri(&url);
        let body = body.map(|b| b.to_string()).unwrap_or_else(|| "{}".into());
        let response = if method == "GET" || method == "DELETE" {
            agent.run(req.body(()).expect("request"))
        } else {
            agent.run(req.header("Content-Type", "application/json").body(body).expect("request"))
        }
        .unwrap_or_else(|e| panic!("WebDriver {method} {url}: {e}"));
        let text = response.into_body().read_to_string().unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    })
    .await
    .expect("webdriver request task")
}
