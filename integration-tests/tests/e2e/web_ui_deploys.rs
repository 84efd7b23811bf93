//! The web UI's delivery pages (issue 19) in a real browser: headless
//! Chromium over WebDriver (`harness::browser`), against the real
//! coordinator with `--ui-listen`, real agents serving deploys.rs's Python
//! service and real git for the apps. An operator watches a rolling
//! rollout on its page go healthy node by node, live (the page's rows are
//! fetched again, the page itself is never reloaded), then finds it in
//! the rollouts list and each node healthy on the environments page; and
//! sees a detect-only app's page turn out of sync, naming the node, once a
//! node's service is killed by hand.
//!
//! With `DROVER_UI_SCREENSHOTS=DIR`, the pages are saved there as PNG:
//! `rollout.png`, `rollouts.png`, `envs.png`, `app.png` and `apps.png`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::deploys::{Web, json};
use crate::gitops::{Repo, app, build, create, history, service_file, stop_by_hand};
use crate::harness::browser::Browser;
use crate::harness::{Fleet, text, wait_for_or_report};
use crate::roles::add_and_login;
use crate::web_ui::screenshot;

/// A rolling deploy a node at a time.
const ROLLING: &str = "{rolling: {max_parallel: 1}}";

/// A fleet with the web UI, `n` agents labelled role=web, and the
/// environment `staging` over them.
fn web(tag: &str, n: usize) -> Web {
    Web::on(Fleet::start_with(tag, &["--ui-listen", "127.0.0.1:0"]), n, "role=web", "staging")
}

/// The UI's base URL.
fn ui(web: &Web) -> String {
    format!("https://{}", web.fleet.ui[0].clone().expect("the UI's address"))
}

/// `drover ui -o json` as the user of `tls`: the login link to `page`.
fn login_link(fleet: &Fleet, tls: &Path, page: &str) -> String {
    let out = fleet.drover_with_tls(tls, &["ui", "--no-open", "--page", page, "-o", "json"]);
    assert!(out.status.success(), "drover ui: {}{}", text(&out.stdout), text(&out.stderr));
    let link: Value = serde_json::from_slice(&out.stdout).unwrap();
    link["url"].as_str().unwrap().to_owned()
}

/// The page's text, whitespace folded, for a failure's message.
fn page_text(browser: &Browser) -> String {
    let page = browser.text("body").unwrap_or_default();
    page.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(3000).collect()
}

/// What a rollout's page shows at one moment: its phase and each node's
/// row, in the page's order.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    phase: String,
    nodes: Vec<(String, String)>,
    marker: bool,
}

impl Seen {
    fn healthy(&self) -> usize {
        self.nodes.iter().filter(|(_, state)| state == "healthy").count()
    }
}

const LOOK: &str = "const phase = document.querySelector('#live-rows #rollout-phase');
    const rows = document.querySelectorAll('#live-rows table.nodes tbody tr[data-node]');
    return {
        phase: phase ? phase.getAttribute('data-state') : '',
        nodes: Array.from(rows, r => [r.getAttribute('data-node'), r.getAttribute('data-state')]),
        marker: window.droverMarker === 1,
    };";

fn look(browser: &Browser) -> Seen {
    let v = browser.eval(LOOK, vec![]);
    let nodes = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n[0].as_str().unwrap_or_default().to_owned(), n[1].as_str().unwrap_or_default().to_owned()))
        .collect();
    Seen { phase: v["phase"].as_str().unwrap_or_default().to_owned(), nodes, marker: v["marker"] == true }
}

#[test]
fn an_operator_watches_a_rolling_deploy_go_healthy_node_by_node_live() {
    let web = web("webui-rollout", 3);
    let otto = add_and_login(&web.fleet, "otto", "operator");
    let ui = ui(&web);
    let browser = Browser::start(1280, 900);
    browser.goto(&login_link(&web.fleet, &otto, "/rollouts"));
    browser.wait_text("header .who", "otto · operator", Duration::from_secs(10));
    assert_eq!(browser.count("table.rollouts tbody tr[data-rollout]"), 0, "{}", page_text(&browser));

    // Each node takes three passing checks a second apart: long enough to
    // be seen on its own.
    let pipeline = web.pipeline("v1", ROLLING);
    assert!(pipeline.contains("healthy_after: 2"), "{pipeline}");
    let pipeline = pipeline.replace("healthy_after: 2", "healthy_after: 3");
    let run = web.fleet.submit("v1.yml", &pipeline);
    let id = wait_for_or_report(
        "the rollout to exist",
        Duration::from_secs(60),
        || json(&web.fleet, &["rollouts", "-o", "json"]).get(0).map(|r| r["id"].clone()),
        || format!("{:#}\n{}", web.fleet.status(&run), web.fleet.logs()),
    );
    let started = Instant::now();
    browser.goto(&format!("{ui}/rollouts/{id}"));
    browser.eval("window.droverMarker = 1;", vec![]);

    // Every change the page shows, until it says succeeded.
    let mut seen: Vec<(Duration, Seen)> = Vec::new();
    let deadline = started + Duration::from_secs(120);
    loop {
        let now = look(&browser);
        if seen.last().is_none_or(|(_, last)| *last != now) {
            seen.push((started.elapsed(), now.clone()));
        }
        if now.phase == "succeeded" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout's page did not say succeeded within 120 s; it showed {seen:#?}\nthe page says: {}\n{}",
            page_text(&browser),
            web.fleet.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("the rollout's page over {:?}:", started.elapsed());
    for (at, s) in &seen {
        eprintln!("  {:>6.1}s {} {:?}", at.as_secs_f64(), s.phase, s.nodes);
    }
    let mut counts: Vec<usize> = seen.iter().map(|(_, s)| s.healthy()).collect();
    counts.dedup();
    let from_one: Vec<usize> = counts.iter().copied().skip_while(|c| *c == 0).collect();
    assert_eq!(from_one, [1, 2, 3], "healthy nodes went 1, 2, 3 on the page: {counts:?} in {seen:#?}");
    assert!(seen.iter().all(|(_, s)| s.marker), "the page was never reloaded: {seen:#?}");
    assert!(
        seen.iter().any(|(_, s)| s.nodes.iter().any(|(_, state)| state == "checking")),
        "a node was seen being checked: {seen:#?}"
    );
    let last = &seen.last().unwrap().1;
    let names: Vec<&str> = last.nodes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["web-1", "web-2", "web-3"], "{last:?}");
    assert_eq!(browser.text("#rollout-phase").unwrap_or_default().trim(), "succeeded", "{}", page_text(&browser));
    screenshot(&browser, "rollout");
    let status = web.fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}");

    // The rollouts list, then each node healthy on the environments page.
    browser.goto(&format!("{ui}/rollouts"));
    browser.wait_text(
        &format!("table.rollouts tbody tr[data-rollout='{id}'] td .state"),
        "succeeded",
        Duration::from_secs(10),
    );
    screenshot(&browser, "rollouts");
    browser.goto(&format!("{ui}/envs"));
    for (node, _) in &web.nodes {
        browser.wait_js(
            &format!("{node}'s web to show healthy"),
            Duration::from_secs(15),
            "const cell = document.querySelector(`table.services tbody tr[data-service='web'][data-node='${arguments[0]}'] td.health`);
             return cell && cell.textContent.trim().startsWith('healthy');",
            vec![serde_json::json!(node)],
        );
    }
    screenshot(&browser, "envs");
}

#[test]
fn an_apps_page_shows_drift_live_once_a_nodes_service_is_killed() {
    let web = web("webui-drift", 2);
    let v1 = build(&web, "v1");
    let repo = Repo::new(web.fleet.dir.path());
    repo.commit("main", &service_file(&web, &v1), "web v1");
    create(&web, &repo, &["--detect-only"]);
    // Detect-only never syncs on its own: one sync by hand puts v1 on the
    // nodes.
    let out = web.fleet.drover(&["app", "sync", "web", "--wait", "-o", "json"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let synced: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(synced["outcome"], "succeeded", "{synced:#}\n{:#?}", history(&web));
    assert_eq!(web.versions(), vec![Some("v1".to_string()); 2]);

    let otto = add_and_login(&web.fleet, "otto", "operator");
    let browser = Browser::start(1280, 900);
    browser.goto(&login_link(&web.fleet, &otto, "/apps/web"));
    browser.wait_js(
        "the app to show synced and healthy",
        Duration::from_secs(30),
        "const text = css => document.querySelector(css)?.textContent.trim();
         return text('#live-rows #app-sync') === 'synced' && text('#live-rows #app-health') === 'healthy';",
        vec![],
    );
    browser.eval("window.droverMarker = 1;", vec![]);

    let started = Instant::now();
    stop_by_hand(&web, "web-2");
    browser.wait_js(
        "the app's page to show web-2's drift, live",
        Duration::from_secs(45),
        "const text = css => document.querySelector(css)?.textContent.trim();
         const drift = Array.from(document.querySelectorAll('#live-rows ul.drift li'), li => li.textContent);
         return window.droverMarker === 1 && text('#live-rows #app-sync') === 'out_of_sync'
             && drift.some(d => d.includes('web-2'));",
        vec![],
    );
    eprintln!("the app's page showed the drift {:.1}s after the kill", started.elapsed().as_secs_f64());
    let cli = app(&web);
    let drift: Vec<String> = browser
        .eval("return Array.from(document.querySelectorAll('ul.drift li'), li => li.textContent.trim());", vec![])
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(drift.iter().any(|d| d.contains("web-2 unhealthy")), "{drift:?}, the CLI says {cli:#}");
    browser.wait_text("#live-rows #app-health", "degraded", Duration::from_secs(10));
    let row = "table.diff tbody tr[data-service='web'][data-node='web-2']";
    assert_eq!(browser.count(row), 1, "web-2's row in the diff: {}", page_text(&browser));
    eprintln!(
        "web-2 in the diff: wanted {:?}, running {:?}",
        browser.text(&format!("{row} td.wanted")).map(|t| t.trim().to_owned()),
        browser.text(&format!("{row} td.running")).map(|t| t.trim().to_owned()),
    );
    screenshot(&browser, "app");

    let ui = ui(&web);
    browser.goto(&format!("{ui}/apps"));
    browser.wait_js(
        "the apps list to show web out of sync",
        Duration::from_secs(5),
        "return document.querySelector(\"table.apps tbody tr[data-app='web'][data-sync='out_of_sync']\") !== null;",
        vec![],
    );
    screenshot(&browser, "apps");
    assert_eq!(web.versions(), [Some("v1".to_string()), None], "detect-only changed nothing");
}
