#![allow(clippy::unwrap_used, clippy::expect_used)]
//! One test per recovery case of `docs/recovery.md`; each function is named after its case.
//!
//! Every test checks the same invariant after recovery: every acknowledged message written
//! before the damage point is readable with its id, key, properties and body, and nothing that
//! was not put (or was cut) is returned. Then it puts more, closes, reopens and checks again.
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use common::{quiet_options, Model, RecordInfo};
use delaystore::checkpoint::Checkpoint;
use delaystore::consume_queue::QueueKey;
use delaystore::error::DecodeError;
use delaystore::io::RealFs;
use delaystore::recovery::CheckpointUse;
use delaystore::{Error, Message, RecoveryReport, Store};

const TOPICS: [&str; 2] = ["alpha", "beta"];

fn open(dir: &Path) -> Store {
    common::open(dir, quiet_options())
}

/// Puts `count` messages alternating over the two topics, numbered from `first`.
fn put_mixed(store: &Store, model: &mut Model, first: u64, count: u64) {
    for i in first..first + count {
        model.put(store, common::message(TOPICS[(i % 2) as usize], i));
    }
}

fn load_checkpoint(dir: &Path) -> Checkpoint {
    Checkpoint::load(&RealFs, dir)
        .expect("checkpoint decodes")
        .expect("checkpoint exists")
}

fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("checkpoint")
}

/// A store killed after `before` messages were checkpointed and `after` more were put (and
/// dispatched into the consume queues) without a checkpoint.
struct Crashed {
    dir: tempfile::TempDir,
    model: Model,
    /// Log end recorded by the last checkpoint.
    checkpoint_end: u64,
    /// Log end at the crash (end of the last acknowledged record).
    written_end: u64,
    /// The intact log, walked before any damage.
    records: Vec<RecordInfo>,
}

impl Crashed {
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn crash_after(before: u64, after: u64) -> Crashed {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut model = Model::new();
    put_mixed(&store, &mut model, 0, before);
    store.flush().unwrap();
    let checkpoint_end = load_checkpoint(dir.path()).log_end_offset;
    assert_eq!(checkpoint_end, store.stats().written_end_offset);
    put_mixed(&store, &mut model, before, after);
    // Everything is visible (and dispatched) before the crash.
    model.verify(&store);
    let written_end = store.stats().written_end_offset;
    store.simulate_crash();
    assert_eq!(
        load_checkpoint(dir.path()).log_end_offset,
        checkpoint_end,
        "a crash must not write a checkpoint"
    );
    let records = common::walk_log(dir.path());
    assert_eq!(records.last().map(|r| r.offset + r.len), Some(written_end));
    Crashed {
        dir,
        model,
        checkpoint_end,
        written_end,
        records,
    }
}

/// A store closed cleanly after `count` mixed messages.
fn closed_with(count: u64) -> (tempfile::TempDir, Model, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut model = Model::new();
    put_mixed(&store, &mut model, 0, count);
    let written_end = store.stats().written_end_offset;
    store.close().unwrap();
    (dir, model, written_end)
}

/// Records starting in `[from, to)`.
fn records_between(records: &[RecordInfo], from: u64, to: u64) -> u64 {
    records
        .iter()
        .filter(|r| r.offset >= from && r.offset < to)
        .count() as u64
}

/// The queues holding at least one surviving message at or after `from`.
fn queues_with_entries_from(model: &Model, from: u64) -> BTreeSet<QueueKey> {
    model
        .sent
        .iter()
        .filter(|s| s.receipt.id.0 >= from)
        .map(|s| QueueKey::Topic {
            topic: s.receipt.topic.clone(),
            queue_id: s.receipt.queue,
        })
        .collect()
}

fn set(keys: &[QueueKey]) -> BTreeSet<QueueKey> {
    keys.iter().cloned().collect()
}

fn topic_queue(topic: &str, queue_id: u32) -> QueueKey {
    QueueKey::Topic {
        topic: topic.to_owned(),
        queue_id,
    }
}

/// After recovery: the model holds, new puts land after the recovered end and are readable,
/// and a clean close and reopen needs no scan and still holds everything.
fn check_and_continue(dir: &Path, store: Store, model: &mut Model) {
    model.verify(&store);
    let end = store.recovery_report().log_end_offset;
    let first_new = model.sent.len();
    put_mixed(&store, model, 1_000_000, 120);
    assert!(
        model.sent[first_new].receipt.id.0 >= end,
        "a new record was placed below the recovered end"
    );
    model.verify(&store);
    store.close().unwrap();
    let store = open(dir);
    let report = store.recovery_report().clone();
    assert_eq!(
        report.checkpoint,
        CheckpointUse::Used {
            clean_shutdown: true
        }
    );
    assert_eq!(report.records_scanned, 0, "{report:?}");
    assert_eq!(report.torn_tail, None);
    assert!(report.queues_rebuilt.is_empty(), "{report:?}");
    model.verify(&store);
    store.close().unwrap();
}

/// Every segment listed as removed lay after the recovered end.
fn assert_removed_after_end(report: &RecoveryReport) {
    for path in &report.segments_removed {
        let base: u64 = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
        assert!(
            base > report.log_end_offset,
            "removed {path:?} below the end {}",
            report.log_end_offset
        );
    }
}

/// The bytes of the segment holding `cut`, from `cut` to the end of the file, are zero.
fn assert_tail_zeroed(dir: &Path, cut: u64) {
    let (path, at) = common::locate(dir, cut);
    let len = common::file_len(&path);
    assert!(
        common::is_zero(&path, at, len - at),
        "{path:?} is not zero after byte {at}"
    );
}

#[test]
fn r01_clean_reopen_skips_scan() {
    let (dir, mut model, written_end) = closed_with(2500);
    assert!(common::segments(dir.path()).len() >= 4);
    let store = open(dir.path());
    let report = store.recovery_report().clone();
    assert_eq!(
        report.checkpoint,
        CheckpointUse::Used {
            clean_shutdown: true
        }
    );
    assert_eq!(report.scan_from, written_end);
    assert_eq!(report.log_end_offset, written_end);
    assert_eq!(report.records_scanned, 0);
    assert_eq!(report.torn_tail, None);
    assert!(report.queues_truncated.is_empty(), "{report:?}");
    assert!(report.queues_rebuilt.is_empty(), "{report:?}");
    assert_eq!(report.entries_replayed, 0);
    assert_removed_after_end(&report);
    check_and_continue(dir.path(), store, &mut model);
}

#[test]
fn r02_crash_reopen_scans_from_checkpoint() {
    let mut c = crash_after(1200, 800);
    assert!(c.checkpoint_end > 0 && c.checkpoint_end < c.written_end);
    let store = open(c.path());
    let report = store.recovery_report().clone();
    assert_eq!(
        report.checkpoint,
        CheckpointUse::Used {
            clean_shutdown: false
        }
    );
    assert_eq!(report.scan_from, c.checkpoint_end);
    assert_eq!(report.log_end_offset, c.written_end);
    // Only the records after the checkpoint (messages and segment fillers) are scanned.
    let after = common::records_from(&c.records, c.checkpoint_end);
    assert!(after >= 800);
    assert_eq!(report.records_scanned, after);
    assert_eq!(report.torn_tail, None);
    // The queues held entries past the checkpoint: dropped, then replayed from the log.
    assert_eq!(
        set(&report.queues_truncated),
        queues_with_entries_from(&c.model, c.checkpoint_end)
    );
    assert!(report.queues_rebuilt.is_empty());
    assert_eq!(report.entries_replayed, 800);
    assert_removed_after_end(&report);
    check_and_continue(c.dir.path(), store, &mut c.model);
}

#[derive(Debug, Clone, Copy)]
enum TornKind {
    /// Non-zero garbage written after the last record.
    Garbage,
    /// The first half of a record written after the last record.
    PartialRecord,
    /// The last record's second half zeroed.
    LastRecordHalfZeroed,
}

#[test]
fn r03_torn_tail_cut() {
    for kind in [
        TornKind::Garbage,
        TornKind::PartialRecord,
        TornKind::LastRecordHalfZeroed,
    ] {
        let mut c = crash_after(600, 400);
        let last = *c.records.last().unwrap();
        assert_eq!(last.offset, c.model.last_id());
        let (path, at) = common::locate(c.path(), c.written_end);
        let room = common::file_len(&path) - at;
        let cut = match kind {
            TornKind::Garbage => {
                assert!(room >= 100);
                common::write_bytes(&path, at, &[0xA5; 100]);
                c.written_end
            }
            TornKind::PartialRecord => {
                let (last_path, last_at) = common::locate(c.path(), last.offset);
                let mut bytes = common::read_bytes(&last_path, last_at, last.len);
                bytes[16..24].copy_from_slice(&c.written_end.to_le_bytes());
                let half = bytes.len() / 2;
                assert!(room >= last.len);
                common::write_bytes(&path, at, &bytes[..half]);
                c.written_end
            }
            TornKind::LastRecordHalfZeroed => {
                let (last_path, last_at) = common::locate(c.path(), last.offset);
                common::zero_bytes(&last_path, last_at + last.len / 2, last.len - last.len / 2);
                c.model.cut_at(last.offset);
                last.offset
            }
        };
        let store = open(c.path());
        let report = store.recovery_report().clone();
        let what = format!("{kind:?}: {report:?}");
        assert_eq!(
            report.checkpoint,
            CheckpointUse::Used {
                clean_shutdown: false
            },
            "{what}"
        );
        assert_eq!(report.log_end_offset, cut, "{what}");
        let torn = report.torn_tail.clone().expect("torn tail reported");
        let (cut_path, cut_at) = common::locate(c.path(), cut);
        assert_eq!(torn.log_offset, cut, "{what}");
        assert_eq!(
            (torn.file.clone(), torn.offset),
            (cut_path, cut_at),
            "{what}"
        );
        match kind {
            TornKind::Garbage => {
                assert_eq!(
                    torn.kind,
                    DecodeError::BadMagic { found: 0xA5A5_A5A5 },
                    "{what}"
                )
            }
            _ => assert!(
                matches!(torn.kind, DecodeError::BadChecksum { .. }),
                "{what}"
            ),
        }
        assert_eq!(
            report.records_scanned,
            records_between(&c.records, c.checkpoint_end, cut),
            "{what}"
        );
        assert_tail_zeroed(c.path(), cut);
        assert_removed_after_end(&report);
        check_and_continue(c.dir.path(), store, &mut c.model);
    }
}

#[test]
fn r04_zeroed_tail() {
    let mut c = crash_after(600, 400);
    let last = *c.records.last().unwrap();
    let (path, at) = common::locate(c.path(), last.offset);
    common::zero_bytes(&path, at, last.len);
    c.model.cut_at(last.offset);
    let store = open(c.path());
    let report = store.recovery_report().clone();
    // Zeros are "never written", not damage: the log simply ends earlier.
    assert_eq!(report.torn_tail, None, "{report:?}");
    assert_eq!(report.log_end_offset, last.offset);
    assert_eq!(
        report.records_scanned,
        records_between(&c.records, c.checkpoint_end, last.offset)
    );
    assert_eq!(report.entries_replayed, 399);
    assert_tail_zeroed(c.path(), last.offset);
    check_and_continue(c.dir.path(), store, &mut c.model);
}

#[test]
fn r05_flipped_byte_in_last_record() {
    // After a crash: the last record lies after the checkpoint; the scan's CRC check stops
    // at it.
    let mut c = crash_after(600, 400);
    let last = *c.records.last().unwrap();
    let (path, at) = common::locate(c.path(), last.offset);
    common::flip_byte(&path, at + last.len - 1); // last body byte
    c.model.cut_at(last.offset);
    let store = open(c.path());
    let report = store.recovery_report().clone();
    assert_eq!(
        report.checkpoint,
        CheckpointUse::Used {
            clean_shutdown: false
        }
    );
    let torn = report.torn_tail.clone().expect("torn tail reported");
    assert_eq!(torn.file, path);
    assert_eq!(torn.offset, at);
    assert_eq!(torn.log_offset, last.offset);
    assert!(
        matches!(torn.kind, DecodeError::BadChecksum { .. }),
        "{torn:?}"
    );
    assert_eq!(report.log_end_offset, last.offset);
    assert_tail_zeroed(c.path(), last.offset);
    check_and_continue(c.dir.path(), store, &mut c.model);

    // After a clean close: the flipped record is the checkpoint's last record, so the
    // checkpoint is rejected and a full scan finds and cuts it.
    let (dir, mut model, _) = closed_with(1000);
    let last_id = model.last_id();
    assert_eq!(load_checkpoint(dir.path()).last_record_offset, last_id);
    let (path, at) = common::locate(dir.path(), last_id);
    common::flip_byte(&path, at + 70); // inside the topic/key/properties
    model.cut_at(last_id);
    let store = open(dir.path());
    let report = store.recovery_report().clone();
    match &report.checkpoint {
        CheckpointUse::Rejected { reason } => {
            assert!(reason.contains(&last_id.to_string()), "{reason}")
        }
        other => panic!("checkpoint not rejected: {other:?}"),
    }
    assert_eq!(report.scan_from, 0);
    let torn = report.torn_tail.clone().expect("torn tail reported");
    assert_eq!(
        (torn.file.clone(), torn.offset, torn.log_offset),
        (path, at, last_id)
    );
    assert!(
        matches!(torn.kind, DecodeError::BadChecksum { .. }),
        "{torn:?}"
    );
    assert_eq!(report.log_end_offset, last_id);
    check_and_continue(dir.path(), store, &mut model);
}

#[test]
fn r06_record_at_wrong_position() {
    let mut c = crash_after(600, 400);
    // A valid record from earlier in the log, copied whole after the last one: magic, length
    // and CRC are right, but it claims its old offset.
    let source = c.model.sent[10].receipt.id.0;
    let info = *c.records.iter().find(|r| r.offset == source).unwrap();
    let (src_path, src_at) = common::locate(c.path(), source);
    let bytes = common::read_bytes(&src_path, src_at, info.len);
    let (path, at) = common::locate(c.path(), c.written_end);
    assert!(common::file_len(&path) - at >= info.len);
    common::write_bytes(&path, at, &bytes);
    let store = open(c.path());
    let report = store.recovery_report().clone();
    let torn = report.torn_tail.clone().expect("torn tail reported");
    assert_eq!(
        torn.kind,
        DecodeError::WrongPosition {
            stored: source,
            actual: c.written_end
        }
    );
    assert_eq!((torn.file.clone(), torn.offset), (path, at));
    assert_eq!(report.log_end_offset, c.written_end);
    assert_tail_zeroed(c.path(), c.written_end);
    // verify() fails on a duplicate of message 10.
    check_and_continue(c.dir.path(), store, &mut c.model);
}

#[test]
fn r07_segments_after_end_removed() {
    let mut c = crash_after(600, 400);
    let (active, _) = common::locate(c.path(), c.written_end);
    let segment_bytes = common::file_len(&active);
    let active_base: u64 = active
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let next = active_base + segment_bytes;
    let after_next = next + segment_bytes;
    // The segment after the active one holds garbage (the preallocator may have created it
    // already, zero-filled); the one after that is an extra zero-filled segment.
    let next_path = common::segment_path(c.path(), next);
    if !next_path.exists() {
        fs::write(&next_path, vec![0u8; segment_bytes as usize]).unwrap();
    }
    common::write_bytes(&next_path, 0, &[0x5Au8; 300]);
    let after_path = common::segment_path(c.path(), after_next);
    fs::write(&after_path, vec![0u8; segment_bytes as usize]).unwrap();
    let expected: BTreeSet<PathBuf> = common::segments(c.path())
        .into_iter()
        .filter(|(base, _)| *base > active_base)
        .map(|(_, path)| path)
        .collect();
    assert_eq!(expected.len(), 2);

    let store = open(c.path());
    let report = store.recovery_report().clone();
    assert_eq!(report.torn_tail, None, "{report:?}");
    assert_eq!(report.log_end_offset, c.written_end);
    let removed: BTreeSet<PathBuf> = report.segments_removed.iter().cloned().collect();
    assert_eq!(removed, expected);
    assert!(!after_path.exists(), "extra segment still on disk");
    // The preallocator may have created the next segment again: then it is all zeros.
    if let Ok(bytes) = fs::read(&next_path) {
        assert!(
            bytes.iter().all(|&b| b == 0),
            "garbage segment still on disk"
        );
    }
    check_and_continue(c.dir.path(), store, &mut c.model);
}

fn check_full_scan(c: &Crashed, report: &RecoveryReport) {
    assert_eq!(report.scan_from, 0);
    assert_eq!(report.records_scanned, c.records.len() as u64);
    assert_eq!(report.log_end_offset, c.written_end);
    assert_eq!(report.torn_tail, None);
    // Without trusted counts, every queue is cut to nothing and replayed from the log.
    assert_eq!(
        set(&report.queues_truncated),
        queues_with_entries_from(&c.model, 0)
    );
    assert_eq!(report.entries_replayed, c.model.sent.len() as u64);
}

#[test]
fn r08_missing_checkpoint_full_scan() {
    let mut c = crash_after(1000, 600);
    fs::remove_file(checkpoint_path(c.path())).unwrap();
    let store = open(c.path());
    let report = store.recovery_report().clone();
    assert_eq!(report.checkpoint, CheckpointUse::Missing);
    check_full_scan(&c, &report);
    check_and_continue(c.dir.path(), store, &mut c.model);
}

#[test]
fn r09_corrupt_checkpoint_full_scan() {
    for truncate in [false, true] {
        let mut c = crash_after(1000, 600);
        let path = checkpoint_path(c.path());
        let len = common::file_len(&path);
        if truncate {
            let bytes = fs::read(&path).unwrap();
            fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        } else {
            common::flip_byte(&path, len / 2);
        }
        let store = open(c.path());
        let report = store.recovery_report().clone();
        match &report.checkpoint {
            CheckpointUse::Rejected { reason } => {
                let expected = if truncate { "length" } else { "checksum" };
                assert!(reason.contains(expected), "{reason}");
                assert!(
                    reason.contains("checkpoint"),
                    "reason names the file: {reason}"
                );
            }
            other => panic!("checkpoint not rejected: {other:?}"),
        }
        check_full_scan(&c, &report);
        check_and_continue(c.dir.path(), store, &mut c.model);
    }
}

#[test]
fn r10_stale_checkpoint() {
    // The stale checkpoint is either one written by flush() or the clean one of a close; a
    // topic created after it has no count in it at all.
    for clean in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let mut model = Model::new();
        put_mixed(&store, &mut model, 0, 500);
        let stale = if clean {
            store.close().unwrap();
            let stale = fs::read(checkpoint_path(dir.path())).unwrap();
            store = open(dir.path());
            stale
        } else {
            store.flush().unwrap();
            fs::read(checkpoint_path(dir.path())).unwrap()
        };
        let stale_end = Checkpoint::decode(&stale).unwrap().log_end_offset;
        put_mixed(&store, &mut model, 500, 500);
        model.put_many(&store, "late", 0, 100);
        store.flush().unwrap();
        assert!(load_checkpoint(dir.path()).log_end_offset > stale_end);
        put_mixed(&store, &mut model, 1000, 400);
        model.verify(&store);
        store.simulate_crash();
        let records = common::walk_log(dir.path());
        fs::write(checkpoint_path(dir.path()), &stale).unwrap();

        let store = open(dir.path());
        let report = store.recovery_report().clone();
        assert_eq!(
            report.checkpoint,
            CheckpointUse::Used {
                clean_shutdown: clean
            }
        );
        assert_eq!(report.scan_from, stale_end);
        assert_eq!(
            report.records_scanned,
            common::records_from(&records, stale_end)
        );
        assert_eq!(report.entries_replayed, 1000, "no entry replayed twice");
        assert_eq!(
            set(&report.queues_truncated),
            queues_with_entries_from(&model, stale_end)
        );
        assert!(report.queues_rebuilt.is_empty(), "{report:?}");
        check_and_continue(dir.path(), store, &mut model);
    }
}

#[test]
fn r11_consume_queue_deleted_rebuilt() {
    let (dir, mut model, _) = closed_with(1200);
    let lost = topic_queue("alpha", 1);
    let count = model.expected("alpha", 1).len() as u64;
    assert!(count > 64, "the queue spans several files");
    fs::remove_dir_all(common::queue_dir(dir.path(), "alpha", 1)).unwrap();
    let store = open(dir.path());
    let report = store.recovery_report().clone();
    assert_eq!(report.queues_rebuilt, vec![lost]);
    assert_eq!(report.entries_replayed, count);
    assert_eq!(report.records_scanned, 0);
    check_and_continue(dir.path(), store, &mut model);

    // The whole consume-queue directory gone: every queue rebuilt from the log.
    let (dir, mut model, _) = closed_with(1200);
    fs::remove_dir_all(dir.path().join("consumequeue")).unwrap();
    let store = open(dir.path());
    let report = store.recovery_report().clone();
    assert_eq!(
        set(&report.queues_rebuilt),
        queues_with_entries_from(&model, 0)
    );
    assert_eq!(report.entries_replayed, model.sent.len() as u64);
    check_and_continue(dir.path(), store, &mut model);
}

/// A clean store whose queue gamma/0 holds `count` entries among other traffic.
fn closed_with_gamma(count: u64) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut model = Model::new();
    for i in 0..count {
        model.put(&store, common::message("gamma", i).with_queue(0));
        if i % 3 == 0 {
            model.put(&store, common::message("alpha", i));
        }
    }
    store.close().unwrap();
    (dir, model)
}

#[test]
fn r12_consume_queue_truncated_rebuilt() {
    // 180 entries in 64-entry files: files 0, 64, 128; the last holds entries 128..180.
    // (a) The second half of the last file (entries 160..192) zeroed.
    let (dir, mut model) = closed_with_gamma(180);
    let files = common::queue_files(dir.path(), "gamma", 0);
    assert_eq!(
        files.iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![0, 64, 128]
    );
    let half = 32 * common::ENTRY_BYTES;
    common::zero_bytes(&files[2].1, half, half);
    let store = open(dir.path());
    let report = store.recovery_report().clone();
    assert_eq!(report.queues_rebuilt, vec![topic_queue("gamma", 0)]);
    assert_eq!(report.entries_replayed, 20);
    check_and_continue(dir.path(), store, &mut model);

    // (b) The last queue file deleted.
    let (dir, mut model) = closed_with_gamma(180);
    let files = common::queue_files(dir.path(), "gamma", 0);
    fs::remove_file(&files[2].1).unwrap();
    let store = open(dir.path());
    let report = store.recovery_report().clone();
    assert_eq!(report.queues_rebuilt, vec![topic_queue("gamma", 0)]);
    assert_eq!(report.entries_replayed, 52);
    check_and_continue(dir.path(), store, &mut model);
}

#[test]
fn r13_consume_queue_ahead_of_log() {
    let mut c = crash_after(600, 400);
    // The queues hold entries for all 1000 messages; the log loses everything from message
    // 750 on (its pages never reached the disk).
    let cut = c.model.sent[750].receipt.id.0;
    let (path, at) = common::locate(c.path(), cut);
    common::zero_bytes(&path, at, common::file_len(&path) - at);
    let later: Vec<PathBuf> = common::segments(c.path())
        .into_iter()
        .filter(|(base, _)| *base > cut)
        .map(|(_, p)| p)
        .collect();
    for p in &later {
        fs::remove_file(p).unwrap();
    }
    let ahead = queues_with_entries_from(&c.model, c.checkpoint_end);
    c.model.cut_at(cut);
    let store = open(c.path());
    let report = store.recovery_report().clone();
    assert_eq!(
        report.checkpoint,
        CheckpointUse::Used {
            clean_shutdown: false
        }
    );
    assert_eq!(report.log_end_offset, cut);
    assert_eq!(report.torn_tail, None);
    assert_eq!(set(&report.queues_truncated), ahead);
    assert!(report.queues_rebuilt.is_empty());
    assert_eq!(report.entries_replayed, 150);
    // No entry points at or past the cut: verify() would see a phantom or a pull error.
    check_and_continue(c.dir.path(), store, &mut c.model);
}

#[test]
fn r14_segment_gap_refused() {
    let (dir, mut model, _) = closed_with(2500);
    let segments = common::segments(dir.path());
    assert!(segments.len() >= 4);
    let (missing_base, missing_path) = segments[1].clone();
    let (after_base, after_path) = segments[2].clone();
    let saved = fs::read(&missing_path).unwrap();
    fs::remove_file(&missing_path).unwrap();
    let before = common::snapshot(dir.path());
    match Store::open(dir.path(), quiet_options()) {
        Err(Error::Corruption { file, offset, kind }) => {
            assert_eq!(file, after_path);
            assert_eq!(offset, 0);
            assert_eq!(
                kind,
                DecodeError::WrongPosition {
                    stored: after_base,
                    actual: missing_base
                }
            );
        }
        other => panic!("expected Corruption, got {other:?}"),
    }
    // Refusing touched nothing: the operator can still restore the segment.
    common::assert_same_files(&before, &common::snapshot(dir.path()));
    fs::write(&missing_path, saved).unwrap();
    let store = open(dir.path());
    assert_eq!(store.recovery_report().records_scanned, 0);
    check_and_continue(dir.path(), store, &mut model);
}

#[test]
fn r15_short_segment_file() {
    let (dir, mut model, written_end) = closed_with(1500);
    let (last_base, last_path) = common::segments(dir.path()).pop().unwrap();
    let short = common::segment_path(dir.path(), last_base + common::file_len(&last_path));
    fs::write(&short, [0x11u8; 10]).unwrap();
    let store = open(dir.path());
    // Gone; the preallocator may already have made a full next segment under that name.
    assert!(
        !short.exists() || common::file_len(&short) != 10,
        "short segment still on disk"
    );
    let report = store.recovery_report().clone();
    assert_eq!(report.log_end_offset, written_end);
    assert_eq!(report.torn_tail, None);
    assert_removed_after_end(&report);
    check_and_continue(dir.path(), store, &mut model);
}

#[test]
fn r16_checkpoint_ahead_of_log() {
    // An intact checkpoint whose end lies past the last segment means segments are missing:
    // opening would silently lose what they held, so the open is refused with a positioned
    // corruption and nothing on disk changes. Removing the checkpoint (what an operator does
    // after deciding the data is gone) lets the store open with a full scan.
    let (dir, mut model, written_end) = closed_with(1500);
    let (last_base, last_path) = common::segments(dir.path()).pop().unwrap();
    let files_end = last_base + common::file_len(&last_path);
    let mut checkpoint = load_checkpoint(dir.path());
    checkpoint.log_end_offset = files_end + 4096;
    checkpoint.store(&RealFs, dir.path()).unwrap();
    let before = common::snapshot(dir.path());
    match Store::open(dir.path(), quiet_options()) {
        Err(Error::Corruption { file, offset, .. }) => {
            assert!(file.ends_with("commitlog"), "{file:?}");
            assert_eq!(offset, files_end);
        }
        other => panic!("open must be refused, got {other:?}"),
    }
    common::assert_same_files(&before, &common::snapshot(dir.path()));
    fs::remove_file(dir.path().join("checkpoint")).unwrap();
    let store = open(dir.path());
    let report = store.recovery_report().clone();
    assert_eq!(report.checkpoint, CheckpointUse::Missing);
    assert_eq!(report.scan_from, 0);
    assert_eq!(report.log_end_offset, written_end);
    assert_eq!(report.entries_replayed, model.sent.len() as u64);
    check_and_continue(dir.path(), store, &mut model);
}

#[test]
fn r17_second_open_locked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut model = Model::new();
    put_mixed(&store, &mut model, 0, 500);
    store.flush().unwrap();
    model.verify(&store);
    let before = common::snapshot(dir.path());
    assert!(matches!(
        Store::open(dir.path(), quiet_options()),
        Err(Error::Locked { .. })
    ));
    // The refused open ran no recovery: not a byte changed under the open store.
    common::assert_same_files(&before, &common::snapshot(dir.path()));
    put_mixed(&store, &mut model, 500, 100);
    model.verify(&store);
    // A crashed store releases the lock like a dead process.
    store.simulate_crash();
    let store = open(dir.path());
    check_and_continue(dir.path(), store, &mut model);
}

#[test]
fn r18_checkpoint_end_past_last_record() {
    // The checkpoint claims a log end past the last record but still inside the (zero-filled)
    // segment files. Accepting it would start the log again after a hole of zeros, and the next
    // full scan would stop at the hole and cut every record written after it.
    let (dir, mut model, written_end) = closed_with(1500);
    let (active, at) = common::locate(dir.path(), written_end);
    assert!(common::file_len(&active) - at > 8192);
    let mut checkpoint = load_checkpoint(dir.path());
    checkpoint.log_end_offset = written_end + 4096;
    checkpoint.store(&RealFs, dir.path()).unwrap();
    let store = open(dir.path());
    let report = store.recovery_report().clone();
    put_mixed(&store, &mut model, 5000, 50);
    model.verify(&store);
    store.close().unwrap();
    // A later open without a checkpoint scans the whole log: nothing may be missing.
    fs::remove_file(checkpoint_path(dir.path())).unwrap();
    let store = open(dir.path());
    let rescan = store.recovery_report().clone();
    assert!(
        report.log_end_offset == written_end,
        "forged checkpoint trusted: recovered end {} but the last record ends at {written_end}; \
         after a full scan: {rescan:?}",
        report.log_end_offset
    );
    check_and_continue(dir.path(), store, &mut model);
}

/// Runs `scenario` for each case, collecting panics so that every case is reported.
fn all_cases(cases: &[(&str, &dyn Fn())]) {
    let mut failed = Vec::new();
    for (name, scenario) in cases {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(scenario)).is_err() {
            failed.push(*name);
        }
    }
    assert!(failed.is_empty(), "failed sub-cases: {failed:?}");
}

#[test]
fn r19_consume_queue_inner_file_damaged() {
    // 256 entries: four full 64-entry files 0, 64, 128, 192. The damage is before the last
    // entry, which still matches its record.
    let middle_deleted = || {
        let (dir, mut model) = closed_with_gamma(256);
        fs::remove_file(common::queue_dir(dir.path(), "gamma", 0).join(format!("{:020}", 64)))
            .unwrap();
        let store = open(dir.path());
        let rebuilt = store.recovery_report().queues_rebuilt.clone();
        check_and_continue(dir.path(), store, &mut model);
        assert_eq!(rebuilt, vec![topic_queue("gamma", 0)]);
    };
    let first_deleted = || {
        let (dir, mut model) = closed_with_gamma(256);
        fs::remove_file(common::queue_dir(dir.path(), "gamma", 0).join(format!("{:020}", 0)))
            .unwrap();
        let store = open(dir.path());
        let rebuilt = store.recovery_report().queues_rebuilt.clone();
        check_and_continue(dir.path(), store, &mut model);
        assert_eq!(rebuilt, vec![topic_queue("gamma", 0)]);
    };
    let middle_half_zeroed = || {
        // Entries below the checkpointed count were synced, so damage inside them is outside
        // the fault model (bit rot, a stray write): recovery checks only the last entry and
        // does not see it; reads report it as a positioned corruption, never as a wrong or
        // skipped message. (`verify` finds it; rebuilding the queue repairs it.)
        let (dir, _model) = closed_with_gamma(256);
        let file = common::queue_dir(dir.path(), "gamma", 0).join(format!("{:020}", 64));
        common::zero_bytes(&file, 32 * common::ENTRY_BYTES, 32 * common::ENTRY_BYTES);
        let store = open(dir.path());
        assert!(store.recovery_report().queues_rebuilt.is_empty());
        assert_eq!(store.pull("gamma", 0, 64, 32).unwrap().len(), 32);
        match store.pull("gamma", 0, 96, 10) {
            Err(Error::Corruption {
                file: at, offset, ..
            }) => {
                assert_eq!(at, file);
                assert_eq!(offset, 32 * common::ENTRY_BYTES);
            }
            other => panic!("expected a positioned corruption, got {other:?}"),
        }
        assert_eq!(store.pull("gamma", 0, 128, 200).unwrap().len(), 128);
    };
    all_cases(&[
        ("middle file deleted", &middle_deleted),
        ("first file deleted", &first_deleted),
        ("middle file half zeroed", &middle_half_zeroed),
    ]);
}

#[test]
fn r20_repeated_crashes() {
    // A store recovered after a crash crashes again, three times: what recovery rebuilt and
    // the checkpoint it wrote at open are themselves recoverable. Keyless messages go
    // round-robin.
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    for round in 0..3u64 {
        let store = open(dir.path());
        model.verify(&store);
        for i in 0..300 {
            model.put(&store, Message::new("plain", format!("r{round}-{i}")));
        }
        model.verify(&store);
        store.simulate_crash();
    }
    let store = open(dir.path());
    check_and_continue(dir.path(), store, &mut model);
}

#[test]
fn r21_short_segment_in_the_middle_refused() {
    // A middle segment cut to 10 bytes is a gap like a missing one: the open is refused, and
    // (as for R14) the refusal deletes nothing, so the operator can still restore the file.
    let (dir, mut model, _) = closed_with(2500);
    let segments = common::segments(dir.path());
    assert!(segments.len() >= 4);
    let (_, short_path) = segments[1].clone();
    let (after_base, after_path) = segments[2].clone();
    let bytes = fs::read(&short_path).unwrap();
    fs::write(&short_path, &bytes[..10]).unwrap();
    let before = common::snapshot(dir.path());
    match Store::open(dir.path(), quiet_options()) {
        Err(Error::Corruption { file, kind, .. }) => {
            assert!(file == after_path || file == short_path, "{file:?}");
            if file == after_path {
                assert!(
                    matches!(kind, DecodeError::WrongPosition { stored, .. } if stored == after_base)
                );
            }
        }
        other => panic!("expected Corruption, got {other:?}"),
    }
    let after = common::snapshot(dir.path());
    // The operator restores the segment: everything is back.
    fs::write(&short_path, &bytes).unwrap();
    let store = open(dir.path());
    check_and_continue(dir.path(), store, &mut model);
    common::assert_same_files(&before, &after);
}

#[test]
fn r22_preparing_segment_removed() {
    // A crash while the preallocator zero-filled the next segment leaves it under its
    // temporary name (`<base>.prealloc`): it was never part of the log and is removed.
    let (dir, mut model, written_end) = closed_with(1500);
    let (last_base, last_path) = common::segments(dir.path()).pop().unwrap();
    let next = last_base + common::file_len(&last_path);
    let preparing = dir
        .path()
        .join("commitlog")
        .join(format!("{next:020}.prealloc"));
    fs::write(&preparing, vec![0u8; 4096]).unwrap();
    let store = open(dir.path());
    let report = store.recovery_report().clone();
    assert!(report.segments_removed.contains(&preparing), "{report:?}");
    assert!(!preparing.exists());
    assert_eq!(report.log_end_offset, written_end);
    check_and_continue(dir.path(), store, &mut model);
}

/// A decision slot written for a cancel whose record a crash then lost (here: zeroed, as a
/// power loss may leave an unsynced tail while the slot file's page was written back) is
/// ignored: the message is delivered when due, and a later cancel says so.
#[test]
fn r23_decision_slot_without_its_record_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let clock = delaystore::ManualClock::new(1_700_000_000_000);
    let options = || delaystore::Options {
        clock: std::sync::Arc::new(clock.clone()),
        ..quiet_options()
    };
    let store = common::open(dir.path(), options());
    let put = store
        .put(
            &Message::new("orders", "close 9")
                .with_queue(0)
                .with_delay_ms(10_000),
        )
        .unwrap();
    store.flush().unwrap();
    let cancel_at = store.stats().written_end_offset;
    assert_eq!(
        store
            .cancel_with(put.id, delaystore::Durability::Buffered)
            .unwrap(),
        delaystore::CancelOutcome::Cancelled
    );
    let end = store.stats().written_end_offset;
    store.simulate_crash();
    let (segment, at) = common::locate(dir.path(), cancel_at);
    common::zero_bytes(&segment, at, end - cancel_at);

    let store = common::open(dir.path(), options());
    assert_eq!(store.recovery_report().log_end_offset, cancel_at);
    clock.set_ms(1_700_000_010_000);
    let got = common::pull_all(&store, "orders", 0, 0, 1);
    assert_eq!(
        got.len(),
        1,
        "the cancel was lost, so the message is delivered"
    );
    assert_eq!(got[0].id, put.id);
    assert_eq!(
        store.cancel(put.id).unwrap(),
        delaystore::CancelOutcome::AlreadyDelivered
    );
    store.close().unwrap();
}

/// After retention deleted the first segments, the log and the queues no longer start at 0;
/// a reopen (clean or after a crash) accepts that instead of rebuilding or refusing.
#[test]
fn r24_log_and_queues_start_after_retention() {
    let dir = tempfile::tempdir().unwrap();
    let clock = delaystore::ManualClock::new(1_700_000_000_000);
    let options = || delaystore::Options {
        clock: std::sync::Arc::new(clock.clone()),
        retention_ms: Some(1_000),
        consume_queue_file_entries: 64,
        ..common::small_options()
    };
    let store = common::open(dir.path(), options());
    let mut model = Model::new();
    put_mixed(&store, &mut model, 0, 2_000);
    clock.set_ms(1_700_000_060_000);
    put_mixed(&store, &mut model, 2_000, 100);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.stats().log_start_offset == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let start = store.stats().log_start_offset;
    assert!(start > 0, "retention deleted nothing");
    // A crash, then a clean close: both reopens accept the later starts.
    store.simulate_crash();
    for clean in [false, true] {
        let store = common::open(dir.path(), options());
        let report = store.recovery_report().clone();
        assert!(report.queues_rebuilt.is_empty(), "{report:?}");
        // Retention goes on in the background (the clock is past every record's retention).
        assert!(store.stats().log_start_offset >= start);
        for topic in TOPICS {
            let got = common::pull_all(&store, topic, 0, 0, 1);
            assert!(got.first().is_some_and(|m| m.id.0 >= start), "{topic}");
        }
        let last = model.expected("beta", 0).last().map(|m| m.receipt.id);
        let tail = common::read_queue(&store, "beta", 0);
        assert_eq!(tail.last().map(|m| m.id), last);
        if clean {
            store.close().unwrap();
        } else {
            store.simulate_crash();
        }
    }
    // Without a checkpoint, every queue is rebuilt from a log that starts later: each starts
    // at its first surviving record's offset.
    fs::remove_file(checkpoint_path(dir.path())).unwrap();
    let store = common::open(dir.path(), options());
    for topic in TOPICS {
        let got = common::pull_all(&store, topic, 0, 0, 1);
        assert!(got.first().is_some_and(|m| m.id.0 >= start), "{topic}");
    }
    let last = model.expected("alpha", 1).last().map(|m| m.receipt.id);
    let tail = common::read_queue(&store, "alpha", 1);
    assert_eq!(tail.last().map(|m| m.id), last);
    store.close().unwrap();
}

/// Without a usable checkpoint, after retention deleted the records of a timer slot's first
/// entries (their delivery records survive, later in the log), the slot keeps its numbering:
/// a queue restarted at 0 gave new messages offsets that the old delivery records already
/// consumed, and they were never delivered (found by the kill tier).
#[test]
fn r25_timed_queue_numbering_kept_without_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let clock = delaystore::ManualClock::new(1_700_000_000_000);
    let options = || delaystore::Options {
        clock: std::sync::Arc::new(clock.clone()),
        disk_usage_soft_bytes: Some(3 * 64 * 1024),
        consume_queue_file_entries: 64,
        ..common::small_options()
    };
    let store = common::open(dir.path(), options());
    let delayed = |i: u64| Message::new("alpha", format!("timer-{i}")).with_delay_ms(20);
    let pending_timers = |store: &Store| store.stats().pending_per_tier.iter().sum::<u64>();
    // Timer messages in the first segment, delivered three segments later; then enough plain
    // messages that retention deletes the first two segments, not the one holding the
    // delivery records.
    let body = "p".repeat(900);
    let plain = |i: u64| Message::new("beta", format!("{i}-{body}")).with_queue(0);
    for i in 0..20 {
        store.put(&delayed(i)).unwrap();
    }
    common::wait_until("dispatch", || pending_timers(&store) == 20);
    for i in 0..200 {
        store.put(&plain(i)).unwrap();
    }
    // A whole number of tier-0 wheel turns (32 ms): the new messages below take the same slot.
    clock.advance_ms(1_024);
    common::wait_until("delivery", || pending_timers(&store) == 0);
    for i in 200..300 {
        store.put(&plain(i)).unwrap();
    }
    store.flush().unwrap();
    common::wait_until("retention", || {
        store.flush().unwrap();
        store.stats().log_start_offset > 0
    });
    store.close().unwrap();
    // The checkpoint is lost: recovery scans the whole (retained) log.
    fs::remove_file(checkpoint_path(dir.path())).unwrap();
    let store = common::open(dir.path(), options());
    assert_eq!(
        store.recovery_report().checkpoint,
        CheckpointUse::Missing,
        "{:?}",
        store.recovery_report()
    );
    for i in 20..40 {
        store.put(&delayed(i)).unwrap();
    }
    common::wait_until("dispatch", || pending_timers(&store) == 20);
    clock.advance_ms(1_000);
    common::wait_until("delivery", || pending_timers(&store) == 0);
    let got: BTreeSet<String> = common::read_queue(&store, "alpha", 0)
        .into_iter()
        .chain(common::read_queue(&store, "alpha", 1))
        .chain(common::read_queue(&store, "alpha", 2))
        .chain(common::read_queue(&store, "alpha", 3))
        .map(|m| String::from_utf8(m.body).unwrap())
        .filter(|b| b.starts_with("timer-"))
        .collect();
    for i in 20..40 {
        assert!(
            got.contains(&format!("timer-{i}")),
            "timer-{i} lost: {got:?}"
        );
    }
    store.close().unwrap();
}

/// A checkpoint taken right after a cancel record (which indexes nothing) ends after that
/// record; recovery uses it (it once named the record before and was rejected).
#[test]
fn r26_checkpoint_after_a_cancel_used() {
    let dir = tempfile::tempdir().unwrap();
    let clock = delaystore::ManualClock::new(1_700_000_000_000);
    let options = || delaystore::Options {
        clock: std::sync::Arc::new(clock.clone()),
        ..common::quiet_options()
    };
    let store = common::open(dir.path(), options());
    let receipt = store
        .put(&Message::new("alpha", "to cancel").with_delay_ms(60_000))
        .unwrap();
    assert_eq!(
        store.cancel(receipt.id).unwrap(),
        delaystore::CancelOutcome::Cancelled
    );
    store.flush().unwrap();
    store.simulate_crash();
    let store = common::open(dir.path(), options());
    assert!(
        matches!(
            store.recovery_report().checkpoint,
            CheckpointUse::Used { .. }
        ),
        "{:?}",
        store.recovery_report()
    );
    clock.advance_ms(120_000);
    store.close().unwrap();
}

/// A decision file cut short (damage, or a crash while it was being created) is rebuilt from
/// the log's cancel and delivery records at open: a cancelled message stays cancelled.
#[test]
fn r27_short_decision_file_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let clock = delaystore::ManualClock::new(1_700_000_000_000);
    let options = || delaystore::Options {
        clock: std::sync::Arc::new(clock.clone()),
        ..common::quiet_options()
    };
    let store = common::open(dir.path(), options());
    let cancelled = store
        .put(&Message::new("alpha", "cancelled").with_delay_ms(5_000))
        .unwrap();
    let kept = store
        .put(&Message::new("alpha", "kept").with_delay_ms(5_000))
        .unwrap();
    assert_eq!(
        store.cancel(cancelled.id).unwrap(),
        delaystore::CancelOutcome::Cancelled
    );
    store.close().unwrap();
    let mut files = Vec::new();
    let mut pending = vec![dir.path().join("decisions")];
    while let Some(d) = pending.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    assert!(!files.is_empty(), "no decision file");
    for file in &files {
        fs::OpenOptions::new()
            .write(true)
            .open(file)
            .unwrap()
            .set_len(0)
            .unwrap();
    }
    let store = common::open(dir.path(), options());
    let report = store.recovery_report().clone();
    assert_eq!(
        report.decision_files_rebuilt.len(),
        files.len(),
        "{report:?}"
    );
    clock.advance_ms(10_000);
    common::wait_until("delivery", || {
        store.stats().pending_per_tier.iter().sum::<u64>() == 0
    });
    let got: Vec<_> = (0..store.queue_count("alpha").unwrap())
        .flat_map(|q| common::read_queue(&store, "alpha", q))
        .map(|m| m.id)
        .collect();
    assert!(got.contains(&kept.id), "{got:?}");
    assert!(
        !got.contains(&cancelled.id),
        "the cancelled message was delivered"
    );
    store.close().unwrap();
    // Rebuilt once: the files have their full length again.
    let store = common::open(dir.path(), options());
    assert!(store.recovery_report().decision_files_rebuilt.is_empty());
    store.close().unwrap();
}
