//! A real browser for the web UI's tests and benchmark: headless Chromium
//! (Debian's `chromium`) driven over the WebDriver protocol by its
//! `chromedriver` (`chromium-driver`), started on a free port and killed
//! with the handle. The calls are synchronous, like the rest of the
//! harness, and every wait has a deadline.
//!
//! Chromium runs with `--no-sandbox` (the tests may run as root, where its
//! sandbox refuses to start) and accepts the coordinator's certificate,
//! which a private CA signed (`acceptInsecureCerts`): what is tested is
//! the UI, not the browser's trust store.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use super::{Proc, TempDir, free_port};

/// A headless Chromium session.
pub struct Browser {
    client: Client,
    rt: tokio::runtime::Runtime,
    _driver: Proc,
    _dir: TempDir,
}

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/lib/chromium")])
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

impl Browser {
    /// Starts chromedriver and a browser session, `width` × `height`.
    pub fn start(width: u32, height: u32) -> Browser {
        Browser::start_with(width, height, false)
    }

    /// [`Browser::start`], with the system's colour scheme dark
    /// (`prefers-color-scheme: dark`) when `dark`.
    pub fn start_dark(width: u32, height: u32) -> Browser {
        Browser::start_with(width, height, true)
    }

    fn start_with(width: u32, height: u32, dark: bool) -> Browser {
        let driver_bin = find(&["chromedriver"])
            .expect("chromedriver is missing: install chromium and chromium-driver (the README's test command does)");
        let chromium = find(&["chromium", "chromium-browser"]).expect("chromium is missing: install chromium");
        let dir = TempDir::new("browser");
        let port = free_port();
        let log = dir.path().join("chromedriver.log");
        let stderr = std::fs::File::create(&log).expect("chromedriver log");
        let child = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start chromedriver");
        let driver = Proc { child, name: "chromedriver".into(), log };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let profile = dir.path().join("profile");
        let scheme = if dark { "--force-dark-mode" } else { "--no-default-browser-check" };
        let caps = json!({
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    format!("--user-data-dir={}", profile.display()),
                    format!("--window-size={width},{height}"),
                    scheme,
                ],
            },
        });
        let caps = match caps {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let attempt = rt.block_on(ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url));
            match attempt {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("cannot start a Chromium session: {e}\n{}", driver.log_tail()),
            }
        };
        let browser = Browser { client, rt, _driver: driver, _dir: dir };
        browser.rt.block_on(browser.client.set_window_size(width, height)).expect("window size");
        browser
    }

    pub fn goto(&self, url: &str) {
        self.rt.block_on(self.client.goto(url)).unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    pub fn url(&self) -> String {
        self.rt.block_on(self.client.current_url()).expect("current url").to_string()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the
    /// page and returns what it returns.
    pub fn eval(&self, script: &str, args: Vec<Value>) -> Value {
        self.rt.block_on(self.client.execute(script, args)).unwrap_or_else(|e| panic!("script {script}: {e}"))
    }

    /// Runs `script` asynchronously: its last argument is the callback that
    /// hands back the result.
    pub fn eval_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.rt
            .block_on(self.client.execute_async(script, args))
            .unwrap_or_else(|e| panic!("async script {script}: {e}"))
    }

    /// The text of the first element `css` matches, if any.
    pub fn text(&self, css: &str) -> Option<String> {
        let found = self
            .eval("const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", vec![json!(css)]);
        found.as_str().map(str::to_owned)
    }

    /// An attribute of the first element `css` matches.
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        let found = self.eval(
            "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
            vec![json!(css), json!(name)],
        );
        found.as_str().map(str::to_owned)
    }

    /// How many elements `css` matches.
    pub fn count(&self, css: &str) -> usize {
        self.eval("return document.querySelectorAll(arguments[0]).length;", vec![json!(css)]).as_u64().unwrap_or(0)
            as usize
    }

    /// Clicks the first element `css` matches, as a user would (it must be
    /// displayed and enabled).
    pub fn click(&self, css: &str) {
        self.rt
            .block_on(async {
                let element = self.client.find(Locator::Css(css)).await?;
                element.click().await
            })
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Types `text` into the first element `css` matches.
    pub fn type_into(&self, css: &str, text: &str) {
        self.rt
            .block_on(async {
                let element = self.client.find(Locator::Css(css)).await?;
                element.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Presses Tab, as a keyboard user moving to the next control.
    pub fn tab(&self) {
        self.rt
            .block_on(async {
                let element = self.client.active_element().await?;
                element.send_keys("\u{E004}").await
            })
            .unwrap_or_else(|e| panic!("press Tab: {e}"));
    }

    /// Waits until `cond` holds in the page (a script returning a value
    /// other than null, false or undefined), and returns that value.
    pub fn wait_js(&self, what: &str, timeout: Duration, script: &str, args: Vec<Value>) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.rt.block_on(self.client.execute(script, args.clone()));
            match got {
                Ok(Value::Null | Value::Bool(false)) | Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(Value::Null | Value::Bool(false)) => {
                    let page = self.text("body").unwrap_or_default();
                    let page: String =
                        page.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(3000).collect();
                    panic!("timed out after {timeout:?} waiting for {what} at {}; the page says: {page}", self.url())
                }
                Err(e) => panic!("waiting for {what}: {e}"),
                Ok(v) => return v,
            }
        }
    }

    /// Waits until an element `css` matches has text containing `want`.
    pub fn wait_text(&self, css: &str, want: &str, timeout: Duration) {
        let script = "return Array.from(document.querySelectorAll(arguments[0])).some(e => e.textContent.includes(arguments[1]));";
        self.wait_js(&format!("{css} to say {want:?}"), timeout, script, vec![json!(css), json!(want)]);
    }

    /// Saves a PNG of the window.
    pub fn screenshot(&self, path: &Path) {
        let png = self.rt.block_on(self.client.screenshot()).expect("screenshot");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let client = self.client.clone();
        let _ = self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), client.close()).await });
    }
}
