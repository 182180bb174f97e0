//! synfin agent for smoltcp: drives smoltcp's TCP sockets on a TAP and speaks
//! docs/agent-protocol.md (JSON lines).
//!
//! One thread owns the interface, the TAP and the socket set. It waits in poll(2) on the TAP
//! and the control channel with the stack's own poll delay as timeout, so timers (delayed ACK,
//! retransmission, TIME-WAIT) run while blocking calls (accept, connect, recv, wait) are pending:
//! a pending call is retried after every turn of the loop until it completes or its deadline
//! passes.
//!
//! How BSD socket calls map onto smoltcp (which has no socket layer of its own):
//! - listen(backlog) keeps `backlog` tcp::Sockets in LISTEN on the port; a SYN turns one of them
//!   into the connection, and a fresh listener replaces it before the next frame is processed.
//! - accept returns a connection of the pool that left SYN-RECEIVED.
//! - close is tcp::Socket::close() (FIN); with SO_LINGER {1, 0} it is tcp::Socket::abort() (RST,
//!   RFC 9293 ABORT). A closed socket stays in the set until smoltcp reaches CLOSED, so FIN
//!   retransmission and TIME-WAIT keep running; `conns` lists it meanwhile.
//! - shutdown(wr) is tcp::Socket::close(); smoltcp cannot close the receive half.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ffi::CString;
use std::io;
use std::os::unix::io::{AsRawFd, RawFd};

use base64::Engine;
use serde_json::{json, Map, Value};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Medium, TunTapInterface};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SInstant;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint, Ipv4Address,
};

const STACK: &str = "smoltcp";
/// The smoltcp release pinned in Cargo.toml.
const SMOLTCP_VERSION: &str = "0.14.0";
/// Receive and send buffer of every socket. 65535 keeps the window unscaled (shift 0) and makes
/// the SYN-ACK's window field recognisable (Linux offers 64240).
const BUF_SIZE: usize = 65535;
const DEFAULT_TIMEOUT: f64 = 5.0;
const LOG_LINE_MAX: usize = 2000;
const EPHEMERAL: (u16, u16) = (49152, 65535);

// ---------------------------------------------------------------------------------------------
// clock, log, randomness

fn mono() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn snow() -> SInstant {
    SInstant::from_micros((mono() * 1e6) as i64)
}

/// TSval clock for the TCP timestamp option: milliseconds of the monotonic clock.
fn tsval() -> u32 {
    (mono() * 1000.0) as u64 as u32
}

fn log(tag: &str, text: &str) {
    let mut text = text.to_string();
    if text.len() > LOG_LINE_MAX {
        let mut cut = LOG_LINE_MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text = format!("{}...({} chars)", &text[..cut], text.len());
    }
    let line = format!("{:.6} {} {}\n", mono(), tag, text);
    unsafe { libc::write(2, line.as_ptr() as *const libc::c_void, line.len()) };
}

/// A request or reply for the log: long payloads become their length (they are in the pcap).
fn log_json(tag: &str, value: &Value) {
    fn shorten(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| match (k.as_str(), v) {
                        ("data", Value::String(s)) if s.len() > 48 => {
                            let n = s.len() * 3 / 4 - s.matches('=').count();
                            (k.clone(), Value::String(format!("<{} bytes>", n)))
                        }
                        _ => (k.clone(), shorten(v)),
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    log(tag, &shorten(value).to_string());
}

fn urandom_u64() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        if f.read_exact(&mut b).is_ok() {
            return u64::from_ne_bytes(b);
        }
    }
    (mono() * 1e9) as u64 ^ (std::process::id() as u64) << 32
}

// ---------------------------------------------------------------------------------------------
// errors and arguments

struct Failure {
    code: String,
    msg: String,
}

fn fail(code: &str, msg: impl Into<String>) -> Failure {
    Failure { code: code.to_string(), msg: msg.into() }
}

fn malformed(msg: impl Into<String>) -> Failure {
    fail("EBADMSG", msg)
}

fn os_failure(err: &io::Error) -> Failure {
    let code = match err.raw_os_error() {
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::ENODEV) => "ENODEV",
        Some(libc::EPERM) => "EPERM",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EBUSY) => "EBUSY",
        Some(libc::EINVAL) => "EINVAL",
        _ => "EIO",
    };
    fail(code, err.to_string())
}

type Res<T> = Result<T, Failure>;

fn ok_reply(result: Value) -> Value {
    json!({"ok": true, "result": result, "t": mono()})
}

fn err_reply(f: Failure) -> Value {
    json!({"ok": false, "errno": f.code, "error": f.msg, "t": mono()})
}

fn reply_of(r: Res<Value>) -> Value {
    match r {
        Ok(v) => ok_reply(v),
        Err(f) => err_reply(f),
    }
}

fn arg_int(args: &Map<String, Value>, name: &str, default: Option<i64>) -> Res<i64> {
    match args.get(name) {
        None | Some(Value::Null) => default.ok_or_else(|| malformed(format!("missing argument '{}'", name))),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64().unwrap()),
        Some(v) => Err(malformed(format!("argument '{}' has a bad value: {}", name, v))),
    }
}

fn arg_opt_int(args: &Map<String, Value>, name: &str) -> Res<Option<i64>> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        _ => arg_int(args, name, None).map(Some),
    }
}

fn arg_float(args: &Map<String, Value>, name: &str, default: f64) -> Res<f64> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if f.is_finite() && f >= 0.0 => Ok(f),
            _ => Err(malformed(format!("argument '{}' has a bad value: {}", name, n))),
        },
        Some(v) => Err(malformed(format!("argument '{}' has a bad value: {}", name, v))),
    }
}

fn arg_str<'a>(args: &'a Map<String, Value>, name: &str) -> Res<&'a str> {
    match args.get(name) {
        Some(Value::String(s)) => Ok(s.as_str()),
        None | Some(Value::Null) => Err(malformed(format!("missing argument '{}'", name))),
        Some(v) => Err(malformed(format!("argument '{}' has a bad value: {}", name, v))),
    }
}

fn arg_opt_str<'a>(args: &'a Map<String, Value>, name: &str) -> Res<Option<&'a str>> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        _ => arg_str(args, name).map(Some),
    }
}

fn arg_bool(args: &Map<String, Value>, name: &str) -> Res<bool> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64() != Some(0)),
        Some(v) => Err(malformed(format!("argument '{}' has a bad value: {}", name, v))),
    }
}

fn port_of(v: i64, name: &str) -> Res<u16> {
    u16::try_from(v).map_err(|_| malformed(format!("{} out of range: {}", name, v)))
}

/// Numeric IPv4 only: the agent never resolves names, and the stack is configured for IPv4.
fn ipv4_of(s: &str) -> Res<Ipv4Address> {
    if s.contains(':') {
        return Err(fail("EAFNOSUPPORT", format!("IPv6 address {} (the stack is IPv4 only)", s)));
    }
    s.parse::<Ipv4Address>().map_err(|_| malformed(format!("not a numeric IP address: {:?}", s)))
}

fn state_name(s: tcp::State) -> &'static str {
    match s {
        tcp::State::Closed => "CLOSED",
        tcp::State::Listen => "LISTEN",
        tcp::State::SynSent => "SYN-SENT",
        tcp::State::SynReceived => "SYN-RECEIVED",
        tcp::State::Established => "ESTABLISHED",
        tcp::State::FinWait1 => "FIN-WAIT-1",
        tcp::State::FinWait2 => "FIN-WAIT-2",
        tcp::State::CloseWait => "CLOSE-WAIT",
        tcp::State::Closing => "CLOSING",
        tcp::State::LastAck => "LAST-ACK",
        tcp::State::TimeWait => "TIME-WAIT",
    }
}

fn ep_json(ep: IpEndpoint) -> Value {
    json!([ep.addr.to_string(), ep.port])
}

// ---------------------------------------------------------------------------------------------
// agent state

struct Listener {
    addr: Option<Ipv4Address>,
    port: u16,
    backlog: usize,
    rcvbuf: usize,
    /// Sockets in LISTEN, and connections made on them that were not accepted yet.
    pool: Vec<SocketHandle>,
    linger: [i64; 2],
    nodelay: bool,
    reuseaddr: bool,
}

struct Conn {
    h: SocketHandle,
    linger: [i64; 2],
    reuseaddr: bool,
}

enum Sock {
    Listener(Listener),
    Conn(Conn),
}

struct Stack {
    iface: Interface,
    dev: TunTapInterface,
    sockets: SocketSet<'static>,
    addr: Ipv4Address,
}

struct Call {
    op: String,
    args: Map<String, Value>,
    deadline: f64,
    /// connect: the socket in SYN-SENT.
    conn: Option<SocketHandle>,
    /// send: the bytes, and how many are queued.
    data: Option<Vec<u8>>,
    sent: usize,
    /// A malformed request's answer, kept in line so replies stay in request order.
    preset: Option<Value>,
}

impl Call {
    fn new(op: String, args: Map<String, Value>) -> Call {
        // A bad timeout is reported by the op itself; the deadline then does not matter.
        let timeout = arg_float(&args, "timeout", DEFAULT_TIMEOUT).unwrap_or(0.0);
        Call { op, args, deadline: mono() + timeout, conn: None, data: None, sent: 0, preset: None }
    }

    fn expired(&self) -> bool {
        mono() >= self.deadline
    }
}

struct Job {
    op: String,
    call: Option<Call>,
    reply: Option<Value>,
}

struct Agent {
    stack: Option<Stack>,
    socks: BTreeMap<i64, Sock>,
    next_sock: i64,
    /// Sockets the application closed: polled until smoltcp is done with them.
    orphans: Vec<SocketHandle>,
    /// Every real socket in the set (retired slots hold empty CLOSED placeholders).
    live: BTreeSet<SocketHandle>,
    last_state: HashMap<SocketHandle, tcp::State>,
    /// Sockets that went from a synchronized state to CLOSED on their own: a RST arrived.
    reset_seen: HashSet<SocketHandle>,
    jobs: BTreeMap<i64, Job>,
    next_job: i64,
    queue: VecDeque<(Value, Call)>,
    rng: u64,
    quit: bool,
}

const OPS: &[&str] = &[
    "accept", "close", "connect", "conns", "getsockopt", "hello", "listen", "quit", "recv", "send",
    "setsockopt", "shutdown", "start", "state", "sysctl", "wait",
];

impl Agent {
    fn new() -> Agent {
        Agent {
            stack: None,
            socks: BTreeMap::new(),
            next_sock: 1,
            orphans: Vec::new(),
            live: BTreeSet::new(),
            last_state: HashMap::new(),
            reset_seen: HashSet::new(),
            jobs: BTreeMap::new(),
            next_job: 1,
            queue: VecDeque::new(),
            rng: urandom_u64() | 1,
            quit: false,
        }
    }

    fn rand(&mut self) -> u64 {
        // xorshift64: only for picking ephemeral ports.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn stack(&mut self) -> Res<&mut Stack> {
        self.stack.as_mut().ok_or_else(|| fail("EIO", "the stack is not up: call hello first"))
    }

    fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.stack.as_mut().unwrap().sockets.get_mut::<tcp::Socket>(h)
    }

    fn tcp_ref(&self, h: SocketHandle) -> &tcp::Socket<'static> {
        self.stack.as_ref().unwrap().sockets.get::<tcp::Socket>(h)
    }

    fn new_socket(&mut self, rx: usize) -> SocketHandle {
        let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0u8; rx]), tcp::SocketBuffer::new(vec![0u8; BUF_SIZE]));
        // smoltcp sends the timestamp option only with a TSval clock; it drops it again for a
        // connection whose peer's SYN has none.
        s.set_tsval_generator(Some(tsval));
        let h = self.stack.as_mut().unwrap().sockets.add(s);
        self.live.insert(h);
        h
    }

    /// Drop a socket from the set without sending anything. Its slot keeps an empty CLOSED
    /// placeholder, so later sockets are appended after every older one: smoltcp hands a
    /// segment to the first socket in slot order that accepts it, and a connection must
    /// come before the listeners of its port (a newer listener would otherwise take a SYN
    /// meant for a connection in TIME-WAIT).
    fn retire(&mut self, h: SocketHandle) {
        let stack = self.stack.as_mut().unwrap();
        stack.sockets.remove(h);
        let placeholder = stack.sockets.add(tcp::Socket::new(tcp::SocketBuffer::new(Vec::new()), tcp::SocketBuffer::new(Vec::new())));
        debug_assert_eq!(placeholder, h);
        self.live.remove(&h);
        self.last_state.remove(&h);
        self.reset_seen.remove(&h);
    }

    fn add_sock(&mut self, sock: Sock) -> i64 {
        let id = self.next_sock;
        self.next_sock += 1;
        self.socks.insert(id, sock);
        id
    }

    fn sock_id(args: &Map<String, Value>) -> Res<i64> {
        arg_int(args, "sock", None)
    }

    fn conn_handle(&self, id: i64) -> Res<SocketHandle> {
        match self.socks.get(&id) {
            None => Err(fail("EBADF", format!("no socket {}", id))),
            Some(Sock::Listener(_)) => Err(fail("ENOTCONN", format!("socket {} is a listener", id))),
            Some(Sock::Conn(c)) => Ok(c.h),
        }
    }

    // -- bookkeeping after every frame and timer run ---------------------------------------

    /// Note state changes (for the log, and to tell a reset from an orderly end).
    fn track(&mut self) {
        let Some(stack) = self.stack.as_ref() else { return };
        let mut changes = Vec::new();
        for &h in &self.live {
            let s = stack.sockets.get::<tcp::Socket>(h);
            let st = s.state();
            let prev = self.last_state.get(&h).copied().unwrap_or(tcp::State::Closed);
            if prev != st {
                changes.push((h, prev, st, s.local_endpoint(), s.remote_endpoint()));
            }
        }
        for (h, prev, st, local, remote) in changes {
            self.last_state.insert(h, st);
            use tcp::State::*;
            if st == Closed && matches!(prev, SynSent | SynReceived | Established | FinWait1 | FinWait2 | CloseWait | Closing) {
                self.reset_seen.insert(h);
            }
            // Listeners coming and going are not worth a log line each.
            if !matches!((prev, st), (Closed, Listen) | (Listen, Closed)) {
                let tuple = match (local, remote) {
                    (Some(l), Some(r)) => format!("{} <-> {}", l, r),
                    _ => "-".to_string(),
                };
                log("tcp", &format!("{} {} {} -> {}", h, tuple, state_name(prev), state_name(st)));
            }
        }
    }

    /// Keep `backlog` sockets in LISTEN on every listening port; drop pool entries that a
    /// RST closed before accept().
    fn replenish(&mut self) {
        if self.stack.is_none() {
            return;
        }
        let ids: Vec<i64> = self.socks.iter().filter(|(_, s)| matches!(s, Sock::Listener(_))).map(|(id, _)| *id).collect();
        for id in ids {
            let (pool, backlog, rcvbuf, addr, port) = match self.socks.get(&id) {
                Some(Sock::Listener(l)) => (l.pool.clone(), l.backlog, l.rcvbuf, l.addr, l.port),
                _ => continue,
            };
            let mut keep = Vec::with_capacity(pool.len());
            let mut listening = 0;
            for h in pool {
                let s = self.tcp_ref(h);
                match s.state() {
                    tcp::State::Listen => {
                        listening += 1;
                        keep.push(h)
                    }
                    tcp::State::Closed => self.orphans.push(h),
                    _ => keep.push(h),
                }
            }
            while listening < backlog {
                let h = self.new_socket(rcvbuf);
                let ep = IpListenEndpoint { addr: addr.map(IpAddress::Ipv4), port };
                self.tcp(h).listen(ep).expect("listen on a fresh socket");
                self.last_state.insert(h, tcp::State::Listen);
                keep.push(h);
                listening += 1;
            }
            if let Some(Sock::Listener(l)) = self.socks.get_mut(&id) {
                l.pool = keep;
            }
        }
    }

    /// Forget orphans smoltcp is done with (CLOSED, RST if any already sent).
    fn collect(&mut self) {
        let orphans = std::mem::take(&mut self.orphans);
        for h in orphans {
            let s = self.tcp_ref(h);
            if s.state() == tcp::State::Closed && s.local_endpoint().is_none() {
                self.retire(h);
            } else {
                self.orphans.push(h);
            }
        }
    }

    fn after_change(&mut self) {
        self.track();
        self.replenish();
    }

    // -- calls -----------------------------------------------------------------------------

    /// One attempt at a call: its reply (without id), or None while it must wait.
    fn step(&mut self, call: &mut Call) -> Option<Value> {
        if let Some(reply) = call.preset.take() {
            return Some(reply);
        }
        let r = match call.op.as_str() {
            "hello" => self.op_hello(),
            "listen" => self.op_listen(&call.args),
            "accept" => return self.step_accept(call),
            "connect" => return self.step_connect(call),
            "send" => return self.step_send(call),
            "recv" => return self.step_recv(call),
            "shutdown" => self.op_shutdown(&call.args),
            "close" => self.op_close(&call.args),
            "setsockopt" => self.op_setsockopt(&call.args),
            "getsockopt" => self.op_getsockopt(&call.args),
            "state" => self.op_state(&call.args),
            "conns" => self.op_conns(&call.args),
            "sysctl" => Err(fail("unsupported", "smoltcp has no sysctls")),
            "start" => self.op_start(&call.args),
            "wait" => return self.step_wait(call),
            "quit" => {
                self.quit = true;
                Ok(json!({}))
            }
            other => Err(fail("unsupported", format!("unknown op '{}'", other))),
        };
        Some(reply_of(r))
    }

    fn op_hello(&mut self) -> Res<Value> {
        if self.stack.is_none() {
            let ifname = std::env::var("SYNFIN_IFACE").unwrap_or_else(|_| "tap0".into());
            let mac_s = std::env::var("SYNFIN_MAC").map_err(|_| fail("EINVAL", "SYNFIN_MAC is not set"))?;
            let addr_s = std::env::var("SYNFIN_ADDR").map_err(|_| fail("EINVAL", "SYNFIN_ADDR is not set"))?;
            let mac = mac_s.parse::<EthernetAddress>().map_err(|_| fail("EINVAL", format!("bad SYNFIN_MAC {:?}", mac_s)))?;
            let cidr: IpCidr = addr_s.parse().map_err(|_| fail("EINVAL", format!("bad SYNFIN_ADDR {:?}", addr_s)))?;
            let IpAddress::Ipv4(addr) = cidr.address();
            let mut dev = TunTapInterface::new(&ifname, Medium::Ethernet).map_err(|e| {
                let f = os_failure(&e);
                fail(&f.code, format!("cannot attach to {}: {}", ifname, f.msg))
            })?;
            let mut config = Config::new(HardwareAddress::Ethernet(mac));
            config.random_seed = urandom_u64();
            let mut iface = Interface::new(config, &mut dev, snow());
            iface.update_ip_addrs(|addrs| {
                addrs.push(cidr).expect("one address fits");
            });
            log("ready", &format!("attached to {} as {} {}", ifname, mac, cidr));
            self.stack = Some(Stack { iface, dev, sockets: SocketSet::new(Vec::new()), addr });
        }
        Ok(json!({"stack": STACK, "version": SMOLTCP_VERSION, "pid": std::process::id(), "ops": OPS}))
    }

    fn op_listen(&mut self, args: &Map<String, Value>) -> Res<Value> {
        self.stack()?;
        let addr_s = arg_str(args, "addr")?;
        let addr = ipv4_of(addr_s)?;
        let mut port = port_of(arg_int(args, "port", None)?, "port")?;
        let backlog = arg_int(args, "backlog", Some(16))?.clamp(1, 1024) as usize;
        let reuseaddr = arg_bool(args, "reuseaddr")?;
        let rcvbuf = match arg_opt_int(args, "rcvbuf")? {
            Some(v) => (v.clamp(1024, 1 << 24)) as usize,
            None => BUF_SIZE,
        };
        let own = self.stack.as_ref().unwrap().addr;
        if !addr.is_unspecified() && addr != own {
            return Err(fail("EADDRNOTAVAIL", format!("{} is not the stack's address", addr)));
        }
        if port == 0 {
            port = self.ephemeral_port();
        }
        if self.listening_on(port) {
            return Err(fail("EADDRINUSE", format!("port {} already has a listener", port)));
        }
        let addr = if addr.is_unspecified() { None } else { Some(addr) };
        let id = self.add_sock(Sock::Listener(Listener {
            addr,
            port,
            backlog,
            rcvbuf,
            pool: Vec::new(),
            linger: [0, 0],
            nodelay: false,
            reuseaddr,
        }));
        self.replenish();
        Ok(json!({"sock": id, "local": [addr.unwrap_or(Ipv4Address::UNSPECIFIED).to_string(), port]}))
    }

    fn listening_on(&self, port: u16) -> bool {
        self.socks.values().any(|s| matches!(s, Sock::Listener(l) if l.port == port))
    }

    fn port_in_use(&self, port: u16) -> bool {
        self.listening_on(port)
            || self.live.iter().any(|&h| self.tcp_ref(h).local_endpoint().map(|e| e.port) == Some(port))
    }

    fn ephemeral_port(&mut self) -> u16 {
        let span = (EPHEMERAL.1 - EPHEMERAL.0) as u64 + 1;
        for _ in 0..4096 {
            let p = EPHEMERAL.0 + (self.rand() % span) as u16;
            if !self.port_in_use(p) {
                return p;
            }
        }
        EPHEMERAL.0 + (self.rand() % span) as u16
    }

    fn step_accept(&mut self, call: &mut Call) -> Option<Value> {
        let r = (|| -> Res<Option<Value>> {
            self.stack()?;
            let id = Self::sock_id(&call.args)?;
            arg_float(&call.args, "timeout", DEFAULT_TIMEOUT)?;
            let (pool, linger, nodelay, reuseaddr) = match self.socks.get(&id) {
                None => return Err(fail("EBADF", format!("no socket {}", id))),
                Some(Sock::Conn(_)) => return Err(fail("EINVAL", format!("socket {} is not listening", id))),
                Some(Sock::Listener(l)) => (l.pool.clone(), l.linger, l.nodelay, l.reuseaddr),
            };
            let ready = pool.iter().copied().filter(|&h| {
                !matches!(self.tcp_ref(h).state(), tcp::State::Listen | tcp::State::SynReceived | tcp::State::Closed)
            }).min();
            let Some(h) = ready else {
                if call.expired() {
                    return Err(fail("timeout", format!("accept did not complete within {} s", fmt_secs(&call.args))));
                }
                return Ok(None);
            };
            if let Some(Sock::Listener(l)) = self.socks.get_mut(&id) {
                l.pool.retain(|&x| x != h);
            }
            if nodelay {
                self.tcp(h).set_nagle_enabled(false);
            }
            let peer = self.tcp_ref(h).remote_endpoint().expect("a connection has a peer");
            let sid = self.add_sock(Sock::Conn(Conn { h, linger, reuseaddr }));
            Ok(Some(json!({"sock": sid, "peer": ep_json(peer)})))
        })();
        match r {
            Ok(None) => None,
            Ok(Some(v)) => Some(ok_reply(v)),
            Err(f) => Some(err_reply(f)),
        }
    }

    fn step_connect(&mut self, call: &mut Call) -> Option<Value> {
        let r = (|| -> Res<Option<Value>> {
            self.stack()?;
            let Some(h) = call.conn else {
                self.start_connect(call)?;
                return Ok(None);
            };
            let s = self.tcp_ref(h);
            match s.state() {
                tcp::State::SynSent | tcp::State::SynReceived => {
                    if call.expired() {
                        // Gone without a trace, like a socket closed in SYN-SENT: no RST.
                        self.retire(h);
                        call.conn = None;
                        return Err(fail("timeout", format!("connect did not complete within {} s", fmt_secs(&call.args))));
                    }
                    Ok(None)
                }
                tcp::State::Closed => {
                    let refused = self.reset_seen.contains(&h);
                    self.orphans.push(h);
                    call.conn = None;
                    if refused {
                        Err(fail("ECONNREFUSED", "connection refused (RST in SYN-SENT)"))
                    } else {
                        Err(fail("ETIMEDOUT", "connection attempt ended"))
                    }
                }
                _ => {
                    let local = s.local_endpoint().expect("a connection has a local endpoint");
                    let reuseaddr = arg_bool(&call.args, "reuseaddr").unwrap_or(false);
                    let sid = self.add_sock(Sock::Conn(Conn { h, linger: [0, 0], reuseaddr }));
                    call.conn = None;
                    Ok(Some(json!({"sock": sid, "local": ep_json(local)})))
                }
            }
        })();
        match r {
            Ok(None) => None,
            Ok(Some(v)) => Some(ok_reply(v)),
            Err(f) => Some(err_reply(f)),
        }
    }

    fn start_connect(&mut self, call: &mut Call) -> Res<()> {
        let args = &call.args;
        let raddr = ipv4_of(arg_str(args, "addr")?)?;
        let rport = port_of(arg_int(args, "port", None)?, "port")?;
        let bind_addr = arg_opt_str(args, "bind_addr")?.map(ipv4_of).transpose()?;
        let bind_port = arg_opt_int(args, "bind_port")?.map(|p| port_of(p, "bind_port")).transpose()?;
        arg_bool(args, "reuseaddr")?;
        arg_float(args, "timeout", DEFAULT_TIMEOUT)?;
        if rport == 0 || raddr.is_unspecified() {
            return Err(fail("EINVAL", "cannot connect to an unspecified address or port 0"));
        }
        let own = self.stack.as_ref().unwrap().addr;
        let laddr = match bind_addr {
            Some(a) if !a.is_unspecified() && a != own => {
                return Err(fail("EADDRNOTAVAIL", format!("{} is not the stack's address", a)))
            }
            _ => own,
        };
        let remote = IpEndpoint::new(IpAddress::Ipv4(raddr), rport);
        let lport = match bind_port {
            Some(p) if p != 0 => {
                if self.listening_on(p) {
                    return Err(fail("EADDRINUSE", format!("port {} has a listener", p)));
                }
                p
            }
            _ => self.ephemeral_port(),
        };
        let local = IpEndpoint::new(IpAddress::Ipv4(laddr), lport);
        // smoltcp leaves port management to its user and hands a segment to the first socket
        // of a matching 4-tuple: two sockets on one tuple (say, one in TIME-WAIT) cannot work.
        let taken = self.live.iter().any(|&h| {
            let s = self.tcp_ref(h);
            s.local_endpoint() == Some(local) && s.remote_endpoint() == Some(remote)
        });
        if taken {
            return Err(fail("EADDRNOTAVAIL", format!("{} -> {} is held by another connection", local, remote)));
        }
        let h = self.new_socket(BUF_SIZE);
        let stack = self.stack.as_mut().unwrap();
        let res = stack.sockets.get_mut::<tcp::Socket>(h).connect(
            stack.iface.context(),
            remote,
            IpListenEndpoint { addr: Some(IpAddress::Ipv4(laddr)), port: lport },
        );
        if let Err(e) = res {
            self.retire(h);
            return Err(fail("EINVAL", format!("connect: {}", e)));
        }
        call.conn = Some(h);
        Ok(())
    }

    fn step_send(&mut self, call: &mut Call) -> Option<Value> {
        let r = (|| -> Res<Option<Value>> {
            self.stack()?;
            let h = self.conn_handle(Self::sock_id(&call.args)?)?;
            if call.data.is_none() {
                arg_float(&call.args, "timeout", DEFAULT_TIMEOUT)?;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(arg_str(&call.args, "data")?)
                    .map_err(|e| malformed(format!("data is not base64: {}", e)))?;
                call.data = Some(data);
            }
            let reset = self.reset_seen.contains(&h);
            let data = call.data.as_ref().unwrap();
            let s = self.tcp(h);
            if !s.may_send() {
                if call.sent > 0 {
                    return Ok(Some(json!({"sent": call.sent})));
                }
                return Err(match s.state() {
                    tcp::State::Closed if reset => fail("ECONNRESET", "connection reset by peer"),
                    tcp::State::SynSent | tcp::State::SynReceived => fail("ENOTCONN", "not connected"),
                    st => fail("EPIPE", format!("the sending half is closed ({})", state_name(st))),
                });
            }
            if call.sent < data.len() {
                let n = s.send_slice(&data[call.sent..]).unwrap_or(0);
                call.sent += n;
            }
            if call.sent == data.len() {
                return Ok(Some(json!({"sent": call.sent})));
            }
            if call.expired() {
                if call.sent > 0 {
                    return Ok(Some(json!({"sent": call.sent})));
                }
                return Err(fail("timeout", format!("send did not complete within {} s", fmt_secs(&call.args))));
            }
            Ok(None)
        })();
        match r {
            Ok(None) => None,
            Ok(Some(v)) => Some(ok_reply(v)),
            Err(f) => Some(err_reply(f)),
        }
    }

    fn step_recv(&mut self, call: &mut Call) -> Option<Value> {
        let r = (|| -> Res<Option<Value>> {
            self.stack()?;
            let h = self.conn_handle(Self::sock_id(&call.args)?)?;
            let max = arg_int(&call.args, "max", Some(65536))?;
            if max <= 0 {
                return Err(malformed("max must be positive"));
            }
            arg_float(&call.args, "timeout", DEFAULT_TIMEOUT)?;
            let reset = self.reset_seen.contains(&h);
            let mut buf = vec![0u8; (max as usize).min(1 << 20)];
            let s = self.tcp(h);
            let eof = || Ok(Some(json!({"data": ""})));
            match s.recv_slice(&mut buf) {
                Ok(n) if n > 0 => {
                    let data = base64::engine::general_purpose::STANDARD.encode(&buf[..n]);
                    return Ok(Some(json!({"data": data})));
                }
                Ok(_) => {}
                // The peer's FIN: end of stream.
                Err(tcp::RecvError::Finished) => return eof(),
                Err(tcp::RecvError::InvalidState) => match s.state() {
                    tcp::State::Closed if reset => return Err(fail("ECONNRESET", "connection reset by peer")),
                    tcp::State::Closed | tcp::State::TimeWait | tcp::State::LastAck | tcp::State::Closing | tcp::State::CloseWait => return eof(),
                    _ => {} // not synchronized yet: wait
                },
            }
            if call.expired() {
                return Err(fail("timeout", format!("recv did not complete within {} s", fmt_secs(&call.args))));
            }
            Ok(None)
        })();
        match r {
            Ok(None) => None,
            Ok(Some(v)) => Some(ok_reply(v)),
            Err(f) => Some(err_reply(f)),
        }
    }

    fn op_shutdown(&mut self, args: &Map<String, Value>) -> Res<Value> {
        self.stack()?;
        let h = self.conn_handle(Self::sock_id(args)?)?;
        match arg_str(args, "how")? {
            "wr" => {
                let s = self.tcp(h);
                if matches!(s.state(), tcp::State::Closed | tcp::State::Listen | tcp::State::SynSent) {
                    return Err(fail("ENOTCONN", format!("not connected ({})", state_name(s.state()))));
                }
                s.close();
                Ok(json!({}))
            }
            "rd" | "rdwr" => Err(fail("unsupported", "smoltcp cannot close the receiving half of a connection")),
            other => Err(malformed(format!("how must be one of rd, rdwr, wr, not {:?}", other))),
        }
    }

    fn op_close(&mut self, args: &Map<String, Value>) -> Res<Value> {
        self.stack()?;
        let id = Self::sock_id(args)?;
        match self.socks.remove(&id) {
            None => Err(fail("EBADF", format!("no socket {}", id))),
            Some(Sock::Conn(c)) => {
                let s = self.tcp(c.h);
                if c.linger[0] != 0 && c.linger[1] == 0 {
                    // SO_LINGER {on, 0}: the RFC 9293 ABORT call, which smoltcp offers as abort().
                    s.abort();
                } else {
                    s.close();
                }
                self.orphans.push(c.h);
                Ok(json!({}))
            }
            Some(Sock::Listener(l)) => {
                for h in l.pool {
                    let s = self.tcp(h);
                    if s.state() == tcp::State::Listen {
                        s.close();
                    } else {
                        // Connections nobody accepted are reset, as a kernel does.
                        s.abort();
                    }
                    self.orphans.push(h);
                }
                Ok(json!({}))
            }
        }
    }

    fn op_setsockopt(&mut self, args: &Map<String, Value>) -> Res<Value> {
        self.stack()?;
        let id = Self::sock_id(args)?;
        let opt = arg_str(args, "opt")?.to_string();
        let value = args.get("value").cloned().unwrap_or(Value::Null);
        let int_value = || -> Res<i64> {
            match &value {
                Value::Bool(b) => Ok(*b as i64),
                Value::Number(n) if n.is_i64() => Ok(n.as_i64().unwrap()),
                _ => Err(malformed(format!("{} value must be an integer", opt))),
            }
        };
        if !self.socks.contains_key(&id) {
            return Err(fail("EBADF", format!("no socket {}", id)));
        }
        match opt.as_str() {
            "SO_LINGER" => {
                let pair: Vec<i64> = value.as_array().map(|a| a.iter().filter_map(|v| v.as_i64()).collect()).unwrap_or_default();
                if pair.len() != 2 || value.as_array().map(|a| a.len()) != Some(2) {
                    return Err(malformed("SO_LINGER value must be [onoff, secs]"));
                }
                if pair[0] != 0 && pair[1] != 0 {
                    return Err(fail("unsupported", "smoltcp cannot make close() wait for unsent data (SO_LINGER with a time)"));
                }
                let linger = [pair[0], pair[1]];
                match self.socks.get_mut(&id).unwrap() {
                    Sock::Conn(c) => c.linger = linger,
                    Sock::Listener(l) => l.linger = linger,
                }
                Ok(json!({}))
            }
            "TCP_NODELAY" => {
                let on = int_value()? != 0;
                match self.socks.get_mut(&id).unwrap() {
                    Sock::Listener(l) => l.nodelay = on,
                    Sock::Conn(c) => {
                        let h = c.h;
                        self.tcp(h).set_nagle_enabled(!on);
                    }
                }
                Ok(json!({}))
            }
            "SO_REUSEADDR" => {
                let on = int_value()? != 0;
                match self.socks.get_mut(&id).unwrap() {
                    Sock::Listener(l) => l.reuseaddr = on,
                    Sock::Conn(c) => c.reuseaddr = on,
                }
                Ok(json!({}))
            }
            "SO_RCVBUF" | "SO_SNDBUF" => Err(fail("unsupported", "smoltcp sockets keep the buffers they were created with")),
            other => Err(fail("unsupported", format!("socket option {} is not supported", other))),
        }
    }

    fn op_getsockopt(&mut self, args: &Map<String, Value>) -> Res<Value> {
        self.stack()?;
        let id = Self::sock_id(args)?;
        let opt = arg_str(args, "opt")?;
        let value = match (self.socks.get(&id), opt) {
            (None, _) => return Err(fail("EBADF", format!("no socket {}", id))),
            (Some(Sock::Conn(c)), "SO_LINGER") => json!(c.linger),
            (Some(Sock::Listener(l)), "SO_LINGER") => json!(l.linger),
            (Some(Sock::Conn(c)), "SO_REUSEADDR") => json!(c.reuseaddr as i64),
            (Some(Sock::Listener(l)), "SO_REUSEADDR") => json!(l.reuseaddr as i64),
            (Some(Sock::Conn(c)), "TCP_NODELAY") => json!((!self.tcp_ref(c.h).nagle_enabled()) as i64),
            (Some(Sock::Listener(l)), "TCP_NODELAY") => json!(l.nodelay as i64),
            (Some(Sock::Conn(c)), "SO_RCVBUF") => json!(self.tcp_ref(c.h).recv_capacity()),
            (Some(Sock::Listener(l)), "SO_RCVBUF") => json!(l.rcvbuf),
            (Some(Sock::Conn(c)), "SO_SNDBUF") => json!(self.tcp_ref(c.h).send_capacity()),
            (Some(Sock::Listener(_)), "SO_SNDBUF") => json!(BUF_SIZE),
            (_, other) => return Err(fail("unsupported", format!("socket option {} is not supported", other))),
        };
        Ok(json!({"value": value}))
    }

    fn op_state(&mut self, args: &Map<String, Value>) -> Res<Value> {
        self.stack()?;
        let id = Self::sock_id(args)?;
        let name = match self.socks.get(&id) {
            None => return Err(fail("EBADF", format!("no socket {}", id))),
            Some(Sock::Listener(_)) => "LISTEN",
            Some(Sock::Conn(c)) => state_name(self.tcp_ref(c.h).state()),
        };
        Ok(json!({"state": name}))
    }

    fn op_conns(&mut self, args: &Map<String, Value>) -> Res<Value> {
        self.stack()?;
        let want_local = arg_opt_int(args, "local_port")?;
        let want_remote = arg_opt_int(args, "remote_port")?;
        let keep = |l: u16, r: u16| {
            want_local.is_none_or(|p| p == l as i64) && want_remote.is_none_or(|p| p == r as i64)
        };
        let mut out = Vec::new();
        for s in self.socks.values() {
            if let Sock::Listener(l) = s {
                if keep(l.port, 0) {
                    let a = l.addr.unwrap_or(Ipv4Address::UNSPECIFIED).to_string();
                    out.push(json!({"local": [a, l.port], "remote": ["0.0.0.0", 0], "state": "LISTEN"}));
                }
            }
        }
        for &h in &self.live {
            let s = self.tcp_ref(h);
            // A CLOSED socket that still has a tuple is an abort whose RST is on its way out.
            if matches!(s.state(), tcp::State::Listen | tcp::State::Closed) {
                continue;
            }
            if let (Some(l), Some(r)) = (s.local_endpoint(), s.remote_endpoint()) {
                if keep(l.port, r.port) {
                    out.push(json!({"local": ep_json(l), "remote": ep_json(r), "state": state_name(s.state())}));
                }
            }
        }
        Ok(json!({"conns": out}))
    }

    fn op_start(&mut self, args: &Map<String, Value>) -> Res<Value> {
        let Some(Value::Object(call)) = args.get("call") else {
            return Err(malformed("call must be an object with an op"));
        };
        let Some(Value::String(op)) = call.get("op") else {
            return Err(malformed("call must be an object with an op"));
        };
        let call_args = match call.get("args") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(malformed("call args must be an object")),
        };
        if matches!(op.as_str(), "start" | "wait" | "quit") {
            return Err(malformed(format!("{} cannot run in the background", op)));
        }
        if !OPS.contains(&op.as_str()) {
            return Err(fail("unsupported", format!("unknown op '{}'", op)));
        }
        let jid = self.next_job;
        self.next_job += 1;
        self.jobs.insert(jid, Job { op: op.clone(), call: Some(Call::new(op.clone(), call_args)), reply: None });
        Ok(json!({"job": jid}))
    }

    fn step_wait(&mut self, call: &mut Call) -> Option<Value> {
        let jid = match arg_int(&call.args, "job", None).and_then(|j| arg_float(&call.args, "timeout", DEFAULT_TIMEOUT).map(|_| j)) {
            Ok(j) => j,
            Err(f) => return Some(err_reply(f)),
        };
        let Some(job) = self.jobs.get(&jid) else {
            return Some(err_reply(fail("ESRCH", format!("no job {}", jid))));
        };
        if job.reply.is_some() {
            // As if made directly: `t` stays the time the background call returned.
            return self.jobs.remove(&jid).and_then(|j| j.reply);
        }
        if call.expired() {
            let op = job.op.clone();
            return Some(err_reply(fail("timeout", format!("job {} ({}) still running after {} s", jid, op, fmt_secs(&call.args)))));
        }
        None
    }

    /// Advance background jobs and the queue of direct calls; replies to send, in order.
    fn run_calls(&mut self) -> Vec<Value> {
        let jids: Vec<i64> = self.jobs.iter().filter(|(_, j)| j.call.is_some()).map(|(id, _)| *id).collect();
        for jid in jids {
            let mut call = self.jobs.get_mut(&jid).unwrap().call.take().unwrap();
            match self.step(&mut call) {
                Some(reply) => {
                    log_json("job", &json!({"job": jid, "op": call.op, "reply": reply}));
                    self.jobs.get_mut(&jid).unwrap().reply = Some(reply);
                }
                None => self.jobs.get_mut(&jid).unwrap().call = Some(call),
            }
        }
        let mut out = Vec::new();
        while let Some((id, mut call)) = self.queue.pop_front() {
            match self.step(&mut call) {
                Some(reply) => {
                    let mut obj = Map::new();
                    obj.insert("id".into(), id);
                    if let Value::Object(m) = reply {
                        obj.extend(m);
                    }
                    out.push(Value::Object(obj));
                    if self.quit {
                        break;
                    }
                }
                None => {
                    self.queue.push_front((id, call));
                    break;
                }
            }
        }
        out
    }

    /// Earliest deadline of a pending call (seconds, monotonic).
    fn next_deadline(&self) -> Option<f64> {
        let jobs = self.jobs.values().filter_map(|j| j.call.as_ref().map(|c| c.deadline));
        let head = self.queue.front().map(|(_, c)| c.deadline);
        jobs.chain(head).reduce(f64::min)
    }

    /// Queue one request line; a malformed one is queued with its answer.
    fn take_line(&mut self, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let parsed: Result<Value, String> = serde_json::from_str(text).map_err(|e| e.to_string());
        let (id, problem) = match parsed {
            Ok(Value::Object(mut req)) => {
                log_json(">", &Value::Object(req.clone()));
                let id = req.get("id").cloned();
                let op = req.get("op").and_then(|v| v.as_str()).map(String::from);
                let args = match req.remove("args") {
                    None | Some(Value::Null) => Some(Map::new()),
                    Some(Value::Object(m)) => Some(m),
                    Some(_) => None,
                };
                match (id, op, args) {
                    (Some(id), Some(op), Some(args)) => {
                        self.queue.push_back((id, Call::new(op, args)));
                        return;
                    }
                    (id, _, _) => (id.unwrap_or(Value::Null), "request needs an id, an op string, and an args object".to_string()),
                }
            }
            Ok(_) => {
                log(">", text);
                (Value::Null, "request is not an object".to_string())
            }
            Err(e) => {
                log(">", text);
                (Value::Null, e)
            }
        };
        let mut call = Call::new(String::new(), Map::new());
        call.preset = Some(err_reply(malformed(format!("malformed request: {}", problem))));
        self.queue.push_back((id, call));
    }
}

fn fmt_secs(args: &Map<String, Value>) -> String {
    format!("{}", arg_float(args, "timeout", DEFAULT_TIMEOUT).unwrap_or(DEFAULT_TIMEOUT))
}

// ---------------------------------------------------------------------------------------------
// the loop

fn write_all(fd: RawFd, data: &[u8]) -> io::Result<()> {
    let mut off = 0;
    while off < data.len() {
        let n = unsafe { libc::write(fd, data[off..].as_ptr() as *const libc::c_void, data.len() - off) };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    let mut p = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
                    unsafe { libc::poll(&mut p, 1, 1000) };
                    continue;
                }
                _ => return Err(err),
            }
        }
        off += n as usize;
    }
    Ok(())
}

fn set_nonblocking(fd: RawFd) {
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// Serve requests on (rfd, wfd) until EOF or quit.
fn serve(rfd: RawFd, wfd: RawFd) {
    let mut agent = Agent::new();
    let mut inbuf: Vec<u8> = Vec::new();
    let mut eof = false;
    set_nonblocking(rfd);
    loop {
        let mut progressed = false;

        // Control input first, frames next: a request sent right after a segment then sees it.
        if !eof {
            let mut chunk = [0u8; 65536];
            loop {
                let n = unsafe { libc::read(rfd, chunk.as_mut_ptr() as *mut libc::c_void, chunk.len()) };
                if n > 0 {
                    inbuf.extend_from_slice(&chunk[..n as usize]);
                    continue;
                }
                if n == 0 {
                    eof = true;
                } else {
                    let err = io::Error::last_os_error();
                    if err.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    if err.kind() != io::ErrorKind::WouldBlock {
                        eof = true;
                    }
                }
                break;
            }
            while let Some(nl) = inbuf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = inbuf.drain(..=nl).collect();
                agent.take_line(&line);
                progressed = true;
            }
        }

        if agent.stack.is_some() {
            loop {
                let stack = agent.stack.as_mut().unwrap();
                let r = stack.iface.poll_ingress_single(snow(), &mut stack.dev, &mut stack.sockets);
                if r == smoltcp::iface::PollIngressSingleResult::None {
                    break;
                }
                agent.after_change();
            }
        }

        for reply in agent.run_calls() {
            progressed = true;
            if !send_reply(wfd, &reply) {
                return;
            }
        }
        if agent.quit {
            return;
        }

        if agent.stack.is_some() {
            loop {
                let stack = agent.stack.as_mut().unwrap();
                let r = stack.iface.poll_egress(snow(), &mut stack.dev, &mut stack.sockets);
                agent.after_change();
                if r == smoltcp::iface::PollResult::None {
                    break;
                }
            }
            agent.collect();
            agent.after_change();
        }

        if eof && agent.queue.is_empty() {
            log("eof", "control channel closed");
            return;
        }

        // Sleep until a frame, a request, a stack timer or a call's deadline.
        let mut timeout_ms: i64 = -1;
        let now = mono();
        if let Some(stack) = agent.stack.as_mut() {
            if let Some(d) = stack.iface.poll_delay(snow(), &stack.sockets) {
                timeout_ms = (d.total_micros() as i64 + 999) / 1000;
            }
        }
        if let Some(deadline) = agent.next_deadline() {
            let ms = (((deadline - now) * 1000.0).ceil() as i64).max(0);
            timeout_ms = if timeout_ms < 0 { ms } else { timeout_ms.min(ms) };
        }
        if progressed {
            timeout_ms = 0;
        }
        let mut fds = Vec::with_capacity(2);
        if !eof {
            fds.push(libc::pollfd { fd: rfd, events: libc::POLLIN, revents: 0 });
        }
        if let Some(stack) = agent.stack.as_ref() {
            fds.push(libc::pollfd { fd: stack.dev.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        let t = timeout_ms.min(i32::MAX as i64) as i32;
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, t) };
    }
}

fn send_reply(wfd: RawFd, reply: &Value) -> bool {
    log_json("<", reply);
    let mut line = reply.to_string().into_bytes();
    line.push(b'\n');
    if let Err(e) = write_all(wfd, &line) {
        log("eof", &format!("control channel broken: {}", e));
        return false;
    }
    true
}

extern "C" fn on_sigterm(_: libc::c_int) {
    // docker stop signals PID 1, which has no default action for SIGTERM.
    unsafe { libc::_exit(0) };
}

fn main() {
    unsafe { libc::signal(libc::SIGTERM, on_sigterm as *const () as libc::sighandler_t) };
    let args: Vec<String> = std::env::args().collect();
    let unix_path = match args.iter().position(|a| a == "--unix") {
        Some(i) => match args.get(i + 1) {
            Some(p) => Some(p.clone()),
            None => {
                log("exit", "--unix needs a path");
                std::process::exit(2);
            }
        },
        None => None,
    };
    match unix_path {
        Some(path) => {
            let _ = std::fs::remove_file(&path);
            let listener = match std::os::unix::net::UnixListener::bind(&path) {
                Ok(l) => l,
                Err(e) => {
                    log("exit", &format!("cannot serve on {}: {}", path, e));
                    std::process::exit(1);
                }
            };
            // The harness may run as another uid; the run directory guards access.
            if let Ok(c) = CString::new(path.clone()) {
                unsafe { libc::chmod(c.as_ptr(), 0o666) };
            }
            log("ready", &format!("pid {} {} {} listening on {}", std::process::id(), STACK, SMOLTCP_VERSION, path));
            let conn = match listener.accept() {
                Ok((c, _)) => c,
                Err(e) => {
                    log("exit", &format!("accept on {}: {}", path, e));
                    std::process::exit(1);
                }
            };
            drop(listener);
            log("ready", "control connection accepted");
            let fd = conn.as_raw_fd();
            serve(fd, fd);
            drop(conn);
            let _ = std::fs::remove_file(&path);
        }
        None => {
            log("ready", &format!("pid {} {} {} on stdin/stdout", std::process::id(), STACK, SMOLTCP_VERSION));
            // Keep the protocol on a private fd so stray output cannot corrupt it.
            let out = unsafe { libc::dup(1) };
            unsafe { libc::dup2(2, 1) };
            serve(0, out);
        }
    }
    log("exit", "bye");
}
