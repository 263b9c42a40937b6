//! `telemesh mesh invite | members | remove`: the membership commands, as a client of a
//! running node's `/v1/mesh/…` API.

use std::fmt::Write as _;

use anyhow::{anyhow, Context};
use serde::Deserialize;

use super::client::Api;

fn json(text: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(text).context("the node's answer is not JSON")
}

/// `telemesh mesh invite`: one line, the token.
pub fn invite(api: &Api, expires: Option<&str>) -> anyhow::Result<String> {
    let path = match expires {
        Some(e) => format!("/v1/mesh/invites?expires={}", e.replace(' ', "%20")),
        None => "/v1/mesh/invites".to_owned(),
    };
    let v = json(&api.post(&path, None)?)?;
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
pub fn members(api: &Api) -> anyhow::Result<String> {
    let v = json(&api.get("/v1/mesh/members", &[])?)?;
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
pub fn remove(api: &Api, peer: &str) -> anyhow::Result<String> {
    if peer.is_empty() || !peer.chars().all(|c| c.is_ascii_alphanumeric()) {
        anyhow::bail!("{peer:?} is not a peer id like 12D3KooW… (telemesh mesh members lists them)");
    }
    let v = json(&api.delete(&format!("/v1/mesh/members/{peer}"))?)?;
    let version = v.get("roster_version").and_then(serde_json::Value::as_u64).unwrap_or(0);
    Ok(format!("removed {peer} (roster version {version}); every member disconnects it as the roster reaches it\n"))
}
