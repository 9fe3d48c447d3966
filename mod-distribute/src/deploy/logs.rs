//! Forwarding a child's standard output and error, line by line, to the
//! launcher's log sink (its standard error by default), each line prefixed
//! with `[<node>] `.
//!
//! One thread per stream reads until end of file. Memory stays bounded: a
//! line is cut at [`MAX_LINE_BYTES`] (marked `…[truncated]`) and the rest of
//! it is skipped up to its newline; the pipe is always drained, so a chatty
//! child never blocks on a full pipe, even when the sink fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

/// The longest line forwarded whole; longer ones are cut there.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Where forwarded lines go: shared by every forwarder of a deployment, so
/// lines of different children never interleave within a line.
#[derive(Clone)]
pub(super) struct Sink(Arc<Mutex<Box<dyn Write + Send>>>);

impl Sink {
    pub(super) fn new(writer: Box<dyn Write + Send>) -> Sink {
        Sink(Arc::new(Mutex::new(writer)))
    }

    pub(super) fn stderr() -> Sink {
        Sink::new(Box::new(std::io::stderr()))
    }

    fn line(&self, prefix: &str, line: &[u8], truncated: bool) {
        let mut text = Vec::with_capacity(prefix.len() + line.len() + 16);
        text.extend_from_slice(prefix.as_bytes());
        text.extend_from_slice(line);
        if truncated {
            text.extend_from_slice(" …[truncated]".as_bytes());
        }
        text.push(b'\n');
        let mut writer = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // A failing sink (a closed stderr) loses the line; the pipe is still drained.
        let _ = writer.write_all(&text).and_then(|()| writer.flush());
    }
}

/// Forwards `stream` of `node` to `sink` on a thread of its own, until end
/// of file (the child and whatever inherited the pipe closed it).
pub(super) fn forward(node: &str, stream: impl Read + Send + 'static, sink: &Sink) {
    let prefix = format!("[{node}] ");
    let sink = sink.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("modkit-log-{node}"))
        .spawn(move || pump(BufReader::new(stream), &prefix, &sink));
    if let Err(e) = spawned {
        // The pipe is dropped: the child gets EPIPE when it writes, not a hang.
        tracing::warn!(node, error = %e, "cannot start the log forwarder; this stream is dropped");
    }
}

/// Reads lines of at most [`MAX_LINE_BYTES`] from `reader` and hands each to `sink`.
fn pump(mut reader: impl BufRead, prefix: &str, sink: &Sink) {
    let mut line = Vec::new();
    // Skipping the rest of a line that was cut.
    let mut skipping = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok([]) => break,
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let (chunk, newline) = match buf.iter().position(|&b| b == b'\n') {
            Some(at) => (&buf[..at], true),
            None => (buf, false),
        };
        let used = chunk.len() + usize::from(newline);
        if !skipping {
            let room = MAX_LINE_BYTES - line.len();
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.len() > room {
                sink.line(prefix, trim_cr(&line), true);
                line.clear();
                skipping = !newline;
            } else if newline {
                sink.line(prefix, trim_cr(&line), false);
                line.clear();
            }
        } else if newline {
            skipping = false;
        }
        reader.consume(used);
    }
    if !line.is_empty() {
        sink.line(prefix, trim_cr(&line), false);
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn forwarded(input: &[u8], capacity: usize) -> String {
        let out = Shared::default();
        let sink = Sink::new(Box::new(out.clone()));
        pump(BufReader::with_capacity(capacity, input), "[n-0] ", &sink);
        let text = out.0.lock().unwrap().clone();
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn lines_are_prefixed() {
        for capacity in [1, 3, 8192] {
            let out = forwarded(b"one\r\ntwo\n\nlast without newline", capacity);
            assert_eq!(
                out,
                "[n-0] one\n[n-0] two\n[n-0] \n[n-0] last without newline\n"
            );
        }
    }

    #[test]
    fn long_lines_are_cut_and_skipped() {
        let mut input = vec![b'x'; MAX_LINE_BYTES * 3];
        input.extend_from_slice(b"\nnext\n");
        for capacity in [7, 8192, MAX_LINE_BYTES * 4] {
            let out = forwarded(&input, capacity);
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines.len(), 2, "capacity {capacity}");
            assert_eq!(
                lines[0].len(),
                "[n-0] ".len() + MAX_LINE_BYTES + " …[truncated]".len()
            );
            assert!(lines[0].ends_with("x …[truncated]"));
            assert_eq!(lines[1], "[n-0] next");
        }
        // Exactly the limit is not cut.
        let mut input = vec![b'y'; MAX_LINE_BYTES];
        input.push(b'\n');
        assert!(!forwarded(&input, 100).contains("truncated"));
    }
}
