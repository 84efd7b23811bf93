//! The ui mode (issue 19): the web UI's three figures, on a coordinator
//! with `--ui-listen` and one real agent with 16 slots.
//!
//! - **Run page render.** A run of 500 trivial jobs (50 layers of 10, each
//!   job needing two of the layer before) runs to its end; then `GET
//!   /runs/{id}` is timed from the request to the last byte of the page,
//!   over loopback on a kept-alive TLS connection (so the coordinator's
//!   work, not the handshake): p50, p99, max of `--samples` requests after
//!   3 unmeasured ones.
//! - **Graph layout.** Headless Chromium (`harness::browser`) opens the
//!   same page 5 times; the page's script records how long laying out and
//!   drawing the 500-job graph took (`svg#dag`'s `data-layout-ms`).
//! - **A log line to the browser.** A job echoes its wall-clock time (ms)
//!   every 100 ms for 4 s while the browser follows its log page; the page
//!   is polled every 5 ms for new lines, and each line's latency is the
//!   time it was seen less the time it carries. That is from the step's
//!   echo, through the agent, the coordinator's commit and the Server-Sent
//!   Events to the page: an upper bound on the time from the coordinator.
//! - **A big log.** A job prints 16 MB (1 MB with `--smoke`) of
//!   80-character lines; the time from opening its log page until the page
//!   has every line, and how many rows it keeps in the page (virtualised:
//!   only those in view).

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::runtime::Runtime;

use super::super::BenchError;
use super::super::control::Control;
use super::super::report::{figure, millis, percentile, sorted};
use super::{Args, Store, deadline, urls};
use crate::harness::browser::Browser;

const LAYERS: usize = 50;
const WIDTH: usize = 10;

/// A pipeline of `LAYERS` × `WIDTH` trivial jobs, each after two of the
/// layer before.
fn dag() -> String {
    let mut yaml = String::from("name: ui-bench\njobs:\n");
    for layer in 0..LAYERS {
        for i in 0..WIDTH {
            yaml.push_str(&format!("  j{layer:02}-{i}:\n"));
            if layer > 0 {
                let (a, b) = (i, (i + 1) % WIDTH);
                yaml.push_str(&format!("    needs: [j{:02}-{a}, j{:02}-{b}]\n", layer - 1, layer - 1));
            }
            yaml.push_str("    steps: [{run: 'true'}]\n");
        }
    }
    yaml
}

const TICKS: &str = "name: ticks\njobs:\n  tick:\n    steps:\n      - run: for i in $(seq 1 40); do echo \"t $(date +%s%3N)\"; sleep 0.1; done\n";

/// Waits until run `run` has finished.
fn wait_run(rt: &Runtime, control: &mut Control, run: &str, secs: u64) -> Result<(), BenchError> {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = rt.block_on(control.get_run(run, deadline(30)))?;
        if got.state != drover_proto::v1::RunState::Running as i32 {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(BenchError::new(format!("run {run} did not finish within {secs}s")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn ui(rt: &Runtime, store: Store<'_>, args: &Args) -> Result<(), BenchError> {
    let samples = if args.smoke { 5 } else { 50 };
    say!(
        "[{}] ui: a {}-job run's page ({samples} requests), its graph in Chromium, a log followed live",
        store.name,
        LAYERS * WIDTH
    );
    let mut fleet = store.fleet_with("ui", &["--ui-listen", "127.0.0.1:0"]);
    fleet.agent("ui-agent", "", 16);
    fleet.wait_agents(1);
    let ui = format!(
        "https://{}",
        fleet.ui[0].clone().ok_or_else(|| BenchError::new("the coordinator printed no UI address"))?
    );
    let mut control = Control::new(&fleet.tls, urls(&fleet))?;
    rt.block_on(control.wait_leader(deadline(30)))?;
    let run = rt.block_on(control.submit(&dag(), deadline(60)))?;
    wait_run(rt, &mut control, &run, 300)?;

    // The page, over one kept-alive connection with the admin's session.
    let ca = std::fs::read(fleet.tls.join("ca.pem")).map_err(|e| BenchError::new(format!("ca.pem: {e}")))?;
    let ca = reqwest::Certificate::from_pem(&ca).map_err(|e| BenchError::new(format!("ca.pem: {e}")))?;
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| BenchError::new(format!("http client: {e}")))?;
    let link = rt.block_on(control.create_ui_login("", deadline(30)))?;
    let login = rt.block_on(http.get(&link).send()).map_err(|e| BenchError::new(format!("login: {e}")))?;
    let cookie = login
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| BenchError::new(format!("login answered {} without a cookie", login.status())))?
        .to_owned();
    let page = format!("{ui}/runs/{run}");
    let mut times = Vec::new();
    for i in 0..3 + samples {
        let t0 = Instant::now();
        let body = rt
            .block_on(async {
                http.get(&page).header(reqwest::header::COOKIE, &cookie).send().await?.error_for_status()?.text().await
            })
            .map_err(|e| BenchError::new(format!("GET {page}: {e}")))?;
        let took = t0.elapsed();
        if !body.contains("j49-9") {
            return Err(BenchError::new(format!("the run page lacks its last job: {}", &body[..body.len().min(500)])));
        }
        if i >= 3 {
            times.push(millis(took));
        }
    }
    let times = sorted(times);
    figure("ui_run_page_ms_p50", percentile(&times, 0.5), "ms", store.name, 1);
    figure("ui_run_page_ms_p99", percentile(&times, 0.99), "ms", store.name, 1);
    figure("ui_run_page_ms_max", times[times.len() - 1], "ms", store.name, 1);

    // The graph, laid out in the browser.
    let browser = Browser::start(1280, 900);
    browser.goto(&rt.block_on(control.create_ui_login(&format!("/runs/{run}"), deadline(30)))?);
    let mut layouts = Vec::new();
    for _ in 0..5 {
        browser.goto(&page);
        let ms = browser.wait_js(
            "the graph's layout time",
            Duration::from_secs(30),
            "const s = document.querySelector('#dag'); return s && s.dataset.layoutMs ? Number(s.dataset.layoutMs) : null;",
            vec![],
        );
        layouts.push(ms.as_f64().unwrap_or(0.0));
    }
    let layouts = sorted(layouts);
    figure("ui_graph_layout_ms_p50", percentile(&layouts, 0.5), "ms", store.name, 1);
    figure("ui_graph_layout_ms_max", layouts[layouts.len() - 1], "ms", store.name, 1);

    // A log line, from the step's echo to the page.
    let ticks = rt.block_on(control.submit(TICKS, deadline(30)))?;
    browser.goto(&format!("{ui}/runs/{ticks}/jobs/tick/log"));
    browser.eval(
        "window.droverLat = []; const since = Date.now(); let seen = 0;
         setInterval(() => {
           const log = window.droverLog; if (!log) return;
           const n = log.lines();
           for (let i = seen + 1; i <= n; i++) {
             const m = /^t (\\d+)$/.exec(log.text(i) || '');
             if (m && Number(m[1]) > since) window.droverLat.push(Date.now() - Number(m[1]));
           }
           seen = n;
         }, 5);",
        vec![],
    );
    wait_run(rt, &mut control, &ticks, 60)?;
    let got = browser.wait_js(
        "the log's last lines",
        Duration::from_secs(10),
        "return window.droverLat.length >= 30 ? window.droverLat : null;",
        vec![json!(null)],
    );
    let lat = sorted(got.as_array().map(|a| a.iter().filter_map(|v| v.as_f64()).collect()).unwrap_or_default());
    figure("ui_log_line_ms_p50", percentile(&lat, 0.5), "ms", store.name, 1);
    figure("ui_log_line_ms_p99", percentile(&lat, 0.99), "ms", store.name, 1);
    figure("ui_log_line_ms_max", lat[lat.len() - 1], "ms", store.name, 1);

    // A big log (16 MB, 1 MB with --smoke): how long the page takes to
    // have all of it, and how many rows it keeps in the page meanwhile.
    let bytes = if args.smoke { 1_000_000 } else { 16_000_000 };
    let big = rt.block_on(control.submit(&big_log(bytes), deadline(30)))?;
    wait_run(rt, &mut control, &big, 120)?;
    let t0 = Instant::now();
    browser.goto(&format!("{ui}/runs/{big}/jobs/big/log"));
    browser.wait_js(
        "the whole big log",
        Duration::from_secs(120),
        "return document.querySelector('#log')?.dataset.complete === 'true';",
        vec![],
    );
    figure("ui_big_log_load_ms", millis(t0.elapsed()), "ms", store.name, 1);
    let lines = browser.eval("return window.droverLog.lines();", vec![]).as_f64().unwrap_or(0.0);
    let rows = browser.count("#log .row") as f64;
    say!("[{}] ui: a {bytes}-byte log of {lines} lines keeps {rows} rows in the page", store.name);
    figure("ui_big_log_rows_in_page", rows, "rows", store.name, 1);
    Ok(())
}

/// A job printing `bytes` bytes of 80-character lines.
fn big_log(bytes: usize) -> String {
    format!(
        "name: big\njobs:\n  big:\n    steps:\n      - run: yes 'a line of a big log, eighty characters long, to see the viewer keep up......' | head -c {bytes} || true\n"
    )
}
