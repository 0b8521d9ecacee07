//! The one public error type. Every failure a caller can see is a variant here, with the
//! structured facts needed to act on it (which file, which offset, which limit).
//!
//! Internal decoders return the small [`DecodeError`]; the component that knows the file and
//! offset turns it into a positioned [`Error::Corruption`].

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `delaystore`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed. `path` is the file it concerned, when known.
    #[error("I/O error on {path:?}: {source}")]
    Io {
        /// File the call concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The disk is full (`ENOSPC`): nothing was written, the store is consistent, and the same
    /// call succeeds once space is freed (retention frees segments; see `Options::retention_ms`
    /// and `Options::disk_usage_max_bytes`).
    #[error("disk full while writing {path:?}")]
    DiskFull {
        /// File the write concerned.
        path: PathBuf,
    },

    /// A file holds bytes that cannot be what the store wrote.
    #[error("corruption in {file:?} at byte {offset}: {kind}")]
    Corruption {
        /// File holding the bad bytes.
        file: PathBuf,
        /// Byte offset inside that file.
        offset: u64,
        /// What check failed.
        kind: DecodeError,
    },

    /// An earlier sync failed; the store refuses every write until it is reopened, because a
    /// retried fsync may report success without the data (REFERENCE.md section 5).
    #[error("store is poisoned by an earlier failed sync; reopen it to recover")]
    Poisoned,

    /// Another `Store` (in this or another process) holds the directory.
    #[error("store directory {dir:?} is locked by another open store")]
    Locked {
        /// The store directory.
        dir: PathBuf,
    },

    /// The store was closed.
    #[error("store is closed")]
    Closed,

    /// The encoded record would exceed `Options::message_bytes_max`.
    #[error("message of {bytes} bytes exceeds message_bytes_max = {bytes_max}")]
    MessageTooLarge {
        /// Encoded size of the record.
        bytes: u64,
        /// The configured limit.
        bytes_max: u64,
    },

    /// A topic name is empty, too long, reserved or has characters outside `[A-Za-z0-9._-]`.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopic {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A field of a message is out of its bounds (key or property too long...).
    #[error("invalid message: {reason}")]
    InvalidMessage {
        /// Why it was rejected.
        reason: String,
    },

    /// A consumer offset past the end of its queue (the offsets handed out so far).
    #[error("offset {offset} is past the end {end} of {topic:?} queue {queue}")]
    OffsetOutOfRange {
        /// Topic.
        topic: String,
        /// Queue id.
        queue: u32,
        /// Offset given.
        offset: u64,
        /// The queue's end (next logical offset).
        end: u64,
    },

    /// The queue id is not below the topic's queue count.
    #[error("topic {topic:?} has {queue_count} queues; queue {queue} does not exist")]
    UnknownQueue {
        /// Topic addressed.
        topic: String,
        /// Queue id asked for.
        queue: u32,
        /// The topic's queue count.
        queue_count: u32,
    },

    /// The delay level is not in the store's table (levels are 1..=table length; 0 = none).
    #[error("delay level {level} does not exist: the table has {levels} levels")]
    InvalidDelayLevel {
        /// Level asked for.
        level: u8,
        /// Number of levels in the table.
        levels: usize,
    },

    /// An arbitrary delay beyond `Options::delay_ms_max`.
    #[error("a delay of {delay_ms} ms exceeds delay_ms_max = {delay_ms_max} ms")]
    DelayTooLong {
        /// Delay asked for (for `deliver_at_ms`, from the store clock), ms.
        delay_ms: u64,
        /// The limit, ms.
        delay_ms_max: u64,
    },

    /// The directory holds no store and `Options::create_if_missing` is false.
    #[error("no store in {dir:?}")]
    StoreNotFound {
        /// The directory.
        dir: PathBuf,
    },

    /// An option is outside its documented bounds.
    #[error("invalid option {name}: {reason}")]
    InvalidOptions {
        /// Option name.
        name: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// The directory holds a store of a format this build cannot read.
    #[error("unsupported store format version {found} in {file:?} (this build reads {supported})")]
    UnsupportedVersion {
        /// File carrying the version.
        file: PathBuf,
        /// Version found.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
}

impl Error {
    /// Wraps an `io::Error` with the path it concerned.
    /// A full disk becomes [`Error::DiskFull`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::StorageFull {
            return Error::DiskFull { path: path.into() };
        }
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Why a pure decoder rejected bytes. Carries no position: the caller adds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the structure needs.
    #[error("truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// The magic number is wrong (or the bytes are zero: never written).
    #[error("bad magic {found:#010x}")]
    BadMagic {
        /// What was read.
        found: u32,
    },
    /// A format version this build does not know.
    #[error("unsupported version {found}")]
    BadVersion {
        /// What was read.
        found: u32,
    },
    /// The stored checksum does not match the bytes.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum {
        /// Stored CRC32.
        stored: u32,
        /// Computed CRC32.
        computed: u32,
    },
    /// A length field is impossible (too small, too large, or inconsistent with others).
    #[error("bad length {length}")]
    BadLength {
        /// The length read.
        length: u64,
    },
    /// The record's stored position is not where it was found (a stale or misdirected write).
    #[error("record claims offset {stored} but sits at {actual}")]
    WrongPosition {
        /// Position stored in the record.
        stored: u64,
        /// Position it was read from.
        actual: u64,
    },
    /// A field holds a value outside its domain (unknown kind, invalid UTF-8...).
    #[error("bad field {field}")]
    BadField {
        /// Field name.
        field: &'static str,
    },
}
