//! [`LogWriter`]: log lines to stderr from a thread of their own, in batches.
//!
//! `tracing-appender`'s non-blocking writer hands each line to its thread through a channel
//! and wakes the thread whenever it sleeps: at low load, every line costs a `futex` wake, the
//! thread's spins and `sched_yield`s and a `write` (seven system calls per request at c=1,
//! measured), and on a busy core the woken thread can run before the answer it logged has gone
//! out. Here a line is appended to a buffer under a lock, nothing more; the thread writes what
//! gathered every [`Batching::every`] (or sooner once [`Batching::flush_at`] bytes wait), and
//! after a second without lines it sleeps until the next one arrives. A line waits at most
//! `every` (10 ms) for the terminal; lines past [`Batching::cap`] are dropped and counted (as
//! `tracing-appender` does by default), and the count is written once there is room.

use std::io::{self, Write};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How a [`LogWriter`] batches.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Batching {
    /// How often the lines gathered are written.
    pub(crate) every: Duration,
    /// Written at once, without waiting for `every`, past this many bytes.
    pub(crate) flush_at: usize,
    /// The most bytes held; a line that would go past it is dropped and counted.
    pub(crate) cap: usize,
    /// After this many rounds of `every` without a line, the thread sleeps until the next one.
    pub(crate) idle_rounds: u32,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            every: Duration::from_millis(10),
            flush_at: 64 * 1024,
            cap: 8 * 1024 * 1024,
            idle_rounds: 100,
        }
    }
}

/// A cheap handle that appends whole lines (each `write` call) to the shared buffer. Also a
/// `MakeWriter` for `tracing-subscriber`'s `fmt` layer.
#[derive(Clone, Debug)]
pub(crate) struct LogWriter {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the thread: a line came while it slept, the buffer is past `flush_at`, or stop.
    wake: Condvar,
    batching: Batching,
}

#[derive(Debug, Default)]
struct State {
    lines: Vec<u8>,
    /// Lines dropped since the last batch (the buffer was at its cap).
    dropped: u64,
    /// The thread sleeps until woken (no timed wait pending).
    parked: bool,
    stopped: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Stops the writer's thread when dropped, after it wrote what was sent before (waiting at most
/// a second for the output).
#[derive(Debug)]
pub(crate) struct FlushOnDrop {
    shared: Arc<Shared>,
    done: mpsc::Receiver<()>,
}

impl LogWriter {
    /// Starts the thread writing to `out`.
    pub(crate) fn start(
        out: impl Write + Send + 'static,
        batching: Batching,
    ) -> io::Result<(Self, FlushOnDrop)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            batching,
        });
        let (done_tx, done) = mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("ai-router-log".into())
            .spawn(move || {
                write_batches(&thread_shared, out);
                let _ = done_tx.send(());
            })?;
        Ok((
            Self {
                shared: Arc::clone(&shared),
            },
            FlushOnDrop { shared, done },
        ))
    }
}

impl Write for LogWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let shared = &*self.shared;
        let wake = {
            let mut state = shared.lock();
            if state.lines.len() + line.len() > shared.batching.cap {
                state.dropped += 1;
                return Ok(line.len());
            }
            state.lines.extend_from_slice(line);
            state.parked || state.lines.len() >= shared.batching.flush_at
        };
        if wake {
            shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.wake.notify_one();
        let _ = self.done.recv_timeout(Duration::from_secs(1));
    }
}

/// The thread: writes each batch with one `write_all`, until stopped and drained.
fn write_batches(shared: &Shared, mut out: impl Write) {
    let Batching {
        every,
        flush_at,
        idle_rounds,
        ..
    } = shared.batching;
    let mut batch = Vec::new();
    let mut idle = 0;
    loop {
        let (dropped, stopped) = {
            let mut state = shared.lock();
            // Let lines gather for `every`, unless they pass `flush_at` or a stop comes first.
            if !state.stopped && state.lines.len() < flush_at {
                if idle >= idle_rounds && state.lines.is_empty() {
                    state.parked = true;
                    while state.lines.is_empty() && !state.stopped {
                        state = shared
                            .wake
                            .wait(state)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                    state.parked = false;
                } else {
                    state = shared
                        .wake
                        .wait_timeout(state, every)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
            std::mem::swap(&mut batch, &mut state.lines);
            (std::mem::take(&mut state.dropped), state.stopped)
        };
        if batch.is_empty() && dropped == 0 {
            if stopped {
                let _ = out.flush();
                return;
            }
            idle += 1;
            continue;
        }
        idle = 0;
        // An output that fails loses its batch, never the gateway's requests.
        let _ = out.write_all(&batch);
        if dropped > 0 {
            let _ = writeln!(
                out,
                "warning: {dropped} log line(s) dropped: the log output could not keep up"
            );
        }
        let _ = out.flush();
        batch.clear();
        // Keep the allocation for the next batch, unless a burst made it huge.
        if batch.capacity() > 4 * flush_at {
            batch = Vec::new();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// An output that keeps what it got and counts its `write` calls.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Recorder {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let mut got = self.0.lock().unwrap();
            got.0.extend_from_slice(bytes);
            got.1 += 1;
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Recorder {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().0.clone()).unwrap()
        }

        fn writes(&self) -> usize {
            self.0.lock().unwrap().1
        }

        /// Waits (at most 5 s) until the output holds `needle`; how long that took.
        fn wait_for(&self, needle: &str) -> Duration {
            let start = Instant::now();
            while !self.text().contains(needle) {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "never written: {needle}"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            start.elapsed()
        }
    }

    #[test]
    fn lines_are_written_whole_in_order_and_in_a_few_batches() {
        let out = Recorder::default();
        let batching = Batching {
            every: Duration::from_millis(50),
            ..Batching::default()
        };
        let (writer, flush) = LogWriter::start(out.clone(), batching).unwrap();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        for line in expected.lines() {
            writer
                .clone()
                .write_all(format!("{line}\n").as_bytes())
                .unwrap();
        }
        drop(flush);
        assert_eq!(out.text(), expected);
        // One `write` per line would be 1000.
        assert!(out.writes() < 100, "{} writes", out.writes());
    }

    #[test]
    fn a_line_is_written_soon_also_after_the_thread_went_to_sleep() {
        let out = Recorder::default();
        let batching = Batching {
            every: Duration::from_millis(20),
            idle_rounds: 2,
            ..Batching::default()
        };
        let (mut writer, _flush) = LogWriter::start(out.clone(), batching).unwrap();
        writer.write_all(b"first\n").unwrap();
        assert!(out.wait_for("first") < Duration::from_secs(2));
        // Idle for ten rounds: the thread sleeps until the next line wakes it.
        std::thread::sleep(Duration::from_millis(200));
        assert!(writer.shared.lock().parked);
        writer.write_all(b"after a pause\n").unwrap();
        assert!(out.wait_for("after a pause") < Duration::from_secs(2));
    }

    #[test]
    fn lines_past_flush_at_are_written_without_waiting_for_the_round() {
        let out = Recorder::default();
        let batching = Batching {
            every: Duration::from_secs(30),
            flush_at: 64,
            ..Batching::default()
        };
        let (mut writer, _flush) = LogWriter::start(out.clone(), batching).unwrap();
        writer.write_all(b"short, under flush_at\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(out.text(), "", "a round is 30 s: nothing written yet");
        writer.write_all(&[b'x'; 63]).unwrap();
        assert!(out.wait_for("short, under flush_at") < Duration::from_secs(2));
    }

    #[test]
    fn lines_past_the_cap_are_dropped_and_counted() {
        let out = Recorder::default();
        let batching = Batching {
            every: Duration::from_secs(2),
            cap: 100,
            ..Batching::default()
        };
        let (mut writer, flush) = LogWriter::start(out.clone(), batching).unwrap();
        for i in 0..10 {
            // 30 bytes each: three fit under the cap.
            writer.write_all(format!("{i:029}\n").as_bytes()).unwrap();
        }
        drop(flush);
        let text = out.text();
        assert_eq!(
            text.lines().filter(|l| l.starts_with("000")).count(),
            3,
            "{text}"
        );
        assert!(
            text.ends_with("warning: 7 log line(s) dropped: the log output could not keep up\n")
        );
    }
}
