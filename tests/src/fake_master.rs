//! The master side of the wire, driven by hand: a fake master that a real `sentinel-agent`
//! connects to (challenge, hello, welcome or refusal, acks), for tests of the agent alone.
//! The mirror image of [`crate::Peer`], which plays an agent against a real master.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    bind, getsockname, listen, socket, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn,
};
use sentinel_protocol::{
    decode_body, encode_frame, split_frame, verify_proof, AgentMessage, Challenge, Hello,
    MasterMessage, Nonce, Sample, Welcome, PROTOCOL_VERSION,
};

/// How long the agent gets for anything it should do "soon" (connect, send a frame).
pub const AGENT_DEADLINE: Duration = Duration::from_secs(15);

/// A loopback port bound (so nobody else gets it) but not listening: a connection to it is
/// refused, as to a master that is down, until [`ReservedPort::listen`].
pub struct ReservedPort {
    fd: OwnedFd,
    addr: SocketAddr,
}

impl ReservedPort {
    pub fn new() -> ReservedPort {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("a TCP socket");
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrIn::new(127, 0, 0, 1, 0),
        )
        .expect("bind 127.0.0.1:0");
        let bound: SockaddrIn =
            getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd)).expect("getsockname");
        let addr = SocketAddr::from((bound.ip(), bound.port()));
        ReservedPort { fd, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts listening on the reserved port: the master comes up.
    pub fn listen(self) -> FakeMaster {
        listen(&self.fd, Backlog::new(128).unwrap()).expect("listen");
        FakeMaster {
            listener: TcpListener::from(self.fd),
        }
    }
}

impl Default for ReservedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// A listening fake master on 127.0.0.1 (port 0: the kernel picks it).
pub struct FakeMaster {
    listener: TcpListener,
}

/// One agent connection accepted by a [`FakeMaster`], after its hello.
pub struct MasterConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pub hello: Hello,
    pub nonce: Nonce,
}

impl FakeMaster {
    pub fn bind() -> FakeMaster {
        FakeMaster {
            listener: TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    /// Accepts one agent and runs the handshake up to (not including) the answer.
    pub fn accept_hello(&self) -> MasterConn {
        self.accept_hello_within(AGENT_DEADLINE)
    }

    pub fn accept_hello_within(&self, deadline: Duration) -> MasterConn {
        let stream = self.accept_within_deadline(deadline);
        stream.set_read_timeout(Some(AGENT_DEADLINE)).unwrap();
        stream.set_write_timeout(Some(AGENT_DEADLINE)).unwrap();
        let nonce: Nonce = std::array::from_fn(|_| fastrand::u8(..));
        let mut conn = MasterConn {
            stream,
            buf: Vec::new(),
            hello: crate::test_hello("", "", 0),
            nonce,
        };
        conn.answer(&MasterMessage::Challenge(Challenge {
            version: PROTOCOL_VERSION,
            nonce: nonce.to_vec(),
        }));
        let Some(AgentMessage::Hello(hello)) = conn.recv() else {
            panic!("the agent's first frame is not a hello")
        };
        conn.hello = hello;
        conn
    }

    fn accept_within_deadline(&self, deadline: Duration) -> TcpStream {
        let end = Instant::now() + deadline;
        self.listener.set_nonblocking(true).unwrap();
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    return stream;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < end,
                        "the agent did not connect within {deadline:?}"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// Accepts one agent, checks its proof against [`crate::TOKEN`], and welcomes it with
    /// `last_seq`.
    pub fn accept(&self, last_seq: u64) -> MasterConn {
        self.accept_within(AGENT_DEADLINE, last_seq)
    }

    pub fn accept_within(&self, deadline: Duration, last_seq: u64) -> MasterConn {
        let mut conn = self.accept_hello_within(deadline);
        assert!(
            conn.proof_ok(crate::TOKEN),
            "the agent's proof verifies with the fleet token"
        );
        conn.answer(&MasterMessage::Welcome(Welcome {
            last_seq,
            clock_ms: 0,
        }));
        conn
    }
}

impl MasterConn {
    pub fn proof_ok(&self, token: &str) -> bool {
        verify_proof(
            token.as_bytes(),
            &self.nonce,
            &self.hello.agent_id,
            &self.hello.proof,
        )
    }

    pub fn answer(&mut self, msg: &MasterMessage) {
        let mut out = Vec::new();
        encode_frame(msg, &mut out).unwrap();
        self.stream.write_all(&out).expect("write to the agent");
    }

    pub fn ack(&mut self, seq: u64) {
        self.answer(&MasterMessage::Ack(sentinel_protocol::Ack { seq }));
    }

    /// The agent's next frame; None once it closed. Panics if nothing comes within
    /// [`AGENT_DEADLINE`] (the agent must send in time).
    pub fn recv(&mut self) -> Option<AgentMessage> {
        loop {
            if let Some((body, n)) = split_frame(&self.buf).expect("agent frames are valid") {
                let msg = decode_body(body).expect("agent frames decode");
                self.buf.drain(..n);
                return Some(msg);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("the agent sent nothing within {AGENT_DEADLINE:?}")
                }
                Err(_) => return None,
            }
        }
    }

    /// Samples from the next `sample` or `batch` frame, and whether it was a batch.
    pub fn samples(&mut self) -> (Vec<Sample>, bool) {
        match self.recv().expect("connection open") {
            AgentMessage::Sample(s) => (vec![s], false),
            AgentMessage::Batch(b) => {
                b.validate().unwrap();
                (b.samples, true)
            }
            other => panic!("expected samples, got {other:?}"),
        }
    }

    /// Reads frames until a sample with seq >= `upto` has arrived; returns every seq seen.
    pub fn seqs_until(&mut self, upto: u64) -> Vec<u64> {
        let mut seen = Vec::new();
        while seen.last().is_none_or(|&s| s < upto) {
            let (samples, _) = self.samples();
            for s in samples {
                s.validate().unwrap();
                seen.push(s.seq);
            }
        }
        seen
    }
}
