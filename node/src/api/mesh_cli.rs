//! `telemesh mesh invite | members | remove`: the membership commands, as a client of a
//! running node's `/v1/mesh/…` API.

use std::fmt::Write as _;

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;

use super::client::body;

fn call(method: &str, url: &str) -> anyhow::Result<serde_json::Value> {
    let req = ureq::request(method, url).timeout(std::time::Duration::from_secs(30));
    let resp = match req.call() {
        Ok(resp) => resp,
        Err(ureq::Error::Status(code, resp)) => {
            let text = body(resp).unwrap_or_default();
            let msg = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| Some(v.get("error")?.as_str()?.to_owned()))
                .unwrap_or(text);
            bail!("node answered {code}: {msg}")
        }
        Err(e) => return Err(anyhow!("cannot reach the node at {url}: {e}")),
    };
    let text = body(resp).context("cannot read the node's answer")?;
    serde_json::from_str(&text).context("the node's answer is not JSON")
}

/// `telemesh mesh invite`: one line, the token.
pub fn invite(node: &str, expires: Option<&str>) -> anyhow::Result<String> {
    let mut url = format!("{}/v1/mesh/invites", node.trim_end_matches('/'));
    if let Some(e) = expires {
        url = format!("{url}?expires={e}");
    }
    let v = call("POST", &url)?;
    let token = v.get("token").and_then(|t| t.as_str()).ok_or_else(|| anyhow!("the node's answer has no token"))?;
    Ok(format!("{token}\n"))
}

#[derive(Debug, Deserialize)]
struct Member {
    peer_id: String,
    since: u64,
    #[serde(rename = "self")]
    is_self: bool,
}

#[derive(Debug, Deserialize)]
struct Members {
    mode: String,
    owner: Option<String>,
    roster_version: Option<u64>,
    members: Vec<Member>,
}

/// `telemesh mesh members`: the roster the node holds, one member a line.
pub fn members(node: &str) -> anyhow::Result<String> {
    let v = call("GET", &format!("{}/v1/mesh/members", node.trim_end_matches('/')))?;
    let m: Members = serde_json::from_value(v).context("unexpected answer")?;
    let mut out = String::new();
    if m.mode == "open" {
        return Ok("open mesh: no roster (any node of the same mesh name is a member)\n".to_owned());
    }
    let _ = writeln!(
        out,
        "owner {}  roster version {}  {} member(s)",
        m.owner.as_deref().unwrap_or("?"),
        m.roster_version.map_or_else(|| "none (not admitted yet)".to_owned(), |v| v.to_string()),
        m.members.len()
    );
    for member in &m.members {
        let since = super::export::rfc3339(member.since.saturating_mul(1_000_000_000));
        let _ = writeln!(out, "{}  since {since}{}", member.peer_id, if member.is_self { "  (this node)" } else { "" });
    }
    Ok(out)
}

/// `telemesh mesh remove PEER_ID`.
pub fn remove(node: &str, peer: &str) -> anyhow::Result<String> {
    let v = call("DELETE", &format!("{}/v1/mesh/members/{peer}", node.trim_end_matches('/')))?;
    let version = v.get("roster_version").and_then(serde_json::Value::as_u64).unwrap_or(0);
    Ok(format!("removed {peer} (roster version {version}); every member disconnects it as the roster reaches it\n"))
}
