//! Spill files of a [`BacklogPolicy::Overflow`](mod_api::BacklogPolicy) queue.
//!
//! # Layout
//! One folder per queue, `<spill_dir>/<queue name>/` (characters outside
//! `[A-Za-z0-9._-]` are written `%XX`), holding segment files
//! `<number, 20 digits>.spill`. Records are only ever appended, to the newest
//! segment; a new segment starts past [`SEGMENT_BYTES`] and after every `open`
//! (so a torn tail left by a crash is never appended to). A segment is deleted
//! once none of its messages is live and every older segment is gone; when no
//! message is live any more, every segment is deleted.
//!
//! A spilled message stays live after it moved back to memory, until it leaves
//! the log (acknowledged by every group, dead-lettered or withdrawn). So a
//! spilled message survives any number of restarts until it is done; one that was
//! delivered but not yet acknowledged when the process stopped is delivered again
//! (at least once).
//!
//! # Record
//! ```text
//! magic  "MKQ1"          4 bytes
//! len    u32 LE          length of the payload
//! crc    u32 LE          crc32 of the 4 `len` bytes followed by the payload
//! payload:
//!   kind u8              0 message, 1 done
//!   seq  u64 LE          the message's sequence number (its id)
//!   body                 kind 0 only: the message, `mod_api::codec::encode`d
//! ```
//! `done(seq)` says message `seq` left the log: recovery skips it.
//!
//! # Recovery
//! `open` reads every segment in order. A record whose header or crc does not
//! check out is reported with `tracing::error!` (file, offset) and skipped: the
//! reader looks for the next offset where an intact record starts, so one bad
//! byte costs only the record it hits, and a truncated tail costs only the torn
//! record. An empty segment file (0 bytes: truncated, or created just before a
//! crash) is reported the same way, since it may have held messages. Each
//! damaged spot counts in [`Spill::recovery_errors`]; the other segments are
//! recovered whole. Nothing here panics.
//!
//! # Durability
//! Each record is written with one `write` call to the file before `offer`
//! returns, so it survives a crash of the process. It is not `fsync`ed: a power
//! loss or kernel crash may lose the last records (recovery then skips the torn
//! tail). Spilling is a capacity valve, not a database.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use mod_api::{Error, ErrorKind, Result, Value};

use super::record::{self, folder_name, frame, parse, KIND_DONE, KIND_MESSAGE};

/// A new segment starts once the current one reaches this size.
pub(crate) const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

/// One live spilled message: where its record is.
#[derive(Debug, Clone, Copy)]
struct Slot {
    seq: u64,
    segment: u64,
    offset: u64,
    len: usize,
}

/// A segment file and how many of its messages are live (not done).
#[derive(Debug)]
struct Segment {
    number: u64,
    live: usize,
}

/// The segment being appended to.
#[derive(Debug)]
struct Writer {
    number: u64,
    file: File,
    size: u64,
}

/// The spilled part of one queue's log, oldest first.
#[derive(Debug)]
pub(crate) struct Spill {
    dir: PathBuf,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    slots: VecDeque<Slot>,
    /// Messages moved back to memory and not done yet: their segments.
    in_memory: HashMap<u64, u64>,
    writer: Option<Writer>,
    reader: Option<(u64, File)>,
    next_segment: u64,
    /// Damaged records and empty segments met by `open`.
    recovery_errors: usize,
}

impl Spill {
    /// Opens (creating it) the spill folder of queue `name` under `root` and
    /// recovers what it holds. Returns the highest sequence number seen.
    pub(crate) fn open(
        root: &Path,
        name: &str,
        segment_bytes: u64,
    ) -> Result<(Spill, Option<u64>)> {
        let dir = root.join(folder_name(name));
        fs::create_dir_all(&dir).map_err(|e| io_error("cannot create spill folder", &dir, e))?;
        let mut numbers = Vec::new();
        for entry in
            fs::read_dir(&dir).map_err(|e| io_error("cannot list spill folder", &dir, e))?
        {
            let entry = entry.map_err(|e| io_error("cannot list spill folder", &dir, e))?;
            let file_name = entry.file_name();
            let Some(stem) = file_name.to_str().and_then(|n| n.strip_suffix(".spill")) else {
                continue;
            };
            if let Ok(number) = stem.parse::<u64>() {
                numbers.push(number);
            }
        }
        numbers.sort_unstable();
        let mut spill = Spill {
            dir,
            segment_bytes: segment_bytes.max(1),
            segments: VecDeque::new(),
            slots: VecDeque::new(),
            in_memory: HashMap::new(),
            writer: None,
            reader: None,
            next_segment: numbers.last().map_or(0, |n| n + 1),
            recovery_errors: 0,
        };
        let mut done = HashSet::new();
        let mut max_seq: Option<u64> = None;
        for number in numbers {
            let path = spill.path(number);
            let bytes =
                fs::read(&path).map_err(|e| io_error("cannot read spill file", &path, e))?;
            spill.segments.push_back(Segment { number, live: 0 });
            if bytes.is_empty() {
                spill.recovery_errors += 1;
                tracing::error!(file = %path.display(), "empty spill segment: any messages it held are lost");
                continue;
            }
            let slots = &mut spill.slots;
            spill.recovery_errors += record::scan(&path, &bytes, |offset, record| {
                max_seq = max_seq.max(Some(record.seq));
                match record.kind {
                    KIND_MESSAGE => slots.push_back(Slot {
                        seq: record.seq,
                        segment: number,
                        offset: offset as u64,
                        len: record.len,
                    }),
                    KIND_DONE => {
                        done.insert(record.seq);
                    }
                    other => {
                        tracing::error!(file = %path.display(), offset, kind = other, "unknown spill record kind skipped");
                    }
                }
            });
        }
        spill.slots.retain(|s| !done.contains(&s.seq));
        spill.slots.make_contiguous().sort_by_key(|s| s.seq);
        for slot in &spill.slots {
            if let Some(segment) = spill.segments.iter_mut().find(|g| g.number == slot.segment) {
                segment.live += 1;
            }
        }
        spill.collect_garbage();
        if spill.recovery_errors > 0 {
            tracing::error!(dir = %spill.dir.display(), recovered = spill.slots.len(), damaged = spill.recovery_errors, "spill folder opened with damage");
        } else {
            tracing::debug!(dir = %spill.dir.display(), recovered = spill.slots.len(), "spill folder opened");
        }
        Ok((spill, max_seq))
    }

    /// How many damaged records and empty segments `open` met and skipped.
    pub(crate) fn recovery_errors(&self) -> usize {
        self.recovery_errors
    }

    /// Spilled messages not yet moved back to memory.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing waits in the files.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Appends message `seq`; written to the file when this returns.
    pub(crate) fn append<M: Value>(&mut self, seq: u64, message: &M) -> Result<()> {
        let body = mod_api::codec::encode(message)?;
        let (segment, offset, len) = self.write(KIND_MESSAGE, seq, &body)?;
        self.slots.push_back(Slot {
            seq,
            segment,
            offset,
            len,
        });
        if let Some(g) = self.segments.iter_mut().find(|g| g.number == segment) {
            g.live += 1;
        }
        Ok(())
    }

    /// Withdraws message `seq` if it is still in the files; `false` otherwise.
    pub(crate) fn remove(&mut self, seq: u64) -> Result<bool> {
        let Ok(index) = self.slots.binary_search_by_key(&seq, |s| s.seq) else {
            return Ok(false);
        };
        // Persist first: a withdrawn message must not come back after a restart.
        self.write(KIND_DONE, seq, &[])?;
        if let Some(slot) = self.slots.remove(index) {
            self.release(slot.segment);
        }
        self.collect_garbage();
        Ok(true)
    }

    /// Moves up to `max` of the oldest messages back to memory, in order. They
    /// stay in the files until [`Spill::done`]. Records that no longer read back
    /// intact are reported and dropped.
    pub(crate) fn take<M: Value>(&mut self, max: usize) -> Vec<(u64, M)> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            match self.read(slot) {
                Ok(message) => {
                    self.in_memory.insert(slot.seq, slot.segment);
                    out.push((slot.seq, message));
                }
                Err(e) => {
                    tracing::error!(
                        file = %self.path(slot.segment).display(),
                        offset = slot.offset,
                        error = %e,
                        "spilled message lost: its record does not read back"
                    );
                    // Marked done so that a restart does not trip over it again.
                    self.in_memory.insert(slot.seq, slot.segment);
                    self.done(slot.seq);
                }
            }
        }
        out
    }

    /// Message `seq` left the log; if it came from the files, it is marked done
    /// there so no restart brings it back. Failures are logged (the message may
    /// then be delivered again after a restart).
    pub(crate) fn done(&mut self, seq: u64) {
        let Some(&segment) = self.in_memory.get(&seq) else {
            return;
        };
        if let Err(e) = self.write(KIND_DONE, seq, &[]) {
            tracing::error!(seq, error = %e, "cannot mark a spilled message done; a restart may deliver it again");
        }
        self.in_memory.remove(&seq);
        self.release(segment);
        self.collect_garbage();
    }

    fn read<M: Value>(&mut self, slot: Slot) -> Result<M> {
        if self.reader.as_ref().is_none_or(|(n, _)| *n != slot.segment) {
            let path = self.path(slot.segment);
            let file =
                File::open(&path).map_err(|e| io_error("cannot open spill file", &path, e))?;
            self.reader = Some((slot.segment, file));
        }
        let Some((_, file)) = self.reader.as_mut() else {
            return Err(Error::internal("spill reader missing"));
        };
        let mut buf = vec![0; slot.len];
        file.seek(SeekFrom::Start(slot.offset))?;
        file.read_exact(&mut buf)?;
        let record =
            parse(&buf).map_err(|reason| Error::codec(format!("spill record: {reason}")))?;
        if record.kind != KIND_MESSAGE || record.seq != slot.seq {
            return Err(Error::codec("spill record is not the expected message"));
        }
        mod_api::codec::decode(record.body)
    }

    /// Appends one record to the newest segment; where it went.
    fn write(&mut self, kind: u8, seq: u64, body: &[u8]) -> Result<(u64, u64, usize)> {
        let record = frame(kind, seq, body)?;
        if self
            .writer
            .as_ref()
            .is_none_or(|w| w.size >= self.segment_bytes)
        {
            let number = self.next_segment;
            let path = self.path(number);
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(|e| io_error("cannot create spill file", &path, e))?;
            self.next_segment += 1;
            self.segments.push_back(Segment { number, live: 0 });
            self.writer = Some(Writer {
                number,
                file,
                size: 0,
            });
        }
        let Some(writer) = self.writer.as_mut() else {
            return Err(Error::internal("spill writer missing"));
        };
        let at = writer.size;
        if let Err(e) = writer
            .file
            .write_all(&record)
            .and_then(|()| writer.file.flush())
        {
            // A partial record may be on disk: never append after it.
            let number = writer.number;
            self.writer = None;
            let path = self.path(number);
            return Err(io_error("cannot write spill file", &path, e));
        }
        writer.size += record.len() as u64;
        Ok((writer.number, at, record.len()))
    }

    fn release(&mut self, segment: u64) {
        if let Some(g) = self.segments.iter_mut().find(|g| g.number == segment) {
            g.live = g.live.saturating_sub(1);
        }
    }

    /// Deletes segments nothing refers to any more, oldest first.
    fn collect_garbage(&mut self) {
        let everything = self.slots.is_empty() && self.in_memory.is_empty();
        if everything {
            self.writer = None;
        }
        while let Some(front) = self.segments.front() {
            let writing = self
                .writer
                .as_ref()
                .is_some_and(|w| w.number == front.number);
            if !everything && (front.live > 0 || writing) {
                break;
            }
            let number = front.number;
            self.segments.pop_front();
            if self.reader.as_ref().is_some_and(|(n, _)| *n == number) {
                self.reader = None;
            }
            let path = self.path(number);
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot delete consumed spill file");
            }
        }
    }

    fn path(&self, number: u64) -> PathBuf {
        self.dir.join(format!("{number:020}.spill"))
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    tracing::error!(file = %path.display(), error = %e, "{what}");
    Error::new(ErrorKind::Io, format!("{what} {}", path.display())).with_source(e)
}
