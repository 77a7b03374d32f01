#!/usr/bin/env python3
"""Write the large benchmark workspace: a program of realistic size built from Debian's crates.

    python bench/large/generate.py DIR

Four workspace crates, each depending on the next:

    app (bin: clap, tracing-subscriber, image, tui + crossterm, tokio; about 1,900 lines)
     -> web (hyper + tokio) -> store (rusqlite) -> core (serde, serde_json, regex)

The benchmark's edits change a marker string: ``"app banner v1"`` in ``app/src/main.rs`` (a bin
edit) and ``"store banner v1"`` in ``store/src/lib.rs`` (an edit in the middle of the graph:
store, web and app are rebuilt). Needs the packages ``bench/large/setup`` installs. The output
is deterministic: the same script writes the same files.
"""

from __future__ import annotations

import sys
from pathlib import Path

BIN_MARKER = "app banner v1"
LIB_MARKER = "store banner v1"
BIN_FILE = "app/src/main.rs"
LIB_FILE = "store/src/lib.rs"
HANDLERS = 72  # generated handler functions in the bin crate (about 24 lines each)

CARGO_CONFIG = """\
[source.crates-io]
replace-with = "debian"

[source.debian]
directory = "/usr/share/cargo/registry"

[net]
offline = true
"""

WORKSPACE = """\
[workspace]
members = ["app", "web", "store", "core"]
resolver = "2"
"""


def manifest(name: str, deps: str, bin_crate: bool = False) -> str:
    kind = f'\n[[bin]]\nname = "{name}"\npath = "src/main.rs"\n' if bin_crate else ""
    return f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\npublish = false\n{kind}\n[dependencies]\n{deps}'


CORE_DEPS = """\
serde = { version = "1", features = ["derive"] }
serde_json = "1"
regex = "1"
"""
STORE_DEPS = """\
benchcore = { path = "../core" }
rusqlite = "0.28"
serde_json = "1"
"""
WEB_DEPS = """\
benchstore = { path = "../store" }
benchcore = { path = "../core" }
hyper = { version = "0.14", features = ["server", "http1", "tcp", "runtime"] }
tokio = { version = "1", features = ["rt-multi-thread", "macros", "net", "time", "sync"] }
serde_json = "1"
"""
APP_DEPS = """\
benchweb = { path = "../web" }
benchstore = { path = "../store" }
benchcore = { path = "../core" }
clap = { version = "4", features = ["derive"] }
tracing = "0.1"
tracing-subscriber = { version = "0.3", features = ["fmt", "env-filter"] }
image = "0.24"
tui = { version = "0.19", features = ["crossterm"] }
crossterm = "0.25"
tokio = { version = "1", features = ["rt-multi-thread", "macros", "net", "time", "sync"] }
serde_json = "1"
"""

CORE_LIB = """\
//! Records, parsing and scoring shared by every crate of the benchmark program.
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: u64,
    pub name: String,
    pub tags: Vec<String>,
    pub score: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub count: usize,
    pub total: f64,
    pub by_tag: BTreeMap<String, usize>,
}

pub fn core_banner() -> &'static str {
    "core banner v1"
}

/// Parses lines like `12 widget [red,blue] 3.5`.
pub fn parse_line(line: &str) -> Option<Record> {
    let pattern = Regex::new(r"^(\\d+)\\s+(\\w+)\\s+\\[([\\w,]*)\\]\\s+([0-9.]+)$").ok()?;
    let caps = pattern.captures(line.trim())?;
    Some(Record {
        id: caps[1].parse().ok()?,
        name: caps[2].to_string(),
        tags: caps[3].split(',').filter(|t| !t.is_empty()).map(str::to_string).collect(),
        score: caps[4].parse().ok()?,
    })
}

pub fn summarize(records: &[Record]) -> Summary {
    let mut summary = Summary::default();
    for record in records {
        summary.count += 1;
        summary.total += record.score;
        for tag in &record.tags {
            *summary.by_tag.entry(tag.clone()).or_default() += 1;
        }
    }
    summary
}

pub fn to_json(records: &[Record]) -> String {
    serde_json::to_string(records).unwrap_or_default()
}

pub fn from_json(text: &str) -> Vec<Record> {
    serde_json::from_str(text).unwrap_or_default()
}

pub fn sample(n: u64) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            id: i,
            name: format!("item{i}"),
            tags: vec![["red", "green", "blue"][(i % 3) as usize].to_string()],
            score: (i as f64) * 0.5,
        })
        .collect()
}
"""

STORE_LIB = """\
//! Keeps records in SQLite.
use benchcore::Record;
use rusqlite::{params, Connection};

pub struct Store {
    conn: Connection,
}

pub fn store_banner() -> String {
    format!("{} / {}", "store banner v1", benchcore::core_banner())
}

impl Store {
    pub fn open_in_memory() -> rusqlite::Result<Store> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(
            "CREATE TABLE records (id INTEGER PRIMARY KEY, name TEXT NOT NULL, tags TEXT NOT NULL, score REAL NOT NULL);",
        )?;
        Ok(Store { conn })
    }

    pub fn insert(&self, record: &Record) -> rusqlite::Result<()> {
        let tags = serde_json::to_string(&record.tags).unwrap_or_default();
        self.conn.execute(
            "INSERT OR REPLACE INTO records (id, name, tags, score) VALUES (?1, ?2, ?3, ?4)",
            params![record.id as i64, record.name, tags, record.score],
        )?;
        Ok(())
    }

    pub fn all(&self) -> rusqlite::Result<Vec<Record>> {
        let mut statement = self.conn.prepare("SELECT id, name, tags, score FROM records ORDER BY id")?;
        let rows = statement.query_map([], |row| {
            let tags: String = row.get(2)?;
            Ok(Record {
                id: row.get::<_, i64>(0)? as u64,
                name: row.get(1)?,
                tags: serde_json::from_str(&tags).unwrap_or_default(),
                score: row.get(3)?,
            })
        })?;
        rows.collect()
    }

    pub fn count(&self) -> rusqlite::Result<i64> {
        self.conn.query_row("SELECT COUNT(*) FROM records", [], |row| row.get(0))
    }

    pub fn report(&self) -> String {
        let records = self.all().unwrap_or_default();
        let summary = benchcore::summarize(&records);
        format!("{}: {} records, total {:.1}", store_banner(), summary.count, summary.total)
    }
}
"""

WEB_LIB = """\
//! Serves the store over HTTP.
use benchstore::Store;
use hyper::service::{make_service_fn, service_fn};
use hyper::{Body, Request, Response, Server};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub fn web_banner() -> String {
    format!("web banner v1 / {}", benchstore::store_banner())
}

pub fn render_page(store: &Store) -> String {
    let records = store.all().unwrap_or_default();
    let mut page = format!("<h1>{}</h1>\\n<ul>\\n", web_banner());
    for record in records.iter().take(20) {
        page.push_str(&format!("<li>{} {} {:.1}</li>\\n", record.id, record.name, record.score));
    }
    page.push_str("</ul>\\n");
    page
}

async fn handle(store: Arc<Mutex<Store>>, request: Request<Body>) -> Result<Response<Body>, Infallible> {
    let body = match request.uri().path() {
        "/json" => benchcore::to_json(&store.lock().unwrap().all().unwrap_or_default()),
        "/report" => store.lock().unwrap().report(),
        _ => render_page(&store.lock().unwrap()),
    };
    Ok(Response::new(Body::from(body)))
}

pub async fn serve(addr: SocketAddr, store: Store) -> Result<(), hyper::Error> {
    let store = Arc::new(Mutex::new(store));
    let make_service = make_service_fn(move |_conn| {
        let store = store.clone();
        async move { Ok::<_, Infallible>(service_fn(move |request| handle(store.clone(), request))) }
    });
    Server::bind(&addr).serve(make_service).await
}
"""

APP_HEAD = """\
//! The benchmark program: a command-line tool with a web server, a terminal view and images.
use benchcore::Record;
use clap::Parser;
use image::{ImageBuffer, Rgb};
use tui::backend::TestBackend;
use tui::layout::{Constraint, Direction, Layout};
use tui::widgets::{Block, Borders, Paragraph};
use tui::Terminal;

#[derive(Parser, Debug)]
#[command(name = "benchapp", about = "thinpatch's large benchmark program")]
struct Args {
    /// Serve the store on this port instead of printing a report.
    #[arg(long)]
    serve: Option<u16>,
    /// Number of sample records.
    #[arg(long, default_value_t = 50)]
    records: u64,
    /// Write a picture of the scores here.
    #[arg(long)]
    image: Option<String>,
    /// Keep printing the banner every this many milliseconds.
    #[arg(long)]
    every_ms: Option<u64>,
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub lines: Vec<String>,
    pub total: f64,
    pub flagged: usize,
}

fn banner() -> String {
    format!("{} / {}", "app banner v1", benchweb::web_banner())
}

fn draw(records: &[Record]) -> String {
    let backend = TestBackend::new(60, 8);
    let mut terminal = Terminal::new(backend).expect("terminal");
    let text = records.iter().take(4).map(|r| format!("{} {}", r.id, r.name)).collect::<Vec<_>>().join("\\n");
    terminal
        .draw(|frame| {
            let areas = Layout::default()
                .direction(Direction::Vertical)
                .constraints([Constraint::Length(3), Constraint::Min(1)])
                .split(frame.size());
            frame.render_widget(Paragraph::new(banner()).block(Block::default().borders(Borders::ALL)), areas[0]);
            frame.render_widget(Paragraph::new(text), areas[1]);
        })
        .expect("draw");
    format!("{:?}", terminal.backend().buffer().area)
}

fn picture(records: &[Record], path: &str) {
    let image = ImageBuffer::from_fn(64, 64, |x, y| {
        let score = records.get(((x + y) as usize) % records.len().max(1)).map(|r| r.score).unwrap_or(0.0);
        Rgb([(score as u32 % 255) as u8, x as u8 * 4, y as u8 * 4])
    });
    image.save(path).expect("write image");
}

fn terminal_width() -> u16 {
    crossterm::terminal::size().map(|(w, _)| w).unwrap_or(80)
}
"""

APP_TAIL = """
fn run_handlers(records: &[Record]) -> Report {
    let mut report = Report::default();
    for (i, handler) in HANDLERS.iter().enumerate() {
        let part = handler(records, i as u64);
        report.total += part.total;
        report.flagged += part.flagged;
        report.lines.extend(part.lines.into_iter().take(1));
    }
    report
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let store = benchstore::Store::open_in_memory().expect("sqlite");
    for record in benchcore::sample(args.records) {
        store.insert(&record).expect("insert");
    }
    let records = store.all().expect("query");
    tracing::info!(count = records.len(), "loaded");
    if let Some(path) = &args.image {
        picture(&records, path);
    }
    if let Some(port) = args.serve {
        let runtime = tokio::runtime::Runtime::new().expect("tokio");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        runtime.block_on(benchweb::serve(addr, store)).expect("serve");
        return;
    }
    let report = run_handlers(&records);
    println!("{}", banner());
    println!("{} handlers, total {:.1}, flagged {}, width {}", HANDLERS.len(), report.total, report.flagged, terminal_width());
    println!("{}", draw(&records));
    println!("{}", store.report());
    if let Some(every) = args.every_ms {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(every));
            println!("{}", banner());
        }
    }
}
"""


def handler(i: int) -> str:
    """One generated handler: different constants and branches, so each is its own code."""
    return f"""
/// Handler {i}: scores records with weight {i % 7 + 1} and flags those above {10 + i}.
fn handler_{i:03}(records: &[Record], seed: u64) -> Report {{
    let mut report = Report::default();
    let weight = {i % 7 + 1}.0_f64;
    for record in records.iter().filter(|r| (r.id + seed) % {i % 5 + 2} != 0) {{
        let value = record.score * weight + record.tags.len() as f64;
        report.total += value;
        if value > {10 + i}.0 {{
            report.flagged += 1;
            report.lines.push(format!("h{i:03} {{}} {{:.2}}", record.name, value));
        }} else if record.name.len() % {i % 3 + 2} == 0 {{
            report.lines.push(format!("h{i:03} low {{}}", record.id));
        }}
        match record.tags.first().map(String::as_str) {{
            Some("red") => report.total += {i % 11}.0,
            Some("green") => report.total -= {i % 13}.0,
            Some(other) => report.lines.push(format!("h{i:03} tag {{other}}")),
            None => {{}}
        }}
    }}
    report
}}
"""


def app_main() -> str:
    handlers = "".join(handler(i) for i in range(HANDLERS))
    table = (
        "\nstatic HANDLERS: &[fn(&[Record], u64) -> Report] = &[\n"
        + "".join(f"    handler_{i:03},\n" for i in range(HANDLERS))
        + "];\n"
    )
    return APP_HEAD + handlers + table + APP_TAIL


def files() -> dict[str, str]:
    return {
        "Cargo.toml": WORKSPACE,
        ".cargo/config.toml": CARGO_CONFIG,
        "core/Cargo.toml": manifest("benchcore", CORE_DEPS),
        "core/src/lib.rs": CORE_LIB,
        "store/Cargo.toml": manifest("benchstore", STORE_DEPS),
        "store/src/lib.rs": STORE_LIB,
        "web/Cargo.toml": manifest("benchweb", WEB_DEPS),
        "web/src/lib.rs": WEB_LIB,
        "app/Cargo.toml": manifest("benchapp", APP_DEPS, bin_crate=True),
        "app/src/main.rs": app_main(),
    }


def generate(root: Path) -> None:
    """Write the workspace under ``root``; files already identical are left alone (cargo keeps
    its build)."""
    for relative, text in files().items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    generate(Path(sys.argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
