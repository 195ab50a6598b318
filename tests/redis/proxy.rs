//! A TCP proxy in front of Redis whose connections can be frozen: kept open, their bytes
//! swallowed, forever (a half-open connection, as after a failover or a NAT timeout).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// The proxy; dropping it closes every connection.
pub struct FreezingProxy {
    pub addr: SocketAddr,
    /// New connections are born frozen while set.
    freezing: Arc<AtomicBool>,
    /// Each connection's frozen flag.
    connections: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezingProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let freezing = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (freezing, connections) = (Arc::clone(&freezing), Arc::clone(&connections));
            tokio::spawn(async move {
                let mut pipes = tokio::task::JoinSet::new();
                while let Ok((client, _)) = listener.accept().await {
                    let frozen = Arc::new(AtomicBool::new(freezing.load(Ordering::SeqCst)));
                    connections.lock().unwrap().push(Arc::clone(&frozen));
                    let Ok(server) = TcpStream::connect(target).await else {
                        continue;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    pipes.spawn(pipe(client_read, server_write, Arc::clone(&frozen)));
                    pipes.spawn(pipe(server_read, client_write, frozen));
                }
            })
        };
        Self {
            addr,
            freezing,
            connections,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Freezes every connection, for good, and every new one until [`thaw`](Self::thaw).
    pub fn freeze(&self) {
        self.freezing.store(true, Ordering::SeqCst);
        for frozen in self.connections.lock().unwrap().iter() {
            frozen.store(true, Ordering::SeqCst);
        }
    }

    /// New connections work again; the frozen ones stay frozen.
    pub fn thaw(&self) {
        self.freezing.store(false, Ordering::SeqCst);
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` until either ends, swallowing the bytes once `frozen`.
async fn pipe(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    frozen: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !frozen.load(Ordering::SeqCst) && to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
