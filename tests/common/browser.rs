//! A real browser for tests of web pages: Debian's `chromium`, headless,
//! driven over the W3C WebDriver protocol by its `chromedriver` (JSON over
//! HTTP on loopback, spoken here with a few lines over a TcpStream). The
//! driver and the browser are killed when the [`Browser`] drops.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The W3C element key in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless chromium session.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless chromium session; `None` (said on
    /// stderr) when they are not installed.
    pub fn start() -> Option<Browser> {
        let (chrome, driver) = ("/usr/bin/chromium", "/usr/bin/chromedriver");
        if !Path::new(chrome).exists() || !Path::new(driver).exists() {
            eprintln!("skipped: chromium and chromium-driver are not installed");
            return None;
        }
        let port = super::free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            driver: child,
            port,
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chrome,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1000,800",
                         format!("--user-data-dir={}", b._profile.path().display())],
            },
        }}});
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Some(b)
    }

    /// One WebDriver command; its `value`. A WebDriver error panics with
    /// its message.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        // The head, then exactly Content-Length bytes (chromedriver may
        // keep the connection open whatever the request says).
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        let (head_end, len) = loop {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "WebDriver {method} {path}: connection closed");
            raw.extend_from_slice(&buf[..n]);
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..i]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (i + 4, len);
            }
        };
        while raw.len() < head_end + len {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "WebDriver {method} {path}: body cut short");
            raw.extend_from_slice(&buf[..n]);
        }
        let payload = String::from_utf8_lossy(&raw[head_end..head_end + len]).into_owned();
        let v: Value = serde_json::from_str(&payload)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}: {payload}"));
        let value = v["value"].clone();
        if let Some(err) = value.get("error").and_then(|e| e.as_str()) {
            panic!("WebDriver {method} {path}: {err}: {}", value["message"]);
        }
        value
    }

    fn sess(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.call("POST", &self.sess("/url"), Some(json!({"url": url})));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.call("GET", &self.sess("/url"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The element `css` selects (the first one).
    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.sess("/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// How many elements `css` selects.
    pub fn count(&self, css: &str) -> usize {
        self.call(
            "POST",
            &self.sess("/elements"),
            Some(json!({"using": "css selector", "value": css})),
        )
        .as_array()
        .map_or(0, |a| a.len())
    }

    /// Waits (10 s at most) until `css` selects `n` elements: a click that
    /// submits a form returns before the next page is there.
    pub fn wait_count(&self, css: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.count(css) != n {
            assert!(Instant::now() < deadline, "{css}: never {n} of them");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (10 s at most) until the URL ends with `suffix`.
    pub fn wait_url(&self, suffix: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.url().ends_with(suffix) {
            assert!(
                Instant::now() < deadline,
                "never at {suffix}: {}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `text` into the field `css` selects (cleared first).
    pub fn fill(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &self.sess(&format!("/element/{e}/clear")),
            Some(json!({})),
        );
        self.call(
            "POST",
            &self.sess(&format!("/element/{e}/value")),
            Some(json!({"text": text})),
        );
    }

    /// Picks the option with `value` in the select `css` selects.
    pub fn select(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value=\"{value}\"]"));
    }

    /// Clicks the element `css` selects.
    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &self.sess(&format!("/element/{e}/click")),
            Some(json!({})),
        );
    }

    /// The rendered text of the element `css` selects.
    pub fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.call("GET", &self.sess(&format!("/element/{e}/text")), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The page's HTML as the browser has it.
    pub fn source(&self) -> String {
        self.call("GET", &self.sess("/source"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The cookies the browser holds for the current page.
    pub fn cookies(&self) -> Vec<Value> {
        self.call("GET", &self.sess("/cookie"), None)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Resizes the window (a phone's is about 400 wide).
    pub fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            &self.sess("/window/rect"),
            Some(json!({"width": width, "height": height})),
        );
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let v = self.call("GET", &self.sess("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = self.sess("");
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.call("DELETE", &path, None)
            }));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
