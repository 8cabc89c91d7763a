//! Log lines written to stderr in batches.
//!
//! A busy host logs a line per job. Written one by one, each line is a
//! `write` to stderr, taken under stderr's lock by whichever thread logs
//! it, and each write wakes whatever reads the other end (a terminal, a
//! pipe to a log shipper). In a burst of 20 000 jobs a second that was a
//! tenth of the host's CPU, most of it in the scheduler.
//!
//! [`Batched`] appends each line to a shared buffer instead. A
//! flusher thread, woken by the first line into an empty buffer, waits
//! [`LINGER`] for more and writes them all with one `write`. Nothing is
//! dropped: past [`HIGH_WATER`] bytes the logging thread writes the buffer
//! out itself, in order, before it goes on. [`FlushGuard`] writes what is
//! left and stops the thread; the binary holds it until it exits. A line
//! reaches stderr at most about [`LINGER`] after it is logged, except when
//! the process is killed outright (SIGKILL), which loses those last few
//! milliseconds of lines.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the flusher waits after the first line of a batch.
pub const LINGER: Duration = Duration::from_millis(2);

/// Buffered bytes past which the logging thread writes them itself.
pub const HIGH_WATER: usize = 1 << 20;

struct Pending {
    bytes: Vec<u8>,
    closed: bool,
}

struct Shared<W> {
    pending: Mutex<Pending>,
    /// Signalled when the buffer stops being empty, and on close.
    ready: Condvar,
    /// Held while a batch is written, so batches go out in order.
    out: Mutex<W>,
}

impl<W: Write> Shared<W> {
    /// Writes everything buffered so far, in order.
    fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let batch = {
            let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::take(&mut p.bytes)
        };
        if !batch.is_empty() {
            // Nowhere to report a failed write to stderr; the lines are lost
            // as they would be unbuffered.
            let _ = out.write_all(&batch);
            let _ = out.flush();
        }
    }
}

/// A [`MakeWriter`] whose lines go to `W` (stderr, for the binary) in
/// batches (see the module docs). Cloning it shares the buffer.
pub struct Batched<W> {
    shared: Arc<Shared<W>>,
}

impl<W> Clone for Batched<W> {
    fn clone(&self) -> Self {
        Batched {
            shared: self.shared.clone(),
        }
    }
}

/// Writes what is buffered and stops the flusher thread when dropped.
pub struct FlushGuard<W: Write> {
    shared: Arc<Shared<W>>,
    flusher: Option<JoinHandle<()>>,
}

impl Batched<io::Stderr> {
    /// Batched lines to stderr, and the guard that flushes them at the end.
    ///
    /// # Errors
    /// When the flusher thread cannot be started.
    pub fn stderr() -> io::Result<(Self, FlushGuard<io::Stderr>)> {
        Self::start(io::stderr())
    }
}

impl<W: Write + Send + 'static> Batched<W> {
    /// Batched lines to `out`, and the guard that flushes them at the end.
    ///
    /// # Errors
    /// When the flusher thread cannot be started.
    pub fn start(out: W) -> io::Result<(Self, FlushGuard<W>)> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                bytes: Vec::with_capacity(64 << 10),
                closed: false,
            }),
            ready: Condvar::new(),
            out: Mutex::new(out),
        });
        let flusher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || run_flusher(&shared))?
        };
        Ok((
            Batched {
                shared: shared.clone(),
            },
            FlushGuard {
                shared,
                flusher: Some(flusher),
            },
        ))
    }
}

fn run_flusher<W: Write>(shared: &Shared<W>) {
    loop {
        let closed = {
            let mut p = shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            while p.bytes.is_empty() && !p.closed {
                p = shared.ready.wait(p).unwrap_or_else(PoisonError::into_inner);
            }
            p.closed
        };
        if !closed {
            std::thread::sleep(LINGER);
        }
        shared.flush();
        if closed {
            return;
        }
    }
}

impl<W: Write> Drop for FlushGuard<W> {
    fn drop(&mut self) {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.shared.ready.notify_one();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        // Lines logged after the flusher stopped.
        self.shared.flush();
    }
}

/// One event's writer: appends to the shared buffer.
pub struct BatchWriter<'a, W: Write> {
    shared: &'a Shared<W>,
}

impl<W: Write> Write for BatchWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let over = {
            let mut p = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if p.bytes.is_empty() {
                self.shared.ready.notify_one();
            }
            p.bytes.extend_from_slice(buf);
            p.bytes.len() >= HIGH_WATER || p.closed
        };
        if over {
            self.shared.flush();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for Batched<W> {
    type Writer = BatchWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        BatchWriter {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory sink that counts the writes it gets.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut s = self.0.lock().unwrap();
            s.0.extend_from_slice(buf);
            s.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_goes_out_whole_in_order_in_few_writes() {
        let sink = Sink::default();
        let (writer, guard) = Batched::start(sink.clone()).unwrap();
        // Four threads, 20 000 lines each, some over the high-water mark.
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        let pad = if i % 5000 == 0 { HIGH_WATER } else { 10 };
                        let line = format!("{t} {i:05} {}\n", "x".repeat(pad));
                        writer.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let (bytes, writes) = std::mem::take(&mut *sink.0.lock().unwrap());
        let text = String::from_utf8(bytes).unwrap();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let mut parts = line.split(' ');
            let t: usize = parts.next().unwrap().parse().unwrap();
            let i: usize = parts.next().unwrap().parse().unwrap();
            assert_eq!(i, next[t], "thread {t}'s lines out of order or missing");
            next[t] += 1;
        }
        assert_eq!(next, [20_000; 4], "every line, once");
        assert!(writes < 80_000 / 10, "{writes} writes for 80 000 lines");
        // After the guard, a line goes through at once.
        writer.make_writer().write_all(b"late\n").unwrap();
        assert!(sink.0.lock().unwrap().0.ends_with(b"late\n"));
    }
}
