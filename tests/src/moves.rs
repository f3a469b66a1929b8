//! Moving a running process between nodes at random moments, as the tests
//! that check a program goes on unaware do.

use crate::{Cluster, Proc, WAIT, nodes_logs, wait_until};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Asks node `from` to move process `pid` to node `to`; the migration report,
/// or what `ssictl` said.
pub fn try_migrate(
    cluster: &Cluster,
    from: usize,
    pid: u64,
    to: usize,
) -> Result<serde_json::Value, String> {
    try_migrate_within(cluster, from, pid, to, WAIT)
}

/// Moves a process whose `ssirun` is `child`: the migration report; if the
/// move fails, the test fails saying how that `ssirun` ended (killed first,
/// so that one waiting for input does not hold the test) and what the nodes
/// logged.
pub fn migrate_or_explain(
    cluster: &Cluster,
    child: &mut Proc,
    from: usize,
    pid: u64,
    to: usize,
) -> serde_json::Value {
    match try_migrate(cluster, from, pid, to) {
        Ok(r) => r,
        Err(e) => {
            child.kill();
            let ended = child.wait();
            panic!(
                "{e}\nssirun ended with {}: {}\nnode logs:\n{}",
                ended.status,
                String::from_utf8_lossy(&ended.stderr),
                nodes_logs()
            );
        }
    }
}

/// As [`try_migrate`], allowed `limit` (the first move to a node of a
/// large module not yet compiled there waits for its compilation).
pub fn try_migrate_within(
    cluster: &Cluster,
    from: usize,
    pid: u64,
    to: usize,
    limit: Duration,
) -> Result<serde_json::Value, String> {
    // ssictl waits as long as the test does (its own bound is a minute).
    let timeout = limit.as_secs().to_string();
    let out = cluster.ssictl_within(
        from,
        &[
            "--timeout",
            &timeout,
            "migrate",
            &pid.to_string(),
            &to.to_string(),
            "--json",
        ],
        limit,
    );
    if !out.status.success() {
        return Err(format!(
            "ssictl migrate {pid} {to}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(serde_json::from_slice(&out.stdout).expect("migration report"))
}

/// How many moves come as fast as they can (the tests ask for ten).
pub const BRISK: usize = 10;

/// Moves process `pid`, which runs on node `at`, across the three nodes at
/// moments chosen at random (from a seed printed for a rerun), asking a
/// different node each time (`migrate(asked, to)`), until it ends (`ended`
/// says so); returns how many moves it made. A move that fails while the
/// process is still running fails the test.
///
/// The cluster's balancer must be off ([`Cluster::start_unbalanced`]): a
/// move it made between two of these would leave the process elsewhere than
/// where the next is asked from.
///
/// Between two of its first [`BRISK`] moves the process runs for a random
/// time of up to 20 ms; between later ones, for up to 20 ms plus as long as
/// the last move took (a second at most) plus, past its first two seconds
/// (`LONG_AFTER_MS`), a quarter of the CPU time it has used since, of its
/// own CPU time (`ran_for`). The later moves of a long run thus spread over
/// all of it (it is moved a few tens of times, not hundreds, each of which
/// a loaded machine makes last), and
/// it goes on however slow the machine makes the moves (a body
/// that waits on its new node for the rewind copies of its stack, which a
/// large module's largest functions take a minute to compile, has not run
/// yet, and moved again meanwhile it would make no headway however long
/// the test went on).
///
/// The bounds are the process's own CPU time, [`WAIT`] `* 3` (one that
/// goes on computing after a wrong resume fails there), and `WAIT * 10`
/// in all (one that makes no headway). Wall time between moves is no
/// measure of the process's work: its nodes share the machine's cores with
/// each other's compilations.
pub fn move_until_it_ends(
    cluster: &Cluster,
    pid: u64,
    mut at: u64,
    ended: impl Fn() -> bool,
    mut migrate: impl FnMut(usize, usize) -> Result<serde_json::Value, String>,
) -> usize {
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("seed {seed}");
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut moves = 0;
    let started = Instant::now();
    let mut last_move = Duration::ZERO;
    // The process's CPU time when it was last seen (ms), and whether that
    // was right after a move.
    let mut cpu_seen = 0;
    let mut cpu_after_move = None;
    while !ended() {
        assert!(
            Duration::from_millis(cpu_seen) < WAIT * 3 && started.elapsed() < WAIT * 10,
            "the process did not end within {:?} of its own CPU time or {:?} in all \
             ({cpu_seen} ms of CPU time, {:?} in all, {moves} moves)",
            WAIT * 3,
            WAIT * 10,
            started.elapsed()
        );
        // (A first move to a node that compiles the module there is
        // long, and no measure of the next: a second at most counts.)
        let between = if moves < BRISK {
            20
        } else {
            20 + last_move.min(Duration::from_secs(1)).as_millis() as u64
                + cpu_seen.saturating_sub(LONG_AFTER_MS) / 4
        };
        let run = next() % between;
        std::thread::sleep(Duration::from_millis(run));
        if let Some(cpu) = cpu_after_move.filter(|_| moves >= BRISK) {
            cpu_seen = cpu_seen.max(ran_for(cluster, pid, cpu, cpu + run, &ended));
        }
        let to = [1u64, 2, 3]
            .into_iter()
            .filter(|n| *n != at)
            .nth((next() % 2) as usize)
            .expect("another node");
        // Ask any node: the request goes to the process's home.
        let asked = Instant::now();
        let answer = migrate(1 + (moves % 3), to as usize);
        last_move = asked.elapsed();
        match answer {
            Ok(report) => {
                assert_eq!(report["from"].as_u64(), Some(at), "{report}");
                assert_eq!(report["to"].as_u64(), Some(to), "{report}");
                // Where the time went, for a run that fails by its bounds.
                eprintln!(
                    "move {}: node {at} to {to} in {last_move:.1?}, {:.1?} in all, \
                     {cpu_seen} ms of CPU time before it",
                    moves + 1,
                    started.elapsed()
                );
                at = to;
                moves += 1;
                // ps shows the node it moved to (unless it has ended since).
                cpu_after_move = None;
                if let Some(row) = row_of(cluster, pid) {
                    assert_eq!(row.node, Some(at), "ps shows the node it moved to");
                    cpu_after_move = row.cpu;
                    cpu_seen = cpu_seen.max(row.cpu.unwrap_or(0));
                }
            }
            // Only because the process ended meanwhile.
            Err(e) => {
                let mut gone = false;
                wait_until(
                    &format!("the process to end after a failed move ({e})"),
                    Duration::from_secs(10),
                    || {
                        gone = ended();
                        gone
                    },
                );
            }
        }
    }
    moves
}

/// The CPU time (ms) past which a process's moves come further apart (see
/// [`move_until_it_ends`]).
const LONG_AFTER_MS: u64 = 2000;

/// How long [`ran_for`] waits for a process to run again after a move: a
/// body waits on its new node for the rewind copies of its stack that the
/// node has not made yet (a large module's largest functions take a minute
/// to compile on a loaded machine), and `ps` shows it `resuming` meanwhile.
const RESUME_WITHIN: Duration = Duration::from_secs(300);

/// How long [`ran_for`] waits for a process that runs again to use its CPU
/// time: one that waits for input uses little, and is moved all the same.
const RUN_WITHIN: Duration = Duration::from_secs(10);

/// Waits until process `pid`, whose CPU time was `moved_at` ms after its
/// last move, has used `cpu_ms` in all, it has ended, or it has had
/// [`RUN_WITHIN`] to do so since it ran again; returns its CPU time when
/// last seen (ms).
fn ran_for(
    cluster: &Cluster,
    pid: u64,
    moved_at: u64,
    cpu_ms: u64,
    ended: impl Fn() -> bool,
) -> u64 {
    let since = Instant::now();
    let mut resumed = None;
    let mut seen = moved_at;
    while !ended() {
        let (cpu, resuming) = match row_of(cluster, pid) {
            Some(Row {
                cpu: Some(cpu),
                state,
                ..
            }) => (cpu, state == "resuming"),
            _ => break,
        };
        seen = cpu;
        if cpu >= cpu_ms {
            break;
        }
        // (A body waiting for its code is not running yet.)
        if resumed.is_none() && cpu > moved_at && !resuming {
            let at = since.elapsed();
            if at > Duration::from_secs(2) {
                eprintln!("  it ran again {at:.1?} after the move");
            }
            resumed = Some(at);
        }
        match resumed {
            None if since.elapsed() > RESUME_WITHIN => break,
            Some(at) if since.elapsed() > at + RUN_WITHIN => break,
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    seen
}

/// What [`row_of`] reads of a process in `ssictl ps`.
struct Row {
    node: Option<u64>,
    /// Its CPU time (ms).
    cpu: Option<u64>,
    state: String,
}

/// Process `pid`'s row in `ssictl ps`, unless it has ended.
fn row_of(cluster: &Cluster, pid: u64) -> Option<Row> {
    cluster
        .ssictl_json(3, "ps")
        .into_iter()
        .find(|p| p["pid"].as_u64() == Some(pid))
        .map(|p| Row {
            node: p["node"].as_u64(),
            cpu: p["cpu_ms"].as_u64(),
            state: p["state"].as_str().unwrap_or_default().to_string(),
        })
}
