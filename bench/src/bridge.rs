//! `ferry-bench bridge`: ferry's bridge against cockpit-bridge, driven over stdio the way
//! Cockpit drives a bridge, measured in one run:
//!
//! - start to `init`: from spawning the bridge to its `init` message (median of several starts);
//! - echo round trip: one small frame to an `echo` channel and back (median of many, one at a
//!   time, alternating between the bridges so that each is measured in the same moments);
//! - `stream` throughput: `head -c SIZE /dev/zero` in a `"binary": "raw"` channel with flow
//!   control (every `ping` answered with a `pong`), and the bridge's peak resident memory during
//!   the transfer;
//! - `fsread1` throughput: a SIZE-byte temporary (sparse) file, read once beforehand so that
//!   every bridge finds it in the page cache, likewise;
//! - resident memory when idle (after the init exchange) and at its peak (VmRSS sampled during
//!   the transfers, and VmHWM).
//!
//! Options: `--size BYTES` (suffixes K, M, G; default 1G), `--ferry PATH` (else `FERRY_BRIDGE`,
//! else the host's payload unpacked from `$FERRY_BIN`, which `cargo xtask bench` sets),
//! `--reference PATH` (default /usr/bin/cockpit-bridge; measured only if present),
//! `--round-trips N` (default 2000), `--starts N` (default 20), `--runs N` (default 3: the
//! bridges are measured in turn N times, and the table shows medians of the times and the
//! highest memory seen).
//!
//! The table marks each target as met or not; missing a target is not a failure.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

const REFERENCE: &str = "/usr/bin/cockpit-bridge";
/// How long any single answer may take before the benchmark gives up on that bridge.
const PATIENCE: Duration = Duration::from_secs(60);

struct Options {
    size: u64,
    ferry: Option<PathBuf>,
    reference: PathBuf,
    round_trips: usize,
    starts: usize,
    runs: usize,
}

fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&t[..i], t[i..].to_ascii_uppercase()),
        None => (t, String::new()),
    };
    let n: u64 = digits
        .parse()
        .with_context(|| format!("size {text:?} is not a number"))?;
    let factor: u64 = match unit.trim_end_matches(['B', 'I']) {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => bail!("size {text:?}: unknown unit (use K, M or G)"),
    };
    n.checked_mul(factor)
        .with_context(|| format!("size {text:?} is too large"))
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        size: 1 << 30,
        ferry: None,
        reference: PathBuf::from(REFERENCE),
        round_trips: 2000,
        starts: 20,
        runs: 3,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--size" => o.size = parse_size(&value("--size")?)?,
            "--ferry" => o.ferry = Some(PathBuf::from(value("--ferry")?)),
            "--reference" => o.reference = PathBuf::from(value("--reference")?),
            "--round-trips" => o.round_trips = value("--round-trips")?.parse()?,
            "--starts" => o.starts = value("--starts")?.parse()?,
            "--runs" => o.runs = value("--runs")?.parse()?,
            other => bail!(
                "usage: ferry-bench bridge [--size BYTES] [--ferry PATH] [--reference PATH] \
                 [--round-trips N] [--starts N] [--runs N]; unknown argument {other:?}"
            ),
        }
    }
    if o.size == 0 || o.round_trips == 0 || o.starts == 0 || o.runs == 0 {
        bail!("--size, --round-trips, --starts and --runs must be positive");
    }
    Ok(o)
}

/// ferry's bridge: `explicit` (a `--ferry` option), `FERRY_BRIDGE`, or unpacked from
/// `FERRY_BIN` into `scratch`.
pub(crate) fn ferry_bridge(explicit: Option<&Path>, scratch: &Path) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if let Some(p) = std::env::var_os("FERRY_BRIDGE") {
        return Ok(PathBuf::from(p));
    }
    let ferry = std::env::var_os("FERRY_BIN")
        .context("no bridge to measure: pass --ferry PATH, or set FERRY_BRIDGE or FERRY_BIN")?;
    let dir = scratch.join("payloads");
    let status = Command::new(&ferry)
        .arg("payloads")
        .arg("--unpack")
        .arg(&dir)
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {}", Path::new(&ferry).display()))?;
    if !status.success() {
        bail!("`ferry payloads --unpack` failed: {status}");
    }
    Ok(dir.join(std::env::consts::ARCH))
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse_options(args)?;
    let scratch = Scratch::new("bridge")?;
    let ferry = ferry_bridge(o.ferry.as_deref(), scratch.path())?;
    if !ferry.exists() {
        bail!("ferry's bridge {} does not exist", ferry.display());
    }
    // A sparse file: fsread1 then measures the bridge, not the disk.
    let file = scratch.path().join("fsread1.data");
    std::fs::File::create(&file)
        .and_then(|f| f.set_len(o.size))
        .context("cannot create the file for fsread1")?;
    // Read it once: the page cache then holds it for every bridge alike (otherwise the
    // first bridge measured pays for filling it and the others do not).
    std::io::copy(
        &mut std::fs::File::open(&file).context("cannot read the file for fsread1")?,
        &mut std::io::sink(),
    )
    .context("cannot read the file for fsread1")?;

    let mut bridges = vec![("ferry-bridge".to_owned(), ferry)];
    if o.reference.exists() {
        bridges.push(("cockpit-bridge".to_owned(), o.reference.clone()));
    } else {
        eprintln!(
            "{} is not installed: measuring ferry's bridge alone (`cargo xtask setup` installs it)",
            o.reference.display()
        );
    }
    // Every run measures each bridge in turn, so that whatever else the machine does at the
    // time weighs on both alike; the table shows the median of the runs.
    let mut runs: Vec<Vec<Measures>> = bridges.iter().map(|_| Vec::new()).collect();
    let paths: Vec<&Path> = bridges.iter().map(|(_, p)| p.as_path()).collect();
    for run in 1..=o.runs {
        eprintln!("run {run}/{}: echo round trips, alternating", o.runs);
        let echoes = measure_echo(&paths, &o)?;
        for (((name, path), measured), (echo, idle, hwm)) in
            bridges.iter().zip(&mut runs).zip(echoes)
        {
            eprintln!(
                "run {run}/{}: measuring {name} ({})",
                o.runs,
                path.display()
            );
            let mut m = measure(path, &o, &file)?;
            m.echo = echo;
            m.idle_rss = idle;
            m.peak_rss = m.peak_rss.max(hwm);
            measured.push(m);
        }
    }
    let results: Vec<(String, Measures)> = bridges
        .into_iter()
        .zip(runs)
        .map(|((name, _), measured)| (name, Measures::median(measured)))
        .collect();
    print_table(&results, o.size);
    Ok(())
}

/// A private temporary directory, removed when dropped.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    /// `ferry-bench-NAME-PID` in the temporary directory.
    pub(crate) fn new(name: &str) -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("ferry-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Scratch(dir))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one bridge measured.
#[derive(Debug, Default)]
struct Measures {
    start: Duration,
    echo: Duration,
    stream: Duration,
    fsread: Duration,
    idle_rss: u64,
    peak_rss: u64,
    peak_stream: u64,
    peak_fsread: u64,
}

impl Measures {
    /// Times: the median of the runs; memory: the highest any run saw.
    fn median(runs: Vec<Measures>) -> Measures {
        let time = |f: fn(&Measures) -> Duration| {
            let mut v: Vec<Duration> = runs.iter().map(f).collect();
            median(&mut v)
        };
        let most = |f: fn(&Measures) -> u64| runs.iter().map(f).max().unwrap_or(0);
        Measures {
            start: time(|m| m.start),
            echo: time(|m| m.echo),
            stream: time(|m| m.stream),
            fsread: time(|m| m.fsread),
            idle_rss: most(|m| m.idle_rss),
            peak_rss: most(|m| m.peak_rss),
            peak_stream: most(|m| m.peak_stream),
            peak_fsread: most(|m| m.peak_fsread),
        }
    }
}

fn measure(bridge: &Path, o: &Options, file: &Path) -> Result<Measures> {
    let mut m = Measures::default();

    // Start to init, several times.
    let mut starts = Vec::new();
    for _ in 0..o.starts {
        let t = Instant::now();
        let mut b = Bridge::spawn(bridge)?;
        b.wait_init()?;
        starts.push(t.elapsed());
        b.finish();
    }
    m.start = median(&mut starts);

    // stream throughput and peak memory, in a session of its own.
    {
        let mut b = Bridge::spawn(bridge)?;
        b.handshake()?;
        let sampler = b.sample_rss();
        let t = Instant::now();
        b.send_control(&json!({
            "command": "open", "channel": "s", "payload": "stream",
            "spawn": ["head", "-c", o.size.to_string(), "/dev/zero"],
            "binary": "raw", "flow-control": true,
        }))?;
        let got = b.wait_close("s")?;
        m.stream = t.elapsed();
        if got != o.size {
            bail!(
                "{}: the stream sent {got} bytes, not {}",
                bridge.display(),
                o.size
            );
        }
        m.peak_stream = sampler.stop().max(b.status("VmHWM")?);
        b.finish();
    }

    // fsread1 throughput, likewise.
    {
        let mut b = Bridge::spawn(bridge)?;
        b.handshake()?;
        let sampler = b.sample_rss();
        let t = Instant::now();
        b.send_control(&json!({
            "command": "open", "channel": "r", "payload": "fsread1",
            "path": file, "max_read_size": o.size + 1,
            "binary": "raw", "flow-control": true,
        }))?;
        let got = b.wait_close("r")?;
        m.fsread = t.elapsed();
        if got != o.size {
            bail!(
                "{}: fsread1 sent {got} bytes, not {}",
                bridge.display(),
                o.size
            );
        }
        m.peak_fsread = sampler.stop().max(b.status("VmHWM")?);
        b.finish();
    }
    m.peak_rss = m.peak_rss.max(m.peak_stream).max(m.peak_fsread);
    Ok(m)
}

/// Idle memory, then echo round trips, in one session per bridge; the round trips alternate
/// between the bridges, so that they are measured in the same moments. Per bridge: (median
/// round trip, idle VmRSS, VmHWM).
fn measure_echo(bridges: &[&Path], o: &Options) -> Result<Vec<(Duration, u64, u64)>> {
    let mut sessions = Vec::new();
    let mut idle = Vec::new();
    for bridge in bridges {
        let mut b = Bridge::spawn(bridge)?;
        b.handshake()?;
        sessions.push(b);
    }
    std::thread::sleep(Duration::from_millis(300));
    for b in &mut sessions {
        idle.push(b.status("VmRSS")?);
        b.send_control(&json!({"command": "open", "channel": "e", "payload": "echo"}))?;
        b.wait_control("e", "ready")?;
    }
    let mut trips: Vec<Vec<Duration>> = sessions
        .iter()
        .map(|_| Vec::with_capacity(o.round_trips))
        .collect();
    let payload = [b'x'; 64];
    for _ in 0..o.round_trips {
        for (b, trips) in sessions.iter_mut().zip(&mut trips) {
            let t = Instant::now();
            b.send_frame("e", &payload)?;
            b.wait_data("e", payload.len() as u64)?;
            trips.push(t.elapsed());
        }
    }
    let mut results = Vec::new();
    for ((b, mut trips), idle) in sessions.into_iter().zip(trips).zip(idle) {
        let hwm = b.status("VmHWM")?;
        b.finish();
        results.push((median(&mut trips), idle, hwm));
    }
    Ok(results)
}

pub(crate) fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// What the reader thread passes on.
enum Event {
    Control(Value),
    /// Bytes of data on a channel (the data itself is dropped).
    Data(String, u64),
    /// A data frame kept whole (a bridge started with [`Bridge::start`] and `keep`).
    Kept(String, Vec<u8>),
    Eof,
}

/// A running bridge, its input shared with the reader thread (which answers pings).
pub(crate) struct Bridge {
    child: Child,
    input: Arc<Mutex<Option<ChildStdin>>>,
    events: Receiver<Event>,
    /// Data bytes seen per channel.
    data: BTreeMap<String, u64>,
    /// Data frames kept, per channel in arrival order.
    kept: BTreeMap<String, VecDeque<Vec<u8>>>,
    /// Control messages seen, per (channel, command).
    seen: BTreeMap<(String, String), usize>,
}

fn frame(channel: &str, payload: &[u8]) -> Vec<u8> {
    let mut f = format!("{}\n{channel}\n", channel.len() + 1 + payload.len()).into_bytes();
    f.extend_from_slice(payload);
    f
}

fn write_to(input: &Mutex<Option<ChildStdin>>, bytes: &[u8]) -> Result<()> {
    let mut guard = input
        .lock()
        .map_err(|_| anyhow::anyhow!("input lock poisoned"))?;
    let stdin = guard.as_mut().context("the bridge's input is closed")?;
    stdin.write_all(bytes).context("writing to the bridge")?;
    stdin.flush().context("writing to the bridge")
}

impl Bridge {
    fn spawn(program: &Path) -> Result<Bridge> {
        Bridge::start(Command::new(program), false)
    }

    /// Start `command` as a bridge on stdin/stdout. With `keep`, the payload of every data
    /// frame is kept for [`Bridge::next_json`]; otherwise only its length is counted.
    pub(crate) fn start(mut command: Command, keep: bool) -> Result<Bridge> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {:?}", command.get_program()))?;
        let input = Arc::new(Mutex::new(child.stdin.take()));
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, events) = mpsc::channel();
        let pong_input = input.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::with_capacity(1 << 20, stdout);
            let mut line = Vec::new();
            let mut body = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let Some(len) = std::str::from_utf8(&line)
                    .ok()
                    .and_then(|s| s.trim_end().parse::<usize>().ok())
                else {
                    break;
                };
                body.resize(len, 0);
                if reader.read_exact(&mut body).is_err() {
                    break;
                }
                let Some(nl) = body.iter().position(|&b| b == b'\n') else {
                    break;
                };
                let channel = String::from_utf8_lossy(&body[..nl]).into_owned();
                let payload = &body[nl + 1..];
                if !channel.is_empty() {
                    let _ = tx.send(if keep {
                        Event::Kept(channel, payload.to_vec())
                    } else {
                        Event::Data(channel, payload.len() as u64)
                    });
                    continue;
                }
                let Ok(msg) = serde_json::from_slice::<Value>(payload) else {
                    break;
                };
                // Flow control: answer each channel ping right here, without a detour.
                if msg["command"] == "ping" && msg.get("channel").is_some() {
                    let mut pong = msg.clone();
                    pong["command"] = json!("pong");
                    let _ = write_to(&pong_input, &frame("", pong.to_string().as_bytes()));
                    continue;
                }
                let _ = tx.send(Event::Control(msg));
            }
            let _ = tx.send(Event::Eof);
        });
        Ok(Bridge {
            child,
            input,
            events,
            data: BTreeMap::new(),
            kept: BTreeMap::new(),
            seen: BTreeMap::new(),
        })
    }

    pub(crate) fn send_frame(&self, channel: &str, payload: &[u8]) -> Result<()> {
        write_to(&self.input, &frame(channel, payload))
    }

    pub(crate) fn send_control(&self, message: &Value) -> Result<()> {
        self.send_frame("", message.to_string().as_bytes())
    }

    /// Take events until `done` holds.
    fn until(&mut self, what: &str, done: impl Fn(&Bridge) -> bool) -> Result<()> {
        let deadline = Instant::now() + PATIENCE;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Event::Data(channel, n)) => *self.data.entry(channel).or_default() += n,
                Ok(Event::Kept(channel, payload)) => {
                    *self.data.entry(channel.clone()).or_default() += payload.len() as u64;
                    self.kept.entry(channel).or_default().push_back(payload);
                }
                Ok(Event::Control(msg)) => {
                    let channel = msg["channel"].as_str().unwrap_or("").to_owned();
                    let command = msg["command"].as_str().unwrap_or("").to_owned();
                    if command == "close" && msg.get("problem").is_some() {
                        bail!("channel {channel:?} failed: {msg}");
                    }
                    *self.seen.entry((channel, command)).or_default() += 1;
                }
                Ok(Event::Eof) | Err(RecvTimeoutError::Disconnected) => {
                    bail!("the bridge ended while waiting for {what}")
                }
                Err(RecvTimeoutError::Timeout) => bail!("no {what} within {PATIENCE:?}"),
            }
        }
        Ok(())
    }

    pub(crate) fn wait_control(&mut self, channel: &str, command: &str) -> Result<()> {
        let key = (channel.to_owned(), command.to_owned());
        let want = self.seen.get(&key).copied().unwrap_or(0) + 1;
        self.until(&format!("{command} on {channel:?}"), |b| {
            b.seen.get(&key).copied().unwrap_or(0) >= want
        })
    }

    fn wait_init(&mut self) -> Result<()> {
        self.wait_control("", "init")
    }

    pub(crate) fn handshake(&mut self) -> Result<()> {
        self.wait_init()?;
        self.send_control(&json!({"command": "init", "version": 1, "host": "localhost"}))
    }

    /// Wait for `n` more bytes of data on `channel`.
    fn wait_data(&mut self, channel: &str, n: u64) -> Result<()> {
        let want = self.data.get(channel).copied().unwrap_or(0) + n;
        self.until(&format!("data on {channel:?}"), |b| {
            b.data.get(channel).copied().unwrap_or(0) >= want
        })
    }

    /// The next data frame on `channel` (of a bridge started with `keep`), as JSON.
    pub(crate) fn next_json(&mut self, channel: &str) -> Result<Value> {
        self.until(&format!("a message on {channel:?}"), |b| {
            b.kept.get(channel).is_some_and(|q| !q.is_empty())
        })?;
        let payload = self
            .kept
            .get_mut(channel)
            .and_then(VecDeque::pop_front)
            .context("no message kept")?;
        serde_json::from_slice(&payload)
            .with_context(|| format!("a message on {channel:?} is not JSON"))
    }

    /// Wait for `close` on `channel`; the bytes of data it sent.
    fn wait_close(&mut self, channel: &str) -> Result<u64> {
        self.wait_control(channel, "close")?;
        Ok(self.data.get(channel).copied().unwrap_or(0))
    }

    /// A field of /proc/PID/status in bytes (VmRSS, VmHWM).
    fn status(&self, field: &str) -> Result<u64> {
        proc_status(self.child.id(), field)
            .with_context(|| format!("no {field} for process {}", self.child.id()))
    }

    /// Sample VmRSS every few milliseconds until stopped; the highest value seen.
    fn sample_rss(&self) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p, pid) = (stop.clone(), peak.clone(), self.child.id());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(rss) = proc_status(pid, "VmRSS") {
                    p.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Sampler { stop, peak, thread }
    }

    /// Close the input and wait for the bridge to exit (kill it if it does not).
    pub(crate) fn finish(mut self) {
        if let Ok(mut input) = self.input.lock() {
            input.take();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

pub(crate) fn us(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

fn rate(size: u64, d: Duration) -> f64 {
    size as f64 / f64::from(1 << 20) / d.as_secs_f64().max(1e-9)
}

fn print_table(results: &[(String, Measures)], size: u64) {
    let ferry = &results[0].1;
    let reference = results.get(1).map(|(_, m)| m);
    println!();
    println!(
        "{:<28} {:>14} {:>16} {:>8}  {:<12} met",
        "measure", "ferry-bridge", "cockpit-bridge", "ratio", "target"
    );
    // (name, ferry, reference, ratio ferry/reference, target text, met?)
    let row = |name: &str,
               f: String,
               r: Option<String>,
               ratio: Option<f64>,
               target: &str,
               met: Option<bool>| {
        println!(
            "{:<28} {:>14} {:>16} {:>8}  {:<12} {}",
            name,
            f,
            r.unwrap_or_else(|| "-".into()),
            ratio.map_or_else(|| "-".into(), |x| format!("{x:.2}x")),
            target,
            match met {
                Some(true) => "met",
                Some(false) => "NOT MET",
                None => "-",
            }
        );
    };
    let ratio = |f: f64, r: f64| if r > 0.0 { Some(f / r) } else { None };

    let r_start = reference.map(|r| r.start.as_secs_f64());
    let x = r_start.and_then(|r| ratio(ferry.start.as_secs_f64(), r));
    row(
        "start to init (median)",
        ms(ferry.start),
        reference.map(|r| ms(r.start)),
        x,
        "<= 0.3x",
        x.map(|x| x <= 0.3),
    );

    let x = reference.and_then(|r| ratio(ferry.echo.as_secs_f64(), r.echo.as_secs_f64()));
    row(
        "echo round trip (median)",
        us(ferry.echo),
        reference.map(|r| us(r.echo)),
        x,
        "<= 1.0x",
        x.map(|x| x <= 1.0),
    );

    let fs = rate(size, ferry.stream);
    let x = reference.and_then(|r| ratio(fs, rate(size, r.stream)));
    row(
        &format!("stream throughput ({})", mib(size)),
        format!("{fs:.0} MiB/s"),
        reference.map(|r| format!("{:.0} MiB/s", rate(size, r.stream))),
        x,
        ">= 1.5x",
        x.map(|x| x >= 1.5),
    );

    let ff = rate(size, ferry.fsread);
    let x = reference.and_then(|r| ratio(ff, rate(size, r.fsread)));
    row(
        &format!("fsread1 throughput ({})", mib(size)),
        format!("{ff:.0} MiB/s"),
        reference.map(|r| format!("{:.0} MiB/s", rate(size, r.fsread))),
        x,
        ">= 1.5x",
        x.map(|x| x >= 1.5),
    );

    let x = reference.and_then(|r| ratio(ferry.idle_rss as f64, r.idle_rss as f64));
    row(
        "memory idle (VmRSS)",
        mib(ferry.idle_rss),
        reference.map(|r| mib(r.idle_rss)),
        x,
        "<= 0.5x",
        x.map(|x| x <= 0.5),
    );

    let x = reference.and_then(|r| ratio(ferry.peak_stream as f64, r.peak_stream as f64));
    row(
        "memory peak, stream",
        mib(ferry.peak_stream),
        reference.map(|r| mib(r.peak_stream)),
        x,
        "< 16 MiB",
        Some(ferry.peak_stream < 16 << 20),
    );
    let x = reference.and_then(|r| ratio(ferry.peak_fsread as f64, r.peak_fsread as f64));
    row(
        "memory peak, fsread1",
        mib(ferry.peak_fsread),
        reference.map(|r| mib(r.peak_fsread)),
        x,
        "< 16 MiB",
        Some(ferry.peak_fsread < 16 << 20),
    );
    let x = reference.and_then(|r| ratio(ferry.peak_rss as f64, r.peak_rss as f64));
    row(
        "memory peak, whole run",
        mib(ferry.peak_rss),
        reference.map(|r| mib(r.peak_rss)),
        x,
        "< 16 MiB",
        Some(ferry.peak_rss < 16 << 20),
    );
    println!();
    println!("ratio = ferry-bridge / cockpit-bridge; a missed target is reported, not a failure.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("3k").unwrap(), 3 << 10);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert!(parse_size("x").is_err());
        assert!(parse_size("5T").is_err());
    }
}
