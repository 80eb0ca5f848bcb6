//! Lingering close: a client that is refused while it uploads still reads why.
//!
//! A refusal (401, 408, 413, 429, 503) is sent before the request's body has been read, with
//! `Connection: close`. Closing a socket whose receive buffer still holds unread bytes makes the
//! kernel answer with a reset instead of a FIN: the uploading client's next write fails (broken pipe)
//! and the answer it had not read yet is lost, `Retry-After` included. So, like nginx's
//! `lingering_close`, every connection ends here: the server sends its FIN after the answer, then
//! reads and discards what the client still sends until the client closes, for at most
//! [`Linger::time`] in all, [`Linger::idle`] without data, and [`Linger::bytes`] bytes: 10 s, 5 s, and
//! 64 MiB or `--max-body-bytes` plus 64 KiB, whichever is larger (so a body somewhat over the limit,
//! refused with 413 on its declared length, is drained too; on a slow link the time bound comes first).
//!
//! hyper owns a connection's socket while it serves it; [`Returned`] hands the socket back when hyper
//! drops it, whatever ended the connection (an answer with `Connection: close`, an error, a timeout or
//! the graceful shutdown), so that [`Linger::close`] can finish it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// How long and how much a closing connection is drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Linger {
    /// Longest time spent draining one connection.
    #[serde(serialize_with = "secs")]
    pub time: Duration,
    /// Longest wait for the client's next bytes.
    #[serde(serialize_with = "secs")]
    pub idle: Duration,
    /// Most bytes read and discarded.
    pub bytes: usize,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Slack above the body limit for the request head and multipart framing.
const HEAD_SLACK: usize = 64 * 1024;
/// Bytes drained at least.
const MIN_BYTES: usize = 64 * 1024 * 1024;

impl Linger {
    /// The service's bounds: 10 s in all, 5 s without data, 64 MiB or `max_body_bytes` + 64 KiB.
    pub fn for_body_limit(max_body_bytes: usize) -> Self {
        let bytes = max_body_bytes.saturating_add(HEAD_SLACK).max(MIN_BYTES);
        Linger { time: Duration::from_secs(10), idle: Duration::from_secs(5), bytes }
    }

    /// Half-closes `stream` (FIN after what was written), reads and discards what the client still
    /// sends until it closes or a bound is reached, then closes the socket.
    pub async fn close(self, mut stream: TcpStream) {
        let drained = async {
            stream.shutdown().await?;
            let mut sink = [0u8; 16 * 1024];
            let mut left = self.bytes;
            while left > 0 {
                match tokio::time::timeout(self.idle, stream.read(&mut sink)).await {
                    Ok(Ok(0)) | Err(_) => break,
                    Ok(Ok(n)) => left = left.saturating_sub(n),
                    Ok(Err(e)) => return Err(e),
                }
            }
            Ok::<_, io::Error>(())
        };
        // Whatever ended the draining, the socket closes when `stream` drops.
        let _ = tokio::time::timeout(self.time, drained).await;
    }
}

/// A connection's socket for hyper, sent back through a channel when hyper drops it.
pub struct Returned {
    stream: Option<TcpStream>,
    back: Option<oneshot::Sender<TcpStream>>,
}

impl Returned {
    /// Wraps `stream`; the receiver gets it back once the wrapper is dropped.
    pub fn new(stream: TcpStream) -> (Self, oneshot::Receiver<TcpStream>) {
        let (tx, rx) = oneshot::channel();
        (Returned { stream: Some(stream), back: Some(tx) }, rx)
    }

    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        // The stream is only taken in `drop`.
        self.stream.as_mut().map(Pin::new).ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        if let (Some(stream), Some(back)) = (self.stream.take(), self.back.take()) {
            // Nobody waiting: the socket simply closes.
            let _ = back.send(stream);
        }
    }
}

impl AsyncRead for Returned {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Returned {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(s) => s.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(s) => s.poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}
