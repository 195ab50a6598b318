//! A real `redis-server` on a free loopback port, without persistence, stopped by pid.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The server binary (Debian's package `redis-server` installs it on the `PATH`).
const BINARY: &str = "redis-server";

/// A `redis-server` child process on `127.0.0.1:<port>`, killed when dropped.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    pub async fn start() -> Self {
        let port = {
            let listener = StdListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut server = Self { port, child: None };
        server.restart().await;
        server
    }

    /// Its address.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (SIGKILL, by pid) and waits for it: its data is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a [paused](Self::pause) server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the server is running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Starts the server again on the same port (empty), once stopped; waits for `PING`.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let child = Command::new(BINARY)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run `{BINARY}` ({error}): the Redis tests need a local Redis server; \
                     install it (Debian/Ubuntu: `apt-get install redis-server`)"
                )
            });
        self.child = Some(child);
        // Bounded: 200 tries, 25 ms apart (5 s).
        for _ in 0..200 {
            if self.answers_ping().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.stop();
        panic!(
            "redis-server did not answer PING on port {} within 5 s",
            self.port
        );
    }

    /// Whether `PING` gets `+PONG` within 500 ms.
    async fn answers_ping(&self) -> bool {
        let exchange = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
            stream.write_all(b"PING\r\n").await?;
            let mut answer = [0u8; 7];
            stream.read_exact(&mut answer).await?;
            Ok::<_, std::io::Error>(&answer == b"+PONG\r\n")
        };
        matches!(
            tokio::time::timeout(Duration::from_millis(500), exchange).await,
            Ok(Ok(true))
        )
    }

    /// A plain connection for the tests' own look-ups.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A paused server would not die of SIGKILL any later, but its pipes would linger.
        if self.child.is_some() {
            self.resume();
        }
        self.stop();
    }
}
