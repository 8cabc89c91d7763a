//! Guest stdout/stderr routed into tracing, line by line, inside the job's
//! span (so with its tenant/action/id/plugin). Output past a per-invocation budget is
//! dropped (and the drop noted once), so a chatty plugin can neither fail its
//! writes nor flood the logs.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of guest output logged per stream and invocation.
const BUDGET: usize = 64 * 1024;
/// A line longer than this is logged in pieces.
const MAX_LINE: usize = 4096;

/// Which stream a [`GuestOutput`] captures.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

struct Lines {
    pending: Vec<u8>,
    logged: usize,
    dropped: usize,
}

/// A guest output stream that logs each line.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    stream: Stream,
    lines: Arc<Mutex<Lines>>,
}

impl GuestOutput {
    pub(crate) fn new(stream: Stream) -> Self {
        Self {
            stream,
            lines: Arc::new(Mutex::new(Lines {
                pending: Vec::new(),
                logged: 0,
                dropped: 0,
            })),
        }
    }

    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        tracing::info!(
            target: "symphony::plugin",
            event = "plugin_output",
            stream = self.stream.as_str(),
            "{}", text.trim_end_matches('\r')
        );
    }

    fn push(&self, mut bytes: &[u8]) {
        let Ok(mut lines) = self.lines.lock() else {
            return;
        };
        while !bytes.is_empty() {
            if lines.logged >= BUDGET {
                lines.dropped += bytes.len();
                return;
            }
            let room = BUDGET - lines.logged;
            let (chunk, rest) = bytes.split_at(bytes.len().min(room));
            bytes = rest;
            lines.logged += chunk.len();
            for piece in chunk.split_inclusive(|&b| b == b'\n') {
                if let Some(line) = piece.strip_suffix(b"\n") {
                    lines.pending.extend_from_slice(line);
                    let full = std::mem::take(&mut lines.pending);
                    self.emit(&full);
                } else {
                    lines.pending.extend_from_slice(piece);
                    if lines.pending.len() >= MAX_LINE {
                        let full = std::mem::take(&mut lines.pending);
                        self.emit(&full);
                    }
                }
            }
        }
    }

    /// Logs a trailing partial line and notes dropped output; call after the invocation.
    pub(crate) fn finish(&self) {
        let Ok(mut lines) = self.lines.lock() else {
            return;
        };
        if !lines.pending.is_empty() {
            let full = std::mem::take(&mut lines.pending);
            self.emit(&full);
        }
        if lines.dropped > 0 {
            tracing::warn!(
                target: "symphony::plugin",
                event = "plugin_output_dropped",
                stream = self.stream.as_str(), dropped_bytes = lines.dropped,
                "guest output over the {BUDGET}-byte budget was dropped"
            );
        }
        lines.dropped = 0;
        lines.logged = 0;
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
