//! What producers put and consumers pull.

use std::fmt;
use std::str::FromStr;

/// A message identifier: the commit-log offset of the record that stored it, unique within a
/// store. Shown as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for MessageId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(MessageId)
    }
}

/// A message to put.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Target topic.
    pub topic: String,
    /// Target queue; `None` picks one from the key's hash, or round-robin without a key.
    pub queue: Option<u32>,
    /// Optional key (at most 1024 bytes).
    pub key: Option<String>,
    /// User properties.
    pub properties: Vec<(String, String)>,
    /// Payload.
    pub body: Vec<u8>,
    /// Delay level (1-based index into the store's table); 0 delivers at once.
    pub delay_level: u8,
    /// An arbitrary delay from the store time, in ms (millisecond precision, up to
    /// `Options::delay_ms_max`; 0 delivers at once).
    pub delay_ms: Option<u64>,
    /// An absolute due time, in ms since the epoch by the store clock (a time already past
    /// delivers at once). At most one of `delay_level`, `delay_ms` and `deliver_at_ms` is set.
    pub deliver_at_ms: Option<u64>,
}

impl Message {
    /// A message for `topic` with `body`.
    pub fn new(topic: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Message {
            topic: topic.into(),
            body: body.into(),
            ..Message::default()
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the queue.
    pub fn with_queue(mut self, queue: u32) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Delays delivery by the store's `level`-th delay (1-based).
    pub fn with_delay_level(mut self, level: u8) -> Self {
        self.delay_level = level;
        self
    }

    /// Delays delivery by `delay_ms` (any value up to the store's `delay_ms_max`).
    pub fn with_delay_ms(mut self, delay_ms: u64) -> Self {
        self.delay_ms = Some(delay_ms);
        self
    }

    /// Delivers at `deliver_at_ms` (ms since the epoch, by the store clock).
    pub fn with_deliver_at_ms(mut self, deliver_at_ms: u64) -> Self {
        self.deliver_at_ms = Some(deliver_at_ms);
        self
    }

    /// Adds a property.
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }
}

/// The one definite answer of [`crate::Store::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CancelOutcome {
    /// The message was pending and will never be delivered (also the answer to a repeated
    /// cancel of the same message).
    Cancelled,
    /// The message was already delivered to its target queue (or was never delayed: it was
    /// visible from its put).
    AlreadyDelivered,
    /// No message with this id is stored (never put, removed by retention, or not a message).
    NotFound,
}

impl CancelOutcome {
    /// `cancelled`, `already_delivered` or `not_found`.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelOutcome::Cancelled => "cancelled",
            CancelOutcome::AlreadyDelivered => "already_delivered",
            CancelOutcome::NotFound => "not_found",
        }
    }
}

/// What a successful put returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutReceipt {
    /// The message id.
    pub id: MessageId,
    /// Topic.
    pub topic: String,
    /// Queue chosen.
    pub queue: u32,
    /// Logical offset in that queue; for a delayed message, its offset in its delay level's
    /// queue or first timer slot's queue (its offset in the target queue is assigned when it
    /// is delivered).
    pub queue_offset: u64,
    /// Store time in ms.
    pub store_ms: u64,
    /// Due time in ms, for a delayed message.
    pub due_ms: Option<u64>,
}

/// A message as consumers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The message id.
    pub id: MessageId,
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue: u32,
    /// Logical offset in the queue (commit `offset + 1` after processing it).
    pub queue_offset: u64,
    /// Key, if any.
    pub key: Option<String>,
    /// User properties.
    pub properties: Vec<(String, String)>,
    /// Payload.
    pub body: Vec<u8>,
    /// Time the store accepted the message, in ms.
    pub store_ms: u64,
    /// For a delayed message: when it was due, in ms.
    pub due_ms: Option<u64>,
    /// For a delayed message: when it was re-posted to this queue, in ms.
    pub delivered_ms: Option<u64>,
}
