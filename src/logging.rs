//! Where log lines go: one background thread writes them to stderr, in
//! batches. Every line (the `tracing` events and the hand-written access
//! lines of the data path) is appended whole to one shared buffer, so lines
//! never interleave and keep their order; the writer takes the whole buffer at
//! once and writes it with one `write` while requests go on filling the next.
//!
//! While lines keep coming, the log thread takes them every [`FLUSH_EVERY`]
//! by itself, and a request never wakes it: waking it for each batch cost
//! every request about two `futex` calls, a `write` and a switch to the log
//! thread on a busy core (`strace -c` of a loaded gateway: 1.8 `futex` and
//! 0.75 `write` per request). Only a thread that found the buffer empty for
//! a whole interval sleeps until the next line wakes it (and writes that line
//! at once: a quiet gateway's lines are not held back), and a buffer past
//! [`FLUSH_AT`] wakes it early.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

pub use crate::config::LogFormat;

/// Pending bytes past which a writer waits for the log thread: logging slows
/// requests down rather than dropping lines or growing without bound.
const MAX_PENDING: usize = 1 << 20;

/// How often the log thread takes the lines while they keep coming: the
/// most a line waits before it is written.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// Pending bytes at which a writer wakes the log thread without waiting for
/// its interval.
const FLUSH_AT: usize = 256 << 10;

/// What the request threads and the log thread share.
#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// The buffer went from empty to not empty, or the log is closing.
    filled: Condvar,
    /// The log thread took the buffer: there is room again.
    drained: Condvar,
}

#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    closed: bool,
    /// The log thread waits for `filled` with no time limit: the next line wakes it.
    asleep: bool,
    /// Writers waiting for `drained` (the buffer was full).
    blocked: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Nothing panics while the lock is held; a poisoned buffer is still a buffer.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A handle that appends whole lines to the log. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

impl LogWriter {
    /// Appends `line` (one or more whole lines, each ending in `\n`) in one piece.
    pub fn write_line(&self, line: &[u8]) {
        self.append(|out| out.extend_from_slice(line));
    }

    /// Lets `write` append whole lines straight into the pending buffer (no
    /// copy, no allocation once the buffers have grown); it runs under the
    /// buffer's lock, so it only formats.
    pub fn append(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut pending = self.shared.lock();
        while pending.bytes.len() >= MAX_PENDING && !pending.closed {
            pending.blocked += 1;
            self.shared.filled.notify_one();
            pending = self
                .shared
                .drained
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
            pending.blocked -= 1;
        }
        let before = pending.bytes.len();
        write(&mut pending.bytes);
        let wake = pending.asleep || (before < FLUSH_AT && pending.bytes.len() >= FLUSH_AT);
        if wake {
            pending.asleep = false;
        }
        drop(pending);
        if wake {
            self.shared.filled.notify_one();
        }
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_line(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Keeps the log thread running; dropping it writes out what is pending and
/// stops the thread.
#[derive(Debug)]
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        {
            let mut pending = self.shared.lock();
            pending.closed = true;
            pending.asleep = false;
        }
        self.shared.filled.notify_one();
        self.shared.drained.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a log thread writing to `out`.
pub fn writer<W: Write + Send + 'static>(mut out: W) -> std::io::Result<(LogWriter, LogGuard)> {
    let shared = Arc::new(Shared::default());
    let theirs = shared.clone();
    let thread = std::thread::Builder::new()
        .name("portcullis-log".into())
        .spawn(move || {
            let mut batch = Vec::new();
            loop {
                let blocked = {
                    let mut pending = theirs.lock();
                    // Lines arrived during the last interval: give the next
                    // ones an interval too. None did: sleep until woken.
                    while !pending.closed && pending.bytes.len() < FLUSH_AT && pending.blocked == 0
                    {
                        let had_lines = !pending.bytes.is_empty();
                        if had_lines || !pending.asleep {
                            let (p, waited) = theirs
                                .filled
                                .wait_timeout(pending, FLUSH_EVERY)
                                .unwrap_or_else(PoisonError::into_inner);
                            pending = p;
                            if waited.timed_out() {
                                if !pending.bytes.is_empty() {
                                    break;
                                }
                                pending.asleep = true;
                            }
                        } else {
                            pending = theirs
                                .filled
                                .wait(pending)
                                .unwrap_or_else(PoisonError::into_inner);
                            // Woken by a line after a quiet spell: out with it now.
                            if !pending.bytes.is_empty() {
                                break;
                            }
                        }
                    }
                    if pending.bytes.is_empty() && pending.closed {
                        return;
                    }
                    // The two buffers trade places: neither is allocated again.
                    std::mem::swap(&mut batch, &mut pending.bytes);
                    pending.blocked
                };
                if blocked > 0 {
                    theirs.drained.notify_all();
                }
                // A log that cannot be written has nowhere to report it.
                let _ = out.write_all(&batch);
                let _ = out.flush();
                batch.clear();
            }
        })?;
    Ok((
        LogWriter {
            shared: shared.clone(),
        },
        LogGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

/// Installs the global `tracing` subscriber writing `format` lines to stderr
/// through a log thread; returns the writer (for the access lines) and the
/// guard that flushes at exit.
pub fn init(format: LogFormat) -> std::io::Result<(LogWriter, LogGuard)> {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let (writer, guard) = writer(std::io::stderr())?;
    // hyper and rustls log connection-level detail at debug; keep them quiet unless asked.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,hyper=warn,hyper_util=warn,rustls=warn,h2=warn"));
    let make = {
        let writer = writer.clone();
        move || writer.clone()
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(make);
    match format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        // Colours only for a person at a terminal, never into a file or a collector.
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    Ok((writer, guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read after the log thread wrote to it.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Waits until `sink` holds `n` lines, at most `limit`.
    fn lines_within(sink: &Sink, n: usize, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if sink
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                >= n
            {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        false
    }

    #[test]
    fn a_line_is_written_within_moments_whether_the_log_was_busy_or_asleep() {
        let sink = Sink::default();
        let (log, _guard) = writer(sink.clone()).unwrap();
        // Busy: a line every millisecond; each is out within a few intervals.
        for i in 0..50 {
            log.write_line(format!("busy {i}\n").as_bytes());
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(
            lines_within(&sink, 50, FLUSH_EVERY * 8),
            "busy lines held back"
        );
        // Asleep: nothing for many intervals, then one line wakes the thread.
        std::thread::sleep(FLUSH_EVERY * 6);
        log.write_line(b"after a pause\n");
        assert!(
            lines_within(&sink, 51, FLUSH_EVERY * 8),
            "a line after a pause was never written"
        );
    }

    #[test]
    fn every_line_written_from_many_threads_comes_out_whole_once_the_guard_drops() {
        let sink = Sink::default();
        let (log, guard) = writer(sink.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        log.write_line(
                            format!("thread {t} line {i} {}\n", "x".repeat(i)).as_bytes(),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2000);
        for t in 0..4 {
            let mine: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("thread {t} line ")))
                .map(|rest| {
                    let (i, xs) = rest.split_once(' ').unwrap();
                    let i: usize = i.parse().unwrap();
                    assert_eq!(xs.len(), i, "a line was cut: {rest}");
                    i
                })
                .collect();
            assert_eq!(
                mine,
                (0..500).collect::<Vec<_>>(),
                "thread {t} out of order"
            );
        }
    }
}
