//! Specifications of the stats segment, in-process (threads stand in for epochs; see
//! `process_tests` for a real child process and `fuzz_tests` for hostile bytes).

use std::os::fd::AsFd;
use std::sync::Barrier;
use std::thread;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

use super::child::{Stats, ENV_EPOCH, ENV_STATS_FD};
use super::layout::{self, SlotState, LANES};
use super::testutil::{bytes_of, memfd_with, slots_named, write_at};
use super::*;

fn epoch(segment: &Segment, n: u32) -> Stats {
    segment.begin_epoch(n).unwrap();
    Stats::attach(segment.fd(), n).unwrap()
}

fn value_of(segment: &Segment, name: &str) -> Option<i128> {
    segment
        .snapshot()
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| s.value)
}

#[test]
fn counters_from_two_epochs_add_up_exactly() {
    let segment = Segment::create(64).unwrap();
    let epochs = [epoch(&segment, 1), epoch(&segment, 2)];
    thread::scope(|s| {
        for stats in &epochs {
            for _ in 0..4 {
                s.spawn(|| {
                    let c = stats.counter("requests_total").unwrap();
                    for _ in 0..10_000 {
                        c.inc();
                    }
                    c.add(5);
                });
            }
        }
    });
    assert_eq!(value_of(&segment, "requests_total"), Some(8 * 10_005));
    assert_eq!(segment.counter("requests_total").unwrap().get(), 80_040);
}

#[test]
fn counter_carries_over_to_the_next_epoch_and_is_never_reset() {
    let segment = Segment::create(16).unwrap();
    epoch(&segment, 1).counter("rq").unwrap().add(3);
    segment.clear_epoch(1);
    let next = epoch(&segment, 2).counter("rq").unwrap();
    assert_eq!(next.get(), 3);
    next.add(2);
    assert_eq!(value_of(&segment, "rq"), Some(5));
}

#[test]
fn gauges_sum_the_contributions_of_live_epochs_and_baton() {
    let segment = Segment::create(16).unwrap();
    epoch(&segment, 1).gauge("active").unwrap().set(10);
    let two = epoch(&segment, 2).gauge("active").unwrap();
    two.inc();
    two.inc();
    two.dec();
    segment.gauge("active").unwrap().add(-4);
    assert_eq!(value_of(&segment, "active"), Some(10 + 1 - 4));
}

#[test]
fn gauge_contribution_of_an_epoch_vanishes_after_clear_epoch() {
    let segment = Segment::create(16).unwrap();
    let old = epoch(&segment, 1).gauge("active").unwrap();
    let new = epoch(&segment, 2).gauge("active").unwrap();
    old.set(7);
    new.set(3);
    assert!(segment.clear_epoch(1));
    assert_eq!(value_of(&segment, "active"), Some(3));
    assert!(!segment.clear_epoch(1), "a cleared epoch has no lane");
}

#[test]
fn lane_reused_by_a_new_epoch_starts_from_zero_even_after_a_stray_write() {
    let segment = Segment::create(16).unwrap();
    let old = epoch(&segment, 1).gauge("active").unwrap();
    let lane = segment.begin_epoch(1).unwrap();
    segment.clear_epoch(1);
    old.set(99); // a straggler of epoch 1 writes after it was cleared
    assert_eq!(segment.begin_epoch(2).unwrap(), lane, "the lane is reused");
    assert_eq!(value_of(&segment, "active"), Some(0));
}

#[test]
fn lanes_run_out_after_fifteen_live_epochs_and_counters_still_work() {
    let segment = Segment::create(16).unwrap();
    for n in 0..(LANES as u32 - 1) {
        segment.begin_epoch(n).unwrap();
    }
    assert!(matches!(
        segment.begin_epoch(100),
        Err(SegmentError::NoFreeLane { epoch: 100 })
    ));
    let late = Stats::attach(segment.fd(), 100).unwrap();
    late.counter("rq").unwrap().inc();
    assert!(matches!(
        late.gauge("active"),
        Err(StatsError::NoGaugeLane { epoch: 100 })
    ));
    segment.clear_epoch(3);
    assert!(
        segment.begin_epoch(100).is_ok(),
        "a cleared lane is free again"
    );
}

#[test]
fn full_segment_returns_full_and_counts_the_error() {
    let segment = Segment::create(4).unwrap();
    let stats = epoch(&segment, 1);
    for i in 0..4 {
        stats.counter(&format!("c{i}")).unwrap();
    }
    assert!(matches!(
        stats.counter("one_too_many"),
        Err(StatsError::Full { slots: 4, .. })
    ));
    assert!(matches!(segment.gauge("g"), Err(StatsError::Full { .. })));
    assert_eq!(segment.full_errors(), 2);
    assert!(stats.counter("c2").is_ok(), "existing names still resolve");
    assert_eq!(segment.full_errors(), 2);
}

#[test]
fn same_name_with_the_other_kind_is_refused() {
    let segment = Segment::create(16).unwrap();
    segment.counter("x").unwrap();
    assert!(matches!(
        segment.gauge("x"),
        Err(StatsError::KindMismatch {
            existing: Kind::Counter,
            requested: Kind::Gauge,
            ..
        })
    ));
}

#[test]
fn invalid_names_are_refused_without_claiming_a_slot() {
    let segment = Segment::create(16).unwrap();
    for name in ["", "has space", "é", &"n".repeat(96)] {
        assert!(matches!(
            segment.counter(name),
            Err(StatsError::InvalidName { .. })
        ));
    }
    assert!(segment.snapshot().is_empty());
    assert_eq!(segment.full_errors(), 0);
}

#[test]
fn concurrent_claimers_of_the_same_name_from_8_threads_end_with_one_slot() {
    let segment = Segment::create(1024).unwrap();
    let stats = epoch(&segment, 1);
    let barrier = Barrier::new(8);
    let names: Vec<String> = (0..200).map(|i| format!("race_{i}")).collect();
    thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for name in &names {
                    barrier.wait();
                    stats.counter(name).unwrap().inc();
                }
            });
        }
    });
    for name in &names {
        let ready = slots_named(&segment, name, SlotState::Ready);
        assert_eq!(ready.len(), 1, "{name}: slots {ready:?}");
        assert_eq!(value_of(&segment, name), Some(8));
    }
    assert_eq!(segment.snapshot().len(), names.len());
}

#[test]
fn concurrent_claimers_of_one_name_with_both_kinds_agree_on_one_kind() {
    let segment = Segment::create(64).unwrap();
    let stats = epoch(&segment, 1);
    let barrier = Barrier::new(8);
    let outcomes: Vec<Result<Kind, Kind>> = thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let (stats, barrier) = (&stats, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let (kind, result) = if t % 2 == 0 {
                        (Kind::Counter, stats.counter("both").map(|_| ()))
                    } else {
                        (Kind::Gauge, stats.gauge("both").map(|_| ()))
                    };
                    match result {
                        Ok(()) => Ok(kind),
                        Err(StatsError::KindMismatch { existing, .. }) => Err(existing),
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winner = match outcomes[0] {
        Ok(k) | Err(k) => k,
    };
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, Ok(k) | Err(k) if *k == winner)));
    assert_eq!(slots_named(&segment, "both", SlotState::Ready).len(), 1);
}

#[test]
fn half_made_segment_is_refused_because_the_magic_is_written_last() {
    let mut seen = None;
    let segment = Segment::create_with_hook(8, |fd| {
        seen = Some(Segment::attach(fd.try_clone_to_owned().unwrap()).map(|_| ()));
    })
    .unwrap();
    assert!(matches!(
        seen,
        Some(Err(SegmentError::BadMagic { found: 0 }))
    ));
    assert!(Segment::attach(segment.fd().try_clone_to_owned().unwrap()).is_ok());
}

/// `check`: a valid segment's bytes, changed by `damage`, are refused with `expected`.
fn check_refused(damage: impl FnOnce(&mut Vec<u8>), expected: fn(&SegmentError) -> bool) {
    let segment = Segment::create(4).unwrap();
    let mut bytes = bytes_of(&segment);
    damage(&mut bytes);
    let error = Segment::attach(memfd_with(&bytes, true)).expect_err("damaged segment accepted");
    assert!(expected(&error), "wrong error: {error:?}");
}

#[test]
fn foreign_or_corrupt_segments_are_refused_with_the_right_error() {
    use SegmentError as E;
    check_refused(
        |b| b[..8].copy_from_slice(b"NOTBATON"),
        |e| matches!(e, E::BadMagic { .. }),
    );
    check_refused(
        |b| b[8] = 2,
        |e| matches!(e, E::UnsupportedVersion { found: 2 }),
    );
    check_refused(
        |b| b[24] = 128,
        |e| matches!(e, E::UnsupportedGeometry { .. }),
    );
    check_refused(
        |b| b[28] = 8,
        |e| matches!(e, E::UnsupportedGeometry { lanes: 8, .. }),
    );
    check_refused(
        |b| b.extend([0; 256]),
        |e| matches!(e, E::SizeMismatch { .. }),
    );
    check_refused(
        |b| b[12] = 5,
        |e| matches!(e, E::SlotCountMismatch { slots: 5, .. }),
    );
    check_refused(
        |b| b.truncate(100),
        |e| matches!(e, E::BadLength { len: 100 }),
    );
    check_refused(|b| b.clear(), |e| matches!(e, E::BadLength { len: 0 }));
}

#[test]
fn segment_that_could_shrink_under_a_reader_is_refused() {
    let bytes = bytes_of(&Segment::create(4).unwrap());
    assert!(matches!(
        Segment::attach(memfd_with(&bytes, false)),
        Err(SegmentError::NotSealed)
    ));
}

#[test]
fn reader_skips_slots_with_unknown_state_kind_or_name() {
    let segment = Segment::create(8).unwrap();
    for name in ["a", "b", "c"] {
        segment.counter(name).unwrap().inc();
    }
    let slot = |name| layout::slot_offset(slots_named(&segment, name, SlotState::Ready)[0]);
    let (a, b, c) = (slot("a"), slot("b"), slot("c"));
    write_at(&segment, a + layout::SLOT_KIND, &[9]); // unknown kind
    write_at(&segment, b + layout::SLOT_NAME + 1, b"\xff"); // garbage after the NUL
    write_at(&segment, c + layout::SLOT_NAME, &[b'x'; 96]); // no NUL at all
    assert!(segment.snapshot().is_empty());
}

#[test]
fn every_missing_variable_is_reported_at_once() {
    let error = Stats::from_lookup(|_| None).unwrap_err();
    let AttachError::Env(problems) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(
        problems,
        &[
            EnvProblem::Missing(ENV_STATS_FD),
            EnvProblem::Missing(ENV_EPOCH)
        ]
    );
    assert!(error.to_string().contains("BATON_STATS_FD is not set"));
}

#[test]
fn malformed_variables_and_closed_fds_are_reported() {
    let lookup = |fd: &'static str, epoch: &'static str| {
        move |var: &str| Some((if var == ENV_STATS_FD { fd } else { epoch }).into())
    };
    let error = Stats::from_lookup(lookup("three", "-1")).unwrap_err();
    assert!(
        matches!(&error, AttachError::Env(p) if p.len() == 2),
        "{error:?}"
    );
    let closed = Stats::from_lookup(lookup("999999", "1")).unwrap_err();
    assert!(
        matches!(closed, AttachError::Fd { fd: 999999, .. }),
        "{closed:?}"
    );
}

#[test]
fn fd_that_is_not_a_segment_is_reported_as_such() {
    let foreign = memfd_with(b"just some bytes", true);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&foreign).to_string();
    let error =
        Stats::from_lookup(|v| Some(if v == ENV_STATS_FD { &fd } else { "1" }.into())).unwrap_err();
    assert!(
        matches!(
            error,
            AttachError::Segment {
                source: SegmentError::BadLength { .. },
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn from_lookup_attaches_as_the_registered_epoch() {
    let segment = Segment::create(16).unwrap();
    segment.begin_epoch(4).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&segment.fd()).to_string();
    let stats =
        Stats::from_lookup(|v| Some(if v == ENV_STATS_FD { &fd } else { "4" }.into())).unwrap();
    assert_eq!(stats.epoch(), Some(4));
    stats.gauge("active").unwrap().set(2);
    segment.clear_epoch(4);
    assert_eq!(value_of(&segment, "active"), Some(0));
}

#[test]
fn handles_are_clone_send_sync_and_outlive_the_segment() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<Counter>();
    assert_traits::<Gauge>();
    assert_traits::<Stats>();
    let segment = Segment::create(4).unwrap();
    let reader = Segment::attach(segment.fd().try_clone_to_owned().unwrap()).unwrap();
    let counter = segment.counter("kept").unwrap();
    drop(segment);
    counter.inc();
    assert_eq!(value_of(&reader, "kept"), Some(1));
}

#[test]
fn segment_is_a_close_on_exec_memfd_with_no_path() {
    let segment = Segment::create(4).unwrap();
    let flags = FdFlag::from_bits_truncate(fcntl(segment.as_fd(), FcntlArg::F_GETFD).unwrap());
    assert!(flags.contains(FdFlag::FD_CLOEXEC));
    let raw = std::os::fd::AsRawFd::as_raw_fd(&segment.fd());
    let link = std::fs::read_link(format!("/proc/self/fd/{raw}")).unwrap();
    assert!(
        link.to_string_lossy().starts_with("/memfd:baton-stats"),
        "{link:?}"
    );
}

#[test]
fn reader_attaches_through_proc_like_baton_stats_pid() {
    let segment = Segment::create(4).unwrap();
    segment.counter("seen").unwrap().add(41);
    let raw = std::os::fd::AsRawFd::as_raw_fd(&segment.fd());
    let reader = Segment::open_path(format!("/proc/self/fd/{raw}").as_ref()).unwrap();
    reader.counter("seen").unwrap().inc();
    assert_eq!(value_of(&segment, "seen"), Some(42));
    // Other tests' segments live in this process too: any one of them attaches.
    assert!(Segment::open_pid(std::process::id()).is_ok());
    assert!(matches!(
        Segment::open_pid(u32::MAX),
        Err(SegmentError::Open { .. })
    ));
}

#[test]
fn snapshot_lists_counters_and_gauges_sorted_by_name() {
    let segment = Segment::create(16).unwrap();
    segment.gauge("b_gauge").unwrap().set(-2);
    segment.counter("a_counter").unwrap().add(u64::MAX);
    assert_eq!(
        segment.snapshot(),
        vec![
            Sample {
                name: "a_counter".into(),
                kind: Kind::Counter,
                value: u64::MAX.into()
            },
            Sample {
                name: "b_gauge".into(),
                kind: Kind::Gauge,
                value: -2
            },
        ]
    );
}
