//! `ssictl top`: a live, full-screen dashboard of the whole cluster, with
//! actions on its processes and nodes.
//!
//! | file | what it holds |
//! | --- | --- |
//! | `model.rs` | what is shown and what the keys do: no terminal, no network |
//! | `view.rs` | drawing the model with ratatui |
//! | `mod.rs` | the terminal, the feed from a node, the loop |
//!
//! The feed runs on a thread of its own: it follows the cluster's event
//! stream (pushed by the node), takes a snapshot of every process and node
//! each refresh, carries out the actions, and reconnects when the node goes
//! away. The loop draws when something changed, at least once a refresh.

pub mod model;
pub mod view;

use anyhow::{Context, Result};
use futures::StreamExt;
use model::{Action, App, Outcome};
use ratatui::crossterm::event::{self, Event as TermEvent, KeyEventKind};
use ssi_home::events::Event;
use ssi_home::{Endpoint, NodeInfo, ProcessInfo};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the feed tells the loop.
enum Msg {
    Snapshot(Vec<NodeInfo>, Vec<ProcessInfo>, u64),
    Events(Vec<Event>),
    /// An action's result, or how far it is.
    Status(String),
    /// The node does not answer (why), or answers again (none).
    Trouble(Option<String>),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs the dashboard against the node at `endpoint`, refreshing every
/// `every`, until `q`.
pub fn run(endpoint: Endpoint, every: Duration) -> Result<()> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        anyhow::bail!(
            "`ssictl top` needs a terminal (`ssictl ps` and `ssictl events` print to pipes)"
        );
    }
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let (tx, rx) = mpsc::channel();
    let (act_tx, act_rx) = futures::channel::mpsc::unbounded();
    let feed = std::thread::Builder::new()
        .name("feed".into())
        .spawn(move || feed(endpoint, tx, act_rx, every))
        .context("cannot start the dashboard's feed")?;
    // Raw mode and the alternate screen; a panic restores the terminal
    // before it reports.
    let mut terminal = ratatui::init();
    let result = ui(&mut terminal, rx, act_tx, color, every);
    ratatui::restore();
    drop(feed);
    result
}

fn ui(
    terminal: &mut ratatui::DefaultTerminal,
    rx: mpsc::Receiver<Msg>,
    actions: futures::channel::mpsc::UnboundedSender<Action>,
    color: bool,
    every: Duration,
) -> Result<()> {
    let mut app = App::new();
    app.status = "connecting… (? for help, q to quit)".into();
    let palette = view::Palette { color };
    let mut dirty = true;
    let mut drawn = Instant::now();
    loop {
        if dirty || drawn.elapsed() >= every {
            terminal
                .draw(|f| view::draw(f, &mut app, palette))
                .context("cannot draw")?;
            drawn = Instant::now();
            dirty = false;
        }
        if event::poll(Duration::from_millis(100)).context("cannot read the terminal")? {
            match event::read().context("cannot read the terminal")? {
                TermEvent::Key(key) if key.kind != KeyEventKind::Release => {
                    match app.handle_key(key) {
                        Outcome::Quit => return Ok(()),
                        Outcome::Act(action) => {
                            app.status = format!("{}…", describe(&action));
                            if actions.unbounded_send(action).is_err() {
                                app.status = "the connection to the node is gone".into();
                            }
                        }
                        Outcome::Nothing => {}
                    }
                    dirty = true;
                }
                TermEvent::Resize(..) => dirty = true,
                _ => {}
            }
        }
        loop {
            match rx.try_recv() {
                Ok(Msg::Snapshot(nodes, procs, at)) => app.snapshot(nodes, procs, at),
                Ok(Msg::Events(batch)) => app.events(batch),
                Ok(Msg::Status(s)) => app.status = s,
                Ok(Msg::Trouble(t)) => {
                    if t.is_none() && app.status.starts_with("connecting") {
                        app.status = "? for help, q to quit".into();
                    }
                    app.trouble = t;
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    anyhow::bail!("the dashboard's feed stopped")
                }
            }
            dirty = true;
        }
    }
}

/// An action in words, as the status line says it is under way.
fn describe(action: &Action) -> String {
    match action {
        Action::Migrate { pid, node } => format!("moving process {pid} to node {node}"),
        Action::Signal { pid, signal } => format!("sending {signal} to process {pid}"),
        Action::Checkpoint { pid, path } => format!("checkpointing process {pid} to {path}"),
        Action::Pin { pid, pinned: true } => format!("pinning process {pid}"),
        Action::Pin { pid, pinned: false } => format!("unpinning process {pid}"),
        Action::Drain { node, on: true } => format!("draining node {node}"),
        Action::Drain { node, on: false } => format!("undraining node {node}"),
    }
}

/// The feed's thread: connect, follow, snapshot, act; reconnect when the
/// node goes away; end when the loop does.
fn feed(
    endpoint: Endpoint,
    tx: mpsc::Sender<Msg>,
    mut actions: futures::channel::mpsc::UnboundedReceiver<Action>,
    every: Duration,
) {
    let Ok(rt) = ssi_home::thread_runtime() else {
        let _ = tx.send(Msg::Trouble(Some("cannot start the feed's runtime".into())));
        return;
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        loop {
            let connection = match ssi_home::connect(&endpoint).await {
                Ok(c) => c,
                Err(e) => {
                    if tx
                        .send(Msg::Trouble(Some(format!("retrying: {e}"))))
                        .is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let admin = connection.admin_request().send().pipeline.get_admin();
            let mut events = match ssi_home::admin_events(&admin, 200, true).await {
                Ok(rx) => rx,
                Err(e) => {
                    let why = ssi_home::remote_message(&e);
                    if tx
                        .send(Msg::Trouble(Some(format!("{endpoint}: {why}"))))
                        .is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let _ = tx.send(Msg::Trouble(None));
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let at = now_ms();
                        let asked = futures::future::join(
                            ssi_home::admin_nodes(&admin),
                            ssi_home::admin_processes(&admin),
                        );
                        match tokio::time::timeout(ssi_home::DOWN_AFTER * 2, asked).await {
                            Ok((Ok(nodes), Ok(procs))) => {
                                if tx.send(Msg::Snapshot(nodes, procs, at)).is_err() {
                                    return;
                                }
                            }
                            _ => break,
                        }
                    }
                    batch = events.next() => match batch {
                        Some(batch) => {
                            if tx.send(Msg::Events(batch)).is_err() {
                                return;
                            }
                        }
                        None => break,
                    },
                    action = actions.next() => match action {
                        Some(action) => {
                            tokio::task::spawn_local(act(admin.clone(), action, tx.clone()));
                        }
                        None => return,
                    },
                }
            }
            if tx
                .send(Msg::Trouble(Some(format!(
                    "reconnecting: {endpoint} stopped answering"
                ))))
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

/// Carries out an action and tells how it went.
async fn act(admin: ssi_schema::admin::Client, action: Action, tx: mpsc::Sender<Msg>) {
    let said = |e: capnp::Error| ssi_home::remote_message(&e);
    let result: Result<String, String> = match action {
        Action::Migrate { pid, node } => {
            let progress = capnp_rpc::new_client(Moving {
                pid,
                node,
                tx: tx.clone(),
            });
            ssi_home::admin_migrate(&admin, pid, node, Some(progress))
                .await
                .map(|r| {
                    format!(
                        "process {pid} moved from node {} to node {} in {:.1} ms (frozen {:.1} ms)",
                        r.from,
                        r.to,
                        r.total_micros as f64 / 1000.0,
                        r.freeze_micros as f64 / 1000.0
                    )
                })
                .map_err(said)
        }
        Action::Signal { pid, signal } => {
            let mut req = admin.kill_request();
            req.get().set_target(pid as i32);
            req.get().set_signal(signal.number());
            req.send()
                .promise
                .await
                .map(|_| format!("sent {signal} to process {pid}"))
                .map_err(said)
        }
        Action::Pin { pid, pinned } => ssi_home::admin_pin(&admin, pid, pinned)
            .await
            .map(|_| {
                if pinned {
                    format!("process {pid} is pinned")
                } else {
                    format!("process {pid} is no longer pinned")
                }
            })
            .map_err(said),
        Action::Drain { node, on } => ssi_home::admin_drain(&admin, node, on)
            .await
            .map(|o| match (on, o.stayed.first()) {
                (false, _) => format!("node {node} takes work again"),
                (true, None) => format!("node {node} is drained: {} bodies moved off", o.moved),
                (true, Some(first)) => format!(
                    "node {node} is drained: {} moved off, {} stayed ({first})",
                    o.moved,
                    o.stayed.len()
                ),
            })
            .map_err(said),
        Action::Checkpoint { pid, path } => checkpoint(&admin, pid, &path, &tx).await,
    };
    let _ = tx.send(Msg::Status(match result {
        Ok(s) => s,
        Err(e) => format!("error: {e}"),
    }));
}

/// A move's progress, told on the status line.
struct Moving {
    pid: ssi_home::Pid,
    node: u16,
    tx: mpsc::Sender<Msg>,
}

impl ssi_schema::progress::Server for Moving {
    async fn update(
        self: capnp::capability::Rc<Self>,
        params: ssi_schema::progress::UpdateParams,
        _: ssi_schema::progress::UpdateResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let _ = self.tx.send(Msg::Status(format!(
            "moving process {} to node {}: {} of {} sent",
            self.pid,
            self.node,
            crate::figures::bytes(p.get_done()),
            crate::figures::bytes(p.get_total())
        )));
        Ok(())
    }
}

/// A checkpoint into a file, its progress told as it arrives.
async fn checkpoint(
    admin: &ssi_schema::admin::Client,
    pid: ssi_home::Pid,
    path: &str,
    tx: &mpsc::Sender<Msg>,
) -> Result<String, String> {
    let path = std::path::Path::new(path);
    let (file, sink) = crate::CheckpointFile::create(path, false).map_err(|e| e.to_string())?;
    let taking = ssi_home::admin_checkpoint(admin, pid, false, sink);
    futures::pin_mut!(taking);
    let report = loop {
        tokio::select! {
            r = &mut taking => break r.map_err(|e| ssi_home::remote_message(&e))?,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                let (done, total) = file.progress();
                let of = total.map(|t| format!(" of {}", crate::figures::bytes(t))).unwrap_or_default();
                let _ = tx.send(Msg::Status(format!(
                    "checkpointing process {pid}: {}{of} written",
                    crate::figures::bytes(done)
                )));
            }
        }
    };
    let written = file.commit().map_err(|e| e.to_string())?;
    Ok(format!(
        "process {pid} checkpointed to {} ({}; frozen {:.1} ms)",
        path.display(),
        crate::figures::bytes(written),
        report.freeze_micros as f64 / 1000.0
    ))
}
