//! The overlay on loopback: nodes on port 0 in one process, joined through bootstrap
//! addresses, gossiping and answering repair requests.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use telemesh_node::trust::{self, Membership, Setup, Token};
use telemesh_node::mesh::overlay::{self, Client, Config, Event, RequestError, Validator};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(20);

const TCP: &str = "/ip4/127.0.0.1/tcp/0";
const QUIC: &str = "/ip4/127.0.0.1/udp/0/quic-v1";

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// What a test node has seen on its event channel.
#[derive(Default)]
struct Seen {
    gossip: Vec<(PeerId, Vec<u8>)>,
    up: HashSet<PeerId>,
    down: HashSet<PeerId>,
    requests: usize,
    /// Replies of `hold:` requests, kept unanswered until the test drops them.
    held: Vec<oneshot::Sender<Vec<u8>>>,
}

/// An overlay whose events are drained by a task that answers requests:
/// `size:<n>` → `n` bytes, `hold:…` → kept unanswered, anything else → `re:` + the request.
struct TestNode {
    client: Client,
    id: PeerId,
    seen: Arc<Mutex<Seen>>,
    shutdown: CancellationToken,
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn addr(s: &str) -> Multiaddr {
    s.parse().expect("a valid multiaddr")
}

fn config(mesh: &str, listen: &[&str]) -> Config {
    Config {
        listen: listen.iter().map(|a| addr(a)).collect(),
        mesh: mesh.to_owned(),
        refresh: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

fn accept_all() -> Validator {
    Arc::new(|_: &PeerId, _: &[u8]| true)
}

impl TestNode {
    fn start(config: Config, validate: Validator) -> TestNode {
        TestNode::start_as(config, Keypair::generate_ed25519(), validate).expect("the overlay starts")
    }

    fn start_as(config: Config, keypair: Keypair, validate: Validator) -> Result<TestNode, overlay::Error> {
        let open = Arc::new(Membership::open(&config.mesh, keypair.public().to_peer_id()));
        TestNode::start_in(config, keypair, validate, open)
    }

    fn start_in(
        config: Config,
        keypair: Keypair,
        validate: Validator,
        membership: Arc<Membership>,
    ) -> Result<TestNode, overlay::Error> {
        init_tracing();
        let shutdown = CancellationToken::new();
        let (client, mut events) = overlay::start(config, keypair, validate, membership, shutdown.clone())?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let drained = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let mut seen = drained.lock().expect("not poisoned");
                match event {
                    Event::Gossip { source, data } => seen.gossip.push((source, data)),
                    Event::Request { data, reply, .. } => {
                        seen.requests += 1;
                        let text = String::from_utf8_lossy(&data).into_owned();
                        if let Some(n) = text.strip_prefix("size:") {
                            let _ = reply.send(vec![7; n.parse().expect("a size")]);
                        } else if text.starts_with("hold:") {
                            seen.held.push(reply);
                        } else {
                            let _ = reply.send([b"re:".as_slice(), &data].concat());
                        }
                    }
                    Event::PeerUp(peer) => {
                        seen.up.insert(peer);
                    }
                    Event::PeerDown(peer) => {
                        seen.down.insert(peer);
                    }
                    _ => {}
                }
            }
        });
        let id = client.local_peer_id();
        Ok(TestNode { client, id, seen, shutdown })
    }

    fn seen<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        f(&mut self.seen.lock().expect("not poisoned"))
    }

    fn gossip_from(&self, source: PeerId) -> Vec<Vec<u8>> {
        self.seen(|s| s.gossip.iter().filter(|(p, _)| *p == source).map(|(_, d)| d.clone()).collect())
    }

    /// A bootstrap address for this node: its first listen address containing `transport`.
    async fn bootstrap_addr(&self, transport: &str) -> Multiaddr {
        let addrs = self.client.listen_addrs().await;
        let a = addrs.iter().find(|a| a.to_string().contains(transport)).expect("a listen address of that transport");
        a.clone().with_p2p(self.id).expect("no other peer id")
    }

    async fn connected_to(&self, peer: PeerId) -> bool {
        self.client.peers().await.iter().any(|p| p.peer == peer)
    }
}

/// Polls `check` until it holds, failing the test after [`PATIENCE`].
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `from` publishes numbered messages until `to` has received one from it; returns it.
async fn gossip_until_received(from: &TestNode, to: &TestNode, prefix: &str) -> Vec<u8> {
    let mut n = 0;
    eventually(&format!("{prefix} gossip reaches its peer"), async || {
        n += 1;
        from.client.publish(format!("{prefix}-{n}").into_bytes()).await.expect("publish");
        !to.gossip_from(from.id).is_empty()
    })
    .await;
    to.gossip_from(from.id).remove(0)
}

/// Two nodes over the given listen addresses: B joins through A's address of `transport`.
async fn pair(listen: &[&str], transport: &str) -> (TestNode, TestNode) {
    let a = TestNode::start(config("test", listen), accept_all());
    let mut config_b = config("test", listen);
    config_b.bootstrap = vec![a.bootstrap_addr(transport).await];
    let b = TestNode::start(config_b, accept_all());
    (a, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_gossip_and_answer_requests() {
    let (a, b) = pair(&[QUIC, TCP], "/tcp/").await;
    let a_listens = a.client.listen_addrs().await;
    assert!(a_listens.iter().any(|a| a.to_string().contains("/quic-v1")), "{a_listens:?}");
    assert!(a_listens.iter().all(|a| !a.to_string().ends_with("/tcp/0")), "port 0 resolved: {a_listens:?}");

    eventually("A and B see each other", async || a.seen(|s| s.up.contains(&b.id)) && b.seen(|s| s.up.contains(&a.id)))
        .await;
    let peers = b.client.peers().await;
    let info = peers.iter().find(|p| p.peer == a.id).expect("A among B's peers");
    assert!(!info.addrs.is_empty() && info.agent.starts_with("telemesh/"), "{info:?}");

    let data = gossip_until_received(&a, &b, "hello").await;
    assert!(data.starts_with(b"hello-"));

    let response = b.client.request(a.id, b"ping".to_vec()).await.expect("A answers");
    assert_eq!(response, b"re:ping");

    let (ta, tb) = (a.client.traffic(), b.client.traffic());
    assert!(ta.gossip_bytes_out >= data.len() as u64 && tb.gossip_bytes_in >= data.len() as u64, "{ta:?} {tb:?}");
    // Length prefix (4) + "ping" each way in; length prefix + "re:ping" back.
    assert_eq!((tb.request_bytes_out, ta.request_bytes_in), (8, 8), "{ta:?} {tb:?}");
    assert_eq!((ta.response_bytes_out, tb.response_bytes_in), (11, 11), "{ta:?} {tb:?}");

    // A disconnect with a ban drops the peer on both sides and refuses it meanwhile.
    b.client.disconnect(a.id, Duration::from_secs(60)).await;
    eventually("A sees B go", async || a.seen(|s| s.down.contains(&b.id))).await;
    assert!(b.client.request(a.id, b"ping".to_vec()).await.is_err(), "a banned peer is not dialled");
    assert!(!b.connected_to(a.id).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_knowing_only_the_bootstrap_peer_finds_the_others() {
    let a = TestNode::start(config("test", &[TCP]), accept_all());
    let via_a = a.bootstrap_addr("/tcp/").await;
    let mut config_b = config("test", &[TCP]);
    config_b.bootstrap = vec![via_a.clone()];
    let b = TestNode::start(config_b, accept_all());
    let mut config_c = config("test", &[QUIC, TCP]);
    config_c.bootstrap = vec![via_a];
    let c = TestNode::start(config_c, accept_all());

    eventually("C is connected to B, which it was never told about", async || {
        c.connected_to(b.id).await && b.connected_to(c.id).await
    })
    .await;
    let data = gossip_until_received(&c, &b, "from-c").await;
    assert!(data.starts_with(b"from-c-"));
    assert!(c.connected_to(a.id).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_requests_and_responses_fail_without_harm() {
    let a = TestNode::start(Config { max_request_bytes: 1024, ..config("test", &[TCP]) }, accept_all());
    let config_b = Config {
        bootstrap: vec![a.bootstrap_addr("/tcp/").await],
        max_request_bytes: 4096,
        max_response_bytes: 1024,
        ..config("test", &[TCP])
    };
    let b = TestNode::start(config_b, accept_all());
    eventually("B is connected to A", async || b.connected_to(a.id).await).await;

    // Over the requester's own cap: refused before anything is sent.
    let err = b.client.request(a.id, vec![0; 4097]).await.expect_err("over the cap");
    assert!(matches!(err, RequestError::TooLarge { what: "request", len: 4097, max: 4096 }), "{err:?}");
    // Over the responder's cap: A refuses it from the length prefix and never sees it.
    let err = b.client.request(a.id, vec![b'x'; 2048]).await.expect_err("over A's cap");
    assert!(!matches!(err, RequestError::EventLoopGone), "{err:?}");
    assert_eq!(a.seen(|s| s.requests), 0);
    // A response over the requester's cap.
    let err = b.client.request(a.id, b"size:2000".to_vec()).await.expect_err("over B's response cap");
    assert!(matches!(err, RequestError::TooLarge { what: "response", len: 2000, max: 1024 }), "{err:?}");

    // Nothing was harmed: the next request goes through.
    assert_eq!(b.client.request(a.id, b"size:1024".to_vec()).await.expect("within the caps").len(), 1024);
    assert_eq!(b.client.request(a.id, b"ping".to_vec()).await.expect("still answering"), b"re:ping");
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_requests_at_once_are_answered_empty() {
    let a = TestNode::start(Config { max_inbound_per_peer: 2, ..config("test", &[TCP]) }, accept_all());
    let b = TestNode::start(
        Config { bootstrap: vec![a.bootstrap_addr("/tcp/").await], ..config("test", &[TCP]) },
        accept_all(),
    );
    eventually("B is connected to A", async || b.connected_to(a.id).await).await;

    let held: Vec<_> = (0..2)
        .map(|i| {
            let client = b.client.clone();
            tokio::spawn(async move { client.request(a.id, format!("hold:{i}").into_bytes()).await })
        })
        .collect();
    eventually("A holds two requests", async || a.seen(|s| s.held.len()) == 2).await;
    assert_eq!(b.client.request(a.id, b"ping".to_vec()).await.expect("answered"), b"", "busy: empty response");
    assert_eq!(a.client.traffic().inbound_rejected_busy, 1);

    // Dropping the replies fails the held requests; then A answers again.
    a.seen(|s| s.held.clear());
    for h in held {
        assert!(h.await.expect("joined").is_err(), "a dropped reply is an error on the requester");
    }
    assert_eq!(b.client.request(a.id, b"ping".to_vec()).await.expect("answered"), b"re:ping");
}

#[tokio::test(flavor = "multi_thread")]
async fn meshes_do_not_mix() {
    let a = TestNode::start(config("a", &[TCP]), accept_all());
    let via_a = a.bootstrap_addr("/tcp/").await;
    let b = TestNode::start(Config { bootstrap: vec![via_a.clone()], ..config("b", &[TCP]) }, accept_all());
    let c = TestNode::start(Config { bootstrap: vec![via_a], ..config("a", &[TCP]) }, accept_all());

    // C, of A's mesh, gets A's gossip; B, joined through the same address, gets nothing.
    gossip_until_received(&a, &c, "mesh-a").await;
    assert!(b.seen(|s| s.gossip.is_empty()), "gossip crossed meshes");
    assert!(!b.seen(|s| s.up.contains(&a.id)) && !a.seen(|s| s.up.contains(&b.id)));
    assert!(!a.connected_to(b.id).await && !b.connected_to(a.id).await);
    let err = b.client.request(a.id, b"ping".to_vec()).await.expect_err("no repair across meshes");
    assert!(!matches!(err, RequestError::EventLoopGone), "{err:?}");
    assert_eq!(a.seen(|s| s.requests), 0);
    // B's own gossip finds no subscriber.
    assert!(!b.client.publish(b"from-b".to_vec()).await.expect("publish"));
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_gossip_is_not_delivered() {
    let a = TestNode::start(config("test", &[TCP]), accept_all());
    let only_good: Validator = Arc::new(|_: &PeerId, data: &[u8]| !data.starts_with(b"bad"));
    let b = TestNode::start(
        Config { bootstrap: vec![a.bootstrap_addr("/tcp/").await], ..config("test", &[TCP]) },
        only_good,
    );

    let mut n = 0;
    eventually("a good message arrives after bad ones", async || {
        n += 1;
        a.client.publish(format!("bad-{n}").into_bytes()).await.expect("publish");
        a.client.publish(format!("good-{n}").into_bytes()).await.expect("publish");
        !b.gossip_from(a.id).is_empty()
    })
    .await;
    eventually("B counts the rejected messages", async || b.client.traffic().gossip_rejected >= 1).await;
    let delivered = b.gossip_from(a.id);
    assert!(delivered.iter().all(|d| d.starts_with(b"good-")), "{delivered:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bootstrap_peer_that_was_down_is_dialled_again() {
    // A's identity and address, then A goes away before B starts.
    let key = Keypair::generate_ed25519();
    let first = TestNode::start_as(config("test", &[TCP]), key.clone(), accept_all()).expect("A starts");
    let via_a = first.bootstrap_addr("/tcp/").await;
    drop(first);
    let b = TestNode::start(Config { bootstrap: vec![via_a.clone()], ..config("test", &[TCP]) }, accept_all());

    // A comes back on the same address with the same key (once its old listener is gone).
    let mut same_addr = via_a.clone();
    same_addr.pop();
    let mut again = None;
    eventually("A listens again on its old address", async || {
        let listen = Config { listen: vec![same_addr.clone()], ..config("test", &[]) };
        again = TestNode::start_as(listen, key.clone(), accept_all()).ok();
        again.is_some()
    })
    .await;
    let a = again.expect("A restarted");
    assert_eq!(a.bootstrap_addr("/tcp/").await, via_a);
    eventually("B reconnects to its bootstrap peer", async || b.connected_to(a.id).await).await;
    gossip_until_received(&a, &b, "back").await;
}

async fn works_over(listen: &str, transport: &str) {
    let (a, b) = pair(&[listen], transport).await;
    eventually("B is connected to A", async || b.connected_to(a.id).await).await;
    let peers = b.client.peers().await;
    let info = peers.iter().find(|p| p.peer == a.id).expect("A among B's peers");
    assert!(info.addrs.iter().all(|a| a.to_string().contains(transport)), "{info:?}");
    gossip_until_received(&b, &a, transport).await;
    assert_eq!(b.client.request(a.id, b"ping".to_vec()).await.expect("answered"), b"re:ping");
}

#[tokio::test(flavor = "multi_thread")]
async fn quic_only() {
    works_over(QUIC, "/quic-v1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_only() {
    works_over(TCP, "/tcp/").await;
}

/// A closed mesh's membership in `dir`: a new mesh (this node holds the owner key), or
/// joining one with `join`.
fn closed(dir: &std::path::Path, key: &Keypair, join: Option<Token>) -> Arc<Membership> {
    let setup = Setup { join, ..Setup::default() };
    let m = Membership::load(dir, "test", key.public().to_peer_id(), setup, trust::Metrics::default());
    Arc::new(m.expect("membership"))
}

fn unproven(m: &Membership) -> u64 {
    m.metrics.refusals.get_or_create(&telemesh_node::mesh::metrics::ReasonLabel { reason: "unproven_connection" }).get()
}

/// Two members of a closed mesh (the second admitted with a token) and an outsider with a
/// valid identity, the same mesh name and protocol version, dialling a member over QUIC and
/// over TCP: the members gossip, and the outsider gets no gossip, gives none, and its
/// repair requests are not served.
#[tokio::test(flavor = "multi_thread")]
async fn an_outsider_over_quic_or_tcp_gets_and_gives_nothing() {
    for transport in ["/quic-v1", "/tcp/"] {
        let (da, db) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        let ka = Keypair::generate_ed25519();
        let ma = closed(da.path(), &ka, None);
        let a = TestNode::start_in(config("test", &[QUIC, TCP]), ka, accept_all(), Arc::clone(&ma)).expect("a starts");
        let boot = a.bootstrap_addr(transport).await;
        let token = ma.invite(Duration::from_secs(60), vec![boot.clone()]).expect("a holds the owner key");
        let kb = Keypair::generate_ed25519();
        let mb = closed(db.path(), &kb, Some(token));
        let b = TestNode::start_in(Config { bootstrap: vec![boot.clone()], ..config("test", &[QUIC, TCP]) }, kb, accept_all(), mb)
            .expect("b starts");
        eventually("b is admitted and the members see each other", async || {
            a.seen(|s| s.up.contains(&b.id)) && b.seen(|s| s.up.contains(&a.id))
        })
        .await;

        let o = TestNode::start(Config { bootstrap: vec![boot.clone()], ..config("test", &[QUIC, TCP]) }, accept_all());
        eventually("a sees the outsider's connection", async || unproven(&ma) >= 1).await;
        gossip_until_received(&a, &b, "real").await;
        let err = o.client.request(a.id, b"let me in".to_vec()).await.expect_err("a member answered an outsider");
        assert!(
            matches!(err, RequestError::UnsupportedProtocol | RequestError::ConnectionClosed | RequestError::DialFailure),
            "{transport}: {err}"
        );
        for n in 0..5 {
            let _ = o.client.publish(format!("fake-{n}").into_bytes()).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        gossip_until_received(&b, &a, "still").await;
        assert!(a.gossip_from(o.id).is_empty() && b.gossip_from(o.id).is_empty(), "{transport}: outsider gossip arrived");
        assert!(o.seen(|s| s.gossip.is_empty() && s.up.is_empty()), "{transport}: the outsider got gossip or identify");
        assert_eq!(a.seen(|s| s.requests), 0, "{transport}: a served the outsider");
        assert!(!a.connected_to(o.id).await && !b.connected_to(o.id).await);
    }
}

fn refused(m: &Membership, reason: &'static str) -> u64 {
    m.metrics.refusals.get_or_create(&telemesh_node::mesh::metrics::ReasonLabel { reason }).get()
}

/// Twenty outsiders hold connections to a member whose budget is 24: it keeps at most 16
/// unproven ones, so a member that reconnects during the flood still gets in.
#[tokio::test(flavor = "multi_thread")]
async fn outsiders_cannot_take_the_connection_slots_members_need() {
    let (da, db) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let ka = Keypair::generate_ed25519();
    let ma = closed(da.path(), &ka, None);
    let a_config = Config { max_peers: 24, ..config("test", &[TCP]) };
    let a = TestNode::start_in(a_config, ka, accept_all(), Arc::clone(&ma)).expect("a starts");
    let boot = a.bootstrap_addr("/tcp/").await;
    let token = ma.invite(Duration::from_secs(60), vec![boot.clone()]).expect("invite");
    let kb = Keypair::generate_ed25519();
    let b_config = Config { bootstrap: vec![boot.clone()], ..config("test", &[TCP]) };
    let b = TestNode::start_in(b_config.clone(), kb.clone(), accept_all(), closed(db.path(), &kb, Some(token)))
        .expect("b starts");
    eventually("b is admitted", async || a.seen(|s| s.up.contains(&b.id))).await;
    drop(b);

    let outsiders: Vec<TestNode> = (0..20)
        .map(|_| TestNode::start(Config { bootstrap: vec![boot.clone()], ..config("test", &[TCP]) }, accept_all()))
        .collect();
    eventually("a turns outsiders away beyond its unproven budget", async || refused(&ma, "unproven_limit") >= 1).await;
    let b = TestNode::start_in(b_config, kb.clone(), accept_all(), closed(db.path(), &kb, None)).expect("b restarts");
    eventually("b, a member, reconnects during the flood", async || {
        a.seen(|s| s.up.contains(&b.id)) && b.connected_to(a.id).await
    })
    .await;
    gossip_until_received(&a, &b, "through").await;
    assert!(outsiders.iter().all(|o| o.seen(|s| s.up.is_empty() && s.gossip.is_empty())));
}
