//! ssi-balsim: the load balancer's policy (`ssi_home::policy`), unchanged,
//! driven over a simulated cluster of N nodes, against baselines in the same
//! run.
//!
//! The model, in steps of 50 ms of simulated time:
//!
//! - nodes of different capacity (1, 2 or 4 cores) share their cores among
//!   the bodies they run (processor sharing: each gets min(1, cores / bodies));
//! - every second each node sends its load, with the freshest entries of its
//!   window, to two nodes chosen at random (MOSIX's dissemination: a fixed
//!   number of messages per node, whatever the cluster's size), and keeps a
//!   window of the freshest entries it has heard; what it knows is therefore
//!   partial and old;
//! - every second each node runs the policy on what it knows; a move is
//!   checked by its destination against the destination's own load, and
//!   takes the body off the CPU for its cost (its memory over 1 GB/s, and
//!   2 ms);
//! - a new process starts where the policy places it (`place`);
//! - a tenth of the nodes join a quarter into the run, and a twentieth are
//!   drained halfway (they take no new work and their bodies move away).
//!
//! Workloads: `batch` (10 × N jobs launched at one node at once) and
//! `poisson` (10 × N jobs arriving at random nodes at 90 % of the cluster's
//! capacity), with heavy-tailed CPU demands (bounded Pareto, α = 1.3, from
//! 0.5 s to 200 s). Baselines, in the same run on the same jobs: no
//! balancing (a job runs where it arrives), random placement only, and a
//! central scheduler that knows every load exactly, places each job on the
//! least loaded node and moves jobs greedily from the most to the least
//! loaded node every second (paying the same cost per move).

use anyhow::{Result, bail};
use clap::Parser;
use ssi_home::policy::{self, BodyLoad, NodeId, NodeLoad, Params, Picture};
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(name = "ssi-balsim", version)]
struct Args {
    /// Nodes in the simulated cluster.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// `batch` or `poisson`.
    #[arg(long, default_value = "batch")]
    workload: String,
    /// The seed of everything random (jobs, capacities, gossip, ties).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Jobs per node.
    #[arg(long, default_value_t = 10)]
    jobs_per_node: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// SplitMix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Bounded Pareto on [low, high] with shape `alpha`.
    fn pareto(&mut self, alpha: f64, low: f64, high: f64) -> f64 {
        let u = self.unit();
        let (la, ha) = (low.powf(alpha), high.powf(alpha));
        (-(u * ha - u * la - ha) / (ha * la)).powf(-1.0 / alpha)
    }
}

const DT: f64 = 0.05;
const INTERVAL: f64 = 1.0;
/// How often a node runs the policy (gossip stays once a second).
const BALANCE_EVERY: f64 = 0.25;
/// A launch passed on by nodes with no room, at most this many times.
const REDIRECTS: usize = 3;
const WINDOW: usize = 16;
const FANOUT: usize = 2;
const SHARED_ENTRIES: usize = 4;
const RATE: f64 = 1e9;
const MOVE_S: f64 = 0.002;

#[derive(Clone)]
struct Job {
    demand: f64,
    arrival: f64,
    origin: usize,
    memory: u64,
}

struct Running {
    node: usize,
    done: f64,
    since_move: f64,
    /// Off the CPU until then (being moved).
    moving_until: f64,
    finished: Option<f64>,
    moves: u32,
}

#[derive(Clone, Copy)]
struct Entry {
    id: usize,
    demand: f64,
    capacity: f64,
    free_memory: u64,
    closed: bool,
    stamp: f64,
}

struct Node {
    capacity: f64,
    up: bool,
    closed: bool,
    memory: u64,
    jobs: Vec<usize>,
    window: Vec<Entry>,
    phase: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Strategy {
    Balancer,
    None,
    Random,
    Central,
}

struct Outcome {
    makespan: f64,
    mean_slowdown: f64,
    moves: u64,
    gossip: u64,
    /// Seconds nodes were up, summed.
    up_s: f64,
}

struct Cluster {
    capacities: Vec<f64>,
    joins: Vec<bool>,
    drains: Vec<bool>,
}

/// The bodies a node runs (finished ones leave its list at once).
fn demand_of(n: &Node, _jobs: &[Running]) -> f64 {
    n.jobs.len() as f64
}

fn own_entry(id: usize, n: &Node, jobs: &[Running], specs: &[Job], now: f64) -> Entry {
    let used: u64 = n.jobs.iter().map(|&j| specs[j].memory).sum();
    Entry {
        id,
        demand: demand_of(n, jobs),
        capacity: n.capacity,
        free_memory: n.memory.saturating_sub(used),
        closed: n.closed || !n.up,
        stamp: now,
    }
}

fn load_of(e: &Entry, age_ms: u64) -> NodeLoad {
    NodeLoad {
        id: e.id as NodeId,
        capacity: e.capacity,
        demand: e.demand,
        free_memory: e.free_memory,
        age_ms,
        closed: e.closed,
    }
}

fn merge(window: &mut Vec<Entry>, e: Entry, me: usize) {
    if e.id == me {
        return;
    }
    match window.iter_mut().find(|w| w.id == e.id) {
        Some(w) if w.stamp < e.stamp => *w = e,
        Some(_) => {}
        None => {
            window.push(e);
            if window.len() > WINDOW {
                // The oldest entry goes.
                let (i, _) = window
                    .iter()
                    .enumerate()
                    .min_by(|a, b| a.1.stamp.total_cmp(&b.1.stamp))
                    .expect("a full window");
                window.swap_remove(i);
            }
        }
    }
}

/// What node `me` knows: itself exactly, the others from its window.
fn picture_nodes(
    me: usize,
    nodes: &[Node],
    jobs: &[Running],
    specs: &[Job],
    now: f64,
) -> Vec<NodeLoad> {
    let mut v = vec![load_of(&own_entry(me, &nodes[me], jobs, specs, now), 0)];
    v.extend(
        nodes[me]
            .window
            .iter()
            .map(|e| load_of(e, ((now - e.stamp) * 1e3) as u64)),
    );
    v
}

fn simulate(
    strategy: Strategy,
    cluster: &Cluster,
    specs: &[Job],
    params: &Params,
    seed: u64,
) -> Outcome {
    let n = cluster.capacities.len();
    let mut rng = Rng(seed ^ 0xA5A5_5A5A);
    let mut nodes: Vec<Node> = (0..n)
        .map(|i| Node {
            capacity: cluster.capacities[i],
            up: !cluster.joins[i],
            closed: false,
            memory: (cluster.capacities[i] * 4.0) as u64 * (1 << 30),
            jobs: Vec::new(),
            window: Vec::new(),
            phase: rng.unit() * INTERVAL,
        })
        .collect();
    let mut jobs: Vec<Running> = Vec::with_capacity(specs.len());
    let mut next = 0;
    let mut now = -5.0; // gossip warms up before the first job
    let mut gossip = 0u64;
    let mut moves = 0u64;
    let mut finished = 0;
    let join_at = specs.last().map(|j| j.arrival).unwrap_or(0.0) * 0.25 + 1.0;
    let drain_at = join_at * 2.0;
    let mut tick = 0u64;
    let mut up_s = 0.0;
    while finished < specs.len() {
        let up_now = nodes.iter().filter(|n| n.up).count() as f64;
        // Joins and drains.
        if (now - join_at).abs() < DT / 2.0 {
            for (i, node) in nodes.iter_mut().enumerate() {
                if cluster.joins[i] {
                    node.up = true;
                }
            }
        }
        if (now - drain_at).abs() < DT / 2.0 {
            for (i, node) in nodes.iter_mut().enumerate() {
                if cluster.drains[i] {
                    node.closed = true;
                }
            }
        }
        // Arrivals.
        while next < specs.len() && specs[next].arrival <= now {
            let spec = &specs[next];
            let origin = if nodes[spec.origin].up {
                spec.origin
            } else {
                0
            };
            let node = match strategy {
                Strategy::None => origin,
                Strategy::Random => loop {
                    let i = rng.below(n);
                    if nodes[i].up && !nodes[i].closed {
                        break i;
                    }
                },
                Strategy::Central => (0..n)
                    .filter(|&i| nodes[i].up && !nodes[i].closed)
                    .min_by(|&a, &b| {
                        let la = (demand_of(&nodes[a], &jobs) + 1.0) / nodes[a].capacity;
                        let lb = (demand_of(&nodes[b], &jobs) + 1.0) / nodes[b].capacity;
                        la.total_cmp(&lb)
                    })
                    .unwrap_or(origin),
                Strategy::Balancer => {
                    // The home places the body; a node asked to run it with
                    // no room for it passes the launch on to one it knows has
                    // room (a few hops at most): no body has started yet, so
                    // this is no move.
                    let mut at = origin;
                    for hop in 0..=REDIRECTS {
                        let here = own_entry(at, &nodes[at], &jobs, specs, now);
                        if hop > 0 && !here.closed && (here.demand + 1.0) <= here.capacity {
                            break;
                        }
                        let known = picture_nodes(at, &nodes, &jobs, specs, now);
                        let to =
                            policy::place(at as NodeId, &known, spec.memory, params, rng.next())
                                as usize;
                        if to == at {
                            break;
                        }
                        // It notes its own placement in what it knows (the
                        // load; the node itself checks its memory, and passes
                        // the launch on if it lacks room).
                        if let Some(e) = nodes[at].window.iter_mut().find(|e| e.id == to) {
                            e.demand += 1.0;
                        }
                        at = to;
                    }
                    at
                }
            };
            nodes[node].jobs.push(jobs.len());
            jobs.push(Running {
                node,
                done: 0.0,
                since_move: now,
                moving_until: now,
                finished: None,
                moves: 0,
            });
            next += 1;
        }
        // With no periodic work (no balancer, no central rounds), time jumps
        // to the next event: an end, an arrival, a join or a drain.
        let mut step = DT;
        if matches!(strategy, Strategy::None | Strategy::Random) {
            let mut until = f64::INFINITY;
            for node in &nodes {
                if node.jobs.is_empty() {
                    continue;
                }
                let share = (node.capacity / node.jobs.len() as f64).min(1.0);
                for &j in &node.jobs {
                    until = until.min((specs[j].demand - jobs[j].done) / share);
                }
            }
            if next < specs.len() {
                until = until.min(specs[next].arrival - now);
            }
            for at in [join_at, drain_at] {
                if at > now {
                    until = until.min(at - now);
                }
            }
            if until.is_finite() && until > DT {
                step = (until / DT).floor() * DT;
            }
        }
        // Running: processor sharing on every node.
        for node in nodes.iter_mut() {
            let active = node
                .jobs
                .iter()
                .filter(|&&j| jobs[j].moving_until <= now)
                .count();
            if active == 0 {
                continue;
            }
            let share = (node.capacity / active as f64).min(1.0) * step;
            node.jobs.retain(|&j| {
                let job = &mut jobs[j];
                if job.moving_until > now {
                    return true;
                }
                job.done += share;
                if job.done >= specs[j].demand {
                    job.finished = Some(now + step);
                    finished += 1;
                    false
                } else {
                    true
                }
            });
        }
        now += step;
        up_s += up_now * step;
        tick += 1;
        // Once a second, in each node's own phase: gossip, then the policy.
        let gossip_ticks = (INTERVAL / DT).round() as u64;
        let balance_ticks = (BALANCE_EVERY / DT).round() as u64;
        for me in 0..n {
            if strategy != Strategy::Balancer || !nodes[me].up {
                continue;
            }
            let phase = (nodes[me].phase / DT) as u64;
            if (tick + phase).is_multiple_of(gossip_ticks) {
                let own = own_entry(me, &nodes[me], &jobs, specs, now);
                let mut shared: Vec<Entry> = nodes[me].window.clone();
                shared.sort_by(|a, b| b.stamp.total_cmp(&a.stamp));
                shared.truncate(SHARED_ENTRIES);
                shared.push(own);
                for _ in 0..FANOUT {
                    // Another node, chosen at random (a down one is not
                    // heard of: the message is lost).
                    let to = (me + 1 + rng.below(n - 1)) % n;
                    gossip += 1;
                    if !nodes[to].up {
                        continue;
                    }
                    for e in &shared {
                        merge(&mut nodes[to].window, *e, to);
                    }
                }
            }
            // A swamped node runs it as often as its moves allow.
            let swamped = demand_of(&nodes[me], &jobs) >= params.swamped * nodes[me].capacity;
            if swamped || (tick + phase).is_multiple_of(balance_ticks) {
                balance(
                    me, &mut nodes, &mut jobs, specs, params, now, &mut rng, &mut moves,
                );
            }
        }
        if strategy == Strategy::Central && tick.is_multiple_of((INTERVAL / DT).round() as u64) {
            central(&mut nodes, &mut jobs, specs, now, &mut moves);
        }
        if now > 100_000.0 {
            break;
        }
    }
    let makespan = jobs
        .iter()
        .filter_map(|j| j.finished)
        .fold(0.0f64, f64::max);
    let mean_slowdown = jobs
        .iter()
        .zip(specs)
        .map(|(j, s)| (j.finished.unwrap_or(now) - s.arrival) / s.demand)
        .sum::<f64>()
        / specs.len().max(1) as f64;
    let _ = jobs.iter().map(|j| j.moves).sum::<u32>();
    Outcome {
        makespan,
        mean_slowdown,
        moves,
        gossip,
        up_s,
    }
}

#[allow(clippy::too_many_arguments)]
fn balance(
    me: usize,
    nodes: &mut [Node],
    jobs: &mut [Running],
    specs: &[Job],
    params: &Params,
    now: f64,
    rng: &mut Rng,
    moves: &mut u64,
) {
    let known = picture_nodes(me, nodes, jobs, specs, now);
    let moving_out = nodes[me]
        .jobs
        .iter()
        .filter(|&&j| jobs[j].moving_until > now)
        .count();
    let active = (nodes[me].jobs.len() - moving_out).max(1) as f64;
    let share = (nodes[me].capacity / active).min(1.0);
    let bodies: Vec<BodyLoad> = nodes[me]
        .jobs
        .iter()
        .filter(|&&j| jobs[j].moving_until <= now)
        .map(|&j| BodyLoad {
            pid: j as u32,
            cpu_now: share,
            cpu_ms: (jobs[j].done * 1e3) as u64,
            memory: specs[j].memory,
            since_move_ms: ((now - jobs[j].since_move) * 1e3) as u64,
            calls_per_s: 0.0,
            home: specs[j].origin as NodeId,
            movable: true,
            pinned: false,
        })
        .collect();
    let picture = Picture {
        me: me as NodeId,
        nodes: &known,
        bodies: &bodies,
        moving_out,
    };
    let sender_load = known[0].demand / known[0].capacity;
    for m in policy::decide(&picture, params, rng.next()) {
        let to = m.to as usize;
        let j = m.pid as usize;
        // The destination checks the move against its own picture.
        let dest = own_entry(to, &nodes[to], jobs, specs, now);
        if !nodes[to].up
            || policy::accept(&load_of(&dest, 0), specs[j].memory, sender_load).is_err()
        {
            continue;
        }
        nodes[me].jobs.retain(|&x| x != j);
        nodes[to].jobs.push(j);
        let job = &mut jobs[j];
        job.node = to;
        job.moving_until = now + specs[j].memory as f64 / RATE + MOVE_S;
        job.since_move = now;
        job.moves += 1;
        *moves += 1;
        // What the sender knows of the destination now.
        if let Some(e) = nodes[me].window.iter_mut().find(|e| e.id == to) {
            e.demand += 1.0;
        }
    }
}

/// The omniscient central scheduler's round: from the most loaded node to
/// the least loaded, the job with the most work left, while that helps.
fn central(nodes: &mut [Node], jobs: &mut [Running], specs: &[Job], now: f64, moves: &mut u64) {
    let n = nodes.len();
    let mut load: Vec<f64> = (0..n)
        .map(|i| demand_of(&nodes[i], jobs) / nodes[i].capacity)
        .collect();
    for _ in 0..n {
        let open = |i: &usize| nodes[*i].up && !nodes[*i].closed;
        let Some(max) = (0..n)
            .filter(|&i| nodes[i].up && !nodes[i].jobs.is_empty())
            .max_by(|&a, &b| {
                // A drained node's work goes first.
                let la = if nodes[a].closed { f64::MAX } else { load[a] };
                let lb = if nodes[b].closed { f64::MAX } else { load[b] };
                la.total_cmp(&lb)
            })
        else {
            return;
        };
        let Some(min) = (0..n).filter(open).min_by(|&a, &b| {
            ((load[a] * nodes[a].capacity + 1.0) / nodes[a].capacity)
                .total_cmp(&((load[b] * nodes[b].capacity + 1.0) / nodes[b].capacity))
        }) else {
            return;
        };
        let after = (load[min] * nodes[min].capacity + 1.0) / nodes[min].capacity;
        if max == min
            || (!nodes[max].closed && load[max] - after <= 0.25)
            || load[max] <= 1.0 && !nodes[max].closed
        {
            return;
        }
        let Some(&j) = nodes[max]
            .jobs
            .iter()
            .filter(|&&j| jobs[j].moving_until <= now)
            .max_by(|&&a, &&b| {
                (specs[a].demand - jobs[a].done).total_cmp(&(specs[b].demand - jobs[b].done))
            })
        else {
            return;
        };
        nodes[max].jobs.retain(|&x| x != j);
        nodes[min].jobs.push(j);
        jobs[j].node = min;
        jobs[j].moving_until = now + specs[j].memory as f64 / RATE + MOVE_S;
        jobs[j].since_move = now;
        jobs[j].moves += 1;
        *moves += 1;
        load[max] -= 1.0 / nodes[max].capacity;
        load[min] = after;
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.nodes < 2 {
        bail!("--nodes takes 2 or more");
    }
    let poisson = match args.workload.as_str() {
        "batch" => false,
        "poisson" => true,
        other => bail!("--workload is batch or poisson, not `{other}`"),
    };
    let t0 = Instant::now();
    let mut rng = Rng(args.seed);
    let n = args.nodes;
    let capacities: Vec<f64> = (0..n).map(|_| [1.0, 2.0, 4.0][rng.below(3)]).collect();
    // Node 0 is where batch jobs arrive; it never joins late nor drains.
    let joins: Vec<bool> = (0..n).map(|i| i != 0 && rng.below(10) == 0).collect();
    let drains: Vec<bool> = (0..n)
        .map(|i| i != 0 && !joins[i] && rng.below(20) == 0)
        .collect();
    let count = args.jobs_per_node * n;
    let capacity: f64 = capacities.iter().sum();
    let mean = {
        // The mean of the bounded Pareto, estimated from many draws.
        let mut r = Rng(args.seed ^ 7);
        (0..100_000).map(|_| r.pareto(1.3, 0.5, 200.0)).sum::<f64>() / 100_000.0
    };
    let lambda = 0.9 * capacity / mean;
    let mut at = 0.0;
    let specs: Vec<Job> = (0..count)
        .map(|_| {
            let demand = rng.pareto(1.3, 0.5, 200.0);
            let arrival = if poisson {
                at += -rng.unit().max(1e-12).ln() / lambda;
                at
            } else {
                0.0
            };
            Job {
                demand,
                arrival,
                origin: if poisson { rng.below(n) } else { 0 },
                memory: (1 + rng.below(64) as u64) << 20,
            }
        })
        .collect();
    let cluster = Cluster {
        capacities,
        joins,
        drains,
    };
    let params = Params::default();
    let timed = |s| {
        let t = Instant::now();
        let o = simulate(s, &cluster, &specs, &params, args.seed);
        (o, t.elapsed().as_secs_f64())
    };
    let (ours, ours_s) = timed(Strategy::Balancer);
    let (none, none_s) = timed(Strategy::None);
    let (random, random_s) = timed(Strategy::Random);
    let (oracle, oracle_s) = timed(Strategy::Central);
    let work: f64 = specs.iter().map(|j| j.demand).sum();
    let longest = specs.iter().map(|j| j.demand).fold(0.0, f64::max);
    let first = specs.first().map(|j| j.arrival).unwrap_or(0.0);
    let bound = (work / capacity).max(longest) + first;
    let wall = t0.elapsed().as_secs_f64();
    let report = serde_json::json!({
        "nodes": n,
        "workload": args.workload,
        "seed": args.seed,
        "jobs": count,
        "makespan_ratio": ours.makespan / bound,
        "mean_slowdown": ours.mean_slowdown,
        "oracle_mean_slowdown": oracle.mean_slowdown,
        "none_mean_slowdown": none.mean_slowdown,
        "random_mean_slowdown": random.mean_slowdown,
        "oracle_makespan_ratio": oracle.makespan / bound,
        "none_makespan_ratio": none.makespan / bound,
        "migrations_per_job": ours.moves as f64 / count as f64,
        "oracle_migrations_per_job": oracle.moves as f64 / count as f64,
        "gossip_msgs_per_node_s": ours.gossip as f64 / ours.up_s.max(1e-9),
        "wall_s": wall,
        "wall_s_each": { "balancer": ours_s, "none": none_s, "random": random_s, "central": oracle_s },
    });
    if args.json {
        println!("{report}");
    } else {
        for (k, v) in report.as_object().into_iter().flatten() {
            println!("{k:<26} {v}");
        }
    }
    Ok(())
}
