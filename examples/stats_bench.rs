//! Throughput of the stats hot path against a plain atomic, and of name lookups.
//!
//! `cargo run --release --example stats_bench`. Plain `std::time::Instant`; each row
//! is the best of 3 runs. The baseline is `AtomicU64::fetch_add(1, Relaxed)` on heap
//! memory; `child::Counter::inc` is the same instruction on the shared mapping, so the
//! ratio should be about 1.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use baton::stats::child::Stats;
use baton::stats::Segment;

const INCREMENTS: u64 = 50_000_000;
const NAMES: usize = 1000;
const LOOKUPS: usize = 2_000_000;

/// Best of three: the time for `threads` threads to run `per_thread` each.
fn best_of_3(threads: usize, per_thread: impl Fn() + Sync) -> Duration {
    (0..3)
        .map(|_| {
            let barrier = Barrier::new(threads);
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        barrier.wait();
                        per_thread();
                    });
                }
            });
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn row(what: &str, ops: u64, took: Duration, baseline: Option<f64>) -> f64 {
    let rate = ops as f64 / took.as_secs_f64();
    let ratio = baseline.map_or("1.00 (baseline)".to_string(), |b| {
        format!("{:.2}", rate / b)
    });
    println!(
        "| {what:<48} | {:>8.1} M/s | {:>7.2} ns | {ratio:<15} |",
        rate / 1e6,
        1e9 / rate
    );
    rate
}

fn main() {
    let segment = Segment::create(4096).expect("create segment");
    segment.begin_epoch(1).expect("register epoch");
    let stats = Stats::attach(segment.fd(), 1).expect("attach");
    let counter = stats.counter("bench_requests_total").expect("counter");
    let plain = Box::new(AtomicU64::new(0));

    println!(
        "| {:<48} | {:>12} | {:>10} | {:<15} |",
        "operation", "throughput", "per op", "ratio vs atomic"
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(50),
        "-".repeat(14),
        "-".repeat(12),
        "-".repeat(17)
    );
    for threads in [1usize, 2] {
        let per = INCREMENTS / threads as u64;
        let ops = per * threads as u64;
        let base = best_of_3(threads, || {
            for _ in 0..per {
                black_box(&*plain).fetch_add(1, Relaxed);
            }
        });
        let base = row(
            &format!("AtomicU64::fetch_add(Relaxed), {threads} thread(s)"),
            ops,
            base,
            None,
        );
        let took = best_of_3(threads, || {
            for _ in 0..per {
                black_box(&counter).inc();
            }
        });
        row(
            &format!("child::Counter::inc, {threads} thread(s)"),
            ops,
            took,
            Some(base),
        );
    }
    assert_eq!(counter.get(), 3 * INCREMENTS * 2, "every increment counted");

    let names: Vec<String> = (0..NAMES).map(|i| format!("bench_name_{i}")).collect();
    for name in &names {
        stats.counter(name).expect("claim");
    }
    let took = best_of_3(1, || {
        for i in 0..LOOKUPS {
            black_box(stats.counter(&names[i % NAMES]).expect("lookup"));
        }
    });
    println!();
    println!(
        "| {:<48} | {:>12} | {:>10} |",
        "lookup", "throughput", "per op"
    );
    println!("|{}|{}|{}|", "-".repeat(50), "-".repeat(14), "-".repeat(12));
    let rate = LOOKUPS as f64 / took.as_secs_f64();
    println!(
        "| {:<48} | {:>8.2} M/s | {:>7.1} ns |",
        format!("stats.counter(name), {NAMES} names present"),
        rate / 1e6,
        1e9 / rate
    );
}
