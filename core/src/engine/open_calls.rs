//! Open calls on a SQLite file: a start's call row waits in an append-only journal beside the
//! database until its call ends, instead of being written into `calls` at once.
//!
//! Writing the row into `calls` at the start cost a known caller's start about 40% of its CPU
//! at 1M customers (the writer thread's statements and commit, the log, the checkpoint's
//! copies; profiled), and the end rewrote the same row moments later. Now:
//!
//! - A new start appends its row to the journal (one `write` of one record, before it is
//!   answered: like SQLite's log with `synchronous=NORMAL`, it survives a crash of the process)
//!   and keeps where it is in a map, by tenant and call id.
//! - A retried start finds it there and replays it. A start whose call id is already in
//!   `calls` (it came after its end, or after its row was moved there) goes to the writer
//!   thread as before.
//! - The call's end moves the row into `calls` in its own transaction, before applying
//!   itself: the row is written once, with the end.
//! - A call that never ends is moved by the writer thread when its journal segment retires:
//!   the oldest segment, once the journal passes 256 MB or 500,000 open calls, or the
//!   segment is an hour old ([`LIMITS`]). A segment whose rows are all in `calls` is deleted.
//! - Whatever reads calls beyond the call path moves the rows it needs first: erasing or
//!   exporting a customer moves the open calls that matched them, a merge moves those that
//!   matched the merged customer (and they take its new id), and reading one call looks here.
//! - On opening, the journal is read back: every record whose call has no started row in
//!   `calls` is open again. A record cut short by a crash is skipped (its checksum), and so are
//!   blocks of zeros a crash of the machine left: reading goes on at the next whole record, so
//!   nothing after them is lost. Appends go to a new segment, never after such bytes.
//! - A full disk refuses the start with [`EngineError::Storage`] (503 `storage_full`), not as
//!   corrupt data; nothing of it is kept, and the next start goes to a new segment.
//!
//! Each record is `length (u32 LE) | crc32 of the body (u32 LE) | body (JSON)`; the body holds
//! its `format` ([`FORMAT`]), and a journal of a later format than this build's is refused.
//! An erased call's record is overwritten in place by `{"erased":true}` and spaces, under its
//! own checksum ([`OpenCalls::scrub`]): read back, it is passed over like the record of a call
//! that has its row.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::entities::call;
use crate::error::EngineError;

/// When segments close and retire.
#[derive(Clone, Copy)]
pub(super) struct Limits {
    /// A segment is closed (and a new one opened) past this size.
    pub(super) segment_bytes: u64,
    /// Past this much journal, the oldest segment retires.
    pub(super) max_bytes: u64,
    /// A segment retires when it is this old: a call that has not ended by then has probably
    /// lost its end (a platform that sent none), and its row goes to `calls`.
    pub(super) max_age: Duration,
    /// Past this many open calls, the oldest segment retires (each takes 100-150 bytes of
    /// memory, more with a long call id).
    pub(super) max_open: usize,
}

/// 16 MB segments; the oldest retires past 256 MB (some 550,000 starts) or 500,000 open calls
/// (about 70 MB of memory: 171 MB of peak RSS in the 1M benchmark with 360,000, 120 before),
/// or after an hour.
pub(super) const LIMITS: Limits = Limits {
    segment_bytes: 16 * 1024 * 1024,
    max_bytes: 256 * 1024 * 1024,
    max_age: Duration::from_secs(3600),
    max_open: 500_000,
};
/// Bytes before a record's body.
const HEADER: usize = 8;

/// What a start's record holds: the columns a start writes.
#[derive(Serialize, Deserialize)]
struct Record {
    tenant_id: i64,
    call_id: String,
    platform: String,
    ani: Option<String>,
    ani_withheld: bool,
    dnis: Option<String>,
    external_ids: String,
    matched_customer_id: Option<i64>,
    confidence: Option<f64>,
    band: Option<String>,
    recommended_action: Option<String>,
    signals: String,
    candidates: String,
    started_at: DateTime<Utc>,
    /// The record's format ([`FORMAT`]); records written before it was kept are format 1.
    #[serde(default = "first_format")]
    format: u32,
}

/// The format of the records this build writes. A journal holding a later one (written by a
/// newer build, then downgraded) is refused rather than read wrongly.
const FORMAT: u32 = 1;

fn first_format() -> u32 {
    1
}

impl Record {
    fn of(row: &call::Model) -> Self {
        Self {
            tenant_id: row.tenant_id,
            call_id: row.call_id.clone(),
            platform: row.platform.clone(),
            ani: row.ani.clone(),
            ani_withheld: row.ani_withheld,
            dnis: row.dnis.clone(),
            external_ids: row.external_ids.clone(),
            matched_customer_id: row.matched_customer_id,
            confidence: row.confidence,
            band: row.band.clone(),
            recommended_action: row.recommended_action.clone(),
            signals: row.signals.clone(),
            candidates: row.candidates.clone(),
            started_at: row.started_at.unwrap_or(row.created_at),
            format: FORMAT,
        }
    }

    /// The call row a start writes.
    fn into_row(self) -> call::Model {
        call::Model {
            id: 0,
            tenant_id: self.tenant_id,
            call_id: self.call_id,
            platform: self.platform,
            ani: self.ani,
            ani_withheld: self.ani_withheld,
            dnis: self.dnis,
            external_ids: self.external_ids,
            matched_customer_id: self.matched_customer_id,
            confidence: self.confidence,
            band: self.band,
            recommended_action: self.recommended_action,
            signals: self.signals,
            candidates: self.candidates,
            customer_id: None,
            status: call::STATUS_IN_PROGRESS.to_owned(),
            intent: None,
            intent_status: None,
            summary: None,
            variables: "{}".to_owned(),
            started_at: Some(self.started_at),
            ended_at: None,
            created_at: self.started_at,
            updated_at: self.started_at,
        }
    }
}

fn encode(row: &call::Model) -> Result<Vec<u8>, EngineError> {
    let body = serde_json::to_vec(&Record::of(row))?;
    let len = u32::try_from(body.len())
        .map_err(|_| EngineError::Corrupt("a start's record is too long".into()))?;
    let mut buf = Vec::with_capacity(HEADER + body.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    buf.extend_from_slice(&body);
    Ok(buf)
}

fn io(what: &str, e: &std::io::Error) -> EngineError {
    EngineError::storage(&format!("open calls journal: {what}"), e)
}

/// Where one open call's record is.
#[derive(Clone, Copy)]
struct Entry {
    segment: u64,
    offset: u64,
    len: u32,
    matched: Option<i64>,
    /// [`number_hash`] of the caller's number (0 without one): erasing a number finds its
    /// tenant's open calls from it without reading every record.
    number: u64,
}

/// A number's hash, for [`Entry::number`] (collisions are told apart by reading the record).
fn number_hash(number: Option<&str>) -> u64 {
    use std::hash::{Hash, Hasher};
    number.map_or(0, |n| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        n.hash(&mut h);
        h.finish() | 1
    })
}

struct Segment {
    file: File,
    len: u64,
    /// Records of it whose call is still open.
    live: usize,
    opened: Instant,
}

struct Inner {
    /// By tenant, then call id. Ordered maps, not hash maps: a hash map that outgrows its
    /// table moves every entry at once, under the lock every start takes (10-50 ms at a few
    /// hundred thousand open calls: the p99 of starts at half their throughput went to
    /// 30-80 ms); a B-tree grows a node at a time.
    calls: HashMap<i64, BTreeMap<Box<str>, Entry>>,
    /// The open calls whose start matched a customer, by (tenant, customer): erasure and
    /// export find theirs without looking through every open call while starts wait.
    by_customer: BTreeMap<(i64, i64), Vec<Box<str>>>,
    segments: BTreeMap<u64, Segment>,
    /// The segment records are appended to.
    current: u64,
    bytes: u64,
    /// Open calls (entries of `calls`).
    open: usize,
    /// Records appended since the journal was opened.
    appended: u64,
}

/// The segment being retired, read from its file, and how far its records were handed out.
struct Retiring {
    segment: u64,
    data: Vec<u8>,
    offset: usize,
}

/// What recording a start in the journal found.
pub(super) enum Opened {
    /// Its record was appended: the call is open.
    New,
    /// A start of this call is open already (a retry): its row.
    Earlier(Box<call::Model>),
}

/// The open calls of one database file (see the module documentation).
pub(super) struct OpenCalls {
    base: PathBuf,
    limits: Limits,
    /// Bumped by the writer after committing ends that found their call not open: a start
    /// that saw no row in `calls` looks again if it changed meanwhile (see
    /// [`OpenCalls::ends_seen`]).
    ends: AtomicU64,
    inner: Mutex<Inner>,
    /// Used by the writer thread only (see [`OpenCalls::retiring`]).
    retiring: Mutex<Option<Retiring>>,
    /// `<database>-starts.lock`, locked while this is open: one process at a time keeps a
    /// file's journal (another would take this one's segments for its own).
    _lock: File,
}

impl OpenCalls {
    /// Opens the journal beside `database` (files `<database>-starts.<n>`), reading back the
    /// calls that are still open: those for which `started` (tenant, call id) says that
    /// `calls` holds no started row. Appends go to a new segment.
    pub(super) fn open(
        database: &Path,
        limits: Limits,
        mut started: impl FnMut(i64, &str) -> Result<bool, EngineError>,
    ) -> Result<Self, EngineError> {
        let mut name = database.as_os_str().to_owned();
        name.push("-starts");
        let base = PathBuf::from(name);
        let lock = lock(&base, LOCK_WAIT)?;
        let mut inner = Inner {
            calls: HashMap::new(),
            by_customer: BTreeMap::new(),
            segments: BTreeMap::new(),
            current: 0,
            bytes: 0,
            open: 0,
            appended: 0,
        };
        for seq in existing_segments(&base)? {
            let path = segment_path(&base, seq);
            let mut file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .map_err(|e| io("open", &e))?;
            let mut data = Vec::new();
            file.read_to_end(&mut data).map_err(|e| io("read", &e))?;
            let mut live = 0;
            let mut offset = 0;
            let mut first_start = None;
            let mut skipped = 0;
            while let Some((at, record, len)) = next_record(&data, offset) {
                skipped += at - offset;
                let start = at as u64;
                offset = at + HEADER + len as usize;
                // An erased call's record (see `scrub`).
                let Some(record) = record else { continue };
                if record.format > FORMAT {
                    return Err(EngineError::Corrupt(format!(
                        "the open calls journal ({}) holds records of format {}, written by a \
                         newer version of Sticky Calls than this one (format {FORMAT}): run \
                         that version again",
                        path.display(),
                        record.format
                    )));
                }
                first_start.get_or_insert(record.started_at);
                if started(record.tenant_id, &record.call_id)? {
                    continue;
                }
                let entry = Entry {
                    segment: seq,
                    offset: start,
                    len,
                    matched: record.matched_customer_id,
                    number: number_hash(record.ani.as_deref()),
                };
                if !inner.add(record.tenant_id, record.call_id.into_boxed_str(), entry) {
                    continue;
                }
                live += 1;
                inner.open += 1;
            }
            if live == 0 {
                drop(file);
                std::fs::remove_file(&path).map_err(|e| io("remove", &e))?;
                continue;
            }
            skipped += data.len() - offset;
            if skipped > 0 {
                tracing::warn!(
                    segment = seq,
                    skipped,
                    "the open calls journal holds cut or zeroed bytes (a crash of the machine), \
                     skipped; the records around them are kept"
                );
            }
            inner.bytes += data.len() as u64;
            inner.segments.insert(
                seq,
                Segment {
                    file,
                    len: data.len() as u64,
                    live,
                    // Its age survives restarts: that of its first record.
                    opened: first_start
                        .and_then(|t| (Utc::now() - t).to_std().ok())
                        .and_then(|age| Instant::now().checked_sub(age))
                        .unwrap_or_else(Instant::now),
                },
            );
            inner.current = seq;
        }
        let fresh = inner.current + 1;
        inner.segments.insert(fresh, new_segment(&base, fresh)?);
        inner.current = fresh;
        Ok(Self {
            base,
            limits,
            ends: AtomicU64::new(0),
            inner: Mutex::new(inner),
            retiring: Mutex::new(None),
            _lock: lock,
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, EngineError> {
        self.inner
            .lock()
            .map_err(|_| EngineError::Corrupt("open calls: a thread panicked".into()))
    }

    /// The open call's start row, if it is open.
    pub(super) fn get(
        &self,
        tenant: i64,
        call_id: &str,
    ) -> Result<Option<call::Model>, EngineError> {
        let mut inner = self.lock()?;
        let Some(entry) = inner
            .calls
            .get(&tenant)
            .and_then(|t| t.get(call_id))
            .copied()
        else {
            return Ok(None);
        };
        inner.read(entry).map(Some)
    }

    /// Records a new start (appended before this returns), or finds an open start of the
    /// same call.
    pub(super) fn insert(&self, row: &call::Model) -> Result<Opened, EngineError> {
        // Encoded before the map is locked: every start and end waits for that lock.
        let record = encode(row)?;
        let mut inner = self.lock()?;
        if let Some(entry) = inner
            .calls
            .get(&row.tenant_id)
            .and_then(|t| t.get(row.call_id.as_str()))
            .copied()
        {
            return Ok(Opened::Earlier(Box::new(inner.read(entry)?)));
        }
        if inner.segments[&inner.current].len >= self.limits.segment_bytes {
            inner.rotate(&self.base)?;
        }
        let current = inner.current;
        let segment = inner
            .segments
            .get_mut(&current)
            .ok_or_else(|| EngineError::Corrupt("open calls: no current segment".into()))?;
        let offset = segment.len;
        // One `write` of the whole record: a crash of the process cannot cut it, only a
        // crash of the machine (then its checksum fails when the journal is read back).
        // With `STICKY_SYNC=full` the record is on the disk before the start is answered.
        let written = segment.file.write_all(&record).and_then(|()| {
            if crate::db::full_sync() {
                segment.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // Part of it may be written: cut it off, and append to a new segment from now on,
            // so that no record follows a damaged one.
            let _ = segment.file.set_len(offset);
            let _ = inner.rotate(&self.base);
            return Err(io("append", &e));
        }
        segment.len += record.len() as u64;
        segment.live += 1;
        inner.bytes += record.len() as u64;
        inner.open += 1;
        inner.appended += 1;
        inner.add(
            row.tenant_id,
            row.call_id.clone().into_boxed_str(),
            Entry {
                segment: current,
                offset,
                len: (record.len() - HEADER) as u32,
                matched: row.matched_customer_id,
                number: number_hash(row.ani.as_deref()),
            },
        );
        Ok(Opened::New)
    }

    /// The open calls whose start matched `customer`.
    pub(super) fn matching(
        &self,
        tenant: i64,
        customer: i64,
    ) -> Result<Vec<call::Model>, EngineError> {
        let mut inner = self.lock()?;
        let calls = inner.calls.get(&tenant);
        let entries: Vec<Entry> = inner
            .by_customer
            .get(&(tenant, customer))
            .into_iter()
            .flatten()
            .filter_map(|call_id| calls.and_then(|t| t.get(call_id)).copied())
            .collect();
        entries.into_iter().map(|e| inner.read(e)).collect()
    }

    /// The tenant's open calls from `number` (its own open calls only are looked through).
    pub(super) fn with_number(
        &self,
        tenant: i64,
        number: &str,
    ) -> Result<Vec<call::Model>, EngineError> {
        let hash = number_hash(Some(number));
        let mut inner = self.lock()?;
        let entries: Vec<Entry> = inner
            .calls
            .get(&tenant)
            .into_iter()
            .flat_map(|t| t.values())
            .filter(|e| e.number == hash)
            .copied()
            .collect();
        let rows: Result<Vec<call::Model>, EngineError> =
            entries.into_iter().map(|e| inner.read(e)).collect();
        Ok(rows?
            .into_iter()
            .filter(|r| r.ani.as_deref() == Some(number))
            .collect())
    }

    /// The tenant's open calls in segments opened more than `age` ago: those that may have
    /// started before then (none while segments retire within their age limit; after a long
    /// stop, until they do).
    pub(super) fn older_than(
        &self,
        tenant: i64,
        age: Duration,
    ) -> Result<Vec<call::Model>, EngineError> {
        let mut inner = self.lock()?;
        let old: Vec<u64> = inner
            .segments
            .iter()
            .filter(|(_, s)| s.opened.elapsed() > age)
            .map(|(&seq, _)| seq)
            .collect();
        if old.is_empty() {
            return Ok(Vec::new());
        }
        let entries: Vec<Entry> = inner
            .calls
            .get(&tenant)
            .into_iter()
            .flat_map(|t| t.values())
            .filter(|e| old.contains(&e.segment))
            .copied()
            .collect();
        entries.into_iter().map(|e| inner.read(e)).collect()
    }

    /// Overwrites every record of these calls of `tenant` that is not an open call's (see
    /// [`erased_record`]), and flushes the segments changed. For calls erased from `calls`:
    /// a record read back when the journal is opened counts as open if its call has no row,
    /// so the records of erased calls must go (their segments can outlive them, kept by other
    /// calls still open). Segments are read from their files without holding the map (starts
    /// do not wait); the map is held only to check that a record found is not an open call's.
    /// Returns how many records were overwritten.
    /// With `older_than`, only segments opened longer ago than that are looked through (a
    /// call's record is in a segment opened before the call started).
    pub(super) fn scrub(
        &self,
        tenant: i64,
        calls: &std::collections::HashSet<String>,
        older_than: Option<Duration>,
    ) -> Result<usize, EngineError> {
        use std::os::unix::fs::FileExt;
        if calls.is_empty() {
            return Ok(0);
        }
        let segments: Vec<u64> = self
            .lock()?
            .segments
            .iter()
            .filter(|(_, s)| older_than.is_none_or(|age| s.opened.elapsed() > age))
            .map(|(&seq, _)| seq)
            .collect();
        let mut scrubbed = 0;
        for seq in segments {
            let path = segment_path(&self.base, seq);
            let data = match std::fs::read(&path) {
                Ok(data) => data,
                // Deleted meanwhile: none of its calls is open.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("read a segment to erase from", &e)),
            };
            let mut found = Vec::new();
            let mut offset = 0;
            while let Some((at, record, len)) = next_record(&data, offset) {
                offset = at + HEADER + len as usize;
                if let Some(r) = record
                    && r.tenant_id == tenant
                    && calls.contains(&r.call_id)
                {
                    found.push((at as u64, len, r.call_id));
                }
            }
            if found.is_empty() {
                continue;
            }
            {
                // A call started again under the same id after its erasure is open: kept.
                let inner = self.lock()?;
                found.retain(|(at, _, call_id)| {
                    inner
                        .calls
                        .get(&tenant)
                        .and_then(|t| t.get(call_id.as_str()))
                        .is_none_or(|e| e.segment != seq || e.offset != *at)
                });
            }
            // Not the appending handle: writes through it would go to the end of the file.
            let file = match OpenOptions::new().write(true).open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("open a segment to erase from", &e)),
            };
            for (at, len, _) in &found {
                file.write_all_at(&erased_record(*len), *at)
                    .map_err(|e| io("erase from a segment", &e))?;
            }
            file.sync_data().map_err(|e| io("flush a segment", &e))?;
            scrubbed += found.len();
        }
        Ok(scrubbed)
    }

    /// Every open call.
    pub(super) fn all(&self) -> Result<Vec<call::Model>, EngineError> {
        let mut inner = self.lock()?;
        let entries: Vec<Entry> = inner
            .calls
            .values()
            .flat_map(BTreeMap::values)
            .copied()
            .collect();
        entries.into_iter().map(|e| inner.read(e)).collect()
    }

    /// Up to `max` open calls of the segment that is due to retire at `now`, if one is: the
    /// oldest, when the journal is past its size limits or the segment past its age limit, or
    /// when the server is `idle` (nothing started or ended for a while): then every open call
    /// retires, since its row costs nothing that a request waits for, and a call that ends
    /// later finds its row in `calls` as it would had its start written it.
    /// The caller moves them into `calls` and [`forget`](Self::forget)s them before asking
    /// again. The segment is read from its file (once, without holding the map), and the map
    /// is held only to check which of its records are still open: starts never wait for more
    /// than that.
    pub(super) fn retiring(
        &self,
        now: Instant,
        max: usize,
        idle: bool,
    ) -> Result<Vec<call::Model>, EngineError> {
        let oldest = {
            let mut inner = self.lock()?;
            let Some((&oldest, segment)) = inner.segments.first_key_value() else {
                return Ok(Vec::new());
            };
            let due = idle
                || inner.bytes > self.limits.max_bytes
                || inner.open > self.limits.max_open
                || now.duration_since(segment.opened) > self.limits.max_age;
            if !due || segment.live == 0 {
                return Ok(Vec::new());
            }
            if oldest == inner.current {
                // Retiring the segment being written: appends go to a new one from now on.
                inner.rotate(&self.base)?;
            }
            oldest
        };
        let mut retiring = self
            .retiring
            .lock()
            .map_err(|_| EngineError::Corrupt("open calls: a thread panicked".into()))?;
        if retiring.as_ref().is_none_or(|r| r.segment != oldest) {
            let data = std::fs::read(segment_path(&self.base, oldest))
                .map_err(|e| io("read a retiring segment", &e))?;
            *retiring = Some(Retiring {
                segment: oldest,
                data,
                offset: 0,
            });
        }
        let Some(r) = retiring.as_mut() else {
            return Ok(Vec::new());
        };
        let mut rows = Vec::new();
        while rows.len() < max {
            // The next records, then which of them are still open (and so still in this
            // segment, at this place).
            let mut next = Vec::new();
            while next.len() < max {
                let Some((body, len)) = decode(&r.data[r.offset..]) else {
                    break;
                };
                let offset = r.offset as u64;
                r.offset += HEADER + len as usize;
                if let Ok(record) = serde_json::from_slice::<Record>(body) {
                    next.push((offset, record));
                }
            }
            if next.is_empty() {
                *retiring = None;
                break;
            }
            let inner = self.lock()?;
            rows.extend(
                next.into_iter()
                    .filter(|(offset, record)| {
                        inner
                            .calls
                            .get(&record.tenant_id)
                            .and_then(|t| t.get(record.call_id.as_str()))
                            .is_some_and(|e| e.segment == oldest && e.offset == *offset)
                    })
                    .map(|(_, record)| record.into_row()),
            );
        }
        Ok(rows)
    }

    /// How many batches of ends that found their call not open have committed. A start reads
    /// it before looking for its call in `calls` and again after [`insert`](Self::insert):
    /// when it changed, an end of the same call may have committed in between without seeing
    /// the start, and the start looks again. The writer bumps it after the commit and then
    /// looks for those calls here: whichever looks last sees the other.
    pub(super) fn ends_seen(&self) -> u64 {
        self.ends.load(Ordering::SeqCst)
    }

    /// See [`ends_seen`](Self::ends_seen).
    pub(super) fn ends_committed(&self) {
        self.ends.fetch_add(1, Ordering::SeqCst);
    }

    /// Appends go to a new segment from now on: every record written before is in an older
    /// one, deleted once none of its calls is open.
    pub(super) fn close_segment(&self) -> Result<(), EngineError> {
        let mut inner = self.lock()?;
        inner.rotate(&self.base)
    }

    /// Whether the journal is past twice its size limits: then its segments retire without
    /// pauses (the limits are soft up to there).
    pub(super) fn far_past_limits(&self) -> bool {
        self.lock().is_ok_and(|i| {
            i.bytes > self.limits.max_bytes.saturating_mul(2)
                || i.open > self.limits.max_open.saturating_mul(2)
        })
    }

    /// Forgets calls whose row is now committed in `calls`; deletes the segments left with
    /// no open call.
    pub(super) fn forget<'a>(&self, calls: impl IntoIterator<Item = (i64, &'a str)>) {
        let Ok(mut inner) = self.lock() else {
            return;
        };
        let mut emptied = Vec::new();
        for (tenant, call_id) in calls {
            let Some(entry) = inner.remove(tenant, call_id) else {
                continue;
            };
            inner.open -= 1;
            if let Some(segment) = inner.segments.get_mut(&entry.segment) {
                segment.live = segment.live.saturating_sub(1);
                if segment.live == 0 {
                    emptied.push(entry.segment);
                }
            }
        }
        for seq in emptied {
            if seq != inner.current {
                inner.delete(&self.base, seq);
            }
        }
    }

    /// How many starts were appended since the journal was opened: the writer retires
    /// without pausing while none comes.
    pub(super) fn appended(&self) -> u64 {
        self.lock().map_or(0, |i| i.appended)
    }

    /// How many calls are open.
    pub(super) fn len(&self) -> usize {
        self.lock().map_or(0, |i| i.open)
    }

    /// The journal's size on disk, in bytes (every segment).
    pub(super) fn bytes(&self) -> u64 {
        self.lock().map_or(0, |i| i.bytes)
    }
}

impl Inner {
    /// Keeps an open call's place (and, if its start matched a customer, its call id under
    /// that customer); `false`, changing nothing, when the call is open already.
    fn add(&mut self, tenant: i64, call_id: Box<str>, entry: Entry) -> bool {
        let calls = self.calls.entry(tenant).or_default();
        if calls.contains_key(&call_id) {
            return false;
        }
        if let Some(customer) = entry.matched {
            self.by_customer
                .entry((tenant, customer))
                .or_default()
                .push(call_id.clone());
        }
        calls.insert(call_id, entry);
        true
    }

    /// Forgets an open call's place, and its call id under the customer it matched.
    fn remove(&mut self, tenant: i64, call_id: &str) -> Option<Entry> {
        let entry = self.calls.get_mut(&tenant)?.remove(call_id)?;
        if let Some(customer) = entry.matched
            && let Some(ids) = self.by_customer.get_mut(&(tenant, customer))
        {
            ids.retain(|id| &**id != call_id);
            if ids.is_empty() {
                self.by_customer.remove(&(tenant, customer));
            }
        }
        Some(entry)
    }

    /// Appends go to a new segment; the current one is deleted if no call of it is open.
    fn rotate(&mut self, base: &Path) -> Result<(), EngineError> {
        let previous = self.current;
        let next = previous + 1;
        let fresh = new_segment(base, next)?;
        self.segments.insert(next, fresh);
        self.current = next;
        if self.segments.get(&previous).is_some_and(|s| s.live == 0) {
            self.delete(base, previous);
        }
        Ok(())
    }

    /// Deletes a segment (none of its calls is open).
    fn delete(&mut self, base: &Path, seq: u64) {
        if let Some(segment) = self.segments.remove(&seq) {
            self.bytes = self.bytes.saturating_sub(segment.len);
            drop(segment);
            if let Err(e) = std::fs::remove_file(segment_path(base, seq)) {
                tracing::warn!(error = %e, "cannot delete a journal segment");
            }
        }
    }

    fn read(&mut self, entry: Entry) -> Result<call::Model, EngineError> {
        let segment = self
            .segments
            .get_mut(&entry.segment)
            .ok_or_else(|| EngineError::Corrupt("open calls: a segment is missing".into()))?;
        let mut buf = vec![0; HEADER + entry.len as usize];
        segment
            .file
            .seek(SeekFrom::Start(entry.offset))
            .and_then(|_| segment.file.read_exact(&mut buf))
            .map_err(|e| io("read", &e))?;
        let (body, _) = decode(&buf)
            .ok_or_else(|| EngineError::Corrupt("open calls: a record is damaged".into()))?;
        Ok(serde_json::from_slice::<Record>(body)?.into_row())
    }
}

/// The first record of `data` and its body's length, when it is whole and intact.
/// The first whole record at or after `from`: where it starts, what it holds, its body's
/// length. Damage (a record cut short, or zeroed blocks that a crash of the machine left
/// before records that reached the disk) is passed over a byte at a time until a record whose
/// checksum holds and whose body reads as a record: nothing after it is lost.
/// `None` for the record of an erased call, overwritten by [`OpenCalls::scrub`].
fn next_record(data: &[u8], from: usize) -> Option<(usize, Option<Record>, u32)> {
    (from..data.len()).find_map(|at| {
        let (body, len) = decode(&data[at..])?;
        if let Ok(record) = serde_json::from_slice::<Record>(body) {
            return Some((at, Some(record), len));
        }
        serde_json::from_slice::<Erased>(body)
            .ok()
            .filter(|e| e.erased)
            .map(|_| (at, None, len))
    })
}

/// What an erased call's record is overwritten with: `{"erased":true}` padded with spaces to
/// the record's length, under a checksum of its own, so that the records around it read as
/// before and nothing of the call is left in the file.
#[derive(Deserialize)]
struct Erased {
    erased: bool,
}

fn erased_record(len: u32) -> Vec<u8> {
    const BODY: &[u8] = b"{\"erased\":true}";
    let mut body = vec![b' '; len as usize];
    if body.len() < BODY.len() {
        // Shorter than any record: zeroes, which reading passes over.
        return vec![0; HEADER + len as usize];
    }
    body[..BODY.len()].copy_from_slice(BODY);
    let mut record = Vec::with_capacity(HEADER + body.len());
    record.extend_from_slice(&len.to_le_bytes());
    record.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    record.extend_from_slice(&body);
    record
}

fn decode(data: &[u8]) -> Option<(&[u8], u32)> {
    let len = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?);
    let crc = u32::from_le_bytes(data.get(4..8)?.try_into().ok()?);
    let body = data.get(HEADER..HEADER + len as usize)?;
    (crc32fast::hash(body) == crc).then_some((body, len))
}

/// How long opening waits for another holder of the journal's lock to let go (an engine of
/// this process being dropped: its writer thread ends within milliseconds).
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Locks `<base>.lock`, waiting up to `wait`.
fn lock(base: &Path, wait: Duration) -> Result<File, EngineError> {
    let mut name = base.as_os_str().to_owned();
    name.push(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PathBuf::from(name))
        .map_err(|e| io("open the lock", &e))?;
    let began = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if began.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(EngineError::Corrupt(
                    "another Sticky Calls server uses this SQLite file (its open calls' \
                     journal is locked): one server per database file"
                        .into(),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", &e)),
        }
    }
}

fn segment_path(base: &Path, seq: u64) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(format!(".{seq}"));
    PathBuf::from(name)
}

fn new_segment(base: &Path, seq: u64) -> Result<Segment, EngineError> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .open(segment_path(base, seq))
        .map_err(|e| io("create", &e))?;
    Ok(Segment {
        file,
        len: 0,
        live: 0,
        opened: Instant::now(),
    })
}

/// The numbers of the segments beside `base`, in order.
fn existing_segments(base: &Path) -> Result<Vec<u64>, EngineError> {
    let dir = match base.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(prefix) = base.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{prefix}.");
    let mut found: Vec<u64> = std::fs::read_dir(&dir)
        .map_err(|e| io("list", &e))?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.strip_prefix(&prefix)?.parse().ok())
        .collect();
    found.sort_unstable();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own in the temporary directory, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("sticky-open-calls-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn database(&self) -> PathBuf {
            self.0.join("calls.db")
        }

        fn base(&self) -> PathBuf {
            self.0.join("calls.db-starts")
        }

        /// The journal's segment files, by number.
        fn segments(&self) -> Vec<u64> {
            existing_segments(&self.base()).unwrap()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn row(tenant: i64, call_id: &str, matched: Option<i64>) -> call::Model {
        let at = DateTime::parse_from_rfc3339("2026-11-29T20:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        Record {
            tenant_id: tenant,
            call_id: call_id.to_owned(),
            platform: "api".to_owned(),
            ani: Some("+14155551234".to_owned()),
            ani_withheld: false,
            dnis: Some("+18005550100".to_owned()),
            external_ids: r#"{"crm_id":"42"}"#.to_owned(),
            matched_customer_id: matched,
            confidence: Some(0.97),
            band: Some("high".to_owned()),
            recommended_action: Some("greet_by_name".to_owned()),
            signals: r#"[{"signal":"ani_match","contribution":4.0,"detail":"x"}]"#.to_owned(),
            candidates: "[]".to_owned(),
            started_at: at,
            format: FORMAT,
        }
        .into_row()
    }

    const NOTHING_STARTED: fn(i64, &str) -> Result<bool, EngineError> = |_, _| Ok(false);

    /// Limits under which every record closes its segment and nothing retires.
    const TINY_SEGMENTS: Limits = Limits {
        segment_bytes: 1,
        max_bytes: u64::MAX,
        max_age: Duration::MAX,
        max_open: usize::MAX,
    };

    fn ids(rows: &[call::Model]) -> Vec<(i64, String)> {
        let mut ids: Vec<_> = rows
            .iter()
            .map(|r| (r.tenant_id, r.call_id.clone()))
            .collect();
        ids.sort();
        ids
    }

    /// Writes a segment file of the journal beside `dir`'s database by hand.
    fn write_segment(dir: &TempDir, seq: u64, bytes: &[u8]) {
        let mut base = dir.database().into_os_string();
        base.push("-starts");
        std::fs::write(segment_path(Path::new(&base), seq), bytes).unwrap();
    }

    /// What a crash of the machine can leave (blocks of zeros where a record did not reach
    /// the disk before later ones did, a record cut short at the end) loses only those bytes:
    /// the records after them are read back.
    #[test]
    fn zeroed_and_cut_bytes_lose_nothing_after_them() {
        let dir = TempDir::new("torn");
        let (a, b, c) = (row(1, "a", Some(7)), row(1, "b", None), row(2, "c", None));
        let mut bytes = encode(&a).unwrap();
        bytes.extend_from_slice(&[0; 37]);
        bytes.extend_from_slice(&encode(&b).unwrap());
        let torn = encode(&row(1, "torn", None)).unwrap();
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        bytes.extend_from_slice(&encode(&c).unwrap());
        bytes.extend_from_slice(&torn[..5]);
        write_segment(&dir, 1, &bytes);
        let open = OpenCalls::open(&dir.database(), LIMITS, NOTHING_STARTED).unwrap();
        assert_eq!(open.get(1, "a").unwrap(), Some(a));
        assert_eq!(open.get(1, "b").unwrap(), Some(b));
        assert_eq!(open.get(2, "c").unwrap(), Some(c));
        assert_eq!(open.get(1, "torn").unwrap(), None);
        assert_eq!(open.len(), 3);
    }

    /// Records carry their format: one written by a newer build is refused, with a message
    /// that says so, rather than read wrongly; one written before the format was kept reads
    /// as the first.
    #[test]
    fn a_record_of_a_later_format_is_refused_and_one_without_reads_as_the_first() {
        let record = |format: Option<u32>| {
            let mut body = serde_json::to_value(Record::of(&row(1, "a", None))).unwrap();
            match format {
                Some(f) => body["format"] = f.into(),
                None => {
                    body.as_object_mut().unwrap().remove("format");
                }
            }
            let body = serde_json::to_vec(&body).unwrap();
            let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
            bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            bytes.extend_from_slice(&body);
            bytes
        };
        let old = TempDir::new("format-old");
        write_segment(&old, 1, &record(None));
        let open = OpenCalls::open(&old.database(), LIMITS, NOTHING_STARTED).unwrap();
        assert_eq!(open.get(1, "a").unwrap(), Some(row(1, "a", None)));

        let newer = TempDir::new("format-new");
        write_segment(&newer, 1, &record(Some(FORMAT + 1)));
        match OpenCalls::open(&newer.database(), LIMITS, NOTHING_STARTED) {
            Err(EngineError::Corrupt(m)) => assert!(m.contains("newer version"), "{m}"),
            Err(e) => panic!("another error: {e}"),
            Ok(_) => panic!("a journal of a later format was opened"),
        }
    }

    /// A full disk refuses the start with an error that says so; nothing of it is kept, and
    /// the next start goes to a fresh segment (`/dev/full` answers every write with ENOSPC).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_is_an_error_that_says_so_and_keeps_nothing() {
        let dir = TempDir::new("full");
        let open = OpenCalls::open(&dir.database(), LIMITS, NOTHING_STARTED).unwrap();
        {
            let mut inner = open.lock().unwrap();
            let current = inner.current;
            inner.segments.get_mut(&current).unwrap().file =
                OpenOptions::new().append(true).open("/dev/full").unwrap();
        }
        match open.insert(&row(1, "a", None)) {
            Err(EngineError::Storage { full: true, detail }) => {
                assert!(detail.contains("open calls journal"), "{detail}");
            }
            Err(e) => panic!("not a full-disk error: {e}"),
            Ok(_) => panic!("a write to a full disk succeeded"),
        }
        assert_eq!(open.get(1, "a").unwrap(), None);
        assert_eq!(open.len(), 0);
        // Room again: the retried start is a new one, in a new segment.
        assert!(matches!(
            open.insert(&row(1, "a", None)).unwrap(),
            Opened::New
        ));
        drop(open);
        let reopened = OpenCalls::open(&dir.database(), LIMITS, NOTHING_STARTED).unwrap();
        assert_eq!(reopened.len(), 1);
    }

    #[test]
    fn a_start_is_kept_until_forgotten_and_read_back_after_reopening() {
        let dir = TempDir::new("reopen");
        let open = OpenCalls::open(&dir.database(), LIMITS, NOTHING_STARTED).unwrap();
        let a = row(1, "a", Some(7));
        assert!(matches!(open.insert(&a).unwrap(), Opened::New));
        assert!(matches!(
            open.insert(&row(1, "b", None)).unwrap(),
            Opened::New
        ));
        // The same call id in another tenant is another call.
        assert!(matches!(
            open.insert(&row(2, "a", None)).unwrap(),
            Opened::New
        ));
        match open.insert(&row(1, "a", None)).unwrap() {
            Opened::Earlier(earlier) => assert_eq!(*earlier, a, "the first start's row"),
            Opened::New => panic!("a retried start is not new"),
        }
        assert_eq!(open.get(1, "a").unwrap(), Some(a.clone()));
        assert_eq!(open.get(3, "a").unwrap(), None);
        assert_eq!(open.len(), 3);
        open.forget([(1, "b")]);
        drop(open);

        // Forgotten once its row is in the database, which says so when the journal is read.
        let open =
            OpenCalls::open(&dir.database(), LIMITS, |_, call_id| Ok(call_id == "b")).unwrap();
        assert_eq!(open.get(1, "a").unwrap(), Some(a));
        assert_eq!(open.get(1, "b").unwrap(), None);
        assert_eq!(open.len(), 2);
    }

    #[test]
    fn calls_the_database_holds_as_started_are_not_opened_again() {
        let dir = TempDir::new("started");
        let open = OpenCalls::open(&dir.database(), LIMITS, NOTHING_STARTED).unwrap();
        open.insert(&row(1, "a", None)).unwrap();
        open.insert(&row(1, "b", None)).unwrap();
        drop(open);

        let open =
            OpenCalls::open(&dir.database(), LIMITS, |_, call_id| Ok(call_id == "a")).unwrap();
        assert_eq!(open.get(1, "a").unwrap(), None);
        assert!(open.get(1, "b").unwrap().is_some());
    }

    #[test]
    fn a_record_cut_short_by_a_crash_is_skipped() {
        let dir = TempDir::new("cut");
        let open = OpenCalls::open(&dir.database(), LIMITS, NOTHING_STARTED).unwrap();
        open.insert(&row(1, "a", None)).unwrap();
        open.insert(&row(1, "b", None)).unwrap();
        drop(open);
        let path = segment_path(&dir.0.join("calls.db-starts"), dir.segments()[0]);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 3).unwrap();
        drop(file);

        let open = OpenCalls::open(&dir.database(), LIMITS, NOTHING_STARTED).unwrap();
        assert!(open.get(1, "a").unwrap().is_some());
        assert_eq!(open.get(1, "b").unwrap(), None);
    }

    #[test]
    fn a_segment_is_deleted_once_none_of_its_calls_is_open() {
        let dir = TempDir::new("delete");
        let open = OpenCalls::open(&dir.database(), TINY_SEGMENTS, NOTHING_STARTED).unwrap();
        for id in ["a", "b", "c"] {
            open.insert(&row(1, id, None)).unwrap();
        }
        // One segment per record, and the one being written.
        assert_eq!(dir.segments().len(), 3);
        open.forget([(1, "a"), (1, "c")]);
        assert_eq!(dir.segments().len(), 2, "c's segment is the current one");
        open.insert(&row(1, "d", None)).unwrap();
        assert_eq!(
            dir.segments().len(),
            2,
            "c's segment went with the rotation"
        );
        assert!(open.get(1, "b").unwrap().is_some());
        assert!(open.get(1, "d").unwrap().is_some());
        drop(open);

        // Reopened, a segment of no open call is deleted.
        let open = OpenCalls::open(&dir.database(), TINY_SEGMENTS, |_, call_id| {
            Ok(call_id == "b")
        })
        .unwrap();
        assert_eq!(ids(&open.all().unwrap()), [(1, "d".to_owned())]);
        assert_eq!(dir.segments().len(), 2, "d's, and a new one to write");
    }

    #[test]
    fn the_oldest_segment_retires_past_the_size_limit_or_its_age() {
        let dir = TempDir::new("retire");
        // Past one and a half records.
        let record = encode(&row(1, "a", None)).unwrap().len() as u64;
        let by_size = Limits {
            segment_bytes: 1,
            max_bytes: record * 3 / 2,
            max_age: Duration::MAX,
            max_open: usize::MAX,
        };
        let open = OpenCalls::open(&dir.database(), by_size, NOTHING_STARTED).unwrap();
        let now = Instant::now();
        open.insert(&row(1, "a", None)).unwrap();
        assert!(
            open.retiring(now, 10, false).unwrap().is_empty(),
            "under the limit"
        );
        open.insert(&row(1, "b", None)).unwrap();
        open.insert(&row(1, "c", None)).unwrap();
        assert_eq!(
            ids(&open.retiring(now, 10, false).unwrap()),
            [(1, "a".to_owned())]
        );
        open.forget([(1, "a")]);
        assert_eq!(
            ids(&open.retiring(now, 10, false).unwrap()),
            [(1, "b".to_owned())]
        );
        open.forget([(1, "b")]);
        assert!(open.retiring(now, 10, false).unwrap().is_empty());
        drop(open);

        let dir = TempDir::new("retire-age");
        let by_age = Limits {
            segment_bytes: u64::MAX,
            max_bytes: u64::MAX,
            max_age: Duration::from_secs(60),
            max_open: usize::MAX,
        };
        let open = OpenCalls::open(&dir.database(), by_age, NOTHING_STARTED).unwrap();
        for id in ["a", "b", "c"] {
            open.insert(&row(1, id, None)).unwrap();
        }
        assert!(open.retiring(Instant::now(), 10, false).unwrap().is_empty());
        let later = Instant::now() + Duration::from_secs(61);
        // The segment being written retires too: appends move to a new one.
        let first = open.retiring(later, 2, false).unwrap();
        assert_eq!(first.len(), 2, "a batch at most");
        open.forget(first.iter().map(|r| (r.tenant_id, r.call_id.as_str())));
        open.insert(&row(1, "d", None)).unwrap();
        let rest = open.retiring(later, 10, false).unwrap();
        let mut all = ids(&first);
        all.extend(ids(&rest));
        all.sort();
        let abc: Vec<(i64, String)> = ["a", "b", "c"].map(|c| (1, c.to_owned())).into();
        assert_eq!(all, abc);
        open.forget(rest.iter().map(|r| (r.tenant_id, r.call_id.as_str())));
        assert_eq!(dir.segments().len(), 1, "d's");
        assert_eq!(ids(&open.all().unwrap()), [(1, "d".to_owned())]);
    }

    #[test]
    fn an_idle_server_retires_every_open_call_however_young() {
        let dir = TempDir::new("idle");
        let open = OpenCalls::open(&dir.database(), LIMITS, NOTHING_STARTED).unwrap();
        for id in ["a", "b", "c"] {
            open.insert(&row(1, id, None)).unwrap();
        }
        let now = Instant::now();
        assert!(open.retiring(now, 10, false).unwrap().is_empty(), "busy");
        let first = open.retiring(now, 2, true).unwrap();
        assert_eq!(ids(&first), [(1, "a".to_owned()), (1, "b".to_owned())]);
        open.forget(first.iter().map(|r| (r.tenant_id, r.call_id.as_str())));
        // A start meanwhile goes to a new segment; the idle writer goes on with the old one.
        open.insert(&row(1, "d", None)).unwrap();
        let rest = open.retiring(now, 10, true).unwrap();
        assert_eq!(ids(&rest), [(1, "c".to_owned())]);
        open.forget([(1, "c")]);
        assert_eq!(
            ids(&open.retiring(now, 10, true).unwrap()),
            [(1, "d".to_owned())]
        );
        open.forget([(1, "d")]);
        assert_eq!(open.len(), 0);
        assert!(open.retiring(now, 10, true).unwrap().is_empty());
    }

    #[test]
    fn a_segment_read_back_keeps_the_age_of_its_first_record() {
        let dir = TempDir::new("age");
        let hour = Limits {
            max_age: Duration::from_secs(3600),
            ..LIMITS
        };
        let open = OpenCalls::open(&dir.database(), hour, NOTHING_STARTED).unwrap();
        let mut old = row(1, "old", None);
        old.started_at = Some(Utc::now() - chrono::Duration::hours(2));
        open.insert(&old).unwrap();
        assert!(
            open.retiring(Instant::now(), 10, false).unwrap().is_empty(),
            "new"
        );
        drop(open);

        let open = OpenCalls::open(&dir.database(), hour, NOTHING_STARTED).unwrap();
        assert_eq!(
            ids(&open.retiring(Instant::now(), 10, false).unwrap()),
            [(1, "old".to_owned())],
            "two hours old, not reborn by the restart"
        );
    }

    #[test]
    fn one_holder_at_a_time_keeps_a_journal() {
        let dir = TempDir::new("lock");
        let base = dir.0.join("calls.db-starts");
        let first = lock(&base, Duration::ZERO).unwrap();
        let refused = lock(&base, Duration::from_millis(50)).unwrap_err();
        assert!(refused.to_string().contains("one server per database file"));
        drop(first);
        lock(&base, Duration::ZERO).unwrap();
    }

    #[test]
    fn erased_calls_records_are_overwritten_and_stay_closed_after_reopening() {
        let dir = TempDir::new("scrub");
        let open = OpenCalls::open(&dir.database(), LIMITS, NOTHING_STARTED).unwrap();
        for (tenant, call_id) in [(1, "a"), (1, "b"), (2, "a"), (1, "c")] {
            open.insert(&row(tenant, call_id, Some(7))).unwrap();
        }
        // `a` and `c` of tenant 1 ended (their rows are in `calls`), then were erased.
        open.forget([(1, "a"), (1, "c")]);
        let erased: std::collections::HashSet<String> = ["a".into(), "c".into(), "b".into()].into();
        // `b` is still open: its record stays.
        assert_eq!(open.scrub(1, &erased, None).unwrap(), 2);
        assert_eq!(
            open.scrub(1, &erased, None).unwrap(),
            0,
            "already overwritten"
        );
        // Only segments older than an hour: none here.
        open.insert(&row(1, "d", None)).unwrap();
        open.forget([(1, "d")]);
        let d: std::collections::HashSet<String> = ["d".into()].into();
        assert_eq!(
            open.scrub(1, &d, Some(Duration::from_secs(3600))).unwrap(),
            0
        );
        drop(open);
        let bytes: Vec<u8> = dir
            .segments()
            .iter()
            .flat_map(|seq| std::fs::read(segment_path(&dir.base(), *seq)).unwrap())
            .collect();
        let holds = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(
            !holds(br#""call_id":"c""#),
            "nothing of an erased call is left in the files"
        );
        assert!(holds(br#""call_id":"b""#));
        // Read back with no rows in `calls`: the erased calls are not open again, the others
        // (tenant 2's call of the same id among them) are.
        let open = OpenCalls::open(&dir.database(), LIMITS, NOTHING_STARTED).unwrap();
        assert_eq!(
            ids(&open.all().unwrap()),
            [
                (1, "b".to_owned()),
                (1, "d".to_owned()),
                (2, "a".to_owned())
            ]
        );
    }

    #[test]
    fn a_numbers_open_calls_are_found_in_their_tenant_only() {
        let dir = TempDir::new("number");
        let open = OpenCalls::open(&dir.database(), LIMITS, NOTHING_STARTED).unwrap();
        let mut other = row(1, "b", None);
        other.ani = Some("+14155550199".into());
        open.insert(&row(1, "a", None)).unwrap();
        open.insert(&other).unwrap();
        open.insert(&row(2, "c", None)).unwrap();
        let number = row(1, "a", None).ani.unwrap();
        assert_eq!(
            ids(&open.with_number(1, &number).unwrap()),
            [(1, "a".to_owned())]
        );
        assert!(open.with_number(3, &number).unwrap().is_empty());
    }

    #[test]
    fn the_calls_a_customer_matched_are_found_in_their_tenant_only() {
        let dir = TempDir::new("matching");
        let open = OpenCalls::open(&dir.database(), LIMITS, NOTHING_STARTED).unwrap();
        open.insert(&row(1, "a", Some(7))).unwrap();
        open.insert(&row(1, "b", Some(8))).unwrap();
        open.insert(&row(2, "c", Some(7))).unwrap();
        open.insert(&row(1, "d", Some(7))).unwrap();
        open.insert(&row(1, "e", None)).unwrap();
        let mut found = ids(&open.matching(1, 7).unwrap());
        found.sort();
        assert_eq!(found, [(1, "a".to_owned()), (1, "d".to_owned())]);
        assert!(open.matching(3, 7).unwrap().is_empty());
        // An ended call is no longer found; the customer's other open call still is.
        open.forget([(1, "a")]);
        assert_eq!(ids(&open.matching(1, 7).unwrap()), [(1, "d".to_owned())]);
        open.forget([(1, "d")]);
        assert!(open.matching(1, 7).unwrap().is_empty());
        // Read back after reopening (the ended calls' rows now in `calls`): the index is
        // rebuilt from the records.
        drop(open);
        let open =
            OpenCalls::open(&dir.database(), LIMITS, |_, id| Ok(id == "a" || id == "d")).unwrap();
        assert_eq!(ids(&open.matching(1, 8).unwrap()), [(1, "b".to_owned())]);
        assert_eq!(ids(&open.matching(2, 7).unwrap()), [(2, "c".to_owned())]);
        assert!(open.matching(1, 7).unwrap().is_empty());
    }
}
