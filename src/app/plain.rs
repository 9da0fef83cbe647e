//! A plain HTTP/1.1 loop that answers selections and hands everything else to hyper.
//!
//! Lobbies keep connections open and send one `GET /v1/regions/select?ip=…` after another.
//! This loop reads request heads with `httparse`, lets [`fast`] answer the plain ones and
//! writes each answer with one system call. At the first request it does not take (another
//! route, a body, HTTP/1.0, `Connection: close`, an upgrade, a head larger than its buffer,
//! an error to explain, HTTP/2's preface, anything it cannot parse) it hands the
//! connection, with every byte read and not yet answered, to hyper and the router for the
//! rest of its life. So protocol corner cases and every error answer stay theirs.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::http::{Limits, Server};
use crate::api::{AppState, fast};
use crate::metrics::Metrics;

/// Most headers a plain request may have; more go to hyper.
const MAX_HEADERS: usize = 32;

/// Most headers any request may have, as hyper counts them; more are refused with a 431.
const MOST_HEADERS: usize = 100;

/// The read buffer starts this small (a selection's head is about 100 bytes), so idle
/// connections cost little memory.
const FIRST_BUFFER_BYTES: usize = 1024;

/// Answers to pipelined requests are sent once they reach this size, before more are
/// made, so a client that sends many and reads none holds at most about this much memory.
const OUTPUT_BATCH_BYTES: usize = 64 * 1024;

/// One connection on the plain loop.
pub struct Connection {
    server: Arc<Server>,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
}

/// What the loop does with the bytes it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A request was answered into the output; this many bytes were its head.
    Answered(usize),
    /// The head is not complete yet.
    NeedMore,
    /// Not a request for this loop.
    HandOver,
    /// More requests are waiting, but the answers so far should be sent first.
    Full,
    /// The bytes are not an HTTP/1.1 request: a 400 saying so was written and the
    /// connection ends after it.
    Refused,
}

impl Connection {
    /// A connection from `peer`, asked to finish when `stop` turns true.
    pub fn new(server: Arc<Server>, peer: SocketAddr, stop: watch::Receiver<bool>) -> Self {
        Connection { server, peer, stop }
    }

    /// Serves `stream` until the client closes it, it idles past the head deadline, the
    /// server stops, or it is handed to hyper.
    pub async fn run(self, mut stream: TcpStream) {
        let limits = self.server.limits;
        // The buffer grows to the configured cap; a head that does not fit is refused.
        let most = limits.max_header_bytes.max(FIRST_BUFFER_BYTES);
        let mut input = vec![0u8; FIRST_BUFFER_BYTES];
        let mut filled = 0;
        // When the head being read must be complete; set at its first wait.
        let mut deadline = None;
        // How long a client still taking its answers may take, for the head being read.
        let mut taking = None;
        // One timer and one shutdown watch for the connection's life, not a new timer
        // registered and removed for every read.
        let timer = tokio::time::sleep(limits.header_read_timeout);
        let stopped = stopped(self.stop.clone());
        tokio::pin!(timer, stopped);
        loop {
            let Batch {
                used,
                step,
                answered_at,
                unsent,
            } = answer_buffered(&self.server.state, &input[..filled], &stream);
            let unsent = match unsent {
                Ok(unsent) => unsent,
                Err(_) => return,
            };
            // An answer the client does not take in time ends the connection. One it takes
            // only after a wait starts the wait for the next head when it has gone out.
            let mut answered_at = answered_at;
            if !unsent.is_empty() {
                if !send(&mut stream, &unsent, limits).await {
                    return;
                }
                answered_at = None;
            }
            if step == Step::Refused {
                return linger(stream, limits).await;
            }
            // At shutdown the answers made are sent and the connection ends; requests
            // pipelined after them are left for the client to send elsewhere.
            if *self.stop.borrow() {
                return;
            }
            input.copy_within(used..filled, 0);
            filled -= used;
            if step == Step::Full {
                continue;
            }
            if used > 0 || filled == 0 {
                (deadline, taking) = (None, None);
            }
            if filled == input.len() && input.len() < most {
                input.resize((input.len() * 2).min(most), 0);
            }
            if step == Step::NeedMore && filled == input.len() {
                let metrics = &self.server.state.metrics;
                return refuse(stream, &too_large(limits), limits, metrics).await;
            }
            if step == Step::HandOver {
                input.truncate(filled);
                let io = Prefixed::new(input, stream, limits);
                return self.server.hand_over(io, self.peer, self.stop).await;
            }
            // The wait starts when the last answer was made and sent at once, or now.
            let starts = || answered_at.unwrap_or_else(Instant::now);
            let mut due = *deadline.get_or_insert_with(|| starts() + limits.header_read_timeout);
            // Deadlines move later with every request, and moving a timer is not free: it
            // is moved only when it would fire too late, and set again when it fires early.
            if timer.deadline() > due {
                timer.as_mut().reset(due);
            }
            let taking = taking.get_or_insert_with(|| Taking::new(due, limits));
            let buffer = &mut input[filled..];
            let waited = wait_for_head(&mut stream, buffer, timer.as_mut(), &mut due, taking);
            let read = match tokio::select! {
                biased;
                waited = waited => waited,
                () = &mut stopped => return,
            } {
                Some(read) => read,
                None => return time_out(stream, filled, limits, &self.server.state.metrics).await,
            };
            deadline = Some(due);
            match read {
                Ok(0) => return,
                Ok(n) => filled += n,
                Err(error) => {
                    tracing::debug!(%error, peer = %self.peer, "connection ended with an error");
                    return;
                }
            }
        }
    }
}

/// Reads more of a head into `buffer`; `None` once `due` has passed. `due` moves later
/// while the client is still taking its last answers (see [`Taking`]).
async fn wait_for_head(
    stream: &mut TcpStream,
    buffer: &mut [u8],
    mut timer: Pin<&mut tokio::time::Sleep>,
    due: &mut Instant,
    taking: &mut Taking,
) -> Option<io::Result<usize>> {
    loop {
        tokio::select! {
            biased;
            read = stream.read(buffer) => return Some(read),
            () = &mut timer => {
                let now = Instant::now();
                if now >= *due {
                    *due = taking.extended(stream, now)?;
                }
                timer.as_mut().reset(*due);
            }
        }
    }
}

/// A client still taking its last answers when its head deadline passes: the kernel holds
/// bytes of them that the client has not received (it reads slowly, or pipelined more than
/// the socket buffers hold). Its wait is checked again every quarter timeout. Like a blocked
/// write, it goes on while the client takes some of them within each write timeout; once
/// the kernel holds none, the client has a whole head timeout from then to ask again. One
/// `Taking` lasts for the whole head, so a head sent a byte at a time cannot renew it.
// Known limit: answers already in the client's own receive buffer count as taken, so a
// client with a large receive buffer that reads slowly can still find the connection closed
// after them.
struct Taking {
    /// Without progress, the wait ends here.
    until: Instant,
    /// Bytes the kernel held at the last check.
    queued: usize,
    limits: Limits,
    /// Set while answers were still on their way at the last check.
    was: bool,
}

impl Taking {
    fn new(due: Instant, limits: Limits) -> Taking {
        Taking {
            until: due + limits.write_timeout,
            queued: usize::MAX,
            limits,
            was: false,
        }
    }

    /// The new deadline of a head whose deadline passed at `now`, or `None` to end the wait.
    fn extended(&mut self, stream: &TcpStream, now: Instant) -> Option<Instant> {
        let queued = queued_bytes(stream);
        if queued == 0 {
            let timeout = self.limits.header_read_timeout;
            return std::mem::take(&mut self.was).then_some(now + timeout);
        }
        if queued < self.queued {
            self.until = now + self.limits.write_timeout;
        }
        self.queued = queued;
        self.was = true;
        (now < self.until).then_some(now + self.limits.header_read_timeout / 4)
    }
}

/// Answer bytes the kernel still holds for the client: not sent yet, or not yet
/// acknowledged by the client's side; 0 when it cannot say.
#[cfg(target_os = "linux")]
fn queued_bytes(stream: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ on a socket) writes one int through the pointer, which
    // points at a live local; the descriptor stays open while `stream` is borrowed.
    let done = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &raw mut queued) };
    if done == 0 {
        usize::try_from(queued).unwrap_or(0)
    } else {
        0
    }
}

/// Elsewhere the queue is not asked: the head deadline is kept as it is.
#[cfg(not(target_os = "linux"))]
fn queued_bytes(_: &TcpStream) -> usize {
    0
}

/// Ends a connection whose head stopped arriving: a 408 when part of one came, so the
/// client learns why; silently when it sent nothing since its last answer.
async fn time_out(stream: TcpStream, received: usize, limits: Limits, metrics: &Metrics) {
    if received == 0 {
        return;
    }
    let waited = limits.header_read_timeout.as_millis();
    let message = format!(
        "the request head did not arrive within {waited} ms (server.header_read_timeout_ms); \
         send it whole"
    );
    let error = fast::ApiError::new(StatusCode::REQUEST_TIMEOUT, "header_timeout", message);
    refuse(stream, &error, limits, metrics).await;
}

/// The 431 of a head longer than `server.max_header_bytes`.
fn too_large(limits: Limits) -> fast::ApiError {
    let message = format!(
        "the request head is longer than {} bytes (server.max_header_bytes); send shorter \
         headers",
        limits.max_header_bytes
    );
    let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    fast::ApiError::new(status, "headers_too_large", message)
}

/// Answers `error`, counted, and closes the connection.
async fn refuse(mut stream: TcpStream, error: &fast::ApiError, limits: Limits, metrics: &Metrics) {
    let mut out = Outgoing::default();
    refusal(&mut out, error, metrics);
    if send(&mut stream, out.as_slice(), limits).await {
        linger(stream, limits).await;
    }
}

/// Writes all of `bytes`; false when that failed or took longer than the write timeout.
async fn send(stream: &mut TcpStream, bytes: &[u8], limits: Limits) -> bool {
    let write = stream.write_all(bytes);
    matches!(
        tokio::time::timeout(limits.write_timeout, write).await,
        Ok(Ok(()))
    )
}

/// Closes after an error answer without losing it: the sending side is shut, then what the
/// client still sends is read and dropped (for at most the head timeout), since closing
/// with unread bytes would reset the connection and could discard the answer in flight.
async fn linger(mut stream: TcpStream, limits: Limits) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let drain = async { while let Ok(1..) = stream.read(&mut sink).await {} };
    let _ = tokio::time::timeout(limits.header_read_timeout, drain).await;
}

/// What [`answer_buffered`] did.
struct Batch {
    /// Bytes of `input` answered.
    used: usize,
    /// What stopped it.
    step: Step,
    /// When the last answer was made, if any was.
    answered_at: Option<Instant>,
    /// What the socket did not take at once.
    unsent: io::Result<Vec<u8>>,
}

/// Answers every plain request at the start of `input` and sends the answers.
///
/// Answers are built in one buffer per thread and sent from it, so however many connections
/// are open, the bytes on their way to the kernel stay in the same few cache lines; only an
/// answer the socket cannot take whole is copied out to wait for it.
fn answer_buffered(state: &AppState, input: &[u8], stream: &TcpStream) -> Batch {
    OUTGOING.with_borrow_mut(|outgoing| {
        outgoing.clear();
        let mut used = 0;
        let step = loop {
            if outgoing.bytes.len() >= OUTPUT_BATCH_BYTES {
                break Step::Full;
            }
            match step(state, &input[used..], outgoing) {
                Step::Answered(n) => used += n,
                other => break other,
            }
        };
        let bytes = outgoing.as_slice();
        let unsent = if bytes.is_empty() {
            Ok(Vec::new())
        } else {
            match stream.try_write(bytes) {
                Ok(n) => Ok(bytes[n..].to_vec()),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(bytes.to_vec()),
                Err(error) => Err(error),
            }
        };
        let answered_at = outgoing.answered_at;
        Batch {
            used,
            step,
            answered_at,
            unsent,
        }
    })
}

thread_local! {
    static OUTGOING: std::cell::RefCell<Outgoing> = std::cell::RefCell::default();
}

/// Room before each answer's body for its head, which is at most 155 bytes: the status
/// line with the longest reason phrase (31), the content type, a 20-digit length and the
/// date; 174 with `connection: close`.
const HEAD_ROOM: usize = 192;

/// Answers waiting for one write. Each body is written after [`HEAD_ROOM`] bytes and its
/// head is then put just before it, so no body is copied to make room for its head; the
/// gap is closed only between pipelined answers.
#[derive(Debug, Default)]
pub struct Outgoing {
    bytes: Vec<u8>,
    front: usize,
    /// When the last answer was made.
    answered_at: Option<Instant>,
}

impl Outgoing {
    /// Forgets every answer, keeping the memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.front = 0;
        self.answered_at = None;
    }

    /// The bytes to send.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[self.front..]
    }
}

/// Answers the request at the start of `input` into `output` if it is a plain one;
/// `body` is scratch space. The connection loop runs this for every request, and so does
/// the in-process benchmark of the handler path.
pub fn step(state: &AppState, input: &[u8], out: &mut Outgoing) -> Step {
    if input.is_empty() {
        return Step::NeedMore;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let used = match request.parse(input) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Step::NeedMore,
        // More headers than this loop reads are hyper's, up to as many as hyper reads.
        Err(httparse::Error::TooManyHeaders) => return many_headers(input, out, &state.metrics),
        // HTTP/2 with prior knowledge is hyper's.
        Err(_) if input.starts_with(b"PRI ") => return Step::HandOver,
        // A request line ending in another HTTP version; other bytes where the version
        // should be are just malformed.
        Err(httparse::Error::Version) if asks_another_version(input) => {
            let message = "this server speaks HTTP/1.1 and HTTP/2; send 'HTTP/1.1' in the \
                           request line";
            let status = StatusCode::HTTP_VERSION_NOT_SUPPORTED;
            let error = fast::ApiError::new(status, "version_not_supported", message);
            refusal(out, &error, &state.metrics);
            return Step::Refused;
        }
        Err(error) => {
            let message = format!(
                "the request is not valid HTTP/1.1 ({error}); send a request line such as \
                 'GET /v1/regions/select?ip=203.0.113.7 HTTP/1.1' and valid headers"
            );
            let error = fast::ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", message);
            refusal(out, &error, &state.metrics);
            return Step::Refused;
        }
    };
    // A plain head has no body to frame (at most `Content-Length: 0`), so the framing is
    // checked only for heads that would go to hyper, which answers bad framing without JSON.
    let Some(head) = plain_head(&request) else {
        if let Some(problem) = framing_problem(request.version, request.headers) {
            let error = fast::ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", problem);
            refusal(out, &error, &state.metrics);
            return Step::Refused;
        }
        return Step::HandOver;
    };
    let start = out.bytes.len();
    out.bytes.resize(start + HEAD_ROOM, 0);
    let Some(answered) = fast::answer(state, &head, &mut out.bytes) else {
        out.bytes.truncate(start);
        return Step::HandOver;
    };
    let length = out.bytes.len() - start - HEAD_ROOM;
    let (head, n) = response_head(answered.status, length, answered.at);
    place_head(out, start, &head[..n]);
    out.answered_at = Some(answered.at);
    Step::Answered(used)
}

/// Puts `head` just before the body written after [`HEAD_ROOM`] bytes at `start`.
fn place_head(out: &mut Outgoing, start: usize, head: &[u8]) {
    let head_at = start + HEAD_ROOM - head.len();
    out.bytes[head_at..start + HEAD_ROOM].copy_from_slice(head);
    if start == 0 {
        out.front = head_at;
    } else {
        out.bytes.copy_within(head_at.., start);
        out.bytes.truncate(out.bytes.len() - (head_at - start));
    }
}

/// What to do with a head at the start of `input` that has more headers than this loop
/// reads: wait for the rest of it, hand it to hyper, or refuse it when it has more than
/// hyper reads.
fn many_headers(input: &[u8], out: &mut Outgoing, metrics: &Metrics) -> Step {
    let mut headers = vec![httparse::EMPTY_HEADER; MOST_HEADERS];
    match httparse::Request::new(&mut headers).parse(input) {
        Ok(httparse::Status::Partial) => Step::NeedMore,
        Err(httparse::Error::TooManyHeaders) => {
            let message = format!("the request has more than {MOST_HEADERS} headers; send fewer");
            let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
            let error = fast::ApiError::new(status, "too_many_headers", message);
            refusal(out, &error, metrics);
            Step::Refused
        }
        _ => Step::HandOver,
    }
}

/// True when the request line has three parts and the last names an HTTP version.
fn asks_another_version(input: &[u8]) -> bool {
    let line = input.split(|&b| b == b'\n').next().unwrap_or(input);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    parts.len() == 3 && parts[2].starts_with(b"HTTP/")
}

/// Appends `error`'s answer, with `connection: close`, after the answers already in `out`,
/// and counts it.
fn refusal(out: &mut Outgoing, error: &fast::ApiError, metrics: &Metrics) {
    // No route was matched: counted as the router counts what matches none.
    let status = error.status();
    let labels = ["unmatched", "other", status.as_str()];
    metrics.http_requests.with_label_values(&labels).inc();
    tracing::debug!(status = status.as_u16(), "request refused before routing");
    let start = out.bytes.len();
    out.bytes.resize(start + HEAD_ROOM, 0);
    fast::write_error(&mut out.bytes, error);
    let (head, n) = closing_head(error.status(), out.bytes.len() - start - HEAD_ROOM);
    place_head(out, start, &head[..n]);
}

/// Completes once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// What makes the body's length unknowable (RFC 9112, 6.3): a `Content-Length` that is not
/// one plain decimal number or is sent twice, a `Transfer-Encoding` that does not end in
/// `chunked`, or any in HTTP/1.0. Such a request cannot be answered, nor the next one found
/// after it.
fn framing_problem(version: Option<u8>, headers: &[httparse::Header<'_>]) -> Option<String> {
    let named = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let mut lengths = named("content-length");
    if let Some(first) = lengths.next()
        && (!plain_length(first) || lengths.next().is_some())
    {
        return Some(
            "Content-Length must be one decimal number of at most 18 digits, sent once; send \
             the body's length in bytes, or no Content-Length without a body"
                .to_owned(),
        );
    }
    // HTTP/1.0 has no transfer codings: its chunked body cannot be framed (RFC 9112, 6.1).
    if version == Some(0) && named("transfer-encoding").next().is_some() {
        return Some(
            "HTTP/1.0 requests cannot use Transfer-Encoding; send HTTP/1.1, or a \
             Content-Length"
                .to_owned(),
        );
    }
    let last_coding = named("transfer-encoding")
        .flat_map(|v| v.split(|&b| b == b','))
        .last()
        .map(<[u8]>::trim_ascii);
    if last_coding.is_some_and(|c| !c.eq_ignore_ascii_case(b"chunked")) {
        return Some(
            "Transfer-Encoding must end in 'chunked'; send 'Transfer-Encoding: chunked' or a \
             Content-Length"
                .to_owned(),
        );
    }
    None
}

/// True for a Content-Length value that is one plain decimal number, short enough that no
/// parser on the way can overflow on it (18 digits stay below 2^63).
fn plain_length(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    (1..=18).contains(&value.len()) && value.iter().all(u8::is_ascii_digit)
}

/// The head of an HTTP/1.1 request that keeps the connection and sends no body.
fn plain_head<'a>(request: &httparse::Request<'_, 'a>) -> Option<fast::Head<'a>> {
    if request.version != Some(1) {
        return None;
    }
    let mut authorization = None;
    for header in request.headers.iter() {
        let name = header.name;
        let value = header.value;
        if name.eq_ignore_ascii_case("authorization") {
            authorization = authorization.or(Some(value));
        } else if name.eq_ignore_ascii_case("content-length") {
            if value != b"0" {
                return None;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            if !value.eq_ignore_ascii_case(b"keep-alive") {
                return None;
            }
        } else if ["transfer-encoding", "upgrade", "expect"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            return None;
        }
    }
    Some(fast::Head {
        method: request.method?,
        target: request.path?,
        authorization,
        has_body: false,
    })
}

/// [`response_head`] for an answer after which the connection closes.
fn closing_head(status: StatusCode, length: usize) -> ([u8; HEAD_ROOM], usize) {
    const CLOSE: &[u8] = b"connection: close\r\n\r\n";
    let (mut head, n) = response_head(status, length, Instant::now());
    // Replaces the blank line ending the head; fits by the bound in its documentation.
    let at = n - 2;
    head[at..at + CLOSE.len()].copy_from_slice(CLOSE);
    (head, at + CLOSE.len())
}

/// The head of a JSON answer of `length` bytes made at `now`, and its length.
fn response_head(status: StatusCode, length: usize, now: Instant) -> ([u8; HEAD_ROOM], usize) {
    let mut head = [0u8; HEAD_ROOM];
    let mut n = 0;
    let date = DATE.with(|date| date.at(now));
    let mut digits = itoa::Buffer::new();
    let reason = status.canonical_reason().unwrap_or("");
    let parts: [&[u8]; 9] = [
        b"HTTP/1.1 ",
        status.as_str().as_bytes(),
        b" ",
        reason.as_bytes(),
        b"\r\ncontent-type: application/json\r\ncontent-length: ",
        digits.format(length).as_bytes(),
        b"\r\ndate: ",
        &date,
        b"\r\n\r\n",
    ];
    for part in parts {
        // Within HEAD_ROOM by the bound in its documentation.
        head[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    }
    (head, n)
}

thread_local! {
    static DATE: Date = const { Date { cached: std::cell::Cell::new(None) } };
}

/// The `Date` header value, formatted once a second.
struct Date {
    /// The text, and when the second it names ends on the monotonic clock.
    cached: std::cell::Cell<Option<(Instant, [u8; 29])>>,
}

impl Date {
    /// The value at `now`, a monotonic time the caller has read anyway: the wall clock is
    /// read once a second, not once an answer.
    fn at(&self, now: Instant) -> [u8; 29] {
        if let Some((until, text)) = self.cached.get()
            && now < until
        {
            return text;
        }
        let wall = SystemTime::now();
        let into_second = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let until = now + Duration::from_nanos(u64::from(1_000_000_000 - into_second));
        let mut text = [b' '; 29];
        let formatted = httpdate::fmt_http_date(wall);
        let n = formatted.len().min(29);
        text[..n].copy_from_slice(&formatted.as_bytes()[..n]);
        self.cached.set(Some((until, text)));
        text
    }
}

/// A stream that first replays bytes already read from it, fails a write the client
/// leaves blocked for longer than the write timeout, and fails a read once nothing has
/// moved either way for the idle timeout (hyper has neither deadline of its own).
pub struct Prefixed {
    prefix: Vec<u8>,
    position: usize,
    stream: TcpStream,
    limits: Limits,
    /// Set while a write is blocked: when it must have gone through.
    blocked: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When a byte last went either way.
    active_at: Instant,
    /// Set while a read waits: when the connection counts as abandoned.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Prefixed {
    fn new(prefix: Vec<u8>, stream: TcpStream, limits: Limits) -> Prefixed {
        Prefixed {
            prefix,
            position: 0,
            stream,
            limits,
            blocked: None,
            active_at: Instant::now(),
            idle: None,
        }
    }

    /// Passes a read's outcome on; a read still waiting once the connection has been idle
    /// for the idle timeout fails.
    fn idle_deadline(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<()>>,
    ) -> Poll<io::Result<()>> {
        if poll.is_ready() {
            self.active_at = Instant::now();
            return poll;
        }
        let deadline = self.active_at + self.limits.idle_timeout;
        let idle = self
            .idle
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if idle.deadline() != deadline {
            idle.as_mut().reset(deadline);
        }
        match idle.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let message = "nothing was sent or read for the idle timeout";
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, message)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Passes a write's outcome on; a write still blocked past the deadline fails.
    fn deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.blocked = None;
            self.active_at = Instant::now();
            return poll;
        }
        let timeout = self.limits.write_timeout;
        let blocked = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match blocked.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let message = "the client did not take the answer in time";
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, message)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.position < this.prefix.len() {
            let rest = &this.prefix[this.position..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.position += n;
            return Poll::Ready(Ok(()));
        }
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        this.idle_deadline(cx, poll)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.deadline(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.deadline(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `Date` value names the current second of the wall clock, and is kept until
    /// that second ends on the monotonic clock, then read again.
    #[test]
    fn date_is_read_once_a_second() {
        let date = Date {
            cached: std::cell::Cell::new(None),
        };
        let now = Instant::now();
        let text = date.at(now);
        let named = std::str::from_utf8(&text).expect("ASCII");
        let named = httpdate::parse_http_date(named).expect("an HTTP date");
        let off = SystemTime::now()
            .duration_since(named)
            .expect("not in the future");
        assert!(off < Duration::from_secs(2), "{off:?}");
        let planted = *b"Thu, 01 Jan 1970 00:00:00 GMT";
        date.cached
            .set(Some((now + Duration::from_secs(1), planted)));
        assert_eq!(date.at(now + Duration::from_millis(999)), planted);
        assert_ne!(date.at(now + Duration::from_secs(1)), planted);
    }

    /// Every status's head with the longest length fits the room left for it.
    #[test]
    fn heads_fit_their_room() {
        for code in 100..1000 {
            let status = StatusCode::from_u16(code).expect("three digits");
            let (head, n) = response_head(status, usize::MAX, Instant::now());
            assert!(n <= 155, "{code}: {n} bytes");
            assert!(head[..n].ends_with(b"\r\n\r\n"));
            let (head, n) = closing_head(status, usize::MAX);
            assert!(n <= HEAD_ROOM, "{code}: {n} bytes");
            assert!(head[..n].ends_with(b"\r\nconnection: close\r\n\r\n"));
        }
    }
}
