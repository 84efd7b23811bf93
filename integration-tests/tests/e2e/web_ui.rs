//! The web UI (issue 19) in a real browser: headless Chromium over
//! WebDriver (`harness::browser`), against the real coordinator with
//! `--ui-listen`, real agents and real processes. People log in with the
//! single-use link `drover ui` prints; the pages show a run's graph going
//! green live, follow a log live, approve a gate and cancel a run; a viewer
//! sees why it may not act and is refused when it posts anyway; a request
//! without a session, or with a bad CSRF token, is refused.
//!
//! With `DROVER_UI_SCREENSHOTS=DIR`, the main pages are saved there as PNG
//! (the README's screenshots come from `docs/`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::browser::Browser;
use crate::harness::{AgentSpec, Etcd, Fleet, text};
use crate::roles::add_and_login;

const PIPELINE: &str = r#"name: web
jobs:
  build:
    artifacts: {paths: [out.txt]}
    steps:
      - run: for i in 1 2 3 4 5 6; do printf '\033[32mbuilt %s\033[0m part\n' $i; sleep 0.4; done; echo built > out.txt
  test:
    needs: [build]
    matrix:
      os: [linux, mac]
    steps:
      - run: echo "testing on ${{ matrix.os }}"
  release:
    needs: [test]
    approval: {required: true, approvers: [otto]}
    steps: [{run: echo released}]
"#;

const LONG: &str = "name: long\njobs:\n  sleep:\n    steps:\n      - run: sleep 120\n";

/// `drover ui -o json` as the user of `tls`: the login link.
fn login_link(fleet: &Fleet, tls: &Path, page: &str) -> String {
    let out = fleet.drover_with_tls(tls, &["ui", "--no-open", "--page", page, "-o", "json"]);
    assert!(out.status.success(), "drover ui: {}{}", text(&out.stdout), text(&out.stderr));
    let link: Value = serde_json::from_slice(&out.stdout).unwrap();
    link["url"].as_str().unwrap().to_owned()
}

/// A POST from the page with the browser's cookies (or none), as a form
/// would send it: the status and the answer's text.
fn post(browser: &Browser, path: &str, body: &str, credentials: &str) -> (u64, String) {
    let script = "const [path, body, credentials, done] = arguments;
        fetch(path, {method: 'POST', body, credentials, redirect: 'manual',
                     headers: {'content-type': 'application/x-www-form-urlencoded'}})
          .then(async r => done([r.status, await r.text()]), e => done([0, String(e)]));";
    let got = browser.eval_async(script, vec![json!(path), json!(body), json!(credentials)]);
    (got[0].as_u64().unwrap_or(0), got[1].as_str().unwrap_or_default().to_owned())
}

pub(crate) fn screenshot(browser: &Browser, name: &str) {
    if let Some(dir) = std::env::var_os("DROVER_UI_SCREENSHOTS") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        browser.screenshot(&dir.join(format!("{name}.png")));
    }
}

#[test]
fn an_operator_logs_in_with_a_link_sees_a_run_go_green_live_follows_its_log_approves_and_cancels() {
    let mut fleet = Fleet::start_with("webui", &["--ui-listen", "127.0.0.1:0"]);
    fleet.agent("a1", "", 4);
    fleet.wait_agents(1);
    let otto = add_and_login(&fleet, "otto", "operator");
    let ui = format!("https://{}", fleet.ui[0].clone().expect("the UI's address"));
    let browser = Browser::start(1280, 900);

    // Without a session, a page says how to get one.
    browser.goto(&format!("{ui}/runs"));
    browser.wait_text("main", "drover ui", Duration::from_secs(10));

    // The link logs in once and lands on the page it names.
    let run = fleet.submit("web.yml", PIPELINE);
    let link = login_link(&fleet, &otto, &format!("/runs/{run}"));
    assert!(link.starts_with(&format!("{ui}/login/")), "{link}");
    browser.goto(&link);
    assert_eq!(browser.url(), format!("{ui}/runs/{run}"));
    browser.wait_text("header .who", "otto · operator", Duration::from_secs(5));

    // The graph: every job a node, the matrix grouped, build running or
    // about to, then green without the page being loaded again.
    browser.wait_js(
        "the graph",
        Duration::from_secs(10),
        "return document.querySelectorAll('#dag .node').length === 4;",
        vec![],
    );
    assert_eq!(browser.count("#dag .node[data-job='test (os=linux)']"), 1);
    let early = browser.attr("#dag .node[data-job='build']", "class").unwrap_or_default();
    assert!(!early.contains("s-succeeded"), "build was still going when the page loaded: {early}");
    browser.eval("window.droverMarker = 1;", vec![]);
    browser.wait_js(
        "build to turn green live",
        Duration::from_secs(30),
        "return document.querySelector(\"#dag .node[data-job='build']\").classList.contains('s-succeeded') && window.droverMarker === 1;",
        vec![],
    );
    // The gate's form appears once release waits (the page reloads itself
    // for it).
    browser.wait_text("section.approvals", "release", Duration::from_secs(30));
    assert_eq!(browser.count("#dag .node.s-succeeded"), 3, "build and the matrix are green");
    screenshot(&browser, "run");

    // Approving the gate, with a comment: the run goes on to succeed.
    let comment = "section.approvals input[name=comment]";
    browser.type_into(comment, "looks good");
    browser.click("section.approvals button[value=approve]");
    browser.wait_text("#run-state", "succeeded", Duration::from_secs(30));
    let status = fleet.job(&run, "release");
    assert_eq!(status["approval"], "approved by otto: looks good", "{status:#}");

    // The build's artifacts download from its row: the tar itself.
    let magic = browser.eval_async(
        "const done = arguments[0];
         fetch(document.querySelector(\"tr[data-job='build'] a[download]\").href)
           .then(r => r.arrayBuffer())
           .then(b => done(new TextDecoder().decode(new Uint8Array(b).slice(257, 262))));",
        vec![],
    );
    assert_eq!(magic, json!("ustar"), "a tar archive");

    // A log, with its colours, line numbers and raw download.
    browser.goto(&format!("{ui}/runs/{run}/jobs/build/log"));
    browser.wait_text("#log", "built 6 part", Duration::from_secs(10));
    assert!(browser.count("#log .fg2") >= 1, "the green of the log is rendered");
    let raw = browser.eval_async(
        "const done = arguments[0]; fetch(document.querySelector('#log-raw').href).then(r => r.text()).then(done);",
        vec![],
    );
    assert!(raw.as_str().unwrap_or_default().contains("\u{1b}[32mbuilt 1"), "the raw log is the bytes: {raw}");

    // A log followed live: its lines appear as the step prints them.
    let slow = fleet.submit(
        "slow.yml",
        "name: slow\njobs:\n  tick:\n    steps:\n      - run: for i in 1 2 3 4 5; do echo tick $i; sleep 1; done\n",
    );
    browser.goto(&format!("{ui}/runs/{slow}/jobs/tick/log"));
    browser.wait_text("#log", "tick 1", Duration::from_secs(15));
    assert!(!browser.text("#log").unwrap_or_default().contains("tick 5"), "the log was followed before its end");
    browser.eval("window.droverMarker = 2;", vec![]);
    browser.wait_js(
        "tick 5 to arrive live",
        Duration::from_secs(15),
        "return document.querySelector('#log').textContent.includes('tick 5') && window.droverMarker === 2;",
        vec![],
    );
    screenshot(&browser, "log");

    // Cancelling a run from its page.
    let long = fleet.submit("long.yml", LONG);
    browser.goto(&format!("{ui}/runs/{long}"));
    browser.wait_js(
        "the sleep to run",
        Duration::from_secs(20),
        "return document.querySelector(\"#dag .node[data-job='sleep']\")?.classList.contains('s-running');",
        vec![],
    );
    browser.click("#cancel");
    browser.wait_text("#run-state", "cancelled", Duration::from_secs(20));
    assert_eq!(fleet.status(&long)["state"], "cancelled");

    // The lists.
    browser.goto(&format!("{ui}/runs"));
    browser.wait_text("table.runs", &format!("#{long}"), Duration::from_secs(5));
    screenshot(&browser, "runs");
    browser.goto(&format!("{ui}/agents"));
    browser.wait_text("table.agents tr[data-agent='a1']", env!("CARGO_PKG_VERSION"), Duration::from_secs(5));
    screenshot(&browser, "agents");

    // A form without this session's CSRF token does nothing; a request
    // without a session is refused.
    let running = fleet.submit("long.yml", LONG);
    browser.goto(&format!("{ui}/runs/{running}"));
    browser.wait_text("#run-state", "running", Duration::from_secs(5));
    let (code, said) = post(&browser, &format!("/runs/{running}/cancel"), "csrf=forged", "same-origin");
    assert_eq!(code, 403, "{said}");
    assert!(said.contains("CSRF"), "{said}");
    let (code, said) = post(&browser, &format!("/runs/{running}/cancel"), "", "omit");
    assert_eq!(code, 401, "{said}");
    let anonymous = browser.eval_async(
        "const done = arguments[0]; fetch('/runs/1/events', {credentials: 'omit'}).then(r => done(r.status));",
        vec![],
    );
    assert_eq!(anonymous, json!(401));
    assert_eq!(fleet.status(&running)["state"], "running", "nothing was cancelled");

    // The link was spent at the first use.
    browser.goto(&link);
    browser.wait_text("main", "used already", Duration::from_secs(5));

    // The audit log has the link, the login and the refused reuse.
    let out = fleet.drover(&["audit", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let audit: Value = serde_json::from_slice(&out.stdout).unwrap();
    let has = |action: &str, actor: &str, outcome: &str| {
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == action && e["actor"] == actor && e["outcome"] == outcome)
    };
    assert!(has("ui.link", "user:otto", "ok"), "{audit:#}");
    assert!(has("ui.login", "user:otto", "ok"), "{audit:#}");
    assert!(has("ui.login", "anonymous", "refused"), "{audit:#}");
}

#[test]
fn a_viewer_sees_why_it_may_not_act_and_is_refused_when_it_posts_anyway() {
    let mut fleet = Fleet::start_with("webui-viewer", &["--ui-listen", "127.0.0.1:0"]);
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let vera = add_and_login(&fleet, "vera", "viewer");
    let ui = format!("https://{}", fleet.ui[0].clone().expect("the UI's address"));
    let run = fleet.submit("long.yml", LONG);
    let browser = Browser::start(360, 740);
    browser.goto(&login_link(&fleet, &vera, &format!("/runs/{run}")));
    browser.wait_text("header .who", "vera · viewer", Duration::from_secs(5));
    browser.wait_text("#run-state", "running", Duration::from_secs(5));
    assert_eq!(browser.count("#cancel"), 0, "a viewer is not offered the cancel");
    browser.wait_text(".why-not", "needs the operator role", Duration::from_secs(5));
    // 360 px wide: the page does not scroll sideways.
    let wide = browser.eval("return document.documentElement.scrollWidth;", vec![]);
    assert!(wide.as_u64().unwrap_or(0) <= 360, "the page is {wide} px wide at 360");
    screenshot(&browser, "run-viewer-360");

    // The keyboard: the first Tab reaches the skip link, and Tab goes on
    // through the menu to the jobs of the graph.
    browser.tab();
    assert_eq!(browser.eval("return document.activeElement.className;", vec![]), json!("skip"));
    let mut reached = false;
    for _ in 0..30 {
        browser.tab();
        let on = browser.eval("return document.activeElement.closest('#dag .node') !== null;", vec![]);
        if on == json!(true) {
            reached = true;
            break;
        }
    }
    assert!(reached, "Tab reaches the graph's jobs");

    // A page to land on must be a path of the UI.
    let out = fleet.drover_with_tls(&vera, &["ui", "--no-open", "--page", "//evil.example/"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("must be a path of the UI"), "{}", text(&out.stderr));

    // Dark mode follows the system's.
    let dark = Browser::start_dark(1280, 900);
    dark.goto(&login_link(&fleet, &vera, "/runs"));
    dark.wait_text("table.runs", &format!("#{run}"), Duration::from_secs(5));
    let bg = dark.eval("return getComputedStyle(document.body).backgroundColor;", vec![]);
    let rgb: Vec<u32> =
        bg.as_str().unwrap_or_default().split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
    assert!(rgb.len() >= 3 && rgb[..3].iter().sum::<u32>() < 150, "a dark background in dark mode: {bg}");
    screenshot(&dark, "runs-dark");
    drop(dark);

    // Posting anyway, with this session's own CSRF token, is the API's
    // refusal.
    let csrf = browser.attr("meta[name=csrf]", "content").expect("the CSRF token");
    let (code, said) = post(&browser, &format!("/runs/{run}/cancel"), &format!("csrf={csrf}"), "same-origin");
    assert_eq!(code, 403, "{said}");
    assert!(said.contains("viewer"), "{said}");
    assert_eq!(fleet.status(&run)["state"], "running");

    // The audit log is an admin's.
    browser.goto(&format!("{ui}/audit"));
    browser.wait_text("main", "may not read the audit log", Duration::from_secs(5));
    let status = browser.eval_async("const done = arguments[0]; fetch('/audit').then(r => done(r.status));", vec![]);
    assert_eq!(status, json!(403));

    // Removing the user ends what its session may do at once.
    let out = fleet.drover(&["user", "rm", "vera"]);
    assert!(out.status.success(), "user rm: {}", text(&out.stderr));
    browser.goto(&format!("{ui}/runs/{run}"));
    browser.wait_text("main", "vera", Duration::from_secs(5));
    let status =
        browser.eval_async("const done = arguments[0]; fetch(location.pathname).then(r => done(r.status));", vec![]);
    assert_eq!(status, json!(403), "a removed user's session reads nothing");
}

#[test]
fn a_followers_ui_serves_the_pages_and_relays_actions_to_the_leader() {
    let etcd = Etcd::start("webui-ha", 1);
    let mut fleet = Fleet::start_ha_with("webui-ha", &etcd, 2, &["--ui-listen", "127.0.0.1:0"]);
    fleet.wait_leader();
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let otto = add_and_login(&fleet, "otto", "operator");
    let run = fleet.submit("long.yml", LONG);
    // The link is good on any coordinator: its grant is in the store, and
    // so is the session it opens, which both UIs then know.
    let link = login_link(&fleet, &otto, &format!("/runs/{run}"));
    let secret = link.rsplit_once("/login/").unwrap().1;
    let uis: Vec<String> = fleet.ui.iter().map(|u| format!("https://{}", u.clone().expect("a UI"))).collect();
    let browser = Browser::start(1280, 900);
    browser.goto(&format!("{}/login/{secret}", uis[0]));
    // The follower is the one whose pages say so (asked of the pages, as
    // leadership may move while the machine is busy).
    let ui = crate::harness::wait_for("a follower's page", Duration::from_secs(30), || {
        uis.iter()
            .find(|ui| {
                browser.goto(&format!("{ui}/runs/{run}"));
                browser.text(".banner").is_some_and(|t| t.contains("This coordinator follows"))
            })
            .cloned()
    });
    browser.wait_text("#run-state", "running", Duration::from_secs(10));
    browser.click("#cancel");
    browser.wait_text("#run-state", "cancelled", Duration::from_secs(20));
    assert!(browser.url().starts_with(&ui), "the browser stayed on the follower: {}", browser.url());
    assert_eq!(fleet.status(&run)["state"], "cancelled");

    // An agent that dials the follower is carried to the leader, and the
    // agents page, on the follower too, says by which coordinator.
    let follower = uis.iter().position(|u| *u == ui).expect("the follower's UI");
    let follower_url = fleet.url_of(follower);
    fleet.start_agent("carried", AgentSpec { urls: Some(&follower_url), ..AgentSpec::default() });
    let via = crate::harness::wait_for("the agent carried by the follower", Duration::from_secs(30), || {
        let out = fleet.drover(&["agents", "-o", "json"]);
        let agents: Value = serde_json::from_slice(&out.stdout).ok()?;
        let me = agents.as_array()?.iter().find(|a| a["name"] == "carried")?.clone();
        let via = me["via"].as_str()?.to_string();
        (me["connected"] == true && !via.is_empty()).then_some(via)
    });
    // The list is the leader's: the follower's page is the leader's page.
    browser.goto(&format!("{ui}/agents"));
    let note = format!("carried by coordinator {via}");
    browser.wait_text("table.agents tr[data-agent='carried']", &note, Duration::from_secs(10));
}
