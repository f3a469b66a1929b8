//! What `ssictl top` shows and what its keys do, with no terminal and no
//! network: the latest snapshot of the cluster, the events, each process's
//! CPU use now (from two snapshots), the sort, the filter, the family tree,
//! the selection, the prompt being typed, and the status line. A key gives
//! back the action to carry out, if any.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ssi_home::events::Event;
use ssi_home::{NodeInfo, Pid, ProcState, ProcessInfo};
use std::collections::{HashMap, VecDeque};

/// Events kept for the events pane and the counts of moves.
const EVENTS_KEPT: usize = 1000;
/// Samples of the cluster's CPU use kept for the sparkline (one a second).
const HISTORY: usize = 600;
/// Moves counted in the nodes pane: those of the last five minutes.
pub const RECENT_MS: u64 = 5 * 60 * 1000;

/// A column of the processes pane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Pid,
    Ppid,
    Pgid,
    Home,
    Node,
    State,
    Cpu,
    Time,
    Mem,
    Age,
    Moves,
    Pin,
    Command,
}

impl Column {
    pub const ALL: [Column; 13] = [
        Column::Pid,
        Column::Ppid,
        Column::Pgid,
        Column::Home,
        Column::Node,
        Column::State,
        Column::Cpu,
        Column::Time,
        Column::Mem,
        Column::Age,
        Column::Moves,
        Column::Pin,
        Column::Command,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Column::Pid => "PID",
            Column::Ppid => "PPID",
            Column::Pgid => "PGID",
            Column::Home => "HOME",
            Column::Node => "NODE",
            Column::State => "STATE",
            Column::Cpu => "CPU%",
            Column::Time => "TIME",
            Column::Mem => "MEM",
            Column::Age => "AGE",
            Column::Moves => "MOVES",
            Column::Pin => "PIN",
            Column::Command => "COMMAND",
        }
    }

    /// Columns whose largest values matter most sort largest first.
    fn descending(self) -> bool {
        matches!(
            self,
            Column::Cpu | Column::Time | Column::Mem | Column::Age | Column::Moves
        )
    }
}

/// Which pane the arrows move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Processes,
    Nodes,
}

/// What is being typed on the prompt line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    Filter,
    Migrate(Pid),
    Signal(Pid),
    Checkpoint(Pid),
}

impl Prompt {
    pub fn question(&self) -> String {
        match self {
            Prompt::Filter => "Filter (text or pid; Enter applies, Esc clears): ".into(),
            Prompt::Migrate(pid) => format!("Move process {pid} to node: "),
            Prompt::Signal(pid) => format!("Signal for process {pid} (name or number) [TERM]: "),
            Prompt::Checkpoint(pid) => format!("Checkpoint process {pid} to file: "),
        }
    }
}

/// An action the keys asked for, to be carried out against the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Migrate {
        pid: Pid,
        node: u16,
    },
    Signal {
        pid: Pid,
        signal: ssi_deputy::Signal,
    },
    Checkpoint {
        pid: Pid,
        path: String,
    },
    Pin {
        pid: Pid,
        pinned: bool,
    },
    Drain {
        node: u16,
        on: bool,
    },
}

/// What `handle_key` asks of the loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Nothing,
    Act(Action),
    Quit,
}

/// A process as the processes pane shows it: its row, and its depth in the
/// family tree.
#[derive(Debug, Clone)]
pub struct Row {
    pub info: ProcessInfo,
    /// CPU use now, in percent of a core.
    pub cpu: f64,
    pub depth: usize,
    /// The last of its siblings (the tree draws └─ rather than ├─).
    pub last: bool,
}

/// The dashboard's state.
pub struct App {
    pub nodes: Vec<NodeInfo>,
    pub procs: Vec<ProcessInfo>,
    /// CPU use now per pid, in percent of a core.
    pub cpu: HashMap<Pid, f64>,
    /// The snapshot before: each pid's CPU time, and when it was taken.
    last: Option<(u64, HashMap<Pid, u64>)>,
    pub events: VecDeque<Event>,
    /// The cluster's CPU use, percent of its capacity, one sample a snapshot.
    pub history: VecDeque<u64>,
    pub sort: Column,
    pub reverse: bool,
    pub filter: String,
    pub tree: bool,
    pub focus: Focus,
    /// The selected process (followed by pid across refreshes), and node.
    pub selected: Option<Pid>,
    pub node_selected: usize,
    pub prompt: Option<(Prompt, String)>,
    pub help: bool,
    pub status: String,
    /// The connection's state when it is not answering.
    pub trouble: Option<String>,
    /// The wall clock now, ms since the Unix epoch.
    pub now_ms: u64,
    /// The first row shown of the processes pane (set by the view).
    pub offset: usize,
}

impl Default for App {
    fn default() -> Self {
        App::new()
    }
}

impl App {
    pub fn new() -> App {
        App {
            nodes: Vec::new(),
            procs: Vec::new(),
            cpu: HashMap::new(),
            last: None,
            events: VecDeque::new(),
            history: VecDeque::new(),
            sort: Column::Cpu,
            reverse: false,
            filter: String::new(),
            tree: false,
            focus: Focus::Processes,
            selected: None,
            node_selected: 0,
            prompt: None,
            help: false,
            status: "? for help, q to quit".into(),
            trouble: None,
            now_ms: 0,
            offset: 0,
        }
    }

    /// A new snapshot of the cluster, taken at `at_ms` (wall clock): the
    /// CPU use now of each process is what it used since the last one.
    pub fn snapshot(&mut self, nodes: Vec<NodeInfo>, procs: Vec<ProcessInfo>, at_ms: u64) {
        let times: HashMap<Pid, u64> = procs.iter().map(|p| (p.pid, p.cpu_ns)).collect();
        self.cpu.clear();
        if let Some((before_ms, before)) = &self.last
            && at_ms > *before_ms
        {
            let span_ns = (at_ms - before_ms) as f64 * 1e6;
            for p in &procs {
                if let Some(b) = before.get(&p.pid) {
                    let used = p.cpu_ns.saturating_sub(*b) as f64 / span_ns * 100.0;
                    self.cpu.insert(p.pid, used);
                }
            }
        }
        self.last = Some((at_ms, times));
        self.nodes = nodes;
        self.procs = procs;
        self.now_ms = at_ms;
        let (demand, capacity) =
            self.nodes
                .iter()
                .filter(|n| n.up)
                .fold((0.0, 0.0), |(d, c), n| match &n.status {
                    Some(s) if s.capacity > 0.0 => (d + s.demand, c + s.capacity),
                    Some(s) => (d + s.demand, c + f64::from(s.cores)),
                    None => (d, c),
                });
        let use_pct = if capacity > 0.0 {
            (demand / capacity * 100.0).round() as u64
        } else {
            0
        };
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(use_pct);
        self.node_selected = self.node_selected.min(self.nodes.len().saturating_sub(1));
        // The selection follows its process; one that ended leaves it at the top.
        let rows = self.rows();
        if self
            .selected
            .is_none_or(|pid| !rows.iter().any(|r| r.info.pid == pid))
        {
            self.selected = rows.first().map(|r| r.info.pid);
        }
    }

    /// Events as they come.
    pub fn events(&mut self, batch: Vec<Event>) {
        for e in batch {
            if self.events.len() == EVENTS_KEPT {
                self.events.pop_front();
            }
            self.events.push_back(e);
        }
    }

    /// The cluster's CPU use now, in percent of its capacity.
    pub fn cpu_use(&self) -> u64 {
        self.history.back().copied().unwrap_or(0)
    }

    /// Moves in the last minute.
    pub fn moves_per_minute(&self) -> usize {
        self.events
            .iter()
            .filter(|e| e.kind == "moved" && self.now_ms.saturating_sub(e.time_ms) <= 60_000)
            .count()
    }

    /// Bodies that moved into and out of `node` in the last [`RECENT_MS`].
    pub fn recent_moves(&self, node: u16) -> (usize, usize) {
        let recent = self
            .events
            .iter()
            .filter(|e| e.kind == "moved" && self.now_ms.saturating_sub(e.time_ms) <= RECENT_MS);
        recent.fold((0, 0), |(i, o), e| {
            (
                i + usize::from(e.node == node),
                o + usize::from(e.from == Some(node)),
            )
        })
    }

    fn matches(&self, p: &ProcessInfo) -> bool {
        let f = self.filter.trim();
        if f.is_empty() {
            return true;
        }
        if let Ok(pid) = f.parse::<Pid>()
            && p.pid == pid
        {
            return true;
        }
        p.command.to_lowercase().contains(&f.to_lowercase()) || p.pid.to_string().contains(f)
    }

    fn compare(&self, a: &ProcessInfo, b: &ProcessInfo) -> std::cmp::Ordering {
        let cpu = |p: &ProcessInfo| self.cpu.get(&p.pid).copied().unwrap_or(0.0);
        let o = match self.sort {
            Column::Pid => a.pid.cmp(&b.pid),
            Column::Ppid => a.ppid.cmp(&b.ppid),
            Column::Pgid => a.pgid.cmp(&b.pgid),
            Column::Home => a.home.cmp(&b.home),
            Column::Node => a.node.cmp(&b.node),
            Column::State => a.state.name().cmp(b.state.name()),
            Column::Cpu => cpu(a).total_cmp(&cpu(b)),
            Column::Time => a.cpu_ns.cmp(&b.cpu_ns),
            Column::Mem => a.memory.cmp(&b.memory),
            // Oldest first: started earliest.
            Column::Age => b.started_ms.cmp(&a.started_ms),
            Column::Moves => a.moves.cmp(&b.moves),
            Column::Pin => a.user_pinned.cmp(&b.user_pinned),
            Column::Command => a.command.cmp(&b.command),
        };
        let o = if self.sort.descending() {
            o.reverse()
        } else {
            o
        };
        let o = if self.reverse { o.reverse() } else { o };
        o.then(a.pid.cmp(&b.pid))
    }

    /// The processes pane's rows: filtered, sorted, and in the tree view
    /// each under its parent (siblings sorted).
    pub fn rows(&self) -> Vec<Row> {
        let row = |p: &ProcessInfo, depth, last| Row {
            info: p.clone(),
            cpu: self.cpu.get(&p.pid).copied().unwrap_or(0.0),
            depth,
            last,
        };
        let mut shown: Vec<&ProcessInfo> = self.procs.iter().filter(|p| self.matches(p)).collect();
        shown.sort_by(|a, b| self.compare(a, b));
        if !self.tree {
            return shown.into_iter().map(|p| row(p, 0, false)).collect();
        }
        let present: std::collections::HashSet<Pid> = shown.iter().map(|p| p.pid).collect();
        let mut children: HashMap<Pid, Vec<&ProcessInfo>> = HashMap::new();
        let mut roots = Vec::new();
        for p in shown {
            if p.ppid != 0 && p.ppid != p.pid && present.contains(&p.ppid) {
                children.entry(p.ppid).or_default().push(p);
            } else {
                roots.push(p);
            }
        }
        let mut out = Vec::new();
        // Depth first, without recursion (a family can be deep).
        let mut stack: Vec<(&ProcessInfo, usize, bool)> =
            roots.iter().rev().map(|p| (*p, 0, false)).collect();
        let mut seen = std::collections::HashSet::new();
        while let Some((p, depth, last)) = stack.pop() {
            if !seen.insert(p.pid) {
                continue;
            }
            out.push(row(p, depth, last));
            if let Some(kids) = children.get(&p.pid) {
                for (i, k) in kids.iter().enumerate().rev() {
                    stack.push((k, depth + 1, i + 1 == kids.len()));
                }
            }
        }
        out
    }

    fn selected_row(&self) -> Option<Row> {
        let pid = self.selected?;
        self.rows().into_iter().find(|r| r.info.pid == pid)
    }

    /// The selected node's id.
    pub fn selected_node(&self) -> Option<u16> {
        self.nodes.get(self.node_selected).map(|n| n.id)
    }

    fn move_selection(&mut self, by: isize) {
        match self.focus {
            Focus::Nodes => {
                let last = self.nodes.len().saturating_sub(1) as isize;
                self.node_selected = (self.node_selected as isize + by).clamp(0, last) as usize;
            }
            Focus::Processes => {
                let rows = self.rows();
                if rows.is_empty() {
                    self.selected = None;
                    return;
                }
                let at = self
                    .selected
                    .and_then(|pid| rows.iter().position(|r| r.info.pid == pid))
                    .unwrap_or(0) as isize;
                let to = (at + by).clamp(0, rows.len() as isize - 1) as usize;
                self.selected = Some(rows[to].info.pid);
            }
        }
    }

    /// The selected process, or a status line saying there is none.
    fn with_process(&mut self, act: impl FnOnce(&mut App, Row) -> Outcome) -> Outcome {
        match self.selected_row() {
            Some(row) => act(self, row),
            None => {
                self.status = "no process is selected".into();
                Outcome::Nothing
            }
        }
    }

    /// A key: what it changes here, and what it asks of the loop.
    pub fn handle_key(&mut self, key: KeyEvent) -> Outcome {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Outcome::Quit;
        }
        if let Some((prompt, mut input)) = self.prompt.take() {
            return match key.code {
                KeyCode::Esc => {
                    if prompt == Prompt::Filter {
                        self.filter.clear();
                    }
                    self.status = "cancelled".into();
                    Outcome::Nothing
                }
                KeyCode::Enter => self.answer(prompt, input),
                KeyCode::Backspace => {
                    input.pop();
                    self.prompt = Some((prompt, input));
                    Outcome::Nothing
                }
                KeyCode::Char(c) if !c.is_control() => {
                    input.push(c);
                    self.prompt = Some((prompt, input));
                    Outcome::Nothing
                }
                _ => {
                    self.prompt = Some((prompt, input));
                    Outcome::Nothing
                }
            };
        }
        if self.help {
            self.help = false;
            return match key.code {
                KeyCode::Char('q') => Outcome::Quit,
                _ => Outcome::Nothing,
            };
        }
        let page = 10;
        match key.code {
            KeyCode::Char('q') => return Outcome::Quit,
            KeyCode::Char('?') | KeyCode::F(1) => self.help = true,
            KeyCode::Up => self.move_selection(-1),
            KeyCode::Down => self.move_selection(1),
            KeyCode::PageUp => self.move_selection(-page),
            KeyCode::PageDown => self.move_selection(page),
            KeyCode::Home => self.move_selection(isize::MIN / 2),
            KeyCode::End => self.move_selection(isize::MAX / 2),
            KeyCode::Tab => {
                self.focus = match self.focus {
                    Focus::Processes => Focus::Nodes,
                    Focus::Nodes => Focus::Processes,
                }
            }
            KeyCode::Char('<') | KeyCode::Char(',') => self.shift_sort(-1),
            KeyCode::Char('>') | KeyCode::Char('.') => self.shift_sort(1),
            KeyCode::Char('P') => self.sort_by(Column::Cpu),
            KeyCode::Char('M') => self.sort_by(Column::Mem),
            KeyCode::Char('T') => self.sort_by(Column::Time),
            KeyCode::Char('I') => self.reverse = !self.reverse,
            KeyCode::Char('t') => {
                self.tree = !self.tree;
                self.status = if self.tree { "tree view" } else { "list view" }.into();
            }
            KeyCode::Char('/') => self.prompt = Some((Prompt::Filter, self.filter.clone())),
            KeyCode::Esc => {
                self.filter.clear();
                self.status = "filter cleared".into();
            }
            KeyCode::Char('m') => {
                return self.with_process(|app, r| {
                    app.prompt = Some((Prompt::Migrate(r.info.pid), String::new()));
                    Outcome::Nothing
                });
            }
            KeyCode::Char('k') => {
                return self.with_process(|app, r| {
                    app.prompt = Some((Prompt::Signal(r.info.pid), String::new()));
                    Outcome::Nothing
                });
            }
            KeyCode::Char('c') => {
                return self.with_process(|app, r| {
                    let path = format!("ssi-{}.ckpt", r.info.pid);
                    app.prompt = Some((Prompt::Checkpoint(r.info.pid), path));
                    Outcome::Nothing
                });
            }
            KeyCode::Char('s') => {
                return self.with_process(|_, r| {
                    Outcome::Act(Action::Signal {
                        pid: r.info.pid,
                        signal: ssi_deputy::Signal::STOP,
                    })
                });
            }
            KeyCode::Char('C') => {
                return self.with_process(|_, r| {
                    Outcome::Act(Action::Signal {
                        pid: r.info.pid,
                        signal: ssi_deputy::Signal::CONT,
                    })
                });
            }
            KeyCode::Char('p') => {
                return self.with_process(|_, r| {
                    Outcome::Act(Action::Pin {
                        pid: r.info.pid,
                        pinned: !r.info.user_pinned,
                    })
                });
            }
            KeyCode::Char('d') | KeyCode::Char('u') => {
                let on = key.code == KeyCode::Char('d');
                return match self.selected_node() {
                    Some(node) if self.focus == Focus::Nodes => {
                        Outcome::Act(Action::Drain { node, on })
                    }
                    _ => {
                        self.status = "select a node first (Tab moves to the nodes pane)".into();
                        Outcome::Nothing
                    }
                };
            }
            _ => {}
        }
        self.keep_selection();
        Outcome::Nothing
    }

    /// The selection stays on a row that is shown.
    fn keep_selection(&mut self) {
        let rows = self.rows();
        if self
            .selected
            .is_none_or(|pid| !rows.iter().any(|r| r.info.pid == pid))
        {
            self.selected = rows.first().map(|r| r.info.pid);
        }
    }

    fn sort_by(&mut self, column: Column) {
        if self.sort == column {
            self.reverse = !self.reverse;
        } else {
            self.sort = column;
            self.reverse = false;
        }
        self.status = format!("sorted by {}", column.title());
    }

    fn shift_sort(&mut self, by: isize) {
        let at = Column::ALL
            .iter()
            .position(|c| *c == self.sort)
            .unwrap_or(0) as isize;
        let n = Column::ALL.len() as isize;
        self.sort = Column::ALL[(at + by).rem_euclid(n) as usize];
        self.reverse = false;
        self.status = format!("sorted by {}", self.sort.title());
    }

    fn answer(&mut self, prompt: Prompt, input: String) -> Outcome {
        let input = input.trim().to_string();
        match prompt {
            Prompt::Filter => {
                self.filter = input;
                self.status = if self.filter.is_empty() {
                    "filter cleared".into()
                } else {
                    format!("filter: {}", self.filter)
                };
                self.keep_selection();
                Outcome::Nothing
            }
            Prompt::Migrate(pid) => match input.parse::<u16>() {
                Ok(node) if node > 0 => Outcome::Act(Action::Migrate { pid, node }),
                _ => {
                    self.status = format!("`{input}` is not a node id");
                    Outcome::Nothing
                }
            },
            Prompt::Signal(pid) => {
                let name = if input.is_empty() { "TERM" } else { &input };
                match ssi_deputy::Signal::parse(name) {
                    Ok(signal) => Outcome::Act(Action::Signal { pid, signal }),
                    Err(e) => {
                        self.status = e.to_string();
                        Outcome::Nothing
                    }
                }
            }
            Prompt::Checkpoint(pid) => {
                if input.is_empty() {
                    self.status = "a checkpoint needs a file path".into();
                    Outcome::Nothing
                } else {
                    Outcome::Act(Action::Checkpoint { pid, path: input })
                }
            }
        }
    }

    /// How a process's state reads in the pane.
    pub fn state_name(state: ProcState) -> &'static str {
        match state {
            ProcState::Running => "run",
            ProcState::Migrating => "move",
            ProcState::Checkpointing => "ckpt",
            ProcState::Stopped => "stop",
            ProcState::Zombie => "zomb",
            ProcState::Loading => "load",
            ProcState::Resuming => "resm",
        }
    }
}
