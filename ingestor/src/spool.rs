//! The disk spool: an append-only log of unconfirmed outgoing messages in
//! segment files `<first_seq>.spool`, plus `confirmed.seq` (how far the
//! broker has confirmed). The outbox appends every event here before it is
//! published and releases segments once every record in them is confirmed,
//! so an ingestor killed at any moment restarts with everything it had read
//! and not yet handed to the broker.
//!
//! Record: `u32 LE len | u32 LE crc32(payload) | payload`, payload =
//! `u64 LE seq | u32 LE header_len | header | body`. The header is binary
//! (`0x01`, then routing key, id, kind, platform and channel each as
//! `u16 LE len | bytes`, then `u64 LE` timestamp); spools written by older
//! versions have a JSON header, which is still read. A torn record at
//! the end of the newest segment (a crash mid-write) is truncated away on
//! open; a corrupt record elsewhere ends that segment's replay and is
//! reported.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::amqp::OutgoingMessage;
use common::schema::EventKind;
use serde::{Deserialize, Serialize};

const EXT: &str = "spool";
const WATERMARK_FILE: &str = "confirmed.seq";
const RECORD_OVERHEAD: u64 = 8;
/// Read-back buffer.
const READ_BUFFER: usize = 256 * 1024;

/// Spool failures.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A filesystem operation failed.
    #[error("spool {path}: {op}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// What we were doing.
        op: &'static str,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        op,
        source,
    }
}

/// The JSON header of spools written by earlier versions.
#[derive(Serialize, Deserialize)]
struct Header<'a> {
    rk: &'a str,
    id: &'a str,
    kind: EventKind,
    platform: &'a str,
    channel: &'a str,
    ts: u64,
}

/// The first byte of a binary header (a JSON header starts with `{`).
const BINARY_HEADER: u8 = 1;

/// Sets `path`'s permission bits.
fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Encodes one record, in place at the end of `out`.
fn encode(seq: u64, msg: &OutgoingMessage, out: &mut Vec<u8>) {
    let fields = [
        msg.routing_key.as_str(),
        msg.message_id.as_str(),
        msg.kind.as_str(),
        msg.platform.as_str(),
        msg.channel.as_str(),
    ];
    let header_len = 1 + fields.iter().map(|f| 2 + f.len()).sum::<usize>() + 8;
    let payload_len = 12 + header_len + msg.body.len();
    let start = out.len();
    out.reserve(RECORD_OVERHEAD as usize + payload_len);
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // the CRC, below
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(header_len as u32).to_le_bytes());
    out.push(BINARY_HEADER);
    for field in fields {
        // Each is a short AMQP string or an event id (at most 255 bytes).
        let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&field.as_bytes()[..usize::from(len)]);
    }
    out.extend_from_slice(&msg.timestamp.to_le_bytes());
    out.extend_from_slice(&msg.body);
    let crc = crc32fast::hash(&out[start + RECORD_OVERHEAD as usize..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes a record's payload; the body is taken out of `payload`
/// without a copy of it.
fn decode(mut payload: Vec<u8>) -> Option<(u64, OutgoingMessage)> {
    let seq = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let hlen = u32::from_le_bytes(payload.get(8..12)?.try_into().ok()?) as usize;
    let header = payload.get(12..12 + hlen)?;
    let message = if header.first() == Some(&BINARY_HEADER) {
        let mut rest = &header[1..];
        let mut field = || -> Option<String> {
            let len = usize::from(u16::from_le_bytes(rest.get(..2)?.try_into().ok()?));
            let value = std::str::from_utf8(rest.get(2..2 + len)?).ok()?.to_owned();
            rest = &rest[2 + len..];
            Some(value)
        };
        let (routing_key, message_id, kind, platform, channel) =
            (field()?, field()?, field()?, field()?, field()?);
        let timestamp = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        OutgoingMessage {
            routing_key,
            message_id,
            kind: kind.parse().ok()?,
            platform,
            channel,
            timestamp,
            body: Vec::new(),
        }
    } else {
        let header: Header<'_> = serde_json::from_slice(header).ok()?;
        OutgoingMessage {
            routing_key: header.rk.to_owned(),
            message_id: header.id.to_owned(),
            kind: header.kind,
            platform: header.platform.to_owned(),
            channel: header.channel.to_owned(),
            timestamp: header.ts,
            body: Vec::new(),
        }
    };
    payload.drain(..12 + hlen);
    Some((
        seq,
        OutgoingMessage {
            body: payload,
            ..message
        },
    ))
}

/// Reads the next record at the reader's position. `Ok(None)` at a clean
/// end of data; `Err(offset)` for a torn or corrupt record at `offset`.
fn read_record(
    reader: &mut impl Read,
    offset: u64,
) -> Result<Option<(u64, OutgoingMessage, u64)>, u64> {
    let mut head = [0u8; 8];
    match read_full(reader, &mut head) {
        Ok(0) => return Ok(None),
        Ok(8) => {}
        _ => return Err(offset),
    }
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    if len > 256 * 1024 * 1024 {
        return Err(offset);
    }
    let mut payload = vec![0u8; len];
    if read_full(reader, &mut payload) != Ok(len) || crc32fast::hash(&payload) != crc {
        return Err(offset);
    }
    let (seq, msg) = decode(payload).ok_or(offset)?;
    Ok(Some((seq, msg, RECORD_OVERHEAD + len as u64)))
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> Result<usize, ()> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    Ok(n)
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    last_seq: Option<u64>,
    path: PathBuf,
    bytes: u64,
}

/// Where to read the next record from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadCursor {
    segment: u64,
    offset: u64,
}

/// What [`Spool::open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Records in the spool.
    pub records: u64,
    /// Lowest seq in the spool, if any.
    pub first_seq: Option<u64>,
    /// Highest seq in the spool, if any.
    pub last_seq: Option<u64>,
    /// The confirmed watermark found on disk.
    pub watermark: u64,
    /// Records lost to corruption (not torn tails).
    pub corrupt: u64,
}

/// The segment log.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    writer: Option<File>,
    max_bytes: u64,
    segment_bytes: u64,
    total_bytes: u64,
    unsynced: bool,
}

impl Spool {
    /// Opens (creating) the spool in `dir` and recovers what is there.
    ///
    /// # Errors
    /// [`SpoolError`] if the directory cannot be created or read.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
    ) -> Result<(Self, Recovered), SpoolError> {
        std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        // The spool holds every event read: only its owner may look.
        restrict(dir, 0o700).map_err(io("chmod", dir))?;
        let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(io("list", dir))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == EXT))
            .filter_map(|p| {
                let seq = p.file_stem()?.to_str()?.parse().ok()?;
                Some((seq, p))
            })
            .collect();
        files.sort();
        let mut recovered = Recovered {
            records: 0,
            first_seq: None,
            last_seq: None,
            watermark: read_watermark(dir),
            corrupt: 0,
        };
        let mut segments = VecDeque::new();
        let count = files.len();
        for (i, (first_seq, path)) in files.into_iter().enumerate() {
            let newest = i + 1 == count;
            let file = File::open(&path).map_err(io("open", &path))?;
            let len = file.metadata().map_err(io("stat", &path))?.len();
            let mut reader = BufReader::new(file);
            let (mut offset, mut last, mut n) = (0u64, None, 0u64);
            loop {
                match read_record(&mut reader, offset) {
                    Ok(Some((seq, _, size))) => {
                        offset += size;
                        last = Some(seq);
                        n += 1;
                    }
                    Ok(None) => break,
                    Err(bad) => {
                        if newest {
                            tracing::warn!(path = %path.display(), offset = bad, "torn record at the end of the spool (crash mid-write); truncating");
                            let f = OpenOptions::new()
                                .write(true)
                                .open(&path)
                                .map_err(io("open", &path))?;
                            f.set_len(bad).map_err(io("truncate", &path))?;
                        } else {
                            let rest = len.saturating_sub(bad);
                            tracing::error!(path = %path.display(), offset = bad, bytes = rest, "corrupt spool record; the rest of this segment cannot be replayed");
                            metrics::counter!("chatbus_ingestor_spool_corrupt_total").increment(1);
                            recovered.corrupt += 1;
                        }
                        break;
                    }
                }
            }
            if n == 0 {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            recovered.records += n;
            recovered.first_seq.get_or_insert(first_seq);
            recovered.last_seq = last;
            segments.push_back(Segment {
                first_seq,
                last_seq: last,
                path,
                bytes: offset,
            });
        }
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        let spool = Self {
            dir: dir.to_owned(),
            segments,
            writer: None,
            max_bytes,
            segment_bytes,
            total_bytes,
            unsynced: false,
        };
        Ok((spool, recovered))
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    /// The size `msg` takes in the spool.
    pub fn record_size(msg: &OutgoingMessage) -> u64 {
        // seq + header length + a generous header estimate + body.
        RECORD_OVERHEAD
            + 12
            + 64
            + (msg.routing_key.len() + msg.message_id.len() + msg.channel.len() * 2) as u64
            + msg.body.len() as u64
    }

    /// Whether a record of `size` bytes fits under the cap.
    pub fn has_room(&self, size: u64) -> bool {
        self.total_bytes + size <= self.max_bytes
    }

    /// Appends records (already checked against the cap) with one write.
    ///
    /// # Errors
    /// [`SpoolError`] if the write fails; nothing of the batch is counted as
    /// written then (a partial write is a torn tail the next open truncates).
    pub fn append(&mut self, records: &[(u64, &OutgoingMessage)]) -> Result<(), SpoolError> {
        let Some(&(first, _)) = records.first() else {
            return Ok(());
        };
        // A new segment when the current one is full, or when there is no
        // open writer (fresh start, or segments recovered from a previous run).
        if self.writer.is_none()
            || self
                .segments
                .back()
                .is_none_or(|s| s.bytes >= self.segment_bytes)
        {
            self.rotate(first)?;
        }
        let mut buf = Vec::new();
        for (seq, msg) in records {
            encode(*seq, msg, &mut buf);
        }
        let segment = self.segments.back_mut().expect("a segment after rotate");
        let writer = self.writer.as_mut().expect("a writer after rotate");
        writer.write_all(&buf).map_err(io("write", &segment.path))?;
        segment.bytes += buf.len() as u64;
        segment.last_seq = records.last().map(|(s, _)| *s);
        self.total_bytes += buf.len() as u64;
        self.unsynced = true;
        Ok(())
    }

    fn rotate(&mut self, first_seq: u64) -> Result<(), SpoolError> {
        if let Some(w) = self.writer.take() {
            let _ = w.sync_data();
        }
        let path = self.dir.join(format!("{first_seq:020}.{EXT}"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io("create segment", &path))?;
        let bytes = file.metadata().map_err(io("stat", &path))?.len();
        self.total_bytes += bytes;
        self.segments.push_back(Segment {
            first_seq,
            last_seq: None,
            path,
            bytes,
        });
        self.writer = Some(file);
        Ok(())
    }

    /// A second handle on the segment being written, if records were
    /// written since the last sync, for the caller to `sync_data` without
    /// holding whatever guards the spool: an fsync can take hundreds of
    /// milliseconds on a busy disk, and appends must not wait for it. The
    /// records written so far count as synced; later ones wait for the next
    /// call.
    pub fn take_unsynced(&mut self) -> Option<File> {
        if !self.unsynced {
            return None;
        }
        let file = self.writer.as_ref()?.try_clone().ok()?;
        self.unsynced = false;
        Some(file)
    }

    /// Deletes every segment whose records are all below `watermark`
    /// (confirmed), except the one being written. Returns bytes freed.
    pub fn release_below(&mut self, watermark: u64) -> u64 {
        let mut freed = 0;
        while self.segments.len() > 1 {
            let s = &self.segments[0];
            if s.last_seq.is_some_and(|l| l < watermark) {
                let s = self.segments.pop_front().expect("len > 1");
                if let Err(e) = std::fs::remove_file(&s.path) {
                    tracing::warn!(path = %s.path.display(), error = %e, "cannot delete a confirmed spool segment");
                }
                self.total_bytes -= s.bytes;
                freed += s.bytes;
            } else {
                break;
            }
        }
        // The segment being written: once everything in it is confirmed,
        // start afresh instead of keeping a file of confirmed records.
        if self.segments.len() == 1 {
            let s = &self.segments[0];
            if s.bytes >= self.segment_bytes / 4 && s.last_seq.is_some_and(|l| l < watermark) {
                let s = self.segments.pop_front().expect("one segment");
                self.writer = None;
                let _ = std::fs::remove_file(&s.path);
                self.total_bytes -= s.bytes;
                freed += s.bytes;
            }
        }
        freed
    }

    /// Persists the confirmed watermark (records below it need not be sent
    /// again after a restart).
    pub fn write_watermark(&self, watermark: u64) {
        let path = self.dir.join(WATERMARK_FILE);
        let tmp = self.dir.join(format!("{WATERMARK_FILE}.tmp"));
        let result = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(watermark.to_string().as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot persist the spool watermark");
        }
    }

    /// A cursor at the first record with seq >= `seq`.
    pub fn cursor_at(&self, seq: u64) -> ReadCursor {
        let segment = self
            .segments
            .iter()
            .rev()
            .find(|s| s.first_seq <= seq)
            .or(self.segments.front())
            .map_or(seq, |s| s.first_seq);
        ReadCursor { segment, offset: 0 }
    }

    /// Reads up to `max` records with seq >= `min_seq` from `cursor`,
    /// advancing it.
    ///
    /// # Errors
    /// [`SpoolError`] if a segment cannot be read.
    pub fn read(
        &self,
        cursor: &mut ReadCursor,
        min_seq: u64,
        max: usize,
    ) -> Result<Vec<(u64, OutgoingMessage)>, SpoolError> {
        let mut out = Vec::new();
        // The cursor's segment may have been released (all confirmed) and a
        // new one started: continue with the next segment after it.
        let start = match self
            .segments
            .iter()
            .position(|s| s.first_seq == cursor.segment)
        {
            Some(p) => p,
            None => match self
                .segments
                .iter()
                .position(|s| s.first_seq > cursor.segment)
            {
                Some(p) => {
                    *cursor = ReadCursor {
                        segment: self.segments[p].first_seq,
                        offset: 0,
                    };
                    p
                }
                None => return Ok(out),
            },
        };
        for (i, seg) in self.segments.iter().enumerate().skip(start) {
            if i > start {
                *cursor = ReadCursor {
                    segment: seg.first_seq,
                    offset: 0,
                };
            }
            if cursor.offset >= seg.bytes {
                continue;
            }
            let mut file = File::open(&seg.path).map_err(io("open", &seg.path))?;
            file.seek(SeekFrom::Start(cursor.offset))
                .map_err(io("seek", &seg.path))?;
            // Large reads: the publisher reads back a whole memory-load of
            // records at a time.
            let mut reader =
                BufReader::with_capacity(READ_BUFFER, file.take(seg.bytes - cursor.offset));
            while out.len() < max {
                match read_record(&mut reader, cursor.offset) {
                    Ok(Some((seq, msg, size))) => {
                        cursor.offset += size;
                        if seq >= min_seq {
                            out.push((seq, msg));
                        }
                    }
                    Ok(None) => break,
                    Err(bad) => {
                        tracing::error!(path = %seg.path.display(), offset = bad, "unreadable spool record; skipping the rest of the segment");
                        metrics::counter!("chatbus_ingestor_spool_corrupt_total").increment(1);
                        cursor.offset = seg.bytes;
                        break;
                    }
                }
            }
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }
}

fn read_watermark(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join(WATERMARK_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u64) -> OutgoingMessage {
        OutgoingMessage {
            routing_key: "chat.demo.c".into(),
            message_id: format!("id-{n}"),
            kind: EventKind::Message,
            platform: "demo".into(),
            channel: "c".into(),
            timestamp: n,
            body: format!("{{\"n\":{n}}}").into_bytes(),
        }
    }

    fn append(spool: &mut Spool, range: std::ops::Range<u64>) {
        let msgs: Vec<_> = range.map(|n| (n, msg(n))).collect();
        let refs: Vec<_> = msgs.iter().map(|(n, m)| (*n, m)).collect();
        spool.append(&refs).unwrap();
    }

    #[test]
    fn records_round_trip_across_segments_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, rec) = Spool::open(dir.path(), 1 << 30, 256).unwrap();
        assert_eq!(rec.records, 0);
        for i in 0..10 {
            append(&mut spool, i * 10..i * 10 + 10);
        }
        let mut cursor = spool.cursor_at(0);
        let all = spool.read(&mut cursor, 0, 1000).unwrap();
        assert_eq!(all.len(), 100);
        assert!(
            all.iter()
                .enumerate()
                .all(|(i, (s, m))| *s == i as u64 && *m == msg(i as u64))
        );
        drop(spool);
        let (spool, rec) = Spool::open(dir.path(), 1 << 30, 256).unwrap();
        assert_eq!(
            (rec.records, rec.first_seq, rec.last_seq),
            (100, Some(0), Some(99))
        );
        let mut cursor = spool.cursor_at(42);
        let from42 = spool.read(&mut cursor, 42, 5).unwrap();
        assert_eq!(
            from42.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [42, 43, 44, 45, 46]
        );
        let more = spool.read(&mut cursor, 42, 1000).unwrap();
        assert_eq!(more.first().unwrap().0, 47);
        assert_eq!(more.last().unwrap().0, 99);
    }

    #[test]
    fn appending_after_a_reopen_continues_in_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), 1 << 30, 1 << 20).unwrap();
        append(&mut spool, 0..5);
        drop(spool);
        let (mut spool, rec) = Spool::open(dir.path(), 1 << 30, 1 << 20).unwrap();
        assert_eq!(rec.last_seq, Some(4));
        append(&mut spool, 5..8);
        let mut c = spool.cursor_at(0);
        let all: Vec<u64> = spool
            .read(&mut c, 0, 100)
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(all, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn a_torn_tail_is_truncated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), 1 << 30, 1 << 20).unwrap();
        append(&mut spool, 0..5);
        drop(spool);
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let len = std::fs::metadata(&seg).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 3).unwrap();
        let (spool, rec) = Spool::open(dir.path(), 1 << 30, 1 << 20).unwrap();
        assert_eq!((rec.records, rec.last_seq), (4, Some(3)));
        let mut c = spool.cursor_at(0);
        assert_eq!(spool.read(&mut c, 0, 100).unwrap().len(), 4);
    }

    #[test]
    fn confirmed_segments_are_released_and_the_watermark_persists() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), 1 << 30, 200).unwrap();
        for i in 0..6 {
            append(&mut spool, i * 5..i * 5 + 5);
        }
        let before = spool.bytes();
        let freed = spool.release_below(12);
        assert!(freed > 0 && spool.bytes() == before - freed);
        let mut c = spool.cursor_at(0);
        let left = spool.read(&mut c, 0, 100).unwrap();
        assert!(
            left.first().unwrap().0 <= 12,
            "unconfirmed records are kept"
        );
        spool.write_watermark(12);
        drop(spool);
        let (_, rec) = Spool::open(dir.path(), 1 << 30, 200).unwrap();
        assert_eq!(rec.watermark, 12);
    }

    #[test]
    fn room_is_checked_against_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), 300, 100).unwrap();
        let m = msg(1);
        let size = Spool::record_size(&m);
        assert!(spool.has_room(size));
        append(&mut spool, 0..3);
        assert!(!spool.has_room(size));
    }

    #[test]
    fn records_with_the_older_json_header_are_still_read() {
        let m = OutgoingMessage {
            routing_key: "chat.demo.c".into(),
            message_id: "old-1".into(),
            kind: EventKind::Message,
            platform: "demo".into(),
            channel: "c".into(),
            timestamp: 7,
            body: b"{\"x\":1}".to_vec(),
        };
        let header = serde_json::to_vec(&Header {
            rk: &m.routing_key,
            id: &m.message_id,
            kind: m.kind,
            platform: &m.platform,
            channel: &m.channel,
            ts: m.timestamp,
        })
        .unwrap();
        let mut payload = Vec::new();
        payload.extend_from_slice(&41u64.to_le_bytes());
        payload.extend_from_slice(&(header.len() as u32).to_le_bytes());
        payload.extend_from_slice(&header);
        payload.extend_from_slice(&m.body);
        let mut record = Vec::new();
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("{:020}.{EXT}", 41)), &record).unwrap();
        let (spool, recovered) = Spool::open(dir.path(), 1 << 30, 1 << 20).unwrap();
        assert_eq!(recovered.records, 1);
        let mut cursor = spool.cursor_at(41);
        let got = spool.read(&mut cursor, 41, 10).unwrap();
        assert_eq!(got, [(41, m)]);
    }

    #[test]
    fn spool_files_are_private_to_their_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let (mut spool, _) = Spool::open(&spool_dir, 1 << 30, 1 << 20).unwrap();
        let m = OutgoingMessage {
            routing_key: "chat.demo.c".into(),
            message_id: "m".into(),
            kind: EventKind::Message,
            platform: "demo".into(),
            channel: "c".into(),
            timestamp: 1,
            body: b"{}".to_vec(),
        };
        spool.append(&[(0, &m)]).unwrap();
        spool.write_watermark(1);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&spool_dir), 0o700);
        for entry in std::fs::read_dir(&spool_dir).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
}
