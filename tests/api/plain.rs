//! The plain HTTP/1.1 loop every connection starts on, spoken to over raw TCP:
//! what it answers itself, how it hands a connection to hyper with every byte it has
//! read, how it ends connections, and that its answers, counters and credentials
//! match the router's.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{App, Options, run, spawn_app};

/// The longest any one wait on the server may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

const LOBBY: &str = "lobby-credential-0123456789";
const ADMIN: &str = "admin-credential-0123456789";
const SELECT: &str = "/v1/regions/select";
const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nhost: geobridge\r\n\r\n";

/// One HTTP/1.x response as it came off the wire, framed by its `content-length`.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    /// The first value of header `name`, compared without case.
    fn header(&self, name: &str) -> Option<&str> {
        let found = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

/// A client connection that keeps what it read past one response for the next.
struct Wire {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl Wire {
    async fn open(app: &App) -> Wire {
        let stream = TcpStream::connect(app.addr()).await.expect("connect");
        // Each write leaves as its own segment, so dribbled pieces arrive apart.
        stream.set_nodelay(true).expect("nodelay");
        Wire {
            stream,
            pending: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).await.expect("write");
    }

    /// Reads more; 0 when the server closed or reset the connection.
    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        let read = self.stream.read(&mut chunk);
        let read = tokio::time::timeout(PATIENCE, read).await;
        let n = read.expect("the server answers in time").unwrap_or(0);
        self.pending.extend_from_slice(&chunk[..n]);
        n
    }

    /// The next whole response.
    async fn reply(&mut self) -> Reply {
        loop {
            if let Some((head, reply)) = parse_head(&self.pending) {
                return self.finish(head, reply).await;
            }
            let seen = String::from_utf8_lossy(&self.pending).into_owned();
            let more = self.fill().await;
            assert!(more > 0, "closed before a response; got {seen:?}");
        }
    }

    /// Takes the `head` bytes and the body that follows them into `reply`.
    async fn finish(&mut self, head: usize, mut reply: Reply) -> Reply {
        let length = reply.header("content-length").expect("content-length");
        let end = head + length.parse::<usize>().expect("a length");
        while self.pending.len() < end {
            assert!(self.fill().await > 0, "closed inside a body");
        }
        reply.body = self.pending[head..end].to_vec();
        self.pending.drain(..end);
        reply
    }

    /// Everything the server sends until it closes the connection, which it must do
    /// within `PATIENCE`.
    async fn ending(&mut self) -> Vec<u8> {
        while self.fill().await > 0 {}
        std::mem::take(&mut self.pending)
    }
}

/// The length of the response head at the start of `bytes` and the response without
/// its body, once the head is whole.
fn parse_head(bytes: &[u8]) -> Option<(usize, Reply)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let text = String::from_utf8_lossy(bytes);
    let parsed = response.parse(bytes);
    let parsed = parsed.unwrap_or_else(|e| panic!("bad response ({e}): {text:?}"));
    let httparse::Status::Complete(head) = parsed else {
        return None;
    };
    let headers = response.headers.iter().map(|h| {
        let value = String::from_utf8_lossy(h.value).into_owned();
        (h.name.to_owned(), value)
    });
    let reply = Reply {
        status: response.code.expect("status"),
        headers: headers.collect(),
        body: Vec::new(),
    };
    Some((head, reply))
}

/// A keep-alive selection for `ip` with `extra` header lines, each ending in CRLF.
fn select_with(ip: &str, extra: &str) -> String {
    format!("GET {SELECT}?ip={ip} HTTP/1.1\r\nhost: geobridge\r\n{extra}\r\n")
}

fn select(ip: &str) -> String {
    select_with(ip, "")
}

/// A room request for a user at `client_ip`, its JSON body included.
fn create_room(client_ip: &str) -> String {
    let user = json!({"id": "u-1", "name": "Ada"});
    let body = json!({"user": user, "client_ip": client_ip}).to_string();
    format!(
        "POST /v1/rooms HTTP/1.1\r\nhost: geobridge\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A 200 JSON selection of `region`, its length header naming its body exactly.
fn assert_selected(reply: &Reply, region: &str) {
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let length = reply.header("content-length").map(str::to_owned);
    assert_eq!(length, Some(reply.body.len().to_string()));
    let body = reply.json();
    assert_eq!(body["region"], region, "{body}");
    assert!(body["decision"]["regions"].is_array(), "{body}");
}

/// Two selections in one write get two whole answers in the order asked, each framed
/// exactly by its length: a third request on the connection is answered cleanly.
#[tokio::test]
async fn pipelined_selections_are_answered_in_order() {
    let app = spawn_app(Options::default()).await;
    let mut wire = Wire::open(&app).await;
    wire.send(select("8.8.8.8") + &select("81.2.69.142")).await;
    assert_selected(&wire.reply().await, "us-west");
    assert_selected(&wire.reply().await, "eu-west");
    wire.send(select("1.1.1.1")).await;
    assert_selected(&wire.reply().await, "ap-southeast-2");
}

/// A thousand selections written at once (about 2 MB of answers, far more than one
/// batch of answers) are all answered, in order, while the client reads slowly at first.
#[tokio::test]
async fn a_thousand_pipelined_selections_are_all_answered() {
    let app = spawn_app(Options::default()).await;
    let mut wire = Wire::open(&app).await;
    let ips = ["8.8.8.8", "81.2.69.142", "1.1.1.1"];
    let regions = ["us-west", "eu-west", "ap-southeast-2"];
    let batch: String = (0..1000).map(|i| select(ips[i % 3])).collect();
    wire.send(batch).await;
    // The server's socket buffer fills while nothing is read; it must wait, not drop.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for i in 0..1000 {
        assert_selected(&wire.reply().await, regions[i % 3]);
    }
    wire.send(select("8.8.8.8")).await;
    assert_selected(&wire.reply().await, "us-west");
}

/// Sends `count` copies of `request` from a task of its own (so a server that stops
/// reading cannot block the test), reads nothing until the server has stopped answering
/// (see [`wait_for_stall`]), then reads until the server closes: the answers that arrived.
async fn flood_unread(app: &App, request: String, count: usize) -> usize {
    // A fixed small receive buffer: an autotuned one can grow to hold every answer.
    let stream = narrow_wire(app).await.stream;
    let (mut reader, mut writer) = stream.into_split();
    let batch = request.repeat(count);
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(batch.as_bytes()).await;
        writer
    });
    wait_for_stall(app).await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut received)).await;
    // A reset after the server gave up is an ending too.
    assert!(read.is_ok(), "the server kept a client that reads nothing");
    writing.abort();
    String::from_utf8_lossy(&received)
        .matches("HTTP/1.1 200 OK")
        .count()
}

/// Waits until the count of answered selections has not moved for 1.5 s: three request
/// timeouts of the test below, so an answer blocked by then has been given up on. Timed
/// by the server's own count, not a fixed pause, since a loaded machine answers slowly.
async fn wait_for_stall(app: &App) {
    let answered = || async {
        let metrics = app.get("/metrics").await.text;
        let labels = ["route=\"/v1/regions/select\"", "status=\"200\""];
        sample(&metrics, "geobridge_http_requests_total", &labels)
    };
    let (mut last, mut since) = (answered().await, Instant::now());
    while since.elapsed() < Duration::from_millis(1_500) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = answered().await;
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

/// Selections sent unread: their answers (about 9 MB) are more than the sending socket
/// holds (at most 4 MB on Linux by default).
const FLOOD: usize = 5000;

/// A client that pipelines far more selections than the socket buffers hold and reads
/// nothing is disconnected once an answer has waited the request timeout, on the plain
/// loop and on hyper alike; the server goes on serving others.
#[tokio::test]
async fn clients_that_never_read_are_disconnected() {
    let app = spawn_app(Options::default().env("GEOBRIDGE_REQUEST_TIMEOUT_MS", "500")).await;
    let answers = flood_unread(&app, select("8.8.8.8"), FLOOD).await;
    assert!(
        answers < FLOOD,
        "all {answers} plain answers arrived: none held back"
    );
    let router_form = select_with("8%2E8.8.8", "");
    let answers = flood_unread(&app, router_form, FLOOD).await;
    assert!(
        answers < FLOOD,
        "all {answers} router answers arrived: none held back"
    );
    let mut other = Wire::open(&app).await;
    other.send(select("81.2.69.142")).await;
    assert_selected(&other.reply().await, "eu-west");
}

/// A client that sends its request and shuts its side of the connection gets the
/// answer, whichever path serves it.
#[tokio::test]
async fn half_closed_clients_get_their_answers() {
    let app = spawn_app(Options::default()).await;
    for request in [
        select("8.8.8.8"),
        select_with("8%2E8.8.8", ""),
        HEALTHZ.to_owned(),
    ] {
        let mut stream = TcpStream::connect(app.addr()).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        stream.shutdown().await.expect("half-close");
        let mut received = Vec::new();
        let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut received)).await;
        read.expect("the server ends the connection").expect("read");
        let text = String::from_utf8_lossy(&received);
        assert!(
            text.starts_with("HTTP/1.1 200 OK"),
            "{request:?} got {text:?}"
        );
    }
}

/// At shutdown a client that keeps pipelining selections is not served until the grace
/// period ends: the answers made are sent, the connection closes, the process exits.
#[tokio::test]
async fn shutdown_stops_a_pipelining_client() {
    let options = Options::default().env("GEOBRIDGE_SHUTDOWN_GRACE_MS", "60000");
    let mut app = spawn_app(options).await;
    let stream = TcpStream::connect(app.addr()).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let batch = select("8.8.8.8").repeat(200_000);
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(batch.as_bytes()).await;
        writer
    });
    let mut received = vec![0u8; 64 * 1024];
    let mut total = 0;
    while total < 1_000_000 {
        total += reader.read(&mut received).await.expect("answers flow");
    }
    let started = Instant::now();
    app.signal("TERM");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection stayed open after SIGTERM");
    assert_eq!(app.wait_exit(10), Some(0));
    assert!(started.elapsed() < Duration::from_secs(10), "grace is 60 s");
    writing.abort();
}

/// After a plain answer, other routes on the same connection are served by the
/// router, and selections after the hand-over still are.
#[tokio::test]
async fn selection_then_other_routes_on_one_connection() {
    let app = spawn_app(Options::default()).await;
    let mut wire = Wire::open(&app).await;
    wire.send(select("8.8.8.8")).await;
    assert_selected(&wire.reply().await, "us-west");
    wire.send(HEALTHZ).await;
    let health = wire.reply().await;
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json(), json!({"status": "ok"}));
    wire.send(select("81.2.69.142")).await;
    assert_selected(&wire.reply().await, "eu-west");
}

/// A selection, a room request with its body and another selection in one write are
/// all answered in order: the hand-over gives hyper the bytes the plain loop read,
/// including a body split across writes and a body on a GET.
#[tokio::test]
async fn hand_over_keeps_unread_bytes() {
    let app = spawn_app(Options::default()).await;
    let mut wire = Wire::open(&app).await;
    let room = create_room("1.1.1.1");
    wire.send(select("81.2.69.142") + &room + &select("8.8.8.8"))
        .await;
    assert_selected(&wire.reply().await, "eu-west");
    let room = wire.reply().await;
    assert_eq!(room.status, 201, "{}", room.text());
    assert_eq!(room.json()["region"], "ap-southeast-2");
    assert_selected(&wire.reply().await, "us-west");

    let mut wire = Wire::open(&app).await;
    let room = create_room("8.8.8.8");
    let (first, rest) = room.split_at(room.len() - 10);
    wire.send(select("1.1.1.1") + first).await;
    assert_selected(&wire.reply().await, "ap-southeast-2");
    wire.send(rest).await;
    let room = wire.reply().await;
    assert_eq!(room.status, 201, "{}", room.text());
    assert_eq!(room.json()["region"], "us-west");

    let mut wire = Wire::open(&app).await;
    let with_body = select_with("8.8.8.8", "content-length: 5\r\n") + "hello";
    wire.send(with_body + &select("81.2.69.142")).await;
    assert_selected(&wire.reply().await, "us-west");
    assert_selected(&wire.reply().await, "eu-west");
}

/// An HTTP/1.0 selection and a `Connection: close` one are answered 200, and then
/// the server closes the connection without sending anything more.
#[tokio::test]
async fn http10_and_connection_close_end_the_connection() {
    let app = spawn_app(Options::default()).await;
    let mut wire = Wire::open(&app).await;
    let old = select("8.8.8.8").replace("HTTP/1.1", "HTTP/1.0");
    wire.send(old).await;
    assert_selected(&wire.reply().await, "us-west");
    assert_eq!(wire.ending().await, b"", "closed after an HTTP/1.0 answer");

    let mut wire = Wire::open(&app).await;
    let close = select_with("81.2.69.142", "Connection: close\r\n");
    wire.send(select("8.8.8.8") + &close).await;
    assert_selected(&wire.reply().await, "us-west");
    let last = wire.reply().await;
    assert_selected(&last, "eu-west");
    assert_eq!(last.header("connection"), Some("close"));
    assert_eq!(wire.ending().await, b"", "closed after `Connection: close`");
}

/// Heads sent a few bytes at a time are answered, one after another on one
/// connection, for longer in all than the head timeout: each head has its own
/// deadline.
#[tokio::test]
async fn dribbled_heads_are_answered() {
    let timeout_ms = 2000;
    let options = Options::default().env("GEOBRIDGE_HEADER_READ_TIMEOUT_MS", "2000");
    let app = spawn_app(options).await;
    let mut wire = Wire::open(&app).await;
    let started = Instant::now();
    let cases = [("8.8.8.8", "us-west"), ("81.2.69.142", "eu-west")];
    for (ip, region) in cases.repeat(3) {
        for piece in select(ip).as_bytes().chunks(4) {
            wire.send(piece).await;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_selected(&wire.reply().await, region);
    }
    let spent = started.elapsed();
    let timeout = Duration::from_millis(timeout_ms);
    assert!(spent > timeout, "paced too quickly: {spent:?}");
}

/// A head that stops arriving is cut off once the head timeout passes, not before;
/// so is one that stalls after an answered request, and a connection left idle.
#[tokio::test]
async fn stalled_heads_are_cut_off() {
    let options = Options::default().env("GEOBRIDGE_HEADER_READ_TIMEOUT_MS", "300");
    let app = spawn_app(options).await;
    let whole = select("8.8.8.8");
    let partial = whole.trim_end_matches("\r\n");
    let started = Instant::now();
    let mut wire = Wire::open(&app).await;
    wire.send(partial).await;
    let ending = wire.ending().await;
    assert_cut_off(&ending);
    let waited = started.elapsed();
    let early = waited < Duration::from_millis(250);
    assert!(!early, "cut off before the timeout: {waited:?}");

    let mut wire = Wire::open(&app).await;
    wire.send(select("8.8.8.8") + partial).await;
    assert_selected(&wire.reply().await, "us-west");
    assert_cut_off(&wire.ending().await);

    let mut wire = Wire::open(&app).await;
    wire.send(select("81.2.69.142")).await;
    assert_selected(&wire.reply().await, "eu-west");
    assert_eq!(wire.ending().await, b"", "an idle connection is closed");
}

/// The head timeout counts from the last answer: a connection asking every 100 ms stays
/// open well past one timeout (300 ms), and once it stops asking it is closed one timeout
/// after its last answer, not sooner and not much later.
#[tokio::test]
async fn busy_connections_outlive_the_head_timeout() {
    let options = Options::default().env("GEOBRIDGE_HEADER_READ_TIMEOUT_MS", "300");
    let app = spawn_app(options).await;
    let mut wire = Wire::open(&app).await;
    for _ in 0..10 {
        wire.send(select("81.2.69.142")).await;
        assert_selected(&wire.reply().await, "eu-west");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wire.send(select("81.2.69.142")).await;
    assert_selected(&wire.reply().await, "eu-west");
    let last_answer = Instant::now();
    assert_eq!(wire.ending().await, b"", "an idle connection is closed");
    let idle = last_answer.elapsed();
    assert!(
        idle >= Duration::from_millis(250),
        "closed too soon: {idle:?}"
    );
    assert!(
        idle < Duration::from_millis(1_500),
        "closed too late: {idle:?}"
    );
}

/// The wait for the next head starts once the last answer has gone out, not when it was
/// made: a client that pipelines selections and reads their answers for longer than the
/// head timeout can ask again on the same connection.
#[tokio::test]
async fn slow_readers_keep_their_connection() {
    let options = Options::default().env("GEOBRIDGE_HEADER_READ_TIMEOUT_MS", "300");
    read_slowly_then_ask(options, 200, Duration::from_millis(4), 600).await;
}

/// Pipelines `count` selections on a narrow connection, reads their answers with `pause`
/// between them, checks that took over `at_least_ms`, then asks again on it.
async fn read_slowly_then_ask(options: Options, count: usize, pause: Duration, at_least_ms: u64) {
    let app = spawn_app(options).await;
    let mut wire = narrow_wire(&app).await;
    wire.send(select("81.2.69.142").repeat(count)).await;
    let started = Instant::now();
    for _ in 0..count {
        assert_selected(&wire.reply().await, "eu-west");
        tokio::time::sleep(pause).await;
    }
    let reading = started.elapsed();
    let enough = reading > Duration::from_millis(at_least_ms);
    assert!(enough, "read too fast to test: {reading:?}");
    wire.send(select("8.8.8.8")).await;
    assert_selected(&wire.reply().await, "us-west");
}

/// A connection with a small receive buffer, so that answers wait in the kernel.
async fn narrow_wire(app: &App) -> Wire {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("a small receive buffer");
    let address = app.addr().parse().expect("an address");
    let stream = socket.connect(address).await.expect("connect");
    Wire {
        stream,
        pending: Vec::new(),
    }
}

/// A reader that keeps taking its answers, slowly, for several write timeouts keeps its
/// connection: the wait for its next head goes on while it makes progress.
#[tokio::test]
async fn steady_slow_readers_outlast_the_write_timeout() {
    let options = Options::default()
        .env("GEOBRIDGE_HEADER_READ_TIMEOUT_MS", "300")
        .env("GEOBRIDGE_REQUEST_TIMEOUT_MS", "500");
    read_slowly_then_ask(options, 120, Duration::from_millis(15), 1_600).await;
}

/// A client that leaves its answers unread while it sends a head a byte at a time cannot
/// hold the connection: it is closed about a head and a write timeout after the answers.
#[tokio::test]
async fn trickled_heads_do_not_renew_the_wait() {
    let options = Options::default()
        .env("GEOBRIDGE_HEADER_READ_TIMEOUT_MS", "300")
        .env("GEOBRIDGE_REQUEST_TIMEOUT_MS", "500");
    let app = spawn_app(options).await;
    let mut wire = narrow_wire(&app).await;
    wire.send(select("81.2.69.142").repeat(5)).await;
    let started = Instant::now();
    let head = format!("GET /healthz HTTP/1.1\r\nx-pad: {}", "a".repeat(500));
    let mut closed = false;
    for byte in head.as_bytes().chunks(1) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        closed = wire.stream.write_all(byte).await.is_err();
        if closed || started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let held = started.elapsed();
    assert!(closed, "a trickled head held the connection for {held:?}");
    assert!(
        held < Duration::from_millis(3_000),
        "closed too late: {held:?}"
    );
}

/// Bytes that are not HTTP/1.1 get a 400 JSON error naming what to send, after the
/// answers to the requests before them, and the connection closes; another version of
/// HTTP/1 gets a 505; the server serves on.
#[tokio::test]
async fn malformed_requests_get_a_json_400() {
    let app = spawn_app(Options::default()).await;
    let malformed = [
        "junk line\r\n\r\n",
        "GET /v1/regions/select?ip=8.8.8.8 x HTTP/1.1\r\n\r\n",
        "GET /v1/reg\u{1}ions HTTP/1.1\r\n\r\n",
        "GET /v1/regions/select?ip=8.8.8.8 HTTP/1.1\r\nbad header\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nContent-Length: 0, 0\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
        "POST /v1/rooms HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        "GET /healthz HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    for bad in malformed {
        let mut wire = Wire::open(&app).await;
        wire.send(select("8.8.8.8") + bad).await;
        assert_selected(&wire.reply().await, "us-west");
        let refused = wire.reply().await;
        assert_eq!(refused.status, 400, "{bad:?}: {}", refused.text());
        assert_eq!(refused.json()["error"]["code"], "malformed_request");
        assert_eq!(refused.header("connection"), Some("close"));
        assert_eq!(wire.ending().await, b"", "{bad:?}: closed after the 400");
    }
    let mut wire = Wire::open(&app).await;
    wire.send("GET /v1/regions/select?ip=8.8.8.8 HTTP/1.2\r\nHost: x\r\n\r\n")
        .await;
    let refused = wire.reply().await;
    assert_eq!(refused.status, 505, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "version_not_supported");
    let mut wire = Wire::open(&app).await;
    wire.send(select("8.8.8.8")).await;
    assert_selected(&wire.reply().await, "us-west");
    let metrics = app.get("/metrics").await.text;
    let counted = |status| {
        let labels = ["route=\"unmatched\"", "method=\"other\"", status];
        sample(&metrics, "geobridge_http_requests_total", &labels)
    };
    assert_eq!(
        counted("status=\"400\""),
        malformed.len() as f64,
        "{metrics}"
    );
    assert_eq!(counted("status=\"505\""), 1.0, "{metrics}");
}

/// Part of a head and then nothing: a 408 JSON error once the head timeout passes.
#[tokio::test]
async fn stalled_heads_get_a_json_408() {
    let options = Options::default().env("GEOBRIDGE_HEADER_READ_TIMEOUT_MS", "300");
    let app = spawn_app(options).await;
    let mut wire = Wire::open(&app).await;
    wire.send("GET /v1/regions/select?ip=8.8.8.8 HTTP/1.1\r\nHo")
        .await;
    let timed_out = wire.reply().await;
    assert_eq!(timed_out.status, 408, "{}", timed_out.text());
    assert_eq!(timed_out.json()["error"]["code"], "header_timeout");
    assert_eq!(wire.ending().await, b"");
}

/// Nothing, or a 408, before the close.
fn assert_cut_off(ending: &[u8]) {
    let text = String::from_utf8_lossy(ending);
    let timed_out = text.starts_with("HTTP/1.1 408");
    assert!(ending.is_empty() || timed_out, "{text}");
}

/// A selection whose head is `size` bytes, padded with an `x-junk` header.
fn select_of_size(ip: &str, size: usize) -> String {
    let bare = select_with(ip, "x-junk: \r\n").len();
    select_with(ip, &format!("x-junk: {}\r\n", "j".repeat(size - bare)))
}

/// Heads at the edge of the first buffers and beyond them, or with more headers than the
/// loop parses, are answered while under the configured cap; over the cap, or with more
/// than 100 headers, they get a JSON 431 and the connection closes; the server serves on.
#[tokio::test]
async fn big_heads_are_served_up_to_the_cap() {
    let app = spawn_app(Options::default()).await;
    for size in [1024, 1025, 8191, 8192, 8193, 10_000, 16_000, 16_384] {
        let mut wire = Wire::open(&app).await;
        let big = select_of_size("8.8.8.8", size);
        assert_eq!(big.len(), size);
        let after = select("81.2.69.142");
        wire.send(select("1.1.1.1") + &big + &after).await;
        assert_selected(&wire.reply().await, "ap-southeast-2");
        assert_selected(&wire.reply().await, "us-west");
        assert_selected(&wire.reply().await, "eu-west");
    }
    for count in [40, 99] {
        let many: String = (0..count).map(|i| format!("x-h{i}: {i}\r\n")).collect();
        let mut wire = Wire::open(&app).await;
        wire.send(select_with("8.8.8.8", &many)).await;
        assert_selected(&wire.reply().await, "us-west");
    }

    let refusals = [
        (select_of_size("8.8.8.8", 16_385), "headers_too_large"),
        (select_of_size("8.8.8.8", 40_000), "headers_too_large"),
        (
            select_with(
                "8.8.8.8",
                &(0..100)
                    .map(|i| format!("x-h{i}: {i}\r\n"))
                    .collect::<String>(),
            ),
            "too_many_headers",
        ),
    ];
    for (head, code) in refusals {
        let mut wire = Wire::open(&app).await;
        wire.send(select("1.1.1.1") + &head).await;
        assert_selected(&wire.reply().await, "ap-southeast-2");
        let refused = wire.reply().await;
        assert_eq!(refused.status, 431, "{code}: {}", refused.text());
        assert_eq!(refused.json()["error"]["code"], code);
        assert_eq!(refused.header("connection"), Some("close"));
        assert_eq!(wire.ending().await, b"", "{code}: closed after the 431");
    }
    let mut wire = Wire::open(&app).await;
    wire.send(select("8.8.8.8")).await;
    assert_selected(&wire.reply().await, "us-west");
}

/// With credentials configured, the plain loop lets a lobby credential through under
/// any spelling of the header name, and leaves the router to refuse everything else
/// with its 401 and 403, after which the connection still serves.
#[tokio::test]
async fn credentials_are_enforced_on_the_fast_path() {
    let options = Options::default()
        .env("GEOBRIDGE_LOBBY_CREDENTIALS", LOBBY)
        .env("GEOBRIDGE_ADMIN_CREDENTIALS", ADMIN);
    let app = spawn_app(options).await;
    let mut wire = Wire::open(&app).await;
    let names = [
        "Authorization",
        "authorization",
        "AUTHORIZATION",
        "aUtHoRiZaTiOn",
    ];
    let lobby = |name: &str| format!("{name}: Bearer {LOBBY}\r\n");
    let requests = names.map(|name| select_with("8.8.8.8", &lobby(name)));
    wire.send(requests.concat()).await;
    for name in names {
        let reply = wire.reply().await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        assert_selected(&reply, "us-west");
    }

    // The scheme's name is case-insensitive, on the plain loop and through the router
    // (which `Connection: close` sends it to).
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        for close in ["", "Connection: close\r\n"] {
            let header = format!("Authorization: {scheme} {LOBBY}\r\n{close}");
            let mut wire = Wire::open(&app).await;
            wire.send(select_with("8.8.8.8", &header)).await;
            let reply = wire.reply().await;
            assert_eq!(reply.status, 200, "{header:?}: {}", reply.text());
        }
    }

    let wrong = "authorization: Bearer wrong-credential-0123456\r\n".to_owned();
    let scheme = format!("Authorization: Basic {LOBBY}\r\n");
    let admin = format!("Authorization: Bearer {ADMIN}\r\n");
    let refusals = [
        (String::new(), 401, "unauthorized"),
        (wrong, 401, "unauthorized"),
        (scheme, 401, "unauthorized"),
        (admin, 403, "forbidden"),
    ];
    for (header, status, code) in refusals {
        let mut wire = Wire::open(&app).await;
        wire.send(select_with("8.8.8.8", &header)).await;
        let reply = wire.reply().await;
        assert_eq!(reply.status, status, "{header:?}: {}", reply.text());
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.json()["error"]["code"], code, "{header:?}");
        let challenge = (status == 401).then_some("Bearer");
        assert_eq!(reply.header("www-authenticate"), challenge, "{header:?}");
        wire.send(select_with("81.2.69.142", &lobby("authorization")))
            .await;
        assert_selected(&wire.reply().await, "eu-west");
    }
}

/// The plain loop's answer for an address equals the router's for the same address
/// written percent-encoded, which the plain loop leaves to the router: located,
/// IPv6, mapped IPv4 and private addresses alike.
#[tokio::test]
async fn fast_answer_equals_the_routers() {
    let app = spawn_app(Options::default()).await;
    let cases = [
        ("81.2.69.142", "81%2E2%2E69%2E142", "eu-west"),
        ("2001:4860::8888", "2001%3A4860%3A%3A8888", "ca-central"),
        ("::ffff:8.8.8.8", "%3A%3Affff%3A8.8.8.8", "us-west"),
        ("10.0.0.1", "10%2E0%2E0%2E1", "eu-central"),
    ];
    for (plain, encoded, region) in cases {
        let mut fast = Wire::open(&app).await;
        fast.send(select(plain)).await;
        let fast = fast.reply().await;
        assert_selected(&fast, region);
        let mut routed = Wire::open(&app).await;
        routed.send(select(encoded)).await;
        let routed = routed.reply().await;
        assert_selected(&routed, region);
        assert_eq!(fast.json(), routed.json(), "{plain} against {encoded}");
    }
}

/// The sample of series `name` whose labels include all of `labels`; 0 if none.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    let found = metrics.lines().find(|line| {
        let Some(rest) = line.strip_prefix(name) else {
            return false;
        };
        let set = rest.split_once(' ').map_or("", |(set, _)| set);
        let whole_name = rest.starts_with('{') || rest.starts_with(' ');
        whole_name && labels.iter().all(|l| set.contains(l))
    });
    let value = found.and_then(|line| line.rsplit(' ').next());
    value.map_or(0.0, |v| v.parse().expect("a sample value"))
}

/// Clients that send a room request and hang up at once leave no request counted in
/// flight once the server has noticed.
#[tokio::test]
async fn abandoned_requests_leave_the_in_flight_gauge() {
    let app = spawn_app(Options::default()).await;
    for _ in 0..20 {
        let mut stream = TcpStream::connect(app.addr()).await.expect("connect");
        stream
            .write_all(create_room("8.8.8.8").as_bytes())
            .await
            .expect("write");
        drop(stream);
    }
    let gauge = "geobridge_http_requests_in_flight";
    app.wait_until(10, "in-flight gauge back to 0", || async {
        sample(&app.get("/metrics").await.text, gauge, &[]) == 0.0
    })
    .await;
    // Stays there: nothing was only late.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sample(&app.get("/metrics").await.text, gauge, &[]), 0.0);
}

/// Selections answered by the plain loop are counted once each, as the router counts
/// them, with their durations, and leave no request in flight.
#[tokio::test]
async fn fast_selections_are_counted() {
    let app = spawn_app(Options::default()).await;
    let route = "route=\"/v1/regions/select\"";
    let ok = [route, "method=\"GET\"", "status=\"200\""];
    let requests = "geobridge_http_requests_total";
    let durations = "geobridge_http_request_duration_seconds_count";
    let in_flight = "geobridge_http_requests_in_flight";
    let before = app.get("/metrics").await.text;
    let n = 7;
    let mut wire = Wire::open(&app).await;
    wire.send(select("8.8.8.8").repeat(n)).await;
    for _ in 0..n {
        assert_selected(&wire.reply().await, "us-west");
    }
    let after = app.get("/metrics").await.text;
    let grown = |name, labels: &[&str]| {
        let was = sample(&before, name, labels);
        sample(&after, name, labels) - was
    };
    assert_eq!(grown(requests, &ok), n as f64, "{after}");
    assert_eq!(grown(durations, &[route]), n as f64, "{after}");
    assert_eq!(sample(&after, in_flight, &[]), 0.0, "{after}");

    wire.send(select("8%2E8%2E8%2E8")).await;
    assert_selected(&wire.reply().await, "us-west");
    let last = app.get("/metrics").await.text;
    let total = sample(&last, requests, &ok) - sample(&before, requests, &ok);
    assert_eq!(total, n as f64 + 1.0, "one routed selection counts once");
    assert_eq!(sample(&last, in_flight, &[]), 0.0, "{last}");
}

/// Idle keep-alive connections, on the plain loop or already handed to hyper, do
/// not hold up shutdown: SIGTERM closes them and the process exits well inside its
/// grace period.
#[tokio::test]
async fn idle_connections_do_not_hold_up_shutdown() {
    let options = Options::default()
        .env("GEOBRIDGE_SHUTDOWN_GRACE_MS", "60000")
        .env("GEOBRIDGE_HEADER_READ_TIMEOUT_MS", "60000");
    let mut app = spawn_app(options).await;
    let mut silent = Wire::open(&app).await;
    let mut answered = Wire::open(&app).await;
    answered.send(select("8.8.8.8")).await;
    assert_selected(&answered.reply().await, "us-west");
    let mut handed = Wire::open(&app).await;
    handed.send(HEALTHZ).await;
    assert_eq!(handed.reply().await.status, 200);

    let started = Instant::now();
    app.signal("TERM");
    for wire in [&mut silent, &mut answered, &mut handed] {
        assert_eq!(wire.ending().await, b"", "an idle connection is closed");
    }
    assert_eq!(app.wait_exit(10), Some(0));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "grace is 60 s; took {took:?}"
    );
    let log = app.log.lock().expect("log").clone();
    assert!(log.contains("all connections finished"), "{log}");
    assert!(!log.contains("grace period over"), "{log}");
}

/// A chunked body that breaks its own framing is a 400 that says how to send it.
#[tokio::test]
async fn broken_chunked_bodies_get_a_json_400() {
    let app = spawn_app(Options::default()).await;
    let mut wire = Wire::open(&app).await;
    wire.send(
        "POST /v1/rooms HTTP/1.1\r\nhost: geobridge\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    )
    .await;
    let refused = wire.reply().await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "unreadable_body");
    let message = refused.json()["error"]["message"].to_string();
    assert!(message.contains("valid chunked encoding"), "{message}");
}

/// A body that does not arrive within the request timeout is the client's delay: a 408
/// saying so, not a 5xx.
#[tokio::test]
async fn slow_bodies_get_a_408() {
    let app = spawn_app(Options::default().env("GEOBRIDGE_REQUEST_TIMEOUT_MS", "500")).await;
    let mut wire = Wire::open(&app).await;
    let request = create_room("8.8.8.8");
    let (head_and_some, _) = request.split_at(request.len() - 10);
    wire.send(head_and_some).await;
    let reply = wire.reply().await;
    assert_eq!(reply.status, 408, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "body_timeout");
}

/// An HTTP/2 connection that sends its preface and then nothing is closed once nothing
/// has moved for the idle timeout (the head timeout plus the request timeout).
#[tokio::test]
async fn idle_http2_connections_are_closed() {
    let options = Options::default()
        .env("GEOBRIDGE_HEADER_READ_TIMEOUT_MS", "300")
        .env("GEOBRIDGE_REQUEST_TIMEOUT_MS", "500");
    let app = spawn_app(options).await;
    let mut wire = Wire::open(&app).await;
    let started = Instant::now();
    // The preface and an empty SETTINGS frame.
    wire.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await;
    let received = wire.ending().await;
    let took = started.elapsed();
    assert!(!received.is_empty(), "the server speaks HTTP/2 first");
    assert!(
        took >= Duration::from_millis(700),
        "closed after only {took:?}"
    );
}

/// HTTP/2 with prior knowledge, which the plain loop hands over at its preface,
/// selects the same regions with the same answers as HTTP/1.1.
#[tokio::test]
async fn http2_prior_knowledge_still_works() {
    let app = spawn_app(Options::default()).await;
    for (ip, region) in [("8.8.8.8", "us-west"), ("81.2.69.142", "eu-west")] {
        // One request per curl: curl 7.88.1 fails (exit 16) on a second request that
        // reuses a prior-knowledge connection, against any HTTP/2 server.
        let url = format!("{}{SELECT}?ip={ip}", app.base);
        let mut curl = Command::new("curl");
        curl.args(["--http2-prior-knowledge", "-sS", "--max-time", "20"])
            .args(["-w", "\n%{http_version} %{http_code}", &url]);
        let (ok, out, err) = run(&mut curl);
        assert!(ok, "curl failed: {err}");
        let (body, protocol) = out.rsplit_once('\n').expect("body and status");
        assert_eq!(protocol, "2 200", "{out}");
        let body: Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(body["region"], region);
        let mut wire = Wire::open(&app).await;
        wire.send(select(ip)).await;
        let http11 = wire.reply().await.json();
        assert_eq!(http11, body, "{ip}: HTTP/1.1 against HTTP/2");
    }
}
