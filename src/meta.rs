//! The store's persistent settings (`meta`): what must stay the same for every process that
//! opens the store, written at creation and whenever an open changes them (queue counts only
//! grow). A JSON payload inside the common frame (magic `DSMT`, version, CRC).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::delay_levels::{
    parse_delay_levels, DEFAULT_DELAY_LEVELS, DELAY_LEVELS_MAX, LEVEL_DELAY_MS_MAX,
};
use crate::error::{DecodeError, Error, Result};
use crate::framed::{frame, unframe};
use crate::io::{write_atomic, FileSystem};
use crate::options::{Options, QUEUE_COUNT_MAX, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN};

/// File name inside the store directory.
pub const META_FILE: &str = "meta";
/// `DSMT`.
pub const META_MAGIC: u32 = u32::from_le_bytes(*b"DSMT");
/// Store format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 2;
/// Queue count of a new store when the options do not say.
pub const DEFAULT_QUEUE_COUNT: u32 = 4;

/// The persistent settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreMeta {
    /// Queue count of topics not listed in `topic_queue_counts`.
    pub default_queue_count: u32,
    /// Queue count per topic.
    pub topic_queue_counts: BTreeMap<String, u32>,
    /// Delay of each level in ms (level 1 first).
    pub delay_levels_ms: Vec<u64>,
    /// Segment size the store was created with. Informational for the library (each open
    /// chooses the size of new segments); the CLI reopens with it.
    #[serde(default)]
    pub segment_bytes: Option<u64>,
}

impl StoreMeta {
    /// The meta of a new store created with `options`.
    pub fn for_new_store(options: &Options) -> Result<Self> {
        let table = options
            .delay_levels
            .as_deref()
            .unwrap_or(DEFAULT_DELAY_LEVELS);
        Ok(StoreMeta {
            default_queue_count: options.default_queue_count.unwrap_or(DEFAULT_QUEUE_COUNT),
            topic_queue_counts: options.topic_queue_counts.clone(),
            delay_levels_ms: parse_delay_levels(table)?,
            segment_bytes: Some(options.segment_bytes),
        })
    }

    /// Applies the options of a reopen: counts may grow, never shrink; a new delay table
    /// replaces the old one. Returns whether anything changed.
    pub fn merge(&mut self, options: &Options) -> Result<bool> {
        let mut changed = false;
        let mut grow = |current: &mut u32, wanted: u32, what: &str| -> Result<()> {
            if wanted < *current {
                return Err(Error::InvalidOptions {
                    name: "queue count",
                    reason: format!("{what} has {current} queues; cannot shrink to {wanted}"),
                });
            }
            if wanted > *current {
                *current = wanted;
                changed = true;
            }
            Ok(())
        };
        if let Some(wanted) = options.default_queue_count {
            grow(&mut self.default_queue_count, wanted, "the default")?;
        }
        for (topic, wanted) in &options.topic_queue_counts {
            let mut current = self.queue_count(topic);
            grow(&mut current, *wanted, topic)?;
            self.topic_queue_counts.insert(topic.clone(), current);
        }
        if let Some(table) = &options.delay_levels {
            let levels = parse_delay_levels(table)?;
            if levels != self.delay_levels_ms {
                self.delay_levels_ms = levels;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Queue count of a topic.
    pub fn queue_count(&self, topic: &str) -> u32 {
        self.topic_queue_counts
            .get(topic)
            .copied()
            .unwrap_or(self.default_queue_count)
    }

    /// Encodes into the framed file bytes.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain maps and integers cannot fail; an empty payload would be rejected
        // on read rather than accepted.
        let json = serde_json::to_vec(self).unwrap_or_default();
        frame(META_MAGIC, FORMAT_VERSION, &json)
    }

    /// Decodes framed bytes, and checks every value against the bounds options have (a
    /// queue count of 0 would make a put divide by zero; a bad table, deliver at random).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let payload = unframe(bytes, META_MAGIC, FORMAT_VERSION)?;
        let meta: StoreMeta = serde_json::from_slice(payload)
            .map_err(|_| DecodeError::BadField { field: "meta json" })?;
        let counts_ok = std::iter::once(&meta.default_queue_count)
            .chain(meta.topic_queue_counts.values())
            .all(|c| (1..=QUEUE_COUNT_MAX).contains(c));
        if !counts_ok {
            return Err(DecodeError::BadField {
                field: "meta queue count",
            });
        }
        let topics_ok = meta
            .topic_queue_counts
            .keys()
            .all(|t| crate::topic::validate_topic(t).is_ok());
        let levels_ok = (1..=DELAY_LEVELS_MAX).contains(&meta.delay_levels_ms.len())
            && meta
                .delay_levels_ms
                .iter()
                .all(|ms| (1..=LEVEL_DELAY_MS_MAX).contains(ms));
        let segment_ok = meta
            .segment_bytes
            .is_none_or(|b| (SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&b));
        if !(topics_ok && levels_ok && segment_ok) {
            return Err(DecodeError::BadField { field: "meta" });
        }
        Ok(meta)
    }

    /// Loads the meta of `dir`, if the store exists.
    pub fn load(fs: &dyn FileSystem, dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(META_FILE);
        if !fs.exists(&path) {
            return Ok(None);
        }
        let bytes = fs.read_file(&path).map_err(|e| Error::io(&path, e))?;
        match StoreMeta::decode(&bytes) {
            Ok(meta) => Ok(Some(meta)),
            Err(DecodeError::BadVersion { found }) => Err(Error::UnsupportedVersion {
                file: path,
                found,
                supported: FORMAT_VERSION,
            }),
            Err(kind) => Err(Error::Corruption {
                file: path,
                offset: 0,
                kind,
            }),
        }
    }

    /// Writes the meta of `dir` atomically.
    pub fn store(&self, fs: &dyn FileSystem, dir: &Path) -> Result<()> {
        let path = dir.join(META_FILE);
        write_atomic(fs, &path, &self.encode()).map_err(|e| Error::io(path, e))
    }
}
