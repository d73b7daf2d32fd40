//! The reaper in a test binary of its own, with a single test: it calls
//! `waitpid(-1)`, which steals the statuses of children anything else in the same
//! process waits for — including a second reaper in a parallel test.

use std::process::Command;
use std::time::Duration;

use baton::{ProcessExit, Reaper};

/// The failure this design avoids: with two reapers, statuses went to the wrong
/// waiter or were lost (33 of 80 in a measurement). Here every waiter must get
/// exactly its child's status while orphans are reaped alongside.
#[test]
fn every_waiter_gets_its_own_childs_status_while_orphans_are_reaped() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let reaper = Reaper::start().unwrap();
        let mut waiters = Vec::new();
        for code in 0..80 {
            // Every other child also leaves an orphan behind (`sleep` in the background),
            // every tenth dies of a signal.
            let script = match code {
                c if c % 10 == 5 => "kill -9 $$".to_string(),
                c if c % 2 == 0 => format!("(sleep 0.01 &) ; exit {c}"),
                c => format!("exit {c}"),
            };
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &script]);
            let spawned = reaper.spawn(&mut cmd).unwrap();
            let expected = if code % 10 == 5 {
                ProcessExit::Signal(9)
            } else {
                ProcessExit::Code(code)
            };
            waiters.push((expected, spawned.exit));
        }
        for (expected, exit) in waiters {
            let status = tokio::time::timeout(Duration::from_secs(30), exit)
                .await
                .expect("status delivered in time")
                .expect("waiter kept");
            assert_eq!(status, expected);
        }
    });
}
