//! How `ssictl top` draws an [`App`]: a header (nodes up and down,
//! processes, the cluster's CPU use with a sparkline, moves a minute), the
//! nodes pane, the processes pane, the latest events, and the status or
//! prompt line; `?` lays the keys over it. Usable from 80×24 up; without
//! colour when asked (`NO_COLOR`).

use super::model::{App, Column, Focus, RECENT_MS};
use crate::figures::{age, bytes, cpu_time};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Sparkline, Table, Wrap};
use ssi_home::ProcessInfo;

/// The keys, as `?` shows them (and the README lists them).
pub const KEYS: &[(&str, &str)] = &[
    ("↑ ↓", "select a process (or a node)"),
    (
        "PgUp PgDn Home End",
        "a page up or down, the first, the last",
    ),
    ("Tab", "move between the processes and the nodes"),
    ("< >", "sort by the column to the left or right"),
    ("P M T", "sort by CPU, memory, time (again: reverse)"),
    ("I", "reverse the sort"),
    ("/", "filter by text or pid (Enter applies, Esc clears)"),
    ("t", "tree of families"),
    ("m", "migrate the process (type the node, Enter)"),
    ("k", "send a signal (name or number, default TERM)"),
    ("c", "checkpoint the process to a file"),
    ("s  C", "stop, continue the process"),
    ("p", "pin or unpin the process"),
    ("d  u", "drain, undrain the selected node"),
    ("?", "this help"),
    ("q  Ctrl-C", "quit"),
];

/// Styles, or none (`NO_COLOR`).
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    pub color: bool,
}

impl Palette {
    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    fn title(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    fn selected(self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }

    fn load(self, fraction: f64) -> Style {
        self.fg(if fraction >= 0.9 {
            Color::Red
        } else if fraction >= 0.6 {
            Color::Yellow
        } else {
            Color::Green
        })
    }
}

/// A bar of `width` cells for `fraction`, and its percentage: `[|||   ] 52%`.
pub fn bar(fraction: f64, width: usize) -> String {
    let f = if fraction.is_finite() {
        fraction.max(0.0)
    } else {
        0.0
    };
    let filled = ((f.min(1.0) * width as f64).round() as usize).min(width);
    format!(
        "[{}{}]{:>4}",
        "|".repeat(filled),
        " ".repeat(width - filled),
        format!("{:.0}%", f * 100.0)
    )
}

/// The time of day of a wall-clock time, UTC.
fn clock(ms: u64) -> String {
    let s = (ms / 1000) % 86400;
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, app: &mut App, palette: Palette) {
    let area = frame.area();
    let node_rows = (app.nodes.len() as u16 + 3).clamp(4, 10);
    let event_rows = if area.height >= 30 { 8 } else { 5 };
    let [header, nodes, procs, events, status] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(node_rows),
        Constraint::Min(5),
        Constraint::Length(event_rows),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, app, header, palette);
    draw_nodes(frame, app, nodes, palette);
    draw_processes(frame, app, procs, palette);
    draw_events(frame, app, events, palette);
    draw_status(frame, app, status, palette);
    if app.help {
        draw_help(frame, area, palette);
    }
}

fn draw_header(frame: &mut Frame<'_>, app: &App, area: Rect, palette: Palette) {
    let up = app.nodes.iter().filter(|n| n.up).count();
    let down = app.nodes.len() - up;
    let [top, spark] = Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(area);
    let mut spans = vec![
        Span::styled("ssi top ", palette.title()),
        Span::raw(format!(
            " nodes {up} up, {down} down · {} processes · CPU {}% · {} moves/min",
            app.procs.len(),
            app.cpu_use(),
            app.moves_per_minute()
        )),
    ];
    if !app.filter.is_empty() {
        spans.push(Span::raw(format!(" · filter: {}", app.filter)));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), top);
    let [label, line] =
        Layout::horizontal([Constraint::Length(9), Constraint::Min(1)]).areas(spark);
    frame.render_widget(Paragraph::new("CPU use: "), label);
    let width = line.width as usize;
    let data: Vec<u64> = app
        .history
        .iter()
        .skip(app.history.len().saturating_sub(width))
        .copied()
        .collect();
    frame.render_widget(
        Sparkline::default()
            .data(&data)
            .max(100)
            .style(palette.fg(Color::Green)),
        line,
    );
}

fn draw_nodes(frame: &mut Frame<'_>, app: &App, area: Rect, palette: Palette) {
    let focused = app.focus == Focus::Nodes;
    let header = Row::new(
        [
            "ID", "ADDRESS", "STATE", "CORES", "LOAD", "MEM", "BODIES", "IN", "OUT",
        ]
        .map(Cell::from),
    )
    .style(palette.title());
    let rows = app.nodes.iter().enumerate().map(|(i, n)| {
        let (moved_in, moved_out) = app.recent_moves(n.id);
        let state = match (&n.status, n.up) {
            (_, false) => "down",
            (Some(s), true) if s.draining => "drain",
            _ => "up",
        };
        let cells: Vec<Cell<'_>> = match (&n.status, n.up) {
            (Some(s), true) => {
                let capacity = if s.capacity > 0.0 {
                    s.capacity
                } else {
                    f64::from(s.cores)
                };
                let load = s.demand / capacity.max(1e-9);
                let mem = if s.mem_total > 0 {
                    1.0 - s.mem_available as f64 / s.mem_total as f64
                } else {
                    0.0
                };
                vec![
                    Cell::from(n.id.to_string()),
                    Cell::from(n.address.clone()),
                    Cell::from(state),
                    Cell::from(format!("{capacity:.0}")),
                    Cell::from(bar(load, 8)).style(palette.load(load)),
                    Cell::from(bar(mem, 8)).style(palette.load(mem)),
                    Cell::from(s.bodies.to_string()),
                    Cell::from(moved_in.to_string()),
                    Cell::from(moved_out.to_string()),
                ]
            }
            // A node that is down hosts nothing this node can vouch for.
            _ => vec![
                Cell::from(n.id.to_string()),
                Cell::from(n.address.clone()),
                Cell::from(state).style(palette.fg(Color::Red)),
                Cell::from("-"),
                Cell::from("-"),
                Cell::from("-"),
                Cell::from("-"),
                Cell::from(moved_in.to_string()),
                Cell::from(moved_out.to_string()),
            ],
        };
        let row = Row::new(cells);
        if focused && i == app.node_selected {
            row.style(palette.selected())
        } else {
            row
        }
    });
    let address = app
        .nodes
        .iter()
        .map(|n| n.address.len())
        .max()
        .unwrap_or(7)
        .clamp(7, 40) as u16;
    let widths = [
        Constraint::Length(4),
        Constraint::Length(address),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(14),
        Constraint::Length(14),
        Constraint::Length(6),
        Constraint::Length(3),
        Constraint::Length(3),
    ];
    let title = format!(
        " Nodes{} (IN/OUT: moves in the last {} min) ",
        if focused { " [Tab]" } else { "" },
        RECENT_MS / 60_000
    );
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(title)),
        area,
    );
}

fn draw_processes(frame: &mut Frame<'_>, app: &mut App, area: Rect, palette: Palette) {
    let rows = app.rows();
    let visible = area.height.saturating_sub(3) as usize;
    let at = app
        .selected
        .and_then(|pid| rows.iter().position(|r| r.info.pid == pid))
        .unwrap_or(0);
    // The selection stays in view; the view moves no more than it must.
    if at < app.offset {
        app.offset = at;
    } else if visible > 0 && at >= app.offset + visible {
        app.offset = at + 1 - visible;
    }
    app.offset = app.offset.min(rows.len().saturating_sub(visible.max(1)));
    // Every column when there is room; on a narrow terminal PGID, then
    // PPID, then AGE give way, so that COMMAND keeps 12 columns.
    let digits = |f: fn(&ProcessInfo) -> u32| {
        rows.iter()
            .map(|r| f(&r.info).to_string().len())
            .max()
            .unwrap_or(1)
    };
    let width_of = |c: Column| -> usize {
        let content = match c {
            Column::Pid => digits(|p| p.pid),
            Column::Ppid => digits(|p| p.ppid),
            Column::Pgid => digits(|p| p.pgid),
            Column::State => 4,
            Column::Cpu => 5,
            Column::Time => 8,
            Column::Mem => 5,
            Column::Age => 5,
            _ => 0,
        };
        // The sorted column's title carries a mark.
        content.max(c.title().len() + usize::from(c == app.sort))
    };
    let mut columns: Vec<Column> = Column::ALL.to_vec();
    let needed = |cols: &[Column]| -> usize {
        cols.iter()
            .filter(|c| **c != Column::Command)
            .map(|c| width_of(*c) + 1)
            .sum::<usize>()
            + 2
            + 12
    };
    for gives_way in [Column::Pgid, Column::Ppid, Column::Age] {
        if needed(&columns) <= area.width as usize {
            break;
        }
        columns.retain(|c| *c != gives_way);
    }
    let header = Row::new(columns.iter().map(|&c| {
        let mark = if c == app.sort {
            if app.reverse { "▲" } else { "▼" }
        } else {
            ""
        };
        let style = if c == app.sort {
            palette.title().add_modifier(Modifier::REVERSED)
        } else {
            palette.title()
        };
        Cell::from(format!("{}{mark}", c.title())).style(style)
    }));
    let focused = app.focus == Focus::Processes;
    let shown = rows.iter().skip(app.offset).take(visible).map(|r| {
        let p = &r.info;
        let cell = |c: Column| -> Cell<'_> {
            Cell::from(match c {
                Column::Pid => p.pid.to_string(),
                Column::Ppid => p.ppid.to_string(),
                Column::Pgid => p.pgid.to_string(),
                Column::Home => p.home.to_string(),
                Column::Node => p.node.to_string(),
                Column::State => App::state_name(p.state).to_string(),
                Column::Cpu => format!("{:.1}", r.cpu),
                Column::Time => cpu_time(p.cpu_ns),
                Column::Mem => bytes(p.memory),
                Column::Age => age(app.now_ms.saturating_sub(p.started_ms)),
                Column::Moves => p.moves.to_string(),
                Column::Pin => match (p.user_pinned, p.pinned.is_some()) {
                    (true, _) => "yes",
                    (false, true) => "no*",
                    (false, false) => "-",
                }
                .to_string(),
                Column::Command if app.tree && r.depth > 0 => format!(
                    "{}{} {}",
                    "  ".repeat(r.depth - 1),
                    if r.last { "└─" } else { "├─" },
                    p.command
                ),
                Column::Command => p.command.clone(),
            })
        };
        let row = Row::new(columns.iter().map(|&c| cell(c)));
        if focused && Some(p.pid) == app.selected {
            row.style(palette.selected())
        } else {
            row
        }
    });
    let widths: Vec<Constraint> = columns
        .iter()
        .map(|&c| match c {
            Column::Command => Constraint::Min(12),
            c => Constraint::Length(width_of(c) as u16),
        })
        .collect();
    let title = format!(
        " Processes {}{} ",
        rows.len(),
        if app.tree { " (tree)" } else { "" }
    );
    frame.render_widget(
        Table::new(shown, widths)
            .header(header)
            .column_spacing(1)
            .block(Block::bordered().title(title)),
        area,
    );
}

fn draw_events(frame: &mut Frame<'_>, app: &App, area: Rect, palette: Palette) {
    let room = area.height.saturating_sub(2) as usize;
    let lines: Vec<Line<'_>> = app
        .events
        .iter()
        .skip(app.events.len().saturating_sub(room))
        .map(|e| {
            Line::from(vec![
                Span::raw(clock(e.time_ms)),
                Span::raw(" "),
                Span::styled(format!("{:<10}", e.kind), palette.fg(Color::Yellow)),
                Span::raw(e.message.clone()),
            ])
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Events (UTC) ")),
        area,
    );
}

fn draw_status(frame: &mut Frame<'_>, app: &App, area: Rect, palette: Palette) {
    let line = match (&app.prompt, &app.trouble) {
        (Some((prompt, input)), _) => Line::from(vec![
            Span::styled(prompt.question(), palette.title()),
            Span::raw(input.clone()),
            Span::styled("_", Style::default().add_modifier(Modifier::SLOW_BLINK)),
        ]),
        (None, Some(trouble)) => Line::from(Span::styled(trouble.clone(), palette.fg(Color::Red))),
        (None, None) => Line::from(app.status.clone()),
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_help(frame: &mut Frame<'_>, area: Rect, palette: Palette) {
    let keys = KEYS
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(1);
    let width = area.width.min(76);
    let height = (KEYS.len() as u16 + 4).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let mut lines: Vec<Line<'_>> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:>keys$}  "), palette.title()),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from("any key closes this"));
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" Keys ")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::{Action, Outcome};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ssi_home::events::Event;
    use ssi_home::{NodeInfo, NodeStatus, ProcState, ProcessInfo};

    const NOW: u64 = 1_800_000_000_000;

    fn node(id: u16, up: bool, demand: f64, bodies: u32) -> NodeInfo {
        NodeInfo {
            id,
            address: format!("10.0.0.{id}:7000"),
            up,
            status: Some(NodeStatus {
                id,
                address: format!("10.0.0.{id}:7000"),
                cores: 4,
                capacity: 4.0,
                demand,
                bodies,
                mem_total: 16 << 30,
                mem_available: 12 << 30,
                ..NodeStatus::default()
            }),
            last_seen: None,
        }
    }

    fn proc(
        pid: u32,
        ppid: u32,
        node: u16,
        cpu_ms: u64,
        mem_mib: u64,
        command: &str,
    ) -> ProcessInfo {
        ProcessInfo {
            pid,
            home: (pid >> 22) as u16,
            node,
            state: ProcState::Running,
            command: command.into(),
            started_ms: NOW - 90_000,
            cpu_ns: cpu_ms * 1_000_000,
            memory: mem_mib << 20,
            pgid: if ppid == 0 { pid } else { ppid },
            ppid,
            pinned: None,
            moves: 0,
            user_pinned: false,
        }
    }

    const P1: u32 = (1 << 22) + 1;
    const P2: u32 = (1 << 22) + 2;
    const P3: u32 = (1 << 22) + 3;
    const P4: u32 = (2 << 22) + 1;
    const P5: u32 = (1 << 22) + 4;

    /// A fixed cluster: three nodes (the third down), five processes (a
    /// shell-like parent with two children, one a grandparent), two
    /// snapshots a second apart so that CPU use now is known.
    fn app() -> App {
        let mut app = App::new();
        let nodes = vec![
            node(1, true, 2.0, 2),
            node(2, true, 1.0, 3),
            node(3, false, 0.0, 0),
        ];
        let procs = |extra: u64| {
            vec![
                proc(P1, 0, 1, 10_000, 1, "family.wasm"),
                proc(P2, P1, 2, 20_000 + extra, 64, "spin.wasm 0"),
                proc(P3, P1, 2, 5_000, 2, "hold.wasm"),
                proc(P5, P3, 1, 1_000, 300, "compute.wasm big"),
                proc(P4, 0, 2, 30_000 + extra / 2, 8, "bigout.wasm"),
            ]
        };
        app.snapshot(nodes.clone(), procs(0), NOW - 1000);
        app.snapshot(nodes, procs(1000), NOW);
        // The selection follows its process: the top row after the first snapshot.
        key(&mut app, KeyCode::Home);
        let mut moved = Event::new(
            "moved",
            2,
            format!("process {P2} moved from node 1 to node 2 by the balancer"),
        )
        .of(P2);
        moved.from = Some(1);
        moved.time_ms = NOW - 5000;
        app.events(vec![moved]);
        app
    }

    fn screen(app: &mut App, width: u16, height: u16, color: bool) -> String {
        let mut t = Terminal::new(TestBackend::new(width, height)).expect("a test terminal");
        t.draw(|f| draw(f, app, Palette { color })).expect("draw");
        let buf = t.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    fn key(app: &mut App, code: KeyCode) -> Outcome {
        app.handle_key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn typed(app: &mut App, text: &str) {
        for c in text.chars() {
            key(app, KeyCode::Char(c));
        }
    }

    /// The pids of the processes pane, top to bottom.
    fn pids(app: &App) -> Vec<u32> {
        app.rows().iter().map(|r| r.info.pid).collect()
    }

    #[test]
    fn the_screen_shows_the_header_nodes_processes_and_events_in_80_by_24() {
        let mut app = app();
        let s = screen(&mut app, 80, 24, true);
        assert!(
            s.contains("nodes 2 up, 1 down · 5 processes · CPU 38% · 1 moves/min"),
            "{s}"
        );
        for h in ["ID", "ADDRESS", "STATE", "CORES", "LOAD", "MEM", "BODIES"] {
            assert!(s.contains(h), "nodes pane lacks {h}:\n{s}");
        }
        assert!(
            s.lines()
                .any(|l| l.contains("10.0.0.3:7000") && l.contains("down")),
            "{s}"
        );
        // Node 1's load: 2 of 4 cores.
        assert!(s.contains("[||||    ] 50%"), "{s}");
        // 80 columns: PGID and PPID give way to the command.
        for h in [
            "PID", "HOME", "NODE", "STATE", "CPU%", "TIME", "MEM", "AGE", "MOVES", "PIN", "COMMAND",
        ] {
            assert!(s.contains(h), "processes pane lacks {h}:\n{s}");
        }
        assert!(s.contains("spin.wasm 0"), "{s}");
        // 120: every column.
        let wide = screen(&mut app, 120, 30, false);
        for h in [
            "PID", "PPID", "PGID", "HOME", "NODE", "STATE", "CPU%", "TIME", "MEM", "AGE", "MOVES",
            "PIN", "COMMAND",
        ] {
            assert!(wide.contains(h), "processes pane lacks {h}:\n{wide}");
        }
        assert!(wide.contains("compute.wasm big"), "{wide}");
        assert!(s.contains(&P2.to_string()) && s.contains("100.0"), "{s}");
        assert!(s.contains("moved from node 1 to node 2"), "{s}");
        assert_eq!(s.lines().count(), 24);
        // Everything fits in 80 columns: nothing is cut in the middle of the header.
        assert!(s.lines().all(|l| l.chars().count() == 80));
    }

    #[test]
    fn the_default_sort_is_cpu_now_and_keys_change_it() {
        let mut app = app();
        // P2 used a second of CPU in the last second, P4 half of one.
        assert_eq!(pids(&app)[..2], [P2, P4]);
        key(&mut app, KeyCode::Char('M'));
        assert_eq!(pids(&app)[0], P5, "largest memory first");
        key(&mut app, KeyCode::Char('M'));
        assert_eq!(*pids(&app).last().expect("rows"), P5, "M again reverses");
        key(&mut app, KeyCode::Char('T'));
        assert_eq!(pids(&app)[0], P4, "most CPU time first");
        // `<` from TIME is CPU%, then STATE…, `>` back.
        key(&mut app, KeyCode::Char('<'));
        assert_eq!(app.sort, Column::Cpu);
        for _ in 0..6 {
            key(&mut app, KeyCode::Char('<'));
        }
        assert_eq!(app.sort, Column::Pid);
        assert_eq!(pids(&app), [P1, P2, P3, P5, P4]);
        key(&mut app, KeyCode::Char('>'));
        assert_eq!(app.sort, Column::Ppid);
        let s = screen(&mut app, 100, 30, false);
        assert!(s.contains("PPID▼"), "the sorted column is marked:\n{s}");
    }

    #[test]
    fn the_filter_takes_text_or_a_pid_and_escape_clears_it() {
        let mut app = app();
        key(&mut app, KeyCode::Char('/'));
        typed(&mut app, "SPIN");
        // Not applied until Enter.
        assert_eq!(pids(&app).len(), 5);
        assert!(screen(&mut app, 80, 24, false).contains("Filter (text or pid"));
        key(&mut app, KeyCode::Enter);
        assert_eq!(pids(&app), [P2]);
        assert_eq!(
            app.selected,
            Some(P2),
            "the selection moves onto what is shown"
        );
        key(&mut app, KeyCode::Char('/'));
        for _ in 0..4 {
            key(&mut app, KeyCode::Backspace);
        }
        typed(&mut app, &P4.to_string());
        key(&mut app, KeyCode::Enter);
        assert_eq!(pids(&app), [P4]);
        let s = screen(&mut app, 80, 24, false);
        assert!(s.contains(&format!("filter: {P4}")), "{s}");
        key(&mut app, KeyCode::Esc);
        assert_eq!(pids(&app).len(), 5);
    }

    #[test]
    fn the_tree_puts_each_process_under_its_parent() {
        let mut app = app();
        key(&mut app, KeyCode::Char('t'));
        key(&mut app, KeyCode::Char('<'));
        key(&mut app, KeyCode::Char('<'));
        key(&mut app, KeyCode::Char('<'));
        key(&mut app, KeyCode::Char('<'));
        key(&mut app, KeyCode::Char('<'));
        key(&mut app, KeyCode::Char('<'));
        assert_eq!(app.sort, Column::Pid);
        assert_eq!(pids(&app), [P1, P2, P3, P5, P4]);
        let depths: Vec<usize> = app.rows().iter().map(|r| r.depth).collect();
        assert_eq!(depths, [0, 1, 1, 2, 0]);
        let s = screen(&mut app, 100, 30, false);
        assert!(s.contains("├─ spin.wasm 0"), "{s}");
        assert!(s.contains("└─ hold.wasm"), "{s}");
        assert!(s.contains("  └─ compute.wasm big"), "{s}");
        assert!(s.contains("(tree)"), "{s}");
    }

    #[test]
    fn actions_ask_what_they_need_and_name_the_selected_process_or_node() {
        let mut app = app();
        assert_eq!(app.selected, Some(P2));
        key(&mut app, KeyCode::Down);
        assert_eq!(app.selected, Some(P4));
        key(&mut app, KeyCode::Char('m'));
        typed(&mut app, "3");
        assert_eq!(
            key(&mut app, KeyCode::Enter),
            Outcome::Act(Action::Migrate { pid: P4, node: 3 })
        );
        key(&mut app, KeyCode::Char('m'));
        typed(&mut app, "x");
        assert_eq!(key(&mut app, KeyCode::Enter), Outcome::Nothing);
        assert!(app.status.contains("not a node id"), "{}", app.status);
        key(&mut app, KeyCode::Char('k'));
        assert_eq!(
            key(&mut app, KeyCode::Enter),
            Outcome::Act(Action::Signal {
                pid: P4,
                signal: ssi_deputy::Signal::TERM
            })
        );
        key(&mut app, KeyCode::Char('k'));
        typed(&mut app, "9");
        assert_eq!(
            key(&mut app, KeyCode::Enter),
            Outcome::Act(Action::Signal {
                pid: P4,
                signal: ssi_deputy::Signal::KILL
            })
        );
        key(&mut app, KeyCode::Char('k'));
        typed(&mut app, "NOPE");
        assert_eq!(key(&mut app, KeyCode::Enter), Outcome::Nothing);
        key(&mut app, KeyCode::Char('c'));
        assert_eq!(
            key(&mut app, KeyCode::Enter),
            Outcome::Act(Action::Checkpoint {
                pid: P4,
                path: format!("ssi-{P4}.ckpt")
            })
        );
        assert_eq!(
            key(&mut app, KeyCode::Char('s')),
            Outcome::Act(Action::Signal {
                pid: P4,
                signal: ssi_deputy::Signal::STOP
            })
        );
        assert_eq!(
            key(&mut app, KeyCode::Char('C')),
            Outcome::Act(Action::Signal {
                pid: P4,
                signal: ssi_deputy::Signal::CONT
            })
        );
        assert_eq!(
            key(&mut app, KeyCode::Char('p')),
            Outcome::Act(Action::Pin {
                pid: P4,
                pinned: true
            })
        );
        // Drain is on a node: Tab to the nodes pane first.
        assert_eq!(key(&mut app, KeyCode::Char('d')), Outcome::Nothing);
        key(&mut app, KeyCode::Tab);
        key(&mut app, KeyCode::Down);
        assert_eq!(
            key(&mut app, KeyCode::Char('d')),
            Outcome::Act(Action::Drain { node: 2, on: true })
        );
        assert_eq!(
            key(&mut app, KeyCode::Char('u')),
            Outcome::Act(Action::Drain { node: 2, on: false })
        );
        // Esc cancels a prompt.
        key(&mut app, KeyCode::Tab);
        key(&mut app, KeyCode::Char('m'));
        assert_eq!(key(&mut app, KeyCode::Esc), Outcome::Nothing);
        assert!(app.prompt.is_none());
        assert_eq!(key(&mut app, KeyCode::Char('q')), Outcome::Quit);
        assert_eq!(
            app.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Outcome::Quit
        );
    }

    #[test]
    fn help_lists_every_key_and_colour_follows_no_color() {
        let mut app = app();
        key(&mut app, KeyCode::Char('?'));
        let s = screen(&mut app, 80, 24, true);
        for (k, _) in KEYS {
            assert!(s.contains(k), "help lacks {k}:\n{s}");
        }
        key(&mut app, KeyCode::Char('x'));
        assert!(!app.help);
        let coloured = |color: bool| {
            let mut t = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
            let mut fresh = self::app();
            t.draw(|f| draw(f, &mut fresh, Palette { color }))
                .expect("draw");
            t.backend()
                .buffer()
                .content
                .iter()
                .any(|c| c.fg != Color::Reset || c.bg != Color::Reset)
        };
        assert!(coloured(true));
        assert!(!coloured(false));
    }

    #[test]
    fn a_large_cluster_scrolls_to_keep_the_selection_in_view() {
        let mut app = App::new();
        let procs: Vec<ProcessInfo> = (1..=2000)
            .map(|i| proc((1 << 22) + i, 0, 1, u64::from(i) * 1000, 1, "sleep.wasm"))
            .collect();
        app.snapshot(vec![node(1, true, 1.0, 2000)], procs, NOW);
        key(&mut app, KeyCode::End);
        let s = screen(&mut app, 80, 24, false);
        // All idle: by pid. The last row is in view, the first is not.
        assert!(s.contains(&((1 << 22) + 2000).to_string()), "{s}");
        assert!(!s.contains(&((1 << 22) + 1).to_string()), "{s}");
        assert!(s.contains("Processes 2000"), "{s}");
        key(&mut app, KeyCode::Home);
        let s = screen(&mut app, 80, 24, false);
        assert!(s.contains(&((1 << 22) + 1).to_string()), "{s}");
    }

    #[test]
    fn bars_read_as_in_htop() {
        assert_eq!(bar(0.5, 8), "[||||    ] 50%");
        assert_eq!(bar(1.7, 4), "[||||]170%");
        assert_eq!(bar(f64::NAN, 4), "[    ]  0%");
    }
}
