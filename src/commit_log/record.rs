//! The commit-log record codec: pure functions over byte slices that never panic.
//!
//! Layout (little-endian, drawn in `docs/format.md`): a 64-byte header, then topic, key,
//! properties and body. The CRC32 covers every byte of the record except the CRC field itself,
//! and the record stores its own log offset, so a stale or misdirected record is rejected.
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use crc32fast::Hasher;

use crate::consume_queue::TimedQueue;
use crate::error::DecodeError;

/// `DSR1`: delaystore record, format 1.
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"DSR1");
/// Record format version written by this build.
pub const RECORD_VERSION: u8 = 1;
/// Fixed header length in bytes.
pub const HEADER_BYTES: usize = 64;
/// Longest topic name in bytes.
pub const TOPIC_BYTES_MAX: usize = 127;
/// Longest key in bytes.
pub const KEY_BYTES_MAX: usize = 1024;

const CRC_AT: usize = 8;

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A message put by a producer (delayed or not).
    Message,
    /// Padding to the end of a segment: a record never spans two segments.
    Filler,
    /// The delivery of a delayed message to its target queue: names its origin record (see
    /// [`OriginRef`]) instead of copying the payload.
    Delivery,
    /// A timer hop: moves a pending message (named by an [`OriginRef`]) from one timer slot
    /// queue to a lower tier's (see [`crate::timer`]). No topic, key, properties or payload.
    Hop,
    /// A cancellation: names the cancelled message with an [`OriginRef`] whose source is its
    /// first queue (a cancel consumes no entry).
    Cancel,
    /// Consumes a delayed message's queue entry without delivering it (cancelled, or its
    /// record is corrupt): names it with an [`OriginRef`].
    Discard,
}

impl RecordKind {
    fn to_byte(self) -> u8 {
        match self {
            RecordKind::Message => 1,
            RecordKind::Filler => 2,
            RecordKind::Delivery => 3,
            RecordKind::Hop => 4,
            RecordKind::Cancel => 5,
            RecordKind::Discard => 6,
        }
    }

    fn from_byte(byte: u8) -> Result<Self, DecodeError> {
        match byte {
            1 => Ok(RecordKind::Message),
            2 => Ok(RecordKind::Filler),
            3 => Ok(RecordKind::Delivery),
            4 => Ok(RecordKind::Hop),
            5 => Ok(RecordKind::Cancel),
            6 => Ok(RecordKind::Discard),
            _ => Err(DecodeError::BadField { field: "kind" }),
        }
    }

    /// Whether records of this kind name a user topic (the others have no topic bytes).
    pub fn has_topic(self) -> bool {
        match self {
            RecordKind::Message | RecordKind::Delivery => true,
            RecordKind::Filler | RecordKind::Hop | RecordKind::Cancel | RecordKind::Discard => {
                false
            }
        }
    }

    /// The exact body length of a control record, `None` for kinds with a free-form body.
    fn body_bytes(self) -> Option<usize> {
        match self {
            RecordKind::Message | RecordKind::Filler => None,
            RecordKind::Delivery | RecordKind::Hop | RecordKind::Discard | RecordKind::Cancel => {
                Some(ORIGIN_REF_BYTES)
            }
        }
    }
}

/// The decoded fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Whole record length in bytes.
    pub total_bytes: u32,
    /// Stored CRC32.
    pub crc: u32,
    /// Record kind.
    pub kind: RecordKind,
    /// Delay level (0 = none).
    pub delay_level: u8,
    /// Offset of this record in the commit log.
    pub log_offset: u64,
    /// Time the store accepted the record (ms since the epoch).
    pub store_ms: u64,
    /// Due time (ms since the epoch); 0 when not delayed.
    pub due_ms: u64,
    /// Logical offset in the consume queue the record is dispatched to.
    pub queue_offset: u64,
    /// Queue id within the topic.
    pub queue_id: u32,
    /// Topic length in bytes.
    pub topic_bytes: u16,
    /// Key length in bytes.
    pub key_bytes: u16,
    /// Encoded properties length in bytes.
    pub properties_bytes: u32,
    /// Body length in bytes.
    pub body_bytes: u32,
}

/// A fully validated record borrowed from a buffer.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// The header.
    pub header: RecordHeader,
    /// Topic name.
    pub topic: &'a str,
    /// Key (empty when none).
    pub key: &'a str,
    /// Encoded properties (see [`decode_properties`]).
    pub properties: &'a [u8],
    /// Body.
    pub body: &'a [u8],
}

/// The fields of a message or delivery record that are known before the commit-log lock is
/// taken.
#[derive(Debug, Clone, Copy)]
pub struct MessageFields<'a> {
    /// [`RecordKind::Message`] or [`RecordKind::Delivery`].
    pub kind: RecordKind,
    /// Topic name.
    pub topic: &'a str,
    /// Queue id.
    pub queue_id: u32,
    /// Key (empty when none).
    pub key: &'a str,
    /// Encoded properties.
    pub properties: &'a [u8],
    /// Body.
    pub body: &'a [u8],
    /// Delay level (0 = none).
    pub delay_level: u8,
}

/// The fields assigned under the commit-log lock, once the record's place is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Queue id (a hop's target timer slot is chosen from its store time).
    pub queue_id: u32,
    /// Offset in the commit log.
    pub log_offset: u64,
    /// Store time in ms.
    pub store_ms: u64,
    /// Due time in ms (0 = not delayed).
    pub due_ms: u64,
    /// Logical offset in its consume queue.
    pub queue_offset: u64,
}

/// A message record encoded except for its placement; see [`EncodedRecord::seal`].
#[derive(Debug, Clone)]
pub struct EncodedRecord {
    bytes: Vec<u8>,
    payload_crc: Hasher,
}

/// Encoded length of a message with these parts, or `None` on overflow.
pub fn message_bytes(topic: usize, key: usize, properties: usize, body: usize) -> Option<u64> {
    (HEADER_BYTES as u64)
        .checked_add(topic as u64)?
        .checked_add(key as u64)?
        .checked_add(properties as u64)?
        .checked_add(body as u64)
}

/// Encodes a message or delivery record. The caller has checked the lengths ([`message_bytes`] against
/// the store's limit, topic and key limits); lengths that do not fit their fields are an error.
pub fn encode_message(fields: &MessageFields<'_>) -> Result<EncodedRecord, DecodeError> {
    let total = message_bytes(
        fields.topic.len(),
        fields.key.len(),
        fields.properties.len(),
        fields.body.len(),
    )
    .ok_or(DecodeError::BadLength { length: u64::MAX })?;
    let too_long = |length: usize| DecodeError::BadLength {
        length: length as u64,
    };
    let total_u32 = u32::try_from(total).map_err(|_| DecodeError::BadLength { length: total })?;
    let topic_bytes =
        u16::try_from(fields.topic.len()).map_err(|_| too_long(fields.topic.len()))?;
    let key_bytes = u16::try_from(fields.key.len()).map_err(|_| too_long(fields.key.len()))?;
    let properties_bytes =
        u32::try_from(fields.properties.len()).map_err(|_| too_long(fields.properties.len()))?;
    let body_bytes = u32::try_from(fields.body.len()).map_err(|_| too_long(fields.body.len()))?;

    let mut bytes = Vec::with_capacity(total_u32 as usize);
    let header = RecordHeader {
        total_bytes: total_u32,
        crc: 0,
        kind: fields.kind,
        delay_level: fields.delay_level,
        log_offset: 0,
        store_ms: 0,
        due_ms: 0,
        queue_offset: 0,
        queue_id: fields.queue_id,
        topic_bytes,
        key_bytes,
        properties_bytes,
        body_bytes,
    };
    bytes.extend_from_slice(&header_bytes(&header));
    bytes.extend_from_slice(fields.topic.as_bytes());
    bytes.extend_from_slice(fields.key.as_bytes());
    bytes.extend_from_slice(fields.properties);
    bytes.extend_from_slice(fields.body);
    let mut payload_crc = Hasher::new();
    payload_crc.update(bytes.get(HEADER_BYTES..).unwrap_or_default());
    Ok(EncodedRecord { bytes, payload_crc })
}

impl EncodedRecord {
    /// Total encoded length.
    pub fn len_bytes(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Writes the placement into the header, computes the CRC, and returns the final bytes.
    /// Only the 64-byte header is hashed here; the payload's CRC was computed at encode time,
    /// outside the commit-log lock, and is combined in.
    pub fn seal(&mut self, placement: Placement) -> &[u8] {
        if let Some(header) = self.bytes.get_mut(..HEADER_BYTES) {
            put_u64(header, 16, placement.log_offset);
            put_u64(header, 24, placement.store_ms);
            put_u64(header, 32, placement.due_ms);
            put_u64(header, 40, placement.queue_offset);
            put_u32(header, 48, placement.queue_id);
            let mut crc = header_crc(header);
            crc.combine(&self.payload_crc);
            put_u32(header, CRC_AT, crc.finalize());
        }
        &self.bytes
    }
}

/// Encodes a filler record of `total_bytes` (>= [`HEADER_BYTES`]) at `log_offset`: the header
/// only; the bytes after it are left as they are (zero) and are not covered by the CRC.
pub fn encode_filler(log_offset: u64, total_bytes: u32, store_ms: u64) -> [u8; HEADER_BYTES] {
    let header = RecordHeader {
        total_bytes,
        crc: 0,
        kind: RecordKind::Filler,
        delay_level: 0,
        log_offset,
        store_ms,
        due_ms: 0,
        queue_offset: 0,
        queue_id: 0,
        topic_bytes: 0,
        key_bytes: 0,
        properties_bytes: 0,
        body_bytes: 0,
    };
    let mut bytes = header_bytes(&header);
    let crc = header_crc(&bytes).finalize();
    put_u32(&mut bytes, CRC_AT, crc);
    bytes
}

/// Decodes and checks the header at the start of `buf`, which was read from `log_offset`:
/// magic, version, kind, lengths and stored position. Does not check the CRC.
pub fn decode_header(buf: &[u8], log_offset: u64) -> Result<RecordHeader, DecodeError> {
    let header = buf.get(..HEADER_BYTES).ok_or(DecodeError::Truncated {
        needed: HEADER_BYTES as u64,
        available: buf.len() as u64,
    })?;
    let magic = get_u32(header, 0);
    if magic != RECORD_MAGIC {
        return Err(DecodeError::BadMagic { found: magic });
    }
    let version = get_u8(header, 12);
    if version != RECORD_VERSION {
        return Err(DecodeError::BadVersion {
            found: u32::from(version),
        });
    }
    let decoded = RecordHeader {
        total_bytes: get_u32(header, 4),
        crc: get_u32(header, CRC_AT),
        kind: RecordKind::from_byte(get_u8(header, 13))?,
        delay_level: get_u8(header, 14),
        log_offset: get_u64(header, 16),
        store_ms: get_u64(header, 24),
        due_ms: get_u64(header, 32),
        queue_offset: get_u64(header, 40),
        queue_id: get_u32(header, 48),
        topic_bytes: get_u16(header, 52),
        key_bytes: get_u16(header, 54),
        properties_bytes: get_u32(header, 56),
        body_bytes: get_u32(header, 60),
    };
    if get_u8(header, 15) != 0 {
        return Err(DecodeError::BadField { field: "flags" });
    }
    if decoded.queue_id >= crate::options::QUEUE_COUNT_MAX {
        return Err(DecodeError::BadField { field: "queue_id" });
    }
    if decoded.log_offset != log_offset {
        return Err(DecodeError::WrongPosition {
            stored: decoded.log_offset,
            actual: log_offset,
        });
    }
    let total = u64::from(decoded.total_bytes);
    if let Some(body_bytes) = decoded.kind.body_bytes() {
        let well_formed = decoded.key_bytes == 0
            && decoded.properties_bytes == 0
            && decoded.body_bytes as usize == body_bytes
            && (decoded.kind.has_topic() || decoded.topic_bytes == 0)
            && (decoded.kind == RecordKind::Delivery || decoded.delay_level == 0)
            && (decoded.kind != RecordKind::Hop
                || (decoded.queue_id < crate::timer::TIMER_SLOT_COUNT && decoded.due_ms > 0));
        if !well_formed {
            return Err(DecodeError::BadField { field: "control" });
        }
    }
    let expected = match decoded.kind {
        RecordKind::Filler => {
            let payload = u64::from(decoded.topic_bytes)
                + u64::from(decoded.key_bytes)
                + u64::from(decoded.properties_bytes)
                + u64::from(decoded.body_bytes);
            if payload != 0 || total < HEADER_BYTES as u64 {
                return Err(DecodeError::BadLength { length: total });
            }
            total
        }
        RecordKind::Message
        | RecordKind::Delivery
        | RecordKind::Hop
        | RecordKind::Cancel
        | RecordKind::Discard => message_bytes(
            usize::from(decoded.topic_bytes),
            usize::from(decoded.key_bytes),
            decoded.properties_bytes as usize,
            decoded.body_bytes as usize,
        )
        .unwrap_or(u64::MAX),
    };
    if expected != total {
        return Err(DecodeError::BadLength { length: total });
    }
    Ok(decoded)
}

/// Bytes of the record that are checked, counted from its first byte: the whole record for a
/// message or delivery, the 64-byte header for a filler (whose padding is not covered). The
/// CRC covers these bytes except its own field (bytes 8..12).
pub fn checked_bytes(header: &RecordHeader) -> u64 {
    match header.kind {
        RecordKind::Filler => HEADER_BYTES as u64,
        RecordKind::Message
        | RecordKind::Delivery
        | RecordKind::Hop
        | RecordKind::Cancel
        | RecordKind::Discard => u64::from(header.total_bytes),
    }
}

/// Bytes of an encoded [`OriginRef`].
pub const ORIGIN_REF_BYTES: usize = 32;

/// The body of a delivery, hop, discard or cancel record: which delayed message it moves (its origin
/// record), where that message's decision is kept (its first timed queue and offset there),
/// and which timed-queue entry this record consumes (the delivery dispatcher's progress is
/// derived from these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginRef {
    /// Log offset of the origin record (also the message id).
    pub log_offset: u64,
    /// Length of the origin record.
    pub record_bytes: u32,
    /// The timed queue whose entry this record consumes.
    pub source: TimedQueue,
    /// That entry's offset.
    pub source_offset: u64,
    /// The timed queue the origin was first dispatched to.
    pub first: TimedQueue,
    /// The origin's offset there.
    pub first_offset: u64,
}

impl OriginRef {
    /// Encodes as `[log_offset u64][record_bytes u32][source u16][first u16][source_offset
    /// u64][first_offset u64]`, queues by [`TimedQueue::to_id`].
    pub fn encode(&self) -> [u8; ORIGIN_REF_BYTES] {
        let mut out = [0u8; ORIGIN_REF_BYTES];
        put_u64(&mut out, 0, self.log_offset);
        put_u32(&mut out, 8, self.record_bytes);
        put_u16(&mut out, 12, self.source.to_id());
        put_u16(&mut out, 14, self.first.to_id());
        put_u64(&mut out, 16, self.source_offset);
        put_u64(&mut out, 24, self.first_offset);
        out
    }

    /// Decodes a delivery, hop or discard record's body.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        if body.len() != ORIGIN_REF_BYTES {
            return Err(DecodeError::BadLength {
                length: body.len() as u64,
            });
        }
        let queue = |at| {
            TimedQueue::from_id(get_u16(body, at)).ok_or(DecodeError::BadField {
                field: "timed queue",
            })
        };
        Ok(OriginRef {
            log_offset: get_u64(body, 0),
            record_bytes: get_u32(body, 8),
            source: queue(12)?,
            first: queue(14)?,
            source_offset: get_u64(body, 16),
            first_offset: get_u64(body, 24),
        })
    }
}

/// Decodes and fully validates a record (other than a filler) that starts at `buf[0]` and was read from
/// `log_offset`. `buf` must hold at least [`checked_bytes`] of the header.
pub fn decode_record(buf: &[u8], log_offset: u64) -> Result<RecordView<'_>, DecodeError> {
    let header = decode_header(buf, log_offset)?;
    let checked = usize::try_from(checked_bytes(&header)).unwrap_or(usize::MAX);
    let record = buf.get(..checked).ok_or(DecodeError::Truncated {
        needed: checked as u64,
        available: buf.len() as u64,
    })?;
    verify_crc(record, header.crc)?;
    let payload = record.get(HEADER_BYTES..).unwrap_or_default();
    let (topic, rest) = split(payload, usize::from(header.topic_bytes))?;
    let (key, rest) = split(rest, usize::from(header.key_bytes))?;
    let (properties, body) = split(rest, header.properties_bytes as usize)?;
    let topic = std::str::from_utf8(topic).map_err(|_| DecodeError::BadField { field: "topic" })?;
    if header.kind.has_topic() && crate::topic::topic_name_problem(topic).is_some() {
        return Err(DecodeError::BadField { field: "topic" });
    }
    let key = std::str::from_utf8(key).map_err(|_| DecodeError::BadField { field: "key" })?;
    match header.kind {
        RecordKind::Delivery | RecordKind::Hop | RecordKind::Discard | RecordKind::Cancel => {
            OriginRef::decode(body)?;
        }
        RecordKind::Message | RecordKind::Filler => {}
    }
    Ok(RecordView {
        header,
        topic,
        key,
        properties,
        body,
    })
}

/// Checks the CRC of a record's checked bytes (`record.len() == checked_bytes(header)`).
pub fn verify_crc(record: &[u8], stored: u32) -> Result<(), DecodeError> {
    let header = record.get(..HEADER_BYTES).unwrap_or(record);
    let mut crc = header_crc(header);
    crc.update(record.get(HEADER_BYTES..).unwrap_or_default());
    let computed = crc.finalize();
    if computed == stored {
        Ok(())
    } else {
        Err(DecodeError::BadChecksum { stored, computed })
    }
}

/// Encodes properties as a sequence of `[key_len u16][key][value_len u32][value]`.
pub fn encode_properties(properties: &[(String, String)]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    for (key, value) in properties {
        let key_len = u16::try_from(key.len()).map_err(|_| DecodeError::BadLength {
            length: key.len() as u64,
        })?;
        let value_len = u32::try_from(value.len()).map_err(|_| DecodeError::BadLength {
            length: value.len() as u64,
        })?;
        out.extend_from_slice(&key_len.to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&value_len.to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    Ok(out)
}

/// Decodes properties written by [`encode_properties`].
pub fn decode_properties(mut bytes: &[u8]) -> Result<Vec<(String, String)>, DecodeError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = split(bytes, 2)?;
        let (key, rest) = split(rest, usize::from(get_u16(len, 0)))?;
        let (len, rest) = split(rest, 4)?;
        let (value, rest) = split(rest, get_u32(len, 0) as usize)?;
        let text = |b: &[u8]| {
            std::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|_| DecodeError::BadField {
                    field: "properties",
                })
        };
        out.push((text(key)?, text(value)?));
        bytes = rest;
    }
    Ok(out)
}

fn header_bytes(header: &RecordHeader) -> [u8; HEADER_BYTES] {
    let mut b = [0u8; HEADER_BYTES];
    put_u32(&mut b, 0, RECORD_MAGIC);
    put_u32(&mut b, 4, header.total_bytes);
    put_u32(&mut b, CRC_AT, header.crc);
    put_u8(&mut b, 12, RECORD_VERSION);
    put_u8(&mut b, 13, header.kind.to_byte());
    put_u8(&mut b, 14, header.delay_level);
    put_u64(&mut b, 16, header.log_offset);
    put_u64(&mut b, 24, header.store_ms);
    put_u64(&mut b, 32, header.due_ms);
    put_u64(&mut b, 40, header.queue_offset);
    put_u32(&mut b, 48, header.queue_id);
    put_u16(&mut b, 52, header.topic_bytes);
    put_u16(&mut b, 54, header.key_bytes);
    put_u32(&mut b, 56, header.properties_bytes);
    put_u32(&mut b, 60, header.body_bytes);
    b
}

/// CRC state over the header without its CRC field.
fn header_crc(header: &[u8]) -> Hasher {
    let mut crc = Hasher::new();
    crc.update(header.get(..CRC_AT).unwrap_or_default());
    crc.update(header.get(CRC_AT + 4..).unwrap_or_default());
    crc
}

use crate::bytes::{get_u16, get_u32, get_u64, get_u8, put_u16, put_u32, put_u64, put_u8, split};
