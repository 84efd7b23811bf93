//! The proxy on real sockets: real backends on port 0 (an echo server and a
//! line server that answers with its version), real clients, and every
//! wait a condition with a deadline. Latencies are printed (`figure:`
//! lines), never asserted.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::*;

/// How long any wait in these tests may take before it counts as a hang.
const DEADLINE: Duration = Duration::from_secs(10);

/// `fut`, or a panic naming `what` if it takes longer than [`DEADLINE`].
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match time::timeout(DEADLINE, fut).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: still waiting after {DEADLINE:?}"),
    }
}

/// Waits until `cond` holds, checking every few milliseconds, or panics
/// naming `what` after [`DEADLINE`].
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

/// What a test backend does with a connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Sends back every byte, and closes its side after the client closed
    /// its own.
    Echo,
    /// Answers each line `L` with `"{version} L\n"`, and closes its side
    /// after the client closed its own.
    Version(&'static str),
}

/// A backend listening on port 0; stops accepting when dropped.
struct Backend {
    addr: SocketAddr,
    accepts: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.accepts.abort();
    }
}

async fn backend(behaviour: Behaviour) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a backend");
    let addr = listener.local_addr().expect("backend address");
    let accepts = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, behaviour));
        }
    });
    Backend { addr, accepts }
}

async fn answer(stream: TcpStream, behaviour: Behaviour) {
    let (read, mut write) = stream.into_split();
    match behaviour {
        Behaviour::Echo => {
            let mut read = read;
            let _ = tokio::io::copy(&mut read, &mut write).await;
        }
        Behaviour::Version(version) => {
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if write.write_all(format!("{version} {line}\n").as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = write.shutdown().await;
}

/// A running proxy; dropping it shuts the proxy down.
struct Running {
    addr: SocketAddr,
    handle: ProxyHandle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    /// Shuts the proxy down and waits for [`Proxy::run`] to return.
    async fn shut_down(mut self) {
        drop(self.stop.take());
        within("the proxy to stop", &mut self.task).await.expect("the proxy task");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy(to: SocketAddr, limits: Limits) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
    let proxy = Proxy::with_limits(listener, to, limits);
    let addr = proxy.local_addr().expect("proxy address");
    let handle = proxy.handle();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(proxy.run(async move {
        let _ = stopped.await;
    }));
    Running { addr, handle, stop: Some(stop), task }
}

/// A client on one connection to a version backend, line by line.
struct Talk {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Talk {
    async fn open(addr: SocketAddr) -> Talk {
        let stream = within("connect to the proxy", TcpStream::connect(addr)).await.expect("connect");
        let (read, write) = stream.into_split();
        Talk { lines: BufReader::new(read).lines(), write }
    }

    /// Sends `line` and returns the answer.
    async fn ask(&mut self, line: &str) -> String {
        self.write.write_all(format!("{line}\n").as_bytes()).await.expect("send a line");
        within("an answer", self.lines.next_line()).await.expect("read an answer").expect("an answer, not the end")
    }

    /// Closes the writing side and waits for the backend to close its own.
    async fn close(mut self) {
        self.write.shutdown().await.expect("shut down the writing side");
        let rest = within("the end of the connection", self.lines.next_line()).await.expect("read to the end");
        assert_eq!(rest, None, "nothing after the last answer");
    }
}

/// One request on a fresh connection, half-closed after it, read to the
/// end: what `curl` does to a version endpoint.
async fn request(addr: SocketAddr) -> io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(b"version\n").await?;
    stream.shutdown().await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer)
}

/// Reads from a connection the proxy should close, and says whether it was
/// closed (an end of stream or a reset, within `deadline`) with nothing
/// read.
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> bool {
    let mut buf = [0u8; 64];
    match time::timeout(deadline, stream.read(&mut buf)).await {
        Ok(Ok(0)) => true,
        Ok(Ok(n)) => panic!("read {n} bytes from a connection that should be closed"),
        Ok(Err(e)) => matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe),
        Err(_) => false,
    }
}

#[tokio::test]
async fn bytes_round_trip_both_ways_and_a_half_close_passes_through() {
    let echo = backend(Behaviour::Echo).await;
    let running = proxy(echo.addr, Limits::default()).await;

    // A megabyte each way, written while it comes back (so neither side's
    // buffers fill), then the client's half-close: the echo answers
    // everything after it and closes, and the proxy carries that too.
    let sent: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let stream = TcpStream::connect(running.addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    let to_send = sent.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&to_send).await.expect("write through the proxy");
        write.shutdown().await.expect("half-close");
    });
    let mut back = Vec::new();
    within("the echo to end", read.read_to_end(&mut back)).await.expect("read through the proxy");
    within("the writer", writer).await.expect("the writer task");
    assert_eq!(back.len(), sent.len());
    assert!(back == sent, "the bytes came back changed");

    // A conversation, line by line, on one connection.
    let versioned = backend(Behaviour::Version("v1")).await;
    running.handle.switch(versioned.addr);
    let mut talk = Talk::open(running.addr).await;
    assert_eq!(talk.ask("hello").await, "v1 hello");
    assert_eq!(talk.ask("again").await, "v1 again");
    talk.close().await;

    eventually("both connections counted out", || running.handle.stats().active_total() == 0).await;
    let stats = running.handle.stats();
    assert_eq!((stats.connections_total, stats.failed_connects, stats.rejected_over_limit), (2, 0, 0));
}

#[tokio::test]
async fn a_switch_sends_new_connections_to_the_new_backend_and_lets_old_ones_drain() {
    let blue = backend(Behaviour::Version("blue")).await;
    let green = backend(Behaviour::Version("green")).await;
    let running = proxy(blue.addr, Limits::default()).await;

    let mut long = Talk::open(running.addr).await;
    assert_eq!(long.ask("before").await, "blue before");

    let switched = running.handle.switch(green.addr);
    assert_eq!((switched.old_backend(), switched.new_backend()), (blue.addr, green.addr));
    assert_eq!(running.handle.backend(), green.addr);

    // New connections reach green; the one opened before the switch still
    // talks to blue.
    assert_eq!(request(running.addr).await.expect("a request after the switch"), "green version\n");
    let mut fresh = Talk::open(running.addr).await;
    assert_eq!(fresh.ask("new").await, "green new");
    assert_eq!(long.ask("after").await, "blue after");

    // While it is open, a drain with a short deadline reports it.
    assert_eq!(switched.remaining(), 1);
    let drained = switched.drain(Duration::from_millis(50)).await;
    assert_eq!(drained, Drained { remaining: 1 });
    assert!(!drained.is_complete());
    let stats = running.handle.stats();
    assert_eq!((stats.active_on(blue.addr), stats.active_on(green.addr)), (1, 1));
    assert_eq!(stats.active[0].backend, green.addr, "the current backend comes first");

    // Once it closes, the drain completes.
    assert_eq!(long.ask("last").await, "blue last");
    long.close().await;
    let drained = within("the drain", switched.drain(DEADLINE)).await;
    assert!(drained.is_complete(), "{drained:?}");
    assert_eq!(running.handle.stats().active_on(blue.addr), 0);

    // The connection on green never noticed any of it.
    assert_eq!(fresh.ask("still").await, "green still");
    fresh.close().await;
    assert_eq!(running.handle.stats().cut, 0, "a switch cuts nothing");
}

#[tokio::test]
async fn close_old_cuts_what_is_left_after_the_deadline() {
    let blue = backend(Behaviour::Version("blue")).await;
    let green = backend(Behaviour::Version("green")).await;
    let running = proxy(blue.addr, Limits::default()).await;

    let mut lingering = Vec::new();
    for _ in 0..3 {
        let mut talk = Talk::open(running.addr).await;
        assert_eq!(talk.ask("hi").await, "blue hi");
        lingering.push(talk);
    }
    let switched = running.handle.switch(green.addr);
    assert_eq!(switched.drain(Duration::from_millis(20)).await.remaining, 3);

    assert_eq!(within("close_old", switched.close_old()).await, 3);
    assert_eq!(switched.remaining(), 0);
    for talk in &mut lingering {
        let end = within("the cut connection to end", talk.lines.next_line()).await;
        assert!(matches!(end, Ok(None) | Err(_)), "a cut connection ends: {end:?}");
    }
    let stats = running.handle.stats();
    assert_eq!((stats.cut, stats.active_total()), (3, 0));

    // The proxy goes on serving, from green.
    assert_eq!(request(running.addr).await.expect("a request after the cut"), "green version\n");
}

/// Requests in the client loop, and how many of them pass between two
/// switches.
const REQUESTS: usize = 2000;
const SWITCH_EVERY: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_loop_sees_no_failure_while_the_proxy_switches_back_and_forth() {
    let blue = backend(Behaviour::Version("blue")).await;
    let green = backend(Behaviour::Version("green")).await;
    let running = proxy(blue.addr, Limits::default()).await;

    // The switcher flips the proxy every SWITCH_EVERY requests, while the
    // client goes on, and drains each old side as blue-green would before
    // stopping it.
    let (progress, mut done) = watch::channel(0usize);
    let handle = running.handle.clone();
    let (blue_addr, green_addr) = (blue.addr, green.addr);
    let switcher = tokio::spawn(async move {
        let mut switches = Vec::new();
        let mut undrained = 0;
        for k in 1..REQUESTS / SWITCH_EVERY {
            if done.wait_for(|n| *n >= k * SWITCH_EVERY).await.is_err() {
                break;
            }
            let to = if k % 2 == 1 { green_addr } else { blue_addr };
            switches.push(Instant::now());
            let switched = handle.switch(to);
            undrained += switched.drain(DEADLINE).await.remaining;
        }
        (switches, undrained)
    });

    let mut failures = 0;
    let (mut blues, mut greens) = (0, 0);
    let mut spans = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        let start = Instant::now();
        match within("a request", request(running.addr)).await.as_deref() {
            Ok("blue version\n") => blues += 1,
            Ok("green version\n") => greens += 1,
            other => {
                failures += 1;
                eprintln!("request {i} failed: {other:?}");
            }
        }
        spans.push((start, Instant::now()));
        progress.send_replace(i + 1);
    }
    let (switches, undrained) = within("the switcher", switcher).await.expect("the switcher task");

    assert_eq!(failures, 0, "no request may fail across the switches");
    assert!(blues > 0 && greens > 0, "both versions answered: {blues} blue, {greens} green");
    assert_eq!(switches.len(), REQUESTS / SWITCH_EVERY - 1);
    assert_eq!(undrained, 0, "every old side drained");
    assert_eq!(running.handle.stats().failed_connects, 0);

    // The figure: every request's time from connect to the end of the
    // answer; the longest overall, and the longest of those in flight at a
    // switch or the first after it.
    let mut latencies: Vec<Duration> = spans.iter().map(|(start, end)| *end - *start).collect();
    let at_switches = switches
        .iter()
        .filter_map(|t| spans.iter().find(|(_, end)| end >= t).map(|(start, end)| *end - *start))
        .max()
        .unwrap_or_default();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    eprintln!(
        "figure: {REQUESTS} sequential requests on fresh connections through the proxy, {} switches: \
         longest {:.2?} (the longest at a switch {:.2?}); p50 {:.2?}, p99 {:.2?}; {blues} blue, {greens} green, 0 failed",
        switches.len(),
        latencies[latencies.len() - 1],
        at_switches,
        pick(0.5),
        pick(0.99),
    );
}

#[tokio::test]
async fn a_backend_that_is_down_gets_the_client_closed_and_the_proxy_keeps_serving() {
    // A socket bound but not listening holds its port and refuses every
    // connection to it: a service that is down.
    let down = TcpSocket::new_v4().expect("a socket");
    down.bind("127.0.0.1:0".parse().expect("an address")).expect("bind");
    let down_addr = down.local_addr().expect("its address");
    let running = proxy(down_addr, Limits::default()).await;

    for n in 1..=2 {
        let mut client = TcpStream::connect(running.addr).await.expect("the proxy accepts");
        assert!(
            closed_within(&mut client, CONNECT_TIMEOUT).await,
            "the client connection is closed within the connect timeout ({CONNECT_TIMEOUT:?}), not left hanging"
        );
        assert_eq!(running.handle.stats().failed_connects, n);
    }

    // The proxy still serves once there is something to serve.
    let up = backend(Behaviour::Version("v1")).await;
    running.handle.switch(up.addr);
    assert_eq!(request(running.addr).await.expect("a request to a live backend"), "v1 version\n");
    assert_eq!(running.handle.stats().failed_connects, 2);
}

#[tokio::test]
async fn a_backend_that_never_answers_is_given_up_at_the_connect_timeout() {
    // A listener with a backlog of one that never accepts: once its queue
    // is full, the kernel drops further SYNs, so a connect hangs. Fill it
    // until a connect of ours hangs too.
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.bind("127.0.0.1:0".parse().expect("an address")).expect("bind");
    let silent = socket.listen(1).expect("listen");
    let silent_addr = silent.local_addr().expect("its address");
    let mut fillers = Vec::new();
    let mut full = false;
    for _ in 0..64 {
        match time::timeout(Duration::from_millis(200), TcpStream::connect(silent_addr)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            Ok(Err(e)) => panic!("a connect to a full backlog failed instead of hanging: {e}"),
            Err(_) => {
                full = true;
                break;
            }
        }
    }
    assert!(full, "the backlog never filled");

    let connect_timeout = Duration::from_millis(300);
    let running = proxy(silent_addr, Limits { connect_timeout, ..Limits::default() }).await;
    let started = Instant::now();
    let mut client = TcpStream::connect(running.addr).await.expect("the proxy accepts");
    assert!(closed_within(&mut client, DEADLINE).await, "the client connection is closed, not left hanging");
    assert!(started.elapsed() >= connect_timeout, "closed only once the connect timeout passed");
    assert_eq!(running.handle.stats().failed_connects, 1);
    drop(fillers);
}

#[tokio::test]
async fn over_the_connection_limit_new_connections_are_closed_at_once() {
    let up = backend(Behaviour::Version("v1")).await;
    let running = proxy(up.addr, Limits { max_connections: 3, ..Limits::default() }).await;

    let mut held = Vec::new();
    for i in 0..3 {
        let mut talk = Talk::open(running.addr).await;
        assert_eq!(talk.ask(&format!("c{i}")).await, format!("v1 c{i}"));
        held.push(talk);
    }

    let mut extra = TcpStream::connect(running.addr).await.expect("the kernel accepts it");
    assert!(closed_within(&mut extra, DEADLINE).await, "the connection over the limit is closed");
    let stats = running.handle.stats();
    assert_eq!((stats.rejected_over_limit, stats.connections_total, stats.active_total()), (1, 3, 3));

    // The others keep working.
    for (i, talk) in held.iter_mut().enumerate() {
        assert_eq!(talk.ask(&format!("still {i}")).await, format!("v1 still {i}"));
    }

    // One closes, and its place is free again.
    let first = held.remove(0);
    first.close().await;
    eventually("the closed connection counted out", || running.handle.stats().active_total() == 2).await;
    let mut another = Talk::open(running.addr).await;
    assert_eq!(another.ask("in").await, "v1 in");
    assert_eq!(running.handle.stats().rejected_over_limit, 1);
}

#[tokio::test]
async fn shutting_down_stops_accepting_and_closes_what_is_carried() {
    let up = backend(Behaviour::Version("v1")).await;
    let running = proxy(up.addr, Limits::default()).await;
    let handle = running.handle.clone();
    let mut talk = Talk::open(running.addr).await;
    assert_eq!(talk.ask("hi").await, "v1 hi");

    running.shut_down().await;
    let end = within("the carried connection to end", talk.lines.next_line()).await;
    assert!(matches!(end, Ok(None) | Err(_)), "closed at shutdown: {end:?}");
    assert_eq!(handle.stats().active_total(), 0);
}

#[test]
fn the_proxy_process_files_read_as_the_agent_writes_them() {
    use super::process::{DesiredProxy, bind_error};
    // `cut_before` and `stop` may be left out: the first generation has
    // neither.
    let text = r#"{"listen":"0.0.0.0:8080","backend":"127.0.0.1:41000","generation":1,"log_format":"text"}"#;
    let desired: DesiredProxy = serde_json::from_str(text).unwrap();
    assert_eq!((desired.generation, desired.cut_before, desired.stop), (1, 0, false));
    assert_eq!(desired.listen, "0.0.0.0:8080".parse().unwrap());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let e = std::net::TcpListener::bind(addr).unwrap_err();
    let message = bind_error(addr, &e);
    assert!(message.starts_with(&format!("port {} on 127.0.0.1 is in use: ", addr.port())), "{message}");
}
