//! `telemesh query` and `telemesh status`: a small HTTP client of the node's API.
//!
//! [`Api`] is the one way subcommands talk to a node: its base URL and, for a node that
//! wants one, the bearer token ([`ApiArgs`] gives every subcommand the same `--node` and
//! `--token-file` options).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;
use telemesh_proto::wire::Dialect;

use crate::api::auth::Token;
use crate::api::export::{self, RecordView};

/// The environment variable holding the token when `--token-file` is not given.
pub const TOKEN_ENV: &str = "TELEMESH_HTTP_TOKEN";

/// `--node` and `--token-file`, for every subcommand that talks to a node.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// The node's HTTP API.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080", env = "TELEMESH_NODE")]
    pub node: String,
    /// File holding the node's bearer token (its --http-token-file); without it, the token
    /// is taken from $TELEMESH_HTTP_TOKEN if set.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl ApiArgs {
    /// The client these options describe; the token file is read here.
    pub fn api(&self) -> anyhow::Result<Api> {
        let token = match &self.token_file {
            Some(path) => Some(Token::load(path).context("--token-file")?),
            None => match std::env::var(TOKEN_ENV) {
                Ok(text) => Some(Token::parse(&text, &format!("${TOKEN_ENV}"))?),
                Err(std::env::VarError::NotPresent) => None,
                Err(std::env::VarError::NotUnicode(_)) => bail!("${TOKEN_ENV} is not UTF-8"),
            },
        };
        Ok(Api::new(&node_url(&self.node)?, token))
    }
}

/// `--node` as a base URL: `host:port` means `http://host:port`.
fn node_url(node: &str) -> anyhow::Result<String> {
    match node.split_once("://") {
        None => Ok(format!("http://{node}")),
        Some(("http", _)) => Ok(node.to_owned()),
        Some((scheme, _)) => bail!("--node {node}: {scheme}:// is not supported; the API speaks http:// (put TLS in front of it)"),
    }
}

/// A node's HTTP API: base URL and, if it needs one, the bearer token. Each call returns
/// the body of a 2xx answer, or an error carrying the node's JSON error message.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    token: Option<Token>,
}

impl Api {
    pub fn new(base: &str, token: Option<Token>) -> Api {
        Api { base: base.trim_end_matches('/').to_owned(), token }
    }

    /// `GET base + path` with query parameters.
    pub fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<String> {
        Ok(self.get_with_header(path, query, "")?.0)
    }

    /// `GET base + path`, and the value of `header` in the answer if there is one.
    pub fn get_with_header(&self, path: &str, query: &[(&str, String)], header: &str) -> anyhow::Result<(String, Option<String>)> {
        let mut req = self.request("GET", path);
        for (k, v) in query {
            req = req.query(k, v);
        }
        let resp = self.response(req.call(), path)?;
        let value = resp.header(header).map(str::to_owned);
        Ok((body(resp).context("cannot read the node's answer")?, value))
    }

    /// `POST base + path` with a JSON body (or none).
    pub fn post(&self, path: &str, body: Option<&serde_json::Value>) -> anyhow::Result<String> {
        let req = self.request("POST", path);
        let result = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        self.answer(result, path)
    }

    /// `DELETE base + path`.
    pub fn delete(&self, path: &str) -> anyhow::Result<String> {
        self.answer(self.request("DELETE", path).call(), path)
    }

    /// `GET base + path` as server-sent events: `on_data` gets each event's data, until
    /// the node ends the stream or `on_data` says stop. No overall timeout (a tail runs
    /// until stopped); a read stalls out after a minute (the node writes at least every
    /// 15 s).
    pub fn events(&self, path: &str, query: &[(&str, String)], mut on_data: impl FnMut(&str) -> anyhow::Result<bool>) -> anyhow::Result<()> {
        use std::io::BufRead;
        let agent = ureq::AgentBuilder::new().timeout_read(std::time::Duration::from_secs(60)).build();
        let mut req = agent.get(&format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.set("Authorization", &t.header_value());
        }
        for (k, v) in query {
            req = req.query(k, v);
        }
        let resp = self.response(req.call(), path)?;
        for line in std::io::BufReader::new(resp.into_reader()).lines() {
            let line = line.context("the node's event stream broke off")?;
            if let Some(data) = line.strip_prefix("data: ") {
                if !on_data(data)? {
                    break;
                }
            }
        }
        Ok(())
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let req = ureq::request(method, &format!("{}{path}", self.base)).timeout(std::time::Duration::from_secs(30));
        match &self.token {
            Some(t) => req.set("Authorization", &t.header_value()),
            None => req,
        }
    }

    fn answer(&self, result: Result<ureq::Response, ureq::Error>, path: &str) -> anyhow::Result<String> {
        body(self.response(result, path)?).context("cannot read the node's answer")
    }

    /// A 2xx answer, or an error carrying the node's JSON error message.
    fn response(&self, result: Result<ureq::Response, ureq::Error>, path: &str) -> anyhow::Result<ureq::Response> {
        match result {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(code, resp)) => {
                let body = body(resp).unwrap_or_default();
                let msg = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| {
                        let e = v.get("error")?.as_str()?.to_owned();
                        Some(match v.get("parameter").and_then(|p| p.as_str()) {
                            Some(p) => format!("{p}: {e}"),
                            None => e,
                        })
                    })
                    .unwrap_or_else(|| not_telemesh(&body));
                if code == 401 {
                    let hint = if self.token.is_some() { "check" } else { "give" };
                    bail!("node answered {code}: {msg} ({hint} --token-file FILE or ${TOKEN_ENV})")
                }
                bail!("node answered {code}: {msg}")
            }
            Err(e) => Err(anyhow!("cannot reach the node at {}{path}: {e}", self.base)),
        }
    }
}

/// One line for an answer that is not the API's JSON error: another server (an HTML
/// page, say) is listening where the node was expected.
fn not_telemesh(body: &str) -> String {
    let first = body.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let first: String = first.chars().take(80).collect();
    format!("not a telemesh API (is --node right?); its answer began {first:?}")
}

/// Output of `telemesh query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A readable table.
    Table,
    Json,
    Ndjson,
    Csv,
    /// A CloudEvents 1.0 batch (a JSON array), one page.
    Cloudevents,
}

/// Which history `telemesh query` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ViewArg {
    Merged,
    Local,
}

/// Largest answer read from a node (a full 100,000-record page is about 40 MB of JSON).
const MAX_BODY: u64 = 256 << 20;

/// The body of `resp`, up to [`MAX_BODY`] bytes.
pub fn body(resp: ureq::Response) -> std::io::Result<String> {
    use std::io::Read;
    let mut s = String::new();
    resp.into_reader().take(MAX_BODY).read_to_string(&mut s)?;
    Ok(s)
}

#[derive(Debug, Deserialize)]
struct RecordsPage {
    count: usize,
    next_from: Option<String>,
    next_cursor: Option<String>,
    records: Vec<RecordView>,
}

/// What `telemesh query` asks for.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub dialect: Dialect,
    /// One device id, several (`3001,3002`), ranges of ids (`10-20`: the devices the node
    /// knows in it), or a mix.
    pub device: &'a str,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub limit: Option<usize>,
    pub format: OutputFormat,
    pub view: ViewArg,
    /// Records asked for per page when paging (CSV, NDJSON): at most [`crate::api::MAX_LIMIT`].
    pub page: usize,
    /// Only the latest this many records (at most [`crate::api::MAX_LIMIT`]), still printed
    /// in device order.
    pub last: Option<usize>,
    /// Keep printing records as they arrive (a live tail), from `from` if given, else
    /// from now; up to `limit` records if given.
    pub follow: bool,
}

/// Fetches records of one device and renders them in `format`. CSV and NDJSON page
/// through the whole range (up to `limit` records, if given): each page continues after
/// the last with its cursor, so no record is repeated or skipped. A table or JSON is one
/// page, which says whether more follow.
pub fn query(api: &Api, q: Query<'_>, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let Query { dialect, device, from, to, limit, format, view, page, last, follow } = q;
    let mut base: Vec<(&str, String)> = Vec::new();
    let (path, several) = match device.parse::<u32>() {
        Ok(one) => (format!("/v1/streams/{dialect}/{one}/records"), false),
        Err(_) => {
            let devices: Vec<String> = device.split(',').map(|d| format!("{dialect}:{d}")).collect();
            base.push(("devices", devices.join(",")));
            ("/v1/records".to_owned(), true)
        }
    };
    if several && last.is_some() {
        bail!("--last is for one device");
    }
    if let Some(f) = from {
        base.push(("from", f.to_owned()));
    }
    if let Some(t) = to {
        base.push(("to", t.to_owned()));
    }
    let wire_format = match format {
        OutputFormat::Table | OutputFormat::Json => "json",
        OutputFormat::Ndjson => "ndjson",
        OutputFormat::Csv => "csv",
        OutputFormat::Cloudevents => "cloudevents",
    };
    base.push(("format", wire_format.to_owned()));
    base.push(("view", if view == ViewArg::Local { "local" } else { "merged" }.to_owned()));
    if follow {
        if several || last.is_some() {
            bail!("--follow is for one device, without --last");
        }
        return tail(api, &path, base, limit, format, out);
    }
    if let Some(n) = last {
        base.push(("order", "desc".to_owned()));
        base.push(("limit", n.to_string()));
        let body = api.get(&path, &base)?;
        return write_oldest_first(&body, format, out);
    }
    if matches!(format, OutputFormat::Table | OutputFormat::Json | OutputFormat::Cloudevents) {
        if let Some(l) = limit {
            base.push(("limit", l.to_string()));
        }
        let body = api.get(&path, &base)?;
        if format != OutputFormat::Table {
            out.write_all(body.as_bytes())?;
            return Ok(());
        }
        let page: RecordsPage = serde_json::from_str(&body).context("the node's answer is not a records page")?;
        out.write_all(table(&page, several).as_bytes())?;
        return Ok(());
    }
    let mut left = limit.unwrap_or(usize::MAX);
    let mut cursor: Option<String> = None;
    let mut first = true;
    while left > 0 {
        let mut q = base.clone();
        q.push(("limit", left.min(page.clamp(1, crate::api::MAX_LIMIT)).to_string()));
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let (body, next) = api.get_with_header(&path, &q, crate::api::NEXT_CURSOR_HEADER)?;
        if format == OutputFormat::Csv && first {
            // Later pages keep the first page's reading columns (a label they alone
            // carry goes in `other`), so every row fits the one header.
            let mut reader = ::csv::Reader::from_reader(body.as_bytes());
            let header = reader.headers().context("the node's answer is not CSV")?;
            let n = header.len().saturating_sub(1);
            let labels: Vec<&str> = header.iter().take(n).skip(export::CSV_COLUMNS.len()).collect();
            base.push(("columns", labels.join(",")));
        }
        // Every CSV page starts with the header line: written once.
        let rows = match (format, first) {
            (OutputFormat::Csv, false) => body.split_once('\n').map_or("", |(_, rows)| rows),
            _ => body.as_str(),
        };
        out.write_all(rows.as_bytes())?;
        left = left.saturating_sub(rows.lines().count() - usize::from(format == OutputFormat::Csv && first));
        first = false;
        match next {
            Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
            Some(_) => bail!("the node gave the same cursor twice; stopping"),
            None => break,
        }
    }
    Ok(())
}

/// A live tail: each record as it comes, as a table row, an NDJSON line or a CloudEvent
/// per line, until the node stops or `limit` records are printed.
fn tail(api: &Api, path: &str, mut base: Vec<(&str, String)>, limit: Option<usize>, format: OutputFormat, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let wire = match format {
        OutputFormat::Table | OutputFormat::Ndjson => "json",
        OutputFormat::Cloudevents => "cloudevents",
        OutputFormat::Json | OutputFormat::Csv => bail!("--follow prints a table, ndjson or cloudevents"),
    };
    base.retain(|(k, _)| *k != "format");
    base.push(("format", wire.to_owned()));
    base.push(("follow", "true".to_owned()));
    if format == OutputFormat::Table {
        out.write_all(table_header(false).as_bytes())?;
        out.flush()?;
    }
    let mut left = limit.unwrap_or(usize::MAX);
    api.events(path, &base, |data| {
        match format {
            OutputFormat::Table => {
                let r: RecordView = serde_json::from_str(data).context("the node sent something that is not a record")?;
                out.write_all(table_row(&r, false).as_bytes())?;
            }
            _ => writeln!(out, "{data}")?,
        }
        out.flush()?;
        left -= 1;
        Ok(left > 0)
    })
}

fn table_header(several: bool) -> String {
    let mut out = String::new();
    if several {
        let _ = write!(out, "{:<21} ", "device");
    }
    let _ = writeln!(
        out,
        "{:<30} {:>8} {:>10} {:<9} {:>5} {:>5} {:<11}  readings",
        "device time", "seq", "ext seq", "kind", "gap", "heard", "auth"
    );
    out
}

fn table_row(r: &RecordView, several: bool) -> String {
    let mut out = String::new();
    let readings: Vec<String> = r.readings.iter().map(|x| format!("{}={}", x.label, export::value_text(x.value))).collect();
    if several {
        let _ = write!(out, "{:<21} ", format!("{}:{}", r.dialect, r.device));
    }
    let _ = writeln!(
        out,
        "{:<30} {:>8} {:>10} {:<9} {:>5} {:>5} {:<11}  {}",
        r.device_time,
        r.seq,
        r.ext_seq,
        r.kind.name(),
        r.gap,
        r.heard_by.len(),
        r.auth.name(),
        readings.join(" ")
    );
    out
}

/// An `order=desc` answer written in device order (the oldest of the latest first).
fn write_oldest_first(body: &str, format: OutputFormat, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    match format {
        OutputFormat::Csv => {
            let (header, rows) = body.split_once('\n').unwrap_or((body, ""));
            writeln!(out, "{header}")?;
            for row in rows.lines().rev() {
                writeln!(out, "{row}")?;
            }
        }
        OutputFormat::Ndjson => {
            for row in body.lines().rev() {
                writeln!(out, "{row}")?;
            }
        }
        OutputFormat::Json | OutputFormat::Cloudevents => {
            let mut page: serde_json::Value = serde_json::from_str(body).context("the node's answer is not a records page")?;
            let records = if format == OutputFormat::Json { page.get_mut("records") } else { Some(&mut page) };
            if let Some(records) = records.and_then(|r| r.as_array_mut()) {
                records.reverse();
            }
            writeln!(out, "{page}")?;
        }
        OutputFormat::Table => {
            let mut page: RecordsPage = serde_json::from_str(body).context("the node's answer is not a records page")?;
            page.records.reverse();
            // Older records than these are the rest of the history, not more of the answer.
            page.next_cursor = None;
            out.write_all(table(&page, false).as_bytes())?;
        }
    }
    Ok(())
}

/// A page as a table; `several`: a first column names each record's device.
fn table(page: &RecordsPage, several: bool) -> String {
    let mut out = table_header(several);
    for r in &page.records {
        out.push_str(&table_row(r, several));
    }
    let _ = write!(out, "{} record(s)", page.count);
    if page.next_cursor.is_some() {
        let more = page.next_from.as_deref().unwrap_or("-");
        let _ = write!(out, "; more follow from {more} (--format csv or ndjson pages through them all)");
    }
    out.push('\n');
    out
}

/// Output of `telemesh devices`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// A readable table.
    Table,
    Ndjson,
}

/// Lists every device of `GET /v1/devices`, page by page, as a table or NDJSON.
pub fn devices(api: &Api, dialect: Option<Dialect>, stale: Option<&str>, format: ListFormat, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let mut base: Vec<(&str, String)> = vec![("limit", crate::api::devices::MAX_LIMIT.to_string())];
    if let Some(d) = dialect {
        base.push(("dialect", d.to_string()));
    }
    if let Some(s) = stale {
        base.push(("stale", s.to_owned()));
    }
    if format == ListFormat::Table {
        writeln!(
            out,
            "{:<21} {:>9} {:>7}  {:<30}  {:<30}  {:>9} {:>6} {:>7} {:>7}  {:>5}",
            "device", "records", "windows", "last device time", "last seen here", "received", "gaps", "dups", "reboots", "sites"
        )?;
    }
    let mut cursor: Option<String> = None;
    let mut total = 0usize;
    loop {
        let mut q = base.clone();
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let body = api.get("/v1/devices", &q)?;
        let page: serde_json::Value = serde_json::from_str(&body).context("the node's answer is not a device list")?;
        for d in page["devices"].as_array().context("the node's answer is not a device list")? {
            total += 1;
            if format == ListFormat::Ndjson {
                writeln!(out, "{d}")?;
                continue;
            }
            let text = |k: &str| d[k].as_str().unwrap_or("-").to_owned();
            let here = |k: &str| d["heard_here"][k].as_u64().map_or_else(|| "-".to_owned(), |n| n.to_string());
            let stale = if d["stale"].as_bool() == Some(true) { "  stale" } else { "" };
            writeln!(
                out,
                "{:<21} {:>9} {:>7}  {:<30}  {:<30}  {:>9} {:>6} {:>7} {:>7}  {:>5}{stale}",
                format!("{}:{}", text("dialect"), d["device"]),
                d["records"],
                d["windows"],
                text("last_device_time"),
                text("last_seen"),
                here("received"),
                here("gaps"),
                here("duplicates"),
                here("reboots"),
                d["sites"].as_array().map_or(0, Vec::len),
            )?;
        }
        match page["next_cursor"].as_str() {
            Some(next) if Some(next) != cursor.as_deref() => cursor = Some(next.to_owned()),
            Some(_) => bail!("the node gave the same cursor twice; stopping"),
            None => break,
        }
    }
    if format == ListFormat::Table {
        writeln!(out, "{total} device(s)")?;
    }
    Ok(())
}

/// Fetches `/v1/status` and renders it for a person.
pub fn status(api: &Api) -> anyhow::Result<String> {
    let body = api.get("/v1/status", &[])?;
    let v: serde_json::Value = serde_json::from_str(&body).context("the node's answer is not a status")?;
    // A listener or feature that is off is `null` in the JSON.
    let s = |p: &str| match v.pointer(p) {
        Some(serde_json::Value::Null) => "off".to_owned(),
        Some(x) => x.to_string().trim_matches('"').to_owned(),
        None => "-".to_owned(),
    };
    let mut out = String::new();
    let _ = writeln!(out, "node       {}  (telemesh {}, up {}s)", s("/node_id"), s("/version"), s("/uptime_seconds"));
    let _ = writeln!(out, "data       {}", s("/data_dir"));
    let _ = writeln!(
        out,
        "listening  iotstream {}  tinytelemetry {}  secure {}  http {}",
        s("/listeners/iotstream"),
        s("/listeners/tinytelemetry"),
        s("/listeners/secure"),
        s("/listeners/http")
    );
    let _ = writeln!(
        out,
        "totals     received {}  records {}  duplicates {}  conflicts {}  dropped {}  streams in memory {}",
        s("/totals/received"),
        s("/totals/records"),
        s("/totals/duplicates"),
        s("/totals/conflicts"),
        s("/totals/dropped"),
        s("/totals/streams_in_memory")
    );
    let _ = writeln!(out, "http auth  {}  metrics open {}", s("/http/auth"), s("/http/metrics_open"));
    let _ = writeln!(out, "mesh       {}  peer id {}", s("/mesh"), s("/peer_id"));
    for a in v.pointer("/listen").and_then(|l| l.as_array()).into_iter().flatten() {
        let _ = writeln!(out, "join with  --bootstrap {}", a.as_str().unwrap_or("-"));
    }
    let peers = api.get("/v1/peers", &[])?;
    let p: serde_json::Value = serde_json::from_str(&peers).context("the node's answer is not a peer list")?;
    let ps = |path: &str| p.pointer(path).map(|x| x.to_string()).unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "windows    {} held, {} behind a peer, {} repairing; repaired {} windows, {} records; verification failures {}",
        ps("/windows"),
        ps("/wanted"),
        ps("/repairing"),
        ps("/stats/windows_repaired"),
        ps("/stats/records_repaired"),
        ps("/stats/verification_failures")
    );
    for peer in p.pointer("/peers").and_then(|l| l.as_array()).into_iter().flatten() {
        let f = |k: &str| peer.get(k).map(|x| x.to_string().trim_matches('"').to_owned()).unwrap_or_default();
        let _ = writeln!(
            out,
            "peer       {}  in sync {}  behind {}  ahead {}  differing {}  ({}s)",
            f("peer_id"),
            f("in_sync"),
            f("behind"),
            f("ahead"),
            f("differing"),
            f("connected_seconds")
        );
    }
    Ok(out)
}
