//! The web dashboard in a real browser: headless Chromium, driven over WebDriver
//! (chromedriver) with fantoccini, loads each page from a node of a two-site mesh fed by
//! the simulator through seeded loss, and the test reads what the page shows — the device
//! rows and their counts against the API's, the plotted series and its points, which site
//! heard how much, live updates as more datagrams arrive — and, with a token, the form
//! that asks for it. `TELEMESH_SCREENSHOTS=1` saves a screenshot of each page in
//! `docs/img/dashboard-*.png` (the ones `docs/dashboard.md` shows).
//!
//! Without `chromium` and `chromedriver` on the PATH (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them) the tests say so and pass without running —
//! unless `TELEMESH_REQUIRE_BROWSER` is set, as `.ci/run` sets it: then they fail.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use telemesh_node::api::auth::Token;
use telemesh_node::{Config, Node};
use telemesh_proto::record::TimestampUnit;
use telemesh_proto::wire::iotstream::{MsgType, Repr};

use common::mesh::*;

/// A program on the PATH.
fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| std::env::split_paths(&path).map(|d| d.join(n)).find(|p| p.is_file()))
}

/// chromedriver on a free port, with its browser's profile in a temporary directory.
struct Browser {
    driver: Child,
    client: Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// `None` (and a line saying why) when Chromium or chromedriver is not installed.
    async fn start() -> Option<Browser> {
        let chromium = which(&["chromium", "chromium-browser", "google-chrome"]);
        let (Some(chromium), Some(chromedriver)) = (chromium, which(&["chromedriver"])) else {
            let why = "the dashboard's browser tests need chromium and chromedriver on the PATH \
                       (apt-get install chromium chromium-driver; .ci/run installs them)";
            assert!(std::env::var_os("TELEMESH_REQUIRE_BROWSER").is_none(), "{why}");
            eprintln!("SKIPPED: {why}");
            return None;
        };
        let port = common::free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("tempdir");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while ureq::get(&format!("{url}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--window-size=1400,1000",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), json!({ "binary": chromium, "args": args }));
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a browser session");
        Some(Browser { driver, client, _profile: profile })
    }

    /// Runs `script` (a function body that `return`s) in the page until it returns
    /// something other than null, and returns that.
    async fn wait(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = Value::Null;
        loop {
            match self.client.execute(script, vec![]).await {
                Ok(v) if !v.is_null() => return v,
                Ok(_) => {}
                Err(e) => last = json!(e.to_string()),
            }
            assert!(Instant::now() < deadline, "the page does not show {what} (last error: {last})");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Fails if the page shows an error (a script error, a refused request, something
    /// the content security policy blocked).
    async fn no_errors(&self, page: &str) {
        let script = "return [...document.querySelectorAll('.error')].filter((e) => !e.hidden).map((e) => e.textContent);";
        let errors = self.client.execute(script, vec![]).await.expect("script");
        assert_eq!(errors, json!([]), "the {page} page shows errors");
    }

    /// Saves a screenshot of the page as `docs/img/dashboard-<name>.png` when asked to.
    async fn screenshot(&self, name: &str) {
        if std::env::var_os("TELEMESH_SCREENSHOTS").is_none() {
            return;
        }
        // Let the charts and tables settle.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let png = self.client.screenshot().await.expect("screenshot");
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../docs/img/dashboard-{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        eprintln!("saved {}", path.display());
    }
}

/// A script returning the rows of the table `table` once it shows at least `min`: each
/// row's key (its device, node or site) and class, and each cell's text by its column.
fn rows_script(table: &str, min: usize) -> String {
    format!(
        "const rows = [...document.querySelectorAll({:?})];
         if (rows.length < {min}) return null;
         return rows.map((tr) => ({{
             key: tr.dataset.device || tr.dataset.node || tr.dataset.site || null,
             class: tr.className,
             cells: Object.fromEntries([...tr.cells].filter((td) => td.dataset.col)
                 .map((td) => [td.dataset.col, td.textContent])),
         }}));",
        format!("{table} tbody tr")
    )
}

/// A number as the page prints it (`1,234`), or `None` for `–`.
fn number(text: &str) -> Option<u64> {
    text.replace(',', "").parse().ok()
}

/// A data datagram of `device` with seq `seq` and a device time of `t_ms`.
fn data(device: u16, seq: u16, t_ms: u64, value: f32) -> Vec<u8> {
    Repr::new(MsgType::Data, device, seq, t_ms as u32, &[value, value + 1.0]).expect("valid").to_bytes()
}

/// Every page of a node of a two-site mesh, each checked against the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_shows_what_the_api_holds_and_updates_live() {
    let Some(browser) = Browser::start().await else { return };
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let a = Node::start(config(dirs[0].path(), None, "dash")).expect("a starts");
    let b = Node::start(config(dirs[1].path(), Some(&a), "dash")).expect("b starts");
    wait_full_mesh(&[&a, &b]);
    let (id_a, id_b) = (peer_id(&a), peer_id(&b));

    // 120 packets of 4 devices, ending a minute ago, heard by each site through 20% loss;
    // and a device only B hears, last heard 20 minutes ago by its clock: stale.
    let truth = quiet_sensors(dirs[0].path(), 120, now_ms() - 60_000, 7);
    let mut heard = Heard::new();
    feed(&[(&a, id_a.clone()), (&b, id_b.clone())], &truth, 0.2, 7, &mut heard);
    let old = (now_ms() - 20 * 60_000) / 60_000 * 60_000 + 1_000;
    let remote: Vec<Vec<u8>> = (0..10u16).map(|i| data(7001, i, old + u64::from(i) * 1000, f32::from(i))).collect();
    common::send(b.iotstream.expect("on"), &remote);
    wait_converged(&[&a, &b], heard.len(), Duration::from_secs(60));
    // Every window sealed on A, B's device too: the device list counts sealed records.
    let devices_of = |node: &Node| common::get_json(&format!("{}/v1/devices", node.url()));
    let deadline = Instant::now() + Duration::from_secs(90);
    let api_devices = loop {
        let page = devices_of(&a);
        let devices = page["devices"].as_array().expect("devices");
        let sealed: u64 = devices.iter().map(|d| d["records"].as_u64().expect("records")).sum();
        if sealed == heard.len() as u64 + 10 {
            break page;
        }
        assert!(Instant::now() < deadline, "A has not sealed every record: {page}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let c = &browser.client;
    c.set_window_size(1400, 1000).await.expect("window size");

    // Devices: one row per device with the API's counts; B's old device marked stale.
    c.goto(&format!("{}/#/devices", a.url())).await.expect("goto");
    let api_list = api_devices["devices"].as_array().expect("devices");
    let shown = browser.wait("five device rows", &rows_script("#devices", 5)).await;
    let shown = shown.as_array().expect("rows");
    assert_eq!(shown.len(), api_list.len(), "{shown:?}");
    for (row, d) in shown.iter().zip(api_list) {
        let key = format!("{}:{}", d["dialect"].as_str().expect("dialect"), d["device"]);
        assert_eq!(row["key"], json!(key));
        let cells = &row["cells"];
        let cell = |k: &str| number(cells[k].as_str().expect("cell"));
        assert_eq!(cell("records"), d["records"].as_u64(), "{key}: {row}");
        for k in ["received", "gaps", "duplicates", "reboots"] {
            assert_eq!(cell(k), d["heard_here"][k].as_u64(), "{key} {k}: {row}");
        }
        assert_eq!(cells["auth"], json!("none"), "{key}");
        assert_eq!(cell("sites"), Some(d["sites"].as_array().expect("sites").len() as u64), "{key}");
        let stale = row["class"].as_str().expect("class").contains("stale");
        assert_eq!(stale, key == "iotstream:7001", "{key} is stale (10m) only if it is B's old one: {row}");
    }
    assert_eq!(shown[4]["cells"]["received"], json!("–"), "A never heard B's device itself");
    // The filter keeps the rows that match.
    c.find(Locator::Css("#filter")).await.expect("filter").send_keys("7001").await.expect("type");
    let one = "const r = document.querySelectorAll('#devices tbody tr'); return r.length === 1 ? r[0].dataset.device : null;";
    let filtered = browser.wait("one filtered row", one).await;
    assert_eq!(filtered, json!("iotstream:7001"));
    c.find(Locator::Css("#filter")).await.expect("filter").clear().await.expect("clear");
    let five = "return document.querySelectorAll('#devices tbody tr').length === 5 ? true : null;";
    browser.wait("every row again", five).await;
    browser.no_errors("devices").await;
    browser.screenshot("devices").await;

    // A site: for each device, the records it heard itself against those after repair —
    // as the simulator's loss decided them.
    let per_site = |site: &str| -> BTreeMap<u32, (u64, u64)> {
        let mut out: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        for ((device, _, _), by) in &heard {
            let e = out.entry(*device).or_default();
            e.1 += 1;
            e.0 += u64::from(by.contains(site));
        }
        out
    };
    for (site, name) in [(&id_b, "site-b"), (&id_a, "site")] {
        c.goto(&format!("{}/#/site/{site}", a.url())).await.expect("goto");
        // A fresh load: the hash alone would not reload the page.
        c.refresh().await.expect("reload");
        let shown = browser.wait("the site's devices", &rows_script("#site-devices", 5)).await;
        let want = per_site(site);
        for row in shown.as_array().expect("rows") {
            let key = row["key"].as_str().expect("key");
            let device: u32 = key.trim_start_matches("iotstream:").parse().expect("id");
            let (here, after) = match want.get(&device) {
                Some(w) => *w,
                // B's own device: every record heard there, none at A.
                None => (if site == &id_b { 10 } else { 0 }, 10),
            };
            let cell = |k: &str| number(row["cells"][k].as_str().expect("cell"));
            assert_eq!(cell("heard"), Some(here), "{name} {key}: {row}");
            assert_eq!(cell("records"), Some(after), "{name} {key}: {row}");
        }
        browser.no_errors(name).await;
        if name == "site" {
            browser.screenshot("site").await;
        }
    }

    // One device: its merged history plotted, gaps marked, who heard which record.
    let merged = common::get_json(&format!("{}/v1/streams/iotstream/101/records?order=desc&limit=2000", a.url()));
    let api_records = merged["records"].as_array().expect("records");
    let gaps = api_records.iter().filter(|r| r["gap"].as_u64() > Some(0)).count();
    // Heartbeats carry no readings: they are in the log, not in the plot.
    let with_readings = api_records.iter().filter(|r| !r["readings"].as_array().expect("readings").is_empty()).count();
    assert!(with_readings < api_records.len(), "the simulator sends heartbeats too");
    c.goto(&format!("{}/#/device/iotstream/101", a.url())).await.expect("goto");
    c.refresh().await.expect("reload");
    let chart = browser
        .wait(
            "the readings plotted",
            "const b = document.querySelector('#readings'); const c = document.querySelector('#coverage');
             return b && b.dataset.points && b.querySelector('canvas') && c.querySelector('canvas')
               ? { points: +b.dataset.points, series: b.dataset.series, gaps: +b.dataset.gaps, sites: +c.dataset.sites,
                   legend: [...b.querySelectorAll('.u-legend .u-series th')].map((t) => t.textContent.trim()) }
               : null;",
        )
        .await;
    assert_eq!(chart["points"], json!(with_readings), "{chart}");
    assert_eq!(chart["series"], json!("r1,r2,r3,r4,r5"), "{chart}");
    assert_eq!(chart["gaps"], json!(gaps), "{chart}");
    assert!(gaps > 0, "20% loss at two sites leaves some records missing");
    assert_eq!(chart["sites"], json!(2), "both sites heard records of it: {chart}");
    assert!(chart["legend"].as_array().expect("legend").iter().any(|l| l == "r1"), "{chart}");
    let heard_rows = browser.wait("who heard it", &rows_script("#heard", 2)).await;
    let want = [(&id_a, per_site(&id_a)[&101].0), (&id_b, per_site(&id_b)[&101].0)];
    for (site, n) in want {
        let rows = heard_rows.as_array().expect("rows");
        let row = rows.iter().find(|r| r["key"] == json!(site)).expect("a row per site");
        assert_eq!(number(row["cells"]["heard"].as_str().expect("cell")), Some(n), "{site}: {row}");
    }
    // Live: three more frames reach A; the log shows them as they come, and the plot grows.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let last_seq = truth.iter().filter(|t| t.device == 101).map(|t| t.seq).next_back().expect("sent");
    let now = now_ms();
    let next = |i: u16| (last_seq as u16).wrapping_add(i);
    let more: Vec<Vec<u8>> = (1..=3u16).map(|i| data(101, next(i), now + u64::from(i) * 10, 40.0)).collect();
    common::send(a.iotstream.expect("on"), &more);
    let live = browser
        .wait(
            "three live frames",
            "const n = document.querySelector('#live-count'); const top = document.querySelector('#log tbody tr');
             return n && +n.dataset.count >= 3 ? { count: +n.dataset.count, top: +top.dataset.seq, isNew: top.className,
               points: +document.querySelector('#readings').dataset.points } : null;",
        )
        .await;
    assert_eq!(live["count"], json!(3), "{live}");
    assert_eq!(live["top"], json!(u64::from(next(3))), "the newest frame on top: {live}");
    assert_eq!(live["isNew"], json!("new"));
    assert_eq!(live["points"], json!(with_readings + 3), "{live}");
    browser.no_errors("device").await;
    // Tall enough for the plots and the log.
    c.set_window_size(1400, 1900).await.expect("window size");
    browser.screenshot("device").await;
    c.set_window_size(1400, 1000).await.expect("window size");

    // The mesh: both nodes, B connected; the ingest totals follow the summary feed.
    c.goto(&format!("{}/#/mesh", a.url())).await.expect("goto");
    c.refresh().await.expect("reload");
    let nodes = browser.wait("both nodes", &rows_script("#nodes", 2)).await;
    let states: BTreeMap<String, String> = nodes
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r["key"].as_str().expect("node").to_owned(), r["cells"]["state"].as_str().expect("state").to_owned()))
        .collect();
    let want = BTreeMap::from([(id_a.clone(), "this node".to_owned()), (id_b.clone(), "connected".to_owned())]);
    assert_eq!(states, want);
    let received = |v: &Value| number(v.as_str().expect("text")).expect("a number");
    let script = "const e = document.querySelector('[data-stat=received]'); return e ? e.textContent : null;";
    let before = received(&browser.wait("the received total", script).await);
    let status = common::get_json(&format!("{}/v1/status", a.url()));
    assert_eq!(before, status["totals"]["received"].as_u64().expect("received"));
    common::send(a.iotstream.expect("on"), &[data(101, next(4), now_ms(), 41.0)]);
    let after = browser
        .wait(
            "the new total",
            &format!(
                "const e = document.querySelector('[data-stat=received]'); return e && e.textContent !== {:?} ? e.textContent : null;",
                before.to_string()
            ),
        )
        .await;
    assert_eq!(received(&after), before + 1);
    assert_eq!(
        browser.wait("the live badge", "return document.querySelector('#live').textContent === 'live' ? 'live' : null;").await,
        json!("live")
    );
    browser.no_errors("mesh").await;
    browser.screenshot("mesh").await;

    drop(browser);
    for n in [a, b] {
        n.stop().expect("stops");
    }
}

const TOKEN: &str = "tm-dashboard-5d1c9e";

/// A node that wants a token: the page loads without it, asks for it, refuses a wrong
/// one, and with the right one shows the node's data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_asks_for_the_token_and_shows_data_with_it() {
    let Some(browser) = Browser::start().await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        http_token: Some(Token::parse(TOKEN, "test").expect("token")),
        ..common::config(dir.path(), TimestampUnit::Ms)
    };
    let node = Node::start(config).expect("node starts");
    let now = now_ms();
    let five: Vec<Vec<u8>> = (0..5u16).map(|i| data(9, i, now + u64::from(i), 1.0)).collect();
    common::send(node.iotstream.expect("on"), &five);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let url = format!("{}/v1/status", node.url());
        let status = ureq::get(&url).set("Authorization", &format!("Bearer {TOKEN}")).call().expect("status");
        let status: Value = serde_json::from_str(&status.into_string().expect("body")).expect("json");
        if status["totals"]["records"] == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "the node took in {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The files without the token, with their policy and tags; the data only with it.
    let page = ureq::get(&format!("{}/", node.url())).call().expect("the page needs no token");
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(page.header("content-security-policy").is_some_and(|p| p.contains("script-src 'self'")));
    let tag = page.header("etag").expect("an etag").to_owned();
    match ureq::get(&format!("{}/", node.url())).set("If-None-Match", &tag).call() {
        Ok(r) => assert_eq!(r.status(), 304),
        Err(e) => panic!("{e}"),
    }
    let js = ureq::get(&format!("{}/ui/app.js", node.url())).call().expect("a script");
    assert_eq!(js.header("content-type"), Some("text/javascript; charset=utf-8"));
    for data in ["/v1/summary", "/v1/coverage", "/v1/devices", "/ui/secret"] {
        match ureq::get(&format!("{}{data}", node.url())).call() {
            Err(ureq::Error::Status(401, _)) => {}
            other => panic!("{data}: {other:?}"),
        }
    }

    let c = &browser.client;
    c.set_window_size(1400, 1000).await.expect("window size");
    c.goto(&format!("{}/#/devices", node.url())).await.expect("goto");
    browser.wait("the token form", "return document.querySelector('#login #token') ? true : null;").await;
    browser.screenshot("login").await;
    c.find(Locator::Css("#token")).await.expect("input").send_keys("not-the-token").await.expect("type");
    c.find(Locator::Css("#login button")).await.expect("button").click().await.expect("click");
    let refused = browser
        .wait(
            "the refusal",
            "const e = document.querySelector('#login-error'); return e && !e.hidden && e.textContent ? e.textContent : null;",
        )
        .await;
    assert!(refused.as_str().is_some_and(|t| t.contains("not this node")), "{refused}");
    let token = c.find(Locator::Css("#token")).await.expect("input");
    token.clear().await.expect("clear");
    token.send_keys(TOKEN).await.expect("type");
    c.find(Locator::Css("#login button")).await.expect("button").click().await.expect("click");
    let rows = browser.wait("the device", &rows_script("#devices", 1)).await;
    assert_eq!(rows[0]["key"], json!("iotstream:9"), "{rows}");
    assert_eq!(number(rows[0]["cells"]["received"].as_str().expect("cell")), Some(5));
    // The live feed authenticates too.
    let live = "return document.querySelector('#live').textContent === 'live' ? true : null;";
    browser.wait("the live badge", live).await;
    browser.no_errors("devices").await;
    drop(browser);
    node.stop().expect("stops");
}
