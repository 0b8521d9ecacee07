//! `replay`: re-posts chosen messages of a topic into a target topic and queue, each carrying a
//! deterministic idempotency key, so that running the same replay twice posts nothing the
//! second time.
//!
//! It works on an open [`Store`] through the public API only: messages are read with `pull`
//! (what consumers of the topic saw: immediate messages and delivered delayed ones) and
//! re-posted with `put`. The key is a property, [`REPLAY_KEY_PROPERTY`], whose value
//! [`replay_key`] derives from the source message id and the target; before posting, the target
//! topic is read and every key already present is skipped.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::message::{Message, MessageId, PutReceipt, StoredMessage};
use crate::options::Durability;
use crate::store::Store;
use crate::topic::queue_for_key;

/// Property carrying the idempotency key of a replayed message.
pub const REPLAY_KEY_PROPERTY: &str = "delaystore.replay_key";

/// Messages pulled per call.
const PULL_BATCH: usize = 1024;

/// The idempotency key of the copy of `source` posted to (`topic`, `queue`).
pub fn replay_key(source: MessageId, topic: &str, queue: u32) -> String {
    format!("{source}>{topic}/{queue}")
}

/// Which messages of a topic to replay. Every criterion given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySelection {
    /// Source topic.
    pub topic: String,
    /// Source queue; `None`: every queue of the topic.
    pub queue: Option<u32>,
    /// Message ids; empty: any.
    pub ids: Vec<MessageId>,
    /// Visible from (inclusive), in ms: the delivery time of a delayed message, the store time
    /// of an immediate one (when it reached the topic's consumers).
    pub since_ms: Option<u64>,
    /// Visible until (exclusive), in ms.
    pub until_ms: Option<u64>,
    /// Only delayed messages that were delivered.
    pub delivered_only: bool,
    /// First queue offset (inclusive).
    pub from_queue_offset: Option<u64>,
    /// Last queue offset (exclusive).
    pub to_queue_offset: Option<u64>,
}

impl ReplaySelection {
    fn matches(&self, message: &StoredMessage) -> bool {
        let visible_ms = message.delivered_ms.unwrap_or(message.store_ms);
        (self.ids.is_empty() || self.ids.contains(&message.id))
            && self.since_ms.is_none_or(|s| visible_ms >= s)
            && self.until_ms.is_none_or(|u| visible_ms < u)
            && (!self.delivered_only || message.delivered_ms.is_some())
            && self
                .to_queue_offset
                .is_none_or(|t| message.queue_offset < t)
    }
}

/// Where replayed messages go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayTarget {
    /// Target topic; `None`: the source topic.
    pub topic: Option<String>,
    /// Target queue; `None`: the source message's queue id if the target has it, otherwise
    /// the queue its idempotency key hashes to.
    pub queue: Option<u32>,
}

/// One message to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayItem {
    /// The message as consumers of the source saw it.
    pub source: StoredMessage,
    /// Target topic.
    pub topic: String,
    /// Target queue.
    pub queue: u32,
    /// Its idempotency key.
    pub key: String,
    /// Whether a message with this key is already in the target (it is then not posted).
    pub already_replayed: bool,
}

impl ReplayItem {
    /// The message to put.
    pub fn message(&self) -> Message {
        let mut properties: Vec<(String, String)> = self
            .source
            .properties
            .iter()
            .filter(|(k, _)| k != REPLAY_KEY_PROPERTY)
            .cloned()
            .collect();
        properties.push((REPLAY_KEY_PROPERTY.to_owned(), self.key.clone()));
        Message {
            topic: self.topic.clone(),
            queue: Some(self.queue),
            key: self.source.key.clone(),
            properties,
            body: self.source.body.clone(),
            // A replay re-posts what consumers already saw: at once, whatever its delay was.
            delay_level: 0,
            delay_ms: None,
            deliver_at_ms: None,
        }
    }
}

/// Reads every message of `topic` (queue `queue`, or all), from `from` on, in queue order.
fn read_topic(
    store: &Store,
    topic: &str,
    queue: Option<u32>,
    from: u64,
    mut each: impl FnMut(StoredMessage) -> Result<()>,
) -> Result<()> {
    let queues: Vec<u32> = match queue {
        Some(queue) => vec![queue],
        None => (0..store.queue_count(topic)?).collect(),
    };
    for queue in queues {
        let mut next = from;
        loop {
            let batch = store.pull(topic, queue, next, PULL_BATCH)?;
            let Some(last) = batch.last() else { break };
            next = last.queue_offset + 1;
            for message in batch {
                each(message)?;
            }
        }
    }
    Ok(())
}

/// Lists what a replay of `selection` into `target` would post, marking what is already there.
pub fn plan_replay(
    store: &Store,
    selection: &ReplaySelection,
    target: &ReplayTarget,
) -> Result<Vec<ReplayItem>> {
    let to_topic = target
        .topic
        .clone()
        .unwrap_or_else(|| selection.topic.clone());
    let to_count = store.queue_count(&to_topic)?;
    if let Some(queue) = target.queue {
        if queue >= to_count {
            return Err(Error::UnknownQueue {
                topic: to_topic,
                queue,
                queue_count: to_count,
            });
        }
    }
    let mut present = HashSet::new();
    read_topic(store, &to_topic, None, 0, |message| {
        if let Some((_, key)) = message
            .properties
            .iter()
            .find(|(k, _)| k == REPLAY_KEY_PROPERTY)
        {
            present.insert(key.clone());
        }
        Ok(())
    })?;
    let mut items = Vec::new();
    read_topic(
        store,
        &selection.topic,
        selection.queue,
        selection.from_queue_offset.unwrap_or(0),
        |message| {
            if selection.matches(&message) {
                let queue = match target.queue {
                    Some(queue) => queue,
                    None if message.queue < to_count => message.queue,
                    None => queue_for_key(&message.id.to_string(), to_count),
                };
                let key = replay_key(message.id, &to_topic, queue);
                items.push(ReplayItem {
                    already_replayed: present.contains(&key),
                    source: message,
                    topic: to_topic.clone(),
                    queue,
                    key,
                });
            }
            Ok(())
        },
    )?;
    Ok(items)
}

/// Posts every item not already replayed (nor posted earlier in this call); returns the
/// receipts in order.
pub fn apply_replay(
    store: &Store,
    items: &[ReplayItem],
    durability: Durability,
) -> Result<Vec<(String, PutReceipt)>> {
    let mut posted = HashSet::new();
    let mut receipts = Vec::new();
    for item in items {
        if item.already_replayed || !posted.insert(item.key.clone()) {
            continue;
        }
        let receipt = store.put_with(&item.message(), durability)?;
        receipts.push((item.key.clone(), receipt));
    }
    Ok(receipts)
}
