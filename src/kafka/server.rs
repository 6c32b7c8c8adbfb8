//! The listener's one thread: a `mio` poller over the listening socket and
//! every connection. It reads length-prefixed frames (the size checked
//! against `socket_request_max_bytes` before anything is allocated for the
//! frame), hands each request to [`api`](super::api), and writes the
//! answers back in request order, as Kafka's clients require. Answers from
//! the brokers arrive on whatever thread delivers them and wake the poller.
//! A connection with `max_in_flight_requests_per_connection` requests
//! unanswered is not read until one is answered.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;

use super::api::{self, Context, Handled};
use super::wire::{self, Answer};
use super::{KafkaListenerConfig, ListenerLog};
use crate::protocol::NodeId;

/// The waker's token; the listening sockets' are `0..n`, the
/// connections' follow.
const WAKER: Token = Token(usize::MAX);
const READ_CHUNK: usize = 64 * 1024;

/// What the poller and the threads that deliver answers share.
pub(super) struct Shared {
    /// Answers ready: (connection, request sequence number, what makes
    /// the answer — run on the listener's thread, so that encoding never
    /// runs on a broker's).
    completed: Mutex<Vec<(Token, u64, MakeAnswer)>>,
    waker: Waker,
    pub(super) stop: AtomicBool,
    pub(super) log: ListenerLog,
}

type MakeAnswer = Box<dyn FnOnce() -> Answer + Send>;

impl Shared {
    fn complete(&self, token: Token, seq: u64, make: MakeAnswer) {
        self.completed.lock().push((token, seq, make));
        // A failed wake leaves the answer for the next poll's timeout.
        let _ = self.waker.wake();
    }

    pub(super) fn wake(&self) {
        let _ = self.waker.wake();
    }
}

/// Where a request's answer goes once it is ready.
#[derive(Clone)]
pub(super) struct Reply {
    shared: Arc<Shared>,
    token: Token,
    seq: u64,
}

impl Reply {
    /// The answer is what `make` returns; it runs on the listener's thread.
    pub(super) fn answer(&self, make: impl FnOnce() -> Answer + Send + 'static) {
        self.shared.complete(self.token, self.seq, Box::new(make));
    }
}

struct Connection {
    stream: TcpStream,
    /// The broker whose port the connection came in on.
    broker: NodeId,
    peer: SocketAddr,
    read: BytesMut,
    write: BytesMut,
    next_seq: u64,
    next_out: u64,
    ready: BTreeMap<u64, Answer>,
    /// Read stopped at the in-flight bound; resume once answers go out.
    paused: bool,
}

impl Connection {
    fn in_flight(&self) -> usize {
        (self.next_seq - self.next_out) as usize
    }
}

/// Binds the listening sockets (one per advertised broker) and the
/// poller.
pub(super) fn bind(addrs: &[SocketAddr]) -> io::Result<(Poll, Vec<TcpListener>, Arc<Shared>)> {
    let poll = Poll::new()?;
    let mut listeners = Vec::with_capacity(addrs.len());
    for (i, addr) in addrs.iter().enumerate() {
        let mut listener = TcpListener::bind(*addr)?;
        poll.registry()
            .register(&mut listener, Token(i), Interest::READABLE)?;
        listeners.push(listener);
    }
    let waker = Waker::new(poll.registry(), WAKER)?;
    let shared = Arc::new(Shared {
        completed: Mutex::new(Vec::new()),
        waker,
        stop: AtomicBool::new(false),
        log: ListenerLog::default(),
    });
    Ok((poll, listeners, shared))
}

/// Runs until [`Shared::stop`] is set.
pub(super) fn run(
    mut poll: Poll,
    listeners: Vec<TcpListener>,
    shared: Arc<Shared>,
    context: Context,
    config: KafkaListenerConfig,
) {
    let mut events = Events::with_capacity(256);
    let mut connections: BTreeMap<Token, Connection> = BTreeMap::new();
    let mut next_token = listeners.len();
    while !shared.stop.load(Ordering::Acquire) {
        if let Err(e) = poll.poll(&mut events, None)
            && e.kind() != io::ErrorKind::Interrupted
        {
            shared.log.note(None, format!("poll failed: {e}"));
            return;
        }
        let mut touched: Vec<Token> = Vec::new();
        for event in events.iter() {
            match event.token() {
                WAKER => {}
                Token(i) if i < listeners.len() => loop {
                    match listeners[i].accept() {
                        Ok((mut stream, peer)) => {
                            if connections.len() >= config.max_connections {
                                shared.log.note(
                                    Some(peer),
                                    format!(
                                        "refused: {} connections open (max_connections)",
                                        connections.len()
                                    ),
                                );
                                continue;
                            }
                            let token = Token(next_token);
                            next_token += 1;
                            let _ = stream.set_nodelay(true);
                            let registered = poll.registry().register(
                                &mut stream,
                                token,
                                Interest::READABLE | Interest::WRITABLE,
                            );
                            if registered.is_ok() {
                                connections.insert(
                                    token,
                                    Connection {
                                        stream,
                                        broker: context.advertised.get(i).map_or(0, |&(id, _)| id),
                                        peer,
                                        read: BytesMut::new(),
                                        write: BytesMut::new(),
                                        next_seq: 0,
                                        next_out: 0,
                                        ready: BTreeMap::new(),
                                        paused: false,
                                    },
                                );
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            shared.log.note(None, format!("accept failed: {e}"));
                            break;
                        }
                    }
                },
                token => touched.push(token),
            }
        }
        let completed = std::mem::take(&mut *shared.completed.lock());
        for (token, seq, make) in completed {
            if let Some(conn) = connections.get_mut(&token) {
                let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(make))
                    .unwrap_or_else(|_| Answer::Close("building the answer panicked".into()));
                conn.ready.insert(seq, answer);
                touched.push(token);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for token in touched {
            let Some(conn) = connections.get_mut(&token) else {
                continue;
            };
            if let Err(reason) = service(conn, token, &shared, &context, &config) {
                shared.log.note(Some(conn.peer), reason);
                let _ = poll.registry().deregister(&mut conn.stream);
                connections.remove(&token);
            }
        }
    }
}

/// Moves answers out, reads and handles what came in. `Err`: close the
/// connection, for this reason.
fn service(
    conn: &mut Connection,
    token: Token,
    shared: &Arc<Shared>,
    context: &Context,
    config: &KafkaListenerConfig,
) -> Result<(), String> {
    loop {
        flush(conn)?;
        let before = (conn.next_seq, conn.read.len());
        read(conn, token, shared, context, config)?;
        flush(conn)?;
        // Handling may have answered at once; go round while that frees
        // room for more.
        if (conn.next_seq, conn.read.len()) == before || conn.paused {
            return Ok(());
        }
    }
}

/// Queues the answers that are next in order and writes what the socket
/// takes.
fn flush(conn: &mut Connection) -> Result<(), String> {
    let mut closing = None;
    while let Some(answer) = conn.ready.remove(&conn.next_out) {
        conn.next_out += 1;
        match answer {
            Answer::Frame(frame) => conn.write.extend_from_slice(&frame),
            Answer::Nothing => {}
            Answer::Close(reason) => {
                closing = Some(reason);
                break;
            }
        }
    }
    while !conn.write.is_empty() {
        match conn.stream.write(&conn.write) {
            Ok(0) => return Err("the peer stopped reading".into()),
            Ok(n) => conn.write.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write failed: {e}")),
        }
    }
    // The answers before the one that failed went out first (as far as
    // the socket took them).
    closing.map_or(Ok(()), Err)
}

/// Handles the whole frames already read, then reads more while the
/// connection has room for requests.
fn read(
    conn: &mut Connection,
    token: Token,
    shared: &Arc<Shared>,
    context: &Context,
    config: &KafkaListenerConfig,
) -> Result<(), String> {
    loop {
        while conn.in_flight() < config.max_in_flight_requests_per_connection {
            let Some(frame) = next_frame(&mut conn.read, config.socket_request_max_bytes)? else {
                break;
            };
            let seq = conn.next_seq;
            conn.next_seq += 1;
            let reply = Reply {
                shared: shared.clone(),
                token,
                seq,
            };
            let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handle(frame, context, reply, conn.broker)
            }))
            .unwrap_or_else(|_| Handled::Close("handling the request panicked".into()));
            match handled {
                Handled::Now(answer) => {
                    conn.ready.insert(seq, answer);
                }
                Handled::Later => {}
                Handled::Close(reason) => return Err(reason),
            }
        }
        conn.paused = conn.in_flight() >= config.max_in_flight_requests_per_connection;
        if conn.paused {
            return Ok(());
        }
        // Read at most what one more frame can need.
        let start = conn.read.len();
        conn.read.resize(start + READ_CHUNK, 0);
        match conn.stream.read(&mut conn.read[start..]) {
            Ok(0) => {
                conn.read.truncate(start);
                return Err(if conn.read.is_empty() {
                    "closed by the peer".into()
                } else {
                    format!(
                        "closed by the peer in the middle of a frame ({} bytes of it read)",
                        conn.read.len()
                    )
                });
            }
            Ok(n) => conn.read.truncate(start + n),
            Err(e) => {
                conn.read.truncate(start);
                match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(()),
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(format!("read failed: {e}")),
                }
            }
        }
    }
}

/// The next whole frame in `buf`, if it has one. A size that is negative
/// or over `max` is refused before anything is allocated for it.
fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, String> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size < 0 {
        return Err(format!("a frame of negative size {size}"));
    }
    let size = size as usize;
    if size > max {
        return Err(format!(
            "a frame of {size} bytes, over socket_request_max_bytes ({max})"
        ));
    }
    if buf.len() < 4 + size {
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(size).freeze()))
}

/// Reads a frame's header and hands the request to its API. A frame
/// whose header cannot be read closes the connection.
fn handle(frame: Bytes, context: &Context, reply: Reply, broker: NodeId) -> Handled {
    match wire::read_header(frame) {
        Ok((header, rest)) => api::handle(context, header, rest, reply, broker),
        Err(wire::Malformed(reason)) => {
            Handled::Close(format!("malformed request header: {reason}"))
        }
    }
}

/// Queued closing reasons are bounded: see [`ListenerLog`].
pub(super) fn bounded_push<T>(queue: &mut VecDeque<T>, item: T, bound: usize) {
    if queue.len() == bound {
        queue.pop_front();
    }
    queue.push_back(item);
}
