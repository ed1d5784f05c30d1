//! Accepting connections, with or without TLS, as one type every
//! transport takes: the HTTP planes pull from an [`Incoming`]
//! ([`crate::server::http_serve`]), tonic takes [`Incoming::into_stream`].
//! Each [`Conn`] knows its peer, so `remote_addr()` and `ConnectInfo` work
//! the same either way.
//!
//! TLS handshakes run on their own tasks, each with a deadline and at most
//! [`MAX_HANDSHAKES`] at once, so a client that opens a connection and says
//! nothing holds up neither the accept loop nor anyone else's handshake.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

use super::{Plane, Tls};

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; connections beyond it are closed.
pub const MAX_HANDSHAKES: usize = 512;

/// One accepted connection: plain TCP or TLS over TCP.
pub struct Conn {
    io: Either<TcpStream, TlsStream<TcpStream>>,
    local: SocketAddr,
    peer: SocketAddr,
}

impl Conn {
    /// The client's address (the socket's; proxies are resolved per request).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: Some(self.local),
            remote_addr: Some(self.peer),
        }
    }
}

/// A bound listener handing out [`Conn`]s.
pub struct Incoming {
    local: SocketAddr,
    source: Source,
}

enum Source {
    Plain(TcpListener),
    /// Connections whose handshake finished, from the accept task (which
    /// stops when this end is dropped).
    Tls(mpsc::Receiver<Conn>),
}

impl Incoming {
    /// Serves `listener` as is, or behind `tls` for `plane`.
    pub fn new(listener: TcpListener, tls: Option<&Tls>, plane: Plane) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let source = match tls {
            None => Source::Plain(listener),
            Some(tls) => Source::Tls(spawn_handshakes(listener, local, tls.clone(), plane)),
        };
        Ok(Self { local, source })
    }

    /// The next connection; accept errors (out of file descriptors, say)
    /// are logged and retried after a pause.
    pub async fn next(&mut self) -> Conn {
        match &mut self.source {
            Source::Plain(listener) => loop {
                match listener.accept().await {
                    Ok((tcp, peer)) => {
                        let _ = tcp.set_nodelay(true);
                        return Conn {
                            io: Either::Left(tcp),
                            local: self.local,
                            peer,
                        };
                    }
                    Err(e) => accept_failed(&e).await,
                }
            },
            Source::Tls(rx) => match rx.recv().await {
                Some(conn) => conn,
                // The accept task only ends when this end is dropped.
                None => std::future::pending().await,
            },
        }
    }

    /// The connections as the stream tonic's `serve_with_incoming` takes.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = io::Result<Conn>> + Send {
        futures_util::stream::unfold(self, |mut incoming| async move {
            let conn = incoming.next().await;
            Some((Ok(conn), incoming))
        })
    }
}

/// The socket's peer, as axum's `ConnectInfo` for an [`Incoming`]
/// (inserted per request by [`crate::server::http_serve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

async fn accept_failed(e: &io::Error) {
    tracing::warn!(error = %e, "accept failed; retrying");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn spawn_handshakes(
    listener: TcpListener,
    local: SocketAddr,
    tls: Tls,
    plane: Plane,
) -> mpsc::Receiver<Conn> {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                r = listener.accept() => r,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "too many TLS handshakes in progress; connection closed");
                tls.metrics
                    .tls_handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.config(plane));
            let (tx, metrics) = (tx.clone(), tls.metrics.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let failed =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let conn = Conn {
                                io: Either::Right(stream),
                                local,
                                peer,
                            };
                            let _ = tx.send(conn).await;
                            return;
                        }
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => "timed out".to_string(),
                    };
                metrics
                    .tls_handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                // A plaintext client or a port scanner: worth a line at
                // debug, not a warning per connection.
                tracing::debug!(%peer, error = %failed, "TLS handshake failed");
            });
        }
    });
    rx
}
