//! A TCP proxy between the pool and PostgreSQL that can pass, delay, stall and drop traffic,
//! and cut its connections: network faults made for real, on real sockets.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the proxy does with the bytes it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards every byte.
    Pass,
    /// Stops reading and forwarding; sockets stay open, bytes wait in the kernels' buffers
    /// and flow again when the mode is back to `Pass`.
    Stall,
    /// Reads and discards every byte; sockets stay open (a black hole).
    Drop,
    /// Forwards every byte this long after it was read, in order: a distant server, where a
    /// round trip takes at least twice the delay.
    Delay(std::time::Duration),
}

#[derive(Debug, Default)]
struct Counts {
    accepted: AtomicUsize,
    open: AtomicUsize,
    peak_open: AtomicUsize,
}

/// A running proxy; dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    counts: Arc<Counts>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Pass);
        let counts = Arc::new(Counts::default());
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let acceptor = {
            let (mode, counts, tasks) = (mode.clone(), counts.clone(), tasks.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    counts.accepted.fetch_add(1, Ordering::SeqCst);
                    let open = counts.open.fetch_add(1, Ordering::SeqCst) + 1;
                    counts.peak_open.fetch_max(open, Ordering::SeqCst);
                    let (rx, counts2) = (mode.subscribe(), counts.clone());
                    let task = tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(upstream).await {
                            relay(client, server, rx).await;
                        }
                        counts2.open.fetch_sub(1, Ordering::SeqCst);
                    });
                    let mut tasks = tasks.lock().unwrap();
                    tasks.retain(|t| !t.is_finished());
                    tasks.push(task);
                }
            })
        };
        Proxy {
            addr,
            mode,
            counts,
            tasks,
            acceptor,
        }
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Switches what happens to the bytes, for every connection at once.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Closes every connection through the proxy now (both sides see the socket close).
    pub fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        self.counts.open.store(0, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    /// The most connections open through the proxy at once, so far.
    pub fn peak_open(&self) -> usize {
        self.counts.peak_open.load(Ordering::SeqCst)
    }

    /// Connections open through the proxy now.
    pub fn open(&self) -> usize {
        self.counts.open.load(Ordering::SeqCst)
    }

    /// Starts counting the peak again from the connections open now.
    pub fn reset_peak(&self) {
        self.counts.peak_open.store(self.open(), Ordering::SeqCst);
    }

    /// A connection config for the same database as `base`, through this proxy.
    pub fn config_for(&self, base: &tokio_postgres::Config) -> tokio_postgres::Config {
        let mut pg = tokio_postgres::Config::new();
        if let Some(user) = base.get_user() {
            pg.user(user);
        }
        if let Some(password) = base.get_password() {
            pg.password(password);
        }
        if let Some(db) = base.get_dbname() {
            pg.dbname(db);
        }
        pg.host("127.0.0.1").port(self.port());
        pg
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

async fn relay(client: TcpStream, server: TcpStream, mode: watch::Receiver<Mode>) {
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, mode.clone());
    let down = pump(sr, cw, mode);
    // Either side closing ends the connection.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    // Bytes read while delaying, each with the instant it is due on the other side, in order.
    let mut in_flight: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    loop {
        // A stalled proxy reads nothing: the sender's bytes pile up in the kernel.
        if mode.wait_for(|m| *m != Mode::Stall).await.is_err() {
            return;
        }
        let due = in_flight.front().map(|(at, _)| *at);
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    // What was read before the sender closed still arrives, when due.
                    for (at, bytes) in in_flight {
                        tokio::time::sleep_until(at).await;
                        if to.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                    return;
                }
                Ok(n) => n,
            },
            () = sleep_until(due) => {
                let (_, bytes) = in_flight.pop_front().expect("a due chunk");
                if to.write_all(&bytes).await.is_err() {
                    return;
                }
                continue;
            }
        };
        // Bytes read just before a stall are held until it ends.
        let Ok(now) = mode.wait_for(|m| *m != Mode::Stall).await.map(|m| *m) else {
            return;
        };
        match now {
            Mode::Drop => continue,
            Mode::Delay(delay) => {
                in_flight.push_back((Instant::now() + delay, buf[..n].to_vec()));
                continue;
            }
            Mode::Pass | Mode::Stall => {}
        }
        // Out of a delay, what is still in flight goes first.
        while let Some((_, bytes)) = in_flight.pop_front() {
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Sleeps until `due`, or forever without one.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
