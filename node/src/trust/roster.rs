//! What the mesh's owner signs: the roster of members, and the tickets that admit new ones.
//!
//! A **roster** lists the mesh's members by peer id, with a version that only moves
//! forward, the peers removed from it and the tickets already spent. The owner key
//! (ed25519) signs it; any node checks it offline against the owner's public key, and a
//! node holds only the highest version it has seen, so a replayed old roster is refused.
//! A **ticket** is the owner's signed, short-lived permission for one new node to join: the
//! node presents it to the owner's node, which adds the node's peer id to a new roster.
//! A **token** is what `telemesh mesh invite` prints: a ticket and where to reach the owner.
//!
//! Everything here is pure: time comes in as Unix seconds, and nothing reads or writes
//! files. Every refusal is a [`Refusal`], whose [`Refusal::reason`] is the label `/metrics`
//! counts. `docs/security.md` explains the choice of a roster over per-node certificates.

use std::collections::BTreeSet;

use base64::Engine as _;
use libp2p::identity::{ed25519, Keypair, PublicKey};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use telemesh_proto::record::codec;

/// What the owner key signs is prefixed with one of these, so a signature over a roster can
/// never pass for a ticket or anything else signed with the same key.
const ROSTER_CONTEXT: &[u8] = b"telemesh/roster/1\0";
const TICKET_CONTEXT: &[u8] = b"telemesh/ticket/1\0";
/// The prefix of a token's text.
const TOKEN_PREFIX: &str = "tmjoin1.";
/// The longest token accepted (a ticket and a few bootstrap addresses fit in a tenth).
pub const MAX_TOKEN_CHARS: usize = 8 * 1024;
/// The largest signed roster sent or accepted: room for about 4,000 members.
pub const MAX_ROSTER_BYTES: usize = 256 * 1024;

/// Why a roster, a ticket or a peer was refused. [`Refusal::reason`] is its metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("undecodable or inconsistent")]
    Malformed,
    #[error("signed for another owner")]
    WrongOwner,
    #[error("for another mesh name")]
    WrongMesh,
    #[error("the owner's signature does not verify")]
    BadSignature,
    #[error("not newer than the roster held (a replayed or out-of-date roster)")]
    Stale,
    #[error("the ticket has expired")]
    TicketExpired,
    #[error("the ticket was used already")]
    TicketSpent,
    #[error("the node was removed from the mesh; only a ticket made after the removal admits it again")]
    Revoked,
    #[error("this node does not hold the mesh's owner key")]
    NotOwner,
    #[error("not a member of the mesh")]
    NotMember,
    #[error("the mesh is open: it has no roster")]
    Open,
}

impl Refusal {
    /// The label of `telemesh_trust_refusals_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::WrongOwner => "wrong_owner",
            Refusal::WrongMesh => "wrong_mesh",
            Refusal::BadSignature => "bad_signature",
            Refusal::Stale => "stale_roster",
            Refusal::TicketExpired => "ticket_expired",
            Refusal::TicketSpent => "ticket_spent",
            Refusal::Revoked => "revoked",
            Refusal::NotOwner => "not_owner",
            Refusal::NotMember => "not_member",
            Refusal::Open => "open_mesh",
        }
    }

    pub const ALL: [Refusal; 11] = [
        Refusal::Malformed,
        Refusal::WrongOwner,
        Refusal::WrongMesh,
        Refusal::BadSignature,
        Refusal::Stale,
        Refusal::TicketExpired,
        Refusal::TicketSpent,
        Refusal::Revoked,
        Refusal::NotOwner,
        Refusal::NotMember,
        Refusal::Open,
    ];
}

/// The mesh owner's public key: an ed25519 key, shown as the peer id it would have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner(ed25519::PublicKey);

impl Owner {
    /// The public half of an owner keypair; `None` for a key that is not ed25519.
    pub fn of(key: &Keypair) -> Option<Owner> {
        key.public().try_into_ed25519().ok().map(Owner)
    }

    fn from_bytes(bytes: &[u8; 32]) -> Result<Owner, Refusal> {
        ed25519::PublicKey::try_from_bytes(bytes).map(Owner).map_err(|_| Refusal::Malformed)
    }

    fn bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    fn verify(&self, context: &[u8], body: &[u8], signature: &[u8]) -> Result<(), Refusal> {
        let mut message = context.to_vec();
        message.extend_from_slice(body);
        if self.0.verify(&message, signature) {
            Ok(())
        } else {
            Err(Refusal::BadSignature)
        }
    }

    /// The owner whose id (`12D3KooW…`) is `peer`; `None` if that is not an ed25519 key's.
    pub fn from_id(peer: &PeerId) -> Option<Owner> {
        super::identity::public_key(peer)?.try_into_ed25519().ok().map(Owner)
    }

    /// The owner as text: the peer id of its public key (`12D3KooW…`).
    pub fn id(&self) -> PeerId {
        PublicKey::from(self.0.clone()).to_peer_id()
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.id().fmt(f)
    }
}

fn sign(key: &Keypair, context: &[u8], body: &[u8]) -> Vec<u8> {
    let mut message = context.to_vec();
    message.extend_from_slice(body);
    // Signing with an ed25519 key cannot fail; an owner key is checked to be ed25519.
    key.sign(&message).unwrap_or_default()
}

/// One member as the roster lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's peer id (its bytes).
    pub peer: Vec<u8>,
    /// When the owner admitted it, Unix seconds.
    pub since_s: u64,
}

/// A peer removed from the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub peer: Vec<u8>,
    pub at_s: u64,
}

/// A ticket already used, kept until it would have expired anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Spent {
    id: [u8; 16],
    expires_s: u64,
}

/// What the owner signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Body {
    mesh: String,
    owner: [u8; 32],
    version: u64,
    issued_s: u64,
    /// Sorted by peer id bytes, no duplicates.
    members: Vec<Member>,
    removed: Vec<Removed>,
    spent: Vec<Spent>,
}

/// A roster and the owner's signature, as sent and stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Signed {
    body: Vec<u8>,
    signature: Vec<u8>,
}

/// A roster whose signature, owner and mesh were checked. There is no other way to make
/// one than [`Roster::verify`] and the owner's own [`Roster::genesis`], [`Roster::admit`]
/// and [`Roster::remove`], so holding a `Roster` means holding a valid one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    body: Body,
    owner: Owner,
    members: BTreeSet<PeerId>,
    /// The signed encoding, as it goes on the wire and to disk.
    signed: Vec<u8>,
}

impl Roster {
    /// Checks a signed roster: it decodes, the owner is `owner`, the mesh is `mesh`, the
    /// signature verifies, and its member list is well formed.
    pub fn verify(signed: &[u8], owner: &Owner, mesh: &str) -> Result<Roster, Refusal> {
        if signed.len() > MAX_ROSTER_BYTES {
            return Err(Refusal::Malformed);
        }
        let outer: Signed = codec::from_slice(signed, "roster").map_err(|_| Refusal::Malformed)?;
        let body: Body = codec::from_slice(&outer.body, "roster body").map_err(|_| Refusal::Malformed)?;
        if body.owner != owner.bytes() {
            return Err(Refusal::WrongOwner);
        }
        owner.verify(ROSTER_CONTEXT, &outer.body, &outer.signature)?;
        if body.mesh != mesh {
            return Err(Refusal::WrongMesh);
        }
        let mut members = BTreeSet::new();
        for m in &body.members {
            let peer = PeerId::from_bytes(&m.peer).map_err(|_| Refusal::Malformed)?;
            if !members.insert(peer) {
                return Err(Refusal::Malformed);
            }
        }
        Ok(Roster { body, owner: owner.clone(), members, signed: signed.to_vec() })
    }

    /// Signs `body` with the owner key.
    fn seal(key: &Keypair, body: Body) -> Result<Roster, Refusal> {
        let owner = Owner::of(key).ok_or(Refusal::NotOwner)?;
        if owner.bytes() != body.owner {
            return Err(Refusal::NotOwner);
        }
        let bytes = codec::to_vec(&body);
        let signature = sign(key, ROSTER_CONTEXT, &bytes);
        let signed = codec::to_vec(&Signed { body: bytes, signature });
        Roster::verify(&signed, &owner, &body.mesh)
    }

    /// The first roster of a new mesh: version 1, the owner's own node its only member.
    pub fn genesis(key: &Keypair, mesh: &str, first: PeerId, now_s: u64) -> Result<Roster, Refusal> {
        let owner = Owner::of(key).ok_or(Refusal::NotOwner)?;
        let body = Body {
            mesh: mesh.to_owned(),
            owner: owner.bytes(),
            version: 1,
            issued_s: now_s,
            members: vec![Member { peer: first.to_bytes(), since_s: now_s }],
            removed: Vec::new(),
            spent: Vec::new(),
        };
        Roster::seal(key, body)
    }

    /// The next version: `change` edits a copy of the body; tickets expired by `now_s` are
    /// forgotten (they would be refused as expired anyway).
    fn next(&self, key: &Keypair, now_s: u64, change: impl FnOnce(&mut Body)) -> Result<Roster, Refusal> {
        let mut body = self.body.clone();
        body.version = body.version.checked_add(1).ok_or(Refusal::Malformed)?;
        body.issued_s = now_s;
        body.spent.retain(|s| s.expires_s > now_s);
        change(&mut body);
        body.members.sort_by(|a, b| a.peer.cmp(&b.peer));
        Roster::seal(key, body)
    }

    /// Admits `peer` with `ticket` (which must be this owner's, for this mesh, unexpired
    /// and unspent; a removed peer only with a ticket made after its removal). A peer that
    /// is a member already gets the roster as it is.
    pub fn admit(&self, key: &Keypair, ticket: &Ticket, peer: PeerId, now_s: u64) -> Result<Roster, Refusal> {
        ticket.check(&self.owner, &self.body.mesh, now_s)?;
        if self.contains(&peer) {
            return Ok(self.clone());
        }
        if self.body.spent.iter().any(|s| s.id == ticket.id) {
            return Err(Refusal::TicketSpent);
        }
        let bytes = peer.to_bytes();
        if self.body.removed.iter().any(|r| r.peer == bytes && r.at_s >= ticket.issued_s) {
            return Err(Refusal::Revoked);
        }
        self.next(key, now_s, |body| {
            body.removed.retain(|r| r.peer != bytes);
            body.members.push(Member { peer: bytes, since_s: now_s });
            body.spent.push(Spent { id: ticket.id, expires_s: ticket.expires_s });
        })
    }

    /// Removes `peer`: it is no member of the next version, and listed as removed.
    pub fn remove(&self, key: &Keypair, peer: PeerId, now_s: u64) -> Result<Roster, Refusal> {
        if !self.contains(&peer) {
            return Err(Refusal::NotMember);
        }
        let bytes = peer.to_bytes();
        self.next(key, now_s, |body| {
            body.members.retain(|m| m.peer != bytes);
            body.removed.retain(|r| r.peer != bytes);
            body.removed.push(Removed { peer: bytes, at_s: now_s });
        })
    }

    pub fn contains(&self, peer: &PeerId) -> bool {
        self.members.contains(peer)
    }

    pub fn members(&self) -> impl Iterator<Item = (PeerId, u64)> + '_ {
        self.body.members.iter().filter_map(|m| Some((PeerId::from_bytes(&m.peer).ok()?, m.since_s)))
    }

    /// Peers removed from the mesh and not admitted again since.
    pub fn removed(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.body.removed.iter().filter_map(|r| PeerId::from_bytes(&r.peer).ok())
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn version(&self) -> u64 {
        self.body.version
    }

    /// The signed bytes, as sent to peers and written to disk.
    pub fn signed(&self) -> &[u8] {
        &self.signed
    }
}

/// The owner a signed roster names, unchecked: only for a roster this node wrote itself
/// (its own data directory), to be checked with [`Roster::verify`] against that owner.
pub fn owner_named(signed: &[u8]) -> Result<Owner, Refusal> {
    let outer: Signed = codec::from_slice(signed, "roster").map_err(|_| Refusal::Malformed)?;
    let body: Body = codec::from_slice(&outer.body, "roster body").map_err(|_| Refusal::Malformed)?;
    Owner::from_bytes(&body.owner)
}

/// The owner's permission for one node to join, until `expires_s`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    mesh: String,
    owner: [u8; 32],
    id: [u8; 16],
    issued_s: u64,
    expires_s: u64,
    signature: Vec<u8>,
}

impl Ticket {
    /// A new ticket with a random id, valid from `now_s` for `valid_s` seconds.
    pub fn issue(key: &Keypair, mesh: &str, now_s: u64, valid_s: u64) -> Result<Ticket, Refusal> {
        let owner = Owner::of(key).ok_or(Refusal::NotOwner)?;
        let mut ticket = Ticket {
            mesh: mesh.to_owned(),
            owner: owner.bytes(),
            id: rand::random(),
            issued_s: now_s,
            expires_s: now_s.saturating_add(valid_s),
            signature: Vec::new(),
        };
        ticket.signature = sign(key, TICKET_CONTEXT, &ticket.signed_part());
        Ok(ticket)
    }

    fn signed_part(&self) -> Vec<u8> {
        codec::to_vec(&(&self.mesh, &self.owner, &self.id, self.issued_s, self.expires_s))
    }

    /// Checks the ticket against the mesh's owner and name and the time.
    pub fn check(&self, owner: &Owner, mesh: &str, now_s: u64) -> Result<(), Refusal> {
        if self.owner != owner.bytes() {
            return Err(Refusal::WrongOwner);
        }
        owner.verify(TICKET_CONTEXT, &self.signed_part(), &self.signature)?;
        if self.mesh != mesh {
            return Err(Refusal::WrongMesh);
        }
        if now_s >= self.expires_s {
            return Err(Refusal::TicketExpired);
        }
        Ok(())
    }

    /// The owner the ticket names (not yet checked: see [`Ticket::check`]).
    pub fn owner(&self) -> Result<Owner, Refusal> {
        Owner::from_bytes(&self.owner)
    }

    pub fn mesh(&self) -> &str {
        &self.mesh
    }

    pub fn expires_s(&self) -> u64 {
        self.expires_s
    }
}

/// What `telemesh mesh invite` prints and `telemesh node --join` takes: a ticket and the
/// addresses of the node that holds the owner key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub ticket: Ticket,
    /// Each ends in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
}

/// A token that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid join token: {0} (copy the whole line `telemesh mesh invite` printed)")]
pub struct TokenError(&'static str);

impl Token {
    /// One line of text: a fixed prefix, then URL-safe base64.
    pub fn encode(&self) -> String {
        let addrs: Vec<String> = self.bootstrap.iter().map(ToString::to_string).collect();
        let bytes = codec::to_vec(&(&self.ticket, addrs));
        format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn parse(text: &str) -> Result<Token, TokenError> {
        let text = text.trim();
        if text.len() > MAX_TOKEN_CHARS {
            return Err(TokenError("too long"));
        }
        let body = text.strip_prefix(TOKEN_PREFIX).ok_or(TokenError("it does not start with tmjoin1."))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError("not base64 after the prefix"))?;
        let (ticket, addrs): (Ticket, Vec<String>) =
            codec::from_slice(&bytes, "token").map_err(|_| TokenError("undecodable"))?;
        ticket.owner().map_err(|_| TokenError("its owner key is not an ed25519 key"))?;
        let bootstrap = addrs
            .iter()
            .map(|a| a.parse::<Multiaddr>().map_err(|_| TokenError("a bootstrap address does not parse")))
            .collect::<Result<Vec<_>, _>>()?;
        if bootstrap.is_empty() {
            return Err(TokenError("it names no node to join through"));
        }
        Ok(Token { ticket, bootstrap })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_765_000_000;

    fn peer() -> PeerId {
        Keypair::generate_ed25519().public().to_peer_id()
    }

    fn owner_and_roster() -> (Keypair, Owner, Roster, PeerId) {
        let key = Keypair::generate_ed25519();
        let owner = Owner::of(&key).expect("ed25519");
        let first = peer();
        let roster = Roster::genesis(&key, "lab", first, NOW).expect("genesis");
        (key, owner, roster, first)
    }

    #[test]
    fn a_roster_round_trips_and_only_its_members_are_members() {
        let (key, owner, roster, first) = owner_and_roster();
        let back = Roster::verify(roster.signed(), &owner, "lab").expect("verifies");
        assert_eq!(back, roster);
        assert!(back.contains(&first));
        assert!(!back.contains(&peer()));
        let ticket = Ticket::issue(&key, "lab", NOW, 3600).expect("ticket");
        let second = peer();
        let next = roster.admit(&key, &ticket, second, NOW + 1).expect("admitted");
        assert_eq!(next.version(), 2);
        assert!(next.contains(&first) && next.contains(&second));
        assert_eq!(next.members().count(), 2);
    }

    #[test]
    fn a_roster_signed_by_another_key_or_for_another_mesh_is_refused() {
        let (_, owner, roster, _) = owner_and_roster();
        let (_, other_owner, other, _) = owner_and_roster();
        assert_eq!(Roster::verify(other.signed(), &owner, "lab"), Err(Refusal::WrongOwner));
        assert_eq!(Roster::verify(roster.signed(), &other_owner, "lab"), Err(Refusal::WrongOwner));
        assert_eq!(Roster::verify(roster.signed(), &owner, "other"), Err(Refusal::WrongMesh));
        assert_eq!(Roster::verify(b"\x01\x02garbage", &owner, "lab"), Err(Refusal::Malformed));
        assert_eq!(Roster::verify(&vec![0; MAX_ROSTER_BYTES + 1], &owner, "lab"), Err(Refusal::Malformed));
    }

    #[test]
    fn a_forged_roster_does_not_verify() {
        // The attacker takes a valid roster, adds itself, and keeps the old signature; or
        // signs the edited body with its own key but names the real owner.
        let (_, owner, roster, _) = owner_and_roster();
        let outer: Signed = codec::from_slice(roster.signed(), "t").expect("decodes");
        let mut body: Body = codec::from_slice(&outer.body, "t").expect("decodes");
        body.members.push(Member { peer: peer().to_bytes(), since_s: NOW });
        body.version += 1;
        let edited = codec::to_vec(&body);
        let kept_signature = codec::to_vec(&Signed { body: edited.clone(), signature: outer.signature });
        assert_eq!(Roster::verify(&kept_signature, &owner, "lab"), Err(Refusal::BadSignature));
        let attacker = Keypair::generate_ed25519();
        let own_signature = codec::to_vec(&Signed { signature: sign(&attacker, ROSTER_CONTEXT, &edited), body: edited });
        assert_eq!(Roster::verify(&own_signature, &owner, "lab"), Err(Refusal::BadSignature));
        // A ticket's signature is no roster signature, even over the same bytes.
        let (key, owner2, roster2, _) = owner_and_roster();
        let outer2: Signed = codec::from_slice(roster2.signed(), "t").expect("decodes");
        let cross = codec::to_vec(&Signed { signature: sign(&key, TICKET_CONTEXT, &outer2.body), body: outer2.body });
        assert_eq!(Roster::verify(&cross, &owner2, "lab"), Err(Refusal::BadSignature));
    }

    #[test]
    fn tickets_expire_are_spent_once_and_must_be_the_owners() {
        let (key, _, roster, _) = owner_and_roster();
        let ticket = Ticket::issue(&key, "lab", NOW, 60).expect("ticket");
        assert_eq!(roster.admit(&key, &ticket, peer(), NOW + 60), Err(Refusal::TicketExpired));
        let first = roster.admit(&key, &ticket, peer(), NOW + 10).expect("admitted");
        assert_eq!(first.admit(&key, &ticket, peer(), NOW + 11), Err(Refusal::TicketSpent));
        // A ticket of another owner, and one edited to live longer.
        let stranger = Keypair::generate_ed25519();
        let foreign = Ticket::issue(&stranger, "lab", NOW, 60).expect("ticket");
        assert_eq!(roster.admit(&key, &foreign, peer(), NOW), Err(Refusal::WrongOwner));
        let mut longer = Ticket::issue(&key, "lab", NOW, 60).expect("ticket");
        longer.expires_s += 86_400;
        assert_eq!(roster.admit(&key, &longer, peer(), NOW + 3600), Err(Refusal::BadSignature));
        let other_mesh = Ticket::issue(&key, "elsewhere", NOW, 60).expect("ticket");
        assert_eq!(roster.admit(&key, &other_mesh, peer(), NOW), Err(Refusal::WrongMesh));
        // Only the owner key signs a new version.
        let ticket = Ticket::issue(&key, "lab", NOW, 60).expect("ticket");
        assert_eq!(roster.admit(&stranger, &ticket, peer(), NOW), Err(Refusal::NotOwner));
    }

    #[test]
    fn a_removed_peer_cannot_rejoin_with_a_ticket_made_before_its_removal() {
        let (key, _, roster, _) = owner_and_roster();
        let old = Ticket::issue(&key, "lab", NOW, 3600).expect("ticket");
        let spare = Ticket::issue(&key, "lab", NOW, 3600).expect("ticket");
        let p = peer();
        let with = roster.admit(&key, &old, p, NOW).expect("admitted");
        let without = with.remove(&key, p, NOW + 5).expect("removed");
        assert!(!without.contains(&p));
        assert_eq!(without.version(), 3);
        assert_eq!(without.removed().collect::<Vec<_>>(), vec![p]);
        assert_eq!(without.admit(&key, &spare, p, NOW + 6), Err(Refusal::Revoked));
        assert_eq!(without.remove(&key, p, NOW + 6), Err(Refusal::NotMember));
        let fresh = Ticket::issue(&key, "lab", NOW + 10, 3600).expect("ticket");
        let again = without.admit(&key, &fresh, p, NOW + 11).expect("admitted again");
        assert!(again.contains(&p));
        assert_eq!(again.removed().count(), 0);
    }

    #[test]
    fn a_token_round_trips_and_bad_text_is_refused_with_a_reason() {
        let (key, _, _, first) = owner_and_roster();
        let ticket = Ticket::issue(&key, "lab", NOW, 60).expect("ticket");
        let addr: Multiaddr = format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{first}").parse().expect("addr");
        let token = Token { ticket, bootstrap: vec![addr] };
        let text = token.encode();
        assert!(!text.contains(char::is_whitespace));
        assert_eq!(Token::parse(&format!("  {text}\n")).expect("parses"), token);
        for bad in ["", "tmjoin1.", "tmjoin1.!!!", "hello", &text[..text.len() - 9], &"x".repeat(MAX_TOKEN_CHARS + 1)] {
            let err = Token::parse(bad).expect_err(bad).to_string();
            assert!(err.starts_with("invalid join token: "), "{err}");
        }
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever a peer sends as a roster, and whatever text is given as a token, the
        /// answer is a refusal or a value — never a panic — and a roster that is not the
        /// owner's never verifies.
        #[test]
        fn arbitrary_bytes_are_refused_not_panicked_on(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let key = Keypair::generate_ed25519();
            let owner = Owner::of(&key).expect("ed25519");
            prop_assert!(Roster::verify(&bytes, &owner, "lab").is_err());
            let _ = owner_named(&bytes);
            let _ = Token::parse(&String::from_utf8_lossy(&bytes));
            let text = format!("tmjoin1.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes));
            let _ = Token::parse(&text);
        }

        /// Flipping any byte of a signed roster makes it fail verification.
        #[test]
        fn any_change_to_a_signed_roster_is_caught(at in any::<proptest::sample::Index>(), flip in 1u8..=255) {
            let key = Keypair::generate_ed25519();
            let owner = Owner::of(&key).expect("ed25519");
            let roster = Roster::genesis(&key, "lab", Keypair::generate_ed25519().public().to_peer_id(), 1).expect("genesis");
            let mut bytes = roster.signed().to_vec();
            let i = at.index(bytes.len());
            bytes[i] ^= flip;
            prop_assert!(Roster::verify(&bytes, &owner, "lab").is_err());
        }
    }
}
