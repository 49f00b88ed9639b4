//! `ferry-bench dbus`: `dbus-json3` through ferry's bridge against both reference bridges,
//! Debian's `cockpit-bridge` 287 and Cockpit 337's Python bridge, measured in one run on the
//! test bed's private buses (`ferry_testbed::TestBuses`, with its test service `org.ferry.Test`
//! on the system bus):
//!
//! - call round trip: one `call` of `org.ferry.Test.Types` (every D-Bus type, echoed back) to
//!   its `reply`, with `type` in the call, and without it (the bridge uses the signature it
//!   introspected once for the channel); median of many, one call at a time, alternating
//!   between the bridges so that each is measured in the same moments; and the same call
//!   without a bridge, from this process through the D-Bus connection of ferry's bridge (the
//!   bus and the service alone: what every bridge adds to);
//! - signal throughput: one call of the service's `Flood(N)`, which has a second connection
//!   of the service (`org.ferry.Test.Flood`) send N signals at once and replies when the bus
//!   has handled them all; a second channel, for that name, has an `add-match` for them. N
//!   divided by the time from the call until its reply and every signal are through. Each
//!   bridge floods alone, in a session of its own. The bus's own pace is the same call with
//!   no match rule (the bus then drops the signals): no bridge can pass signals on faster.
//!
//! Options: `--runs N` (default 5: everything is measured N times, and the table shows the
//! medians), `--round-trips N` (per run, per bridge and kind; default 300), `--signals N` (per
//! flood; default 20000), `--ferry PATH` (else `FERRY_BRIDGE`, else the host's payload unpacked
//! from `$FERRY_BIN`, which `cargo xtask bench` sets). A reference that is not installed is
//! left out with a message (`cargo xtask setup` installs both).
//!
//! The table marks the target as met or not; missing it is not a failure.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferry_bridge::dbus::connection::{Connection, Event};
use ferry_bridge::dbus::message::Message;
use ferry_testbed::{Component, TestBuses, TEST_NAME};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::bridge::{ferry_bridge, median, us, Bridge, Scratch};

/// The test service's object.
const PATH: &str = "/org/ferry/Test";
/// The test service's interface.
const IFACE: &str = "org.ferry.Test";
/// The name of the test service's connection that sends the signals of `Flood`.
const FLOOD_NAME: &str = "org.ferry.Test.Flood";
/// The signature of `Types`: one value of every type.
const TYPES: &str = "ybnqiuxtdsogvayasa{sv}a{is}(is)aay";
/// A call round trip at most this fraction of each reference's.
const ROUND_TRIP_TARGET: f64 = 0.5;

struct Options {
    runs: usize,
    round_trips: usize,
    signals: u32,
    ferry: Option<PathBuf>,
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        runs: 5,
        round_trips: 300,
        signals: 20_000,
        ferry: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--runs" | "-n" => o.runs = value("--runs")?.parse()?,
            "--round-trips" => o.round_trips = value("--round-trips")?.parse()?,
            "--signals" => o.signals = value("--signals")?.parse()?,
            "--ferry" => o.ferry = Some(PathBuf::from(value("--ferry")?)),
            other => bail!(
                "usage: ferry-bench dbus [--runs N] [--round-trips N] [--signals N] \
                 [--ferry PATH]; unknown argument {other:?}"
            ),
        }
    }
    if o.runs == 0 || o.round_trips == 0 || o.signals == 0 {
        bail!("--runs, --round-trips and --signals must be positive");
    }
    Ok(o)
}

/// A bridge to measure: its name in the table and the command that runs it.
struct Peer {
    name: &'static str,
    argv: Vec<String>,
}

/// What one bridge measured in one run.
#[derive(Debug, Default, Clone, Copy)]
struct Measures {
    typed: Duration,
    untyped: Duration,
    /// Signals per second.
    signals: f64,
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse_options(args)?;
    Component::DBus
        .check()
        .map_err(|why| anyhow::anyhow!("{}: {why} (run `cargo xtask setup`)", Component::DBus))?;
    let scratch = Scratch::new("dbus")?;
    let ferry = ferry_bridge(o.ferry.as_deref(), scratch.path())?;
    if !ferry.exists() {
        bail!("ferry's bridge {} does not exist", ferry.display());
    }
    let mut peers = vec![Peer {
        name: "ferry-bridge",
        argv: vec![ferry.display().to_string()],
    }];
    for (component, name, argv) in [
        (
            Component::CockpitBridge,
            "cockpit-bridge 287",
            vec![ferry_testbed::COCKPIT_287_BRIDGE.to_owned()],
        ),
        (
            Component::Cockpit337,
            "Cockpit 337",
            ferry_testbed::cockpit337_bridge_command(),
        ),
    ] {
        match component.check() {
            Ok(()) => peers.push(Peer { name, argv }),
            Err(why) => eprintln!("not measuring {name}: {why} (`cargo xtask setup` installs it)"),
        }
    }
    let buses = TestBuses::start().context("cannot start the test buses")?;
    println!(
        "dbus benchmark: {} runs, {} round trips per kind, floods of {} signals; ferry: {}",
        o.runs,
        o.round_trips,
        o.signals,
        ferry.display()
    );

    let mut measured: Vec<Vec<Measures>> = peers.iter().map(|_| Vec::new()).collect();
    let mut service: Vec<f64> = Vec::new();
    let mut alone: Vec<Duration> = Vec::new();
    for run in 1..=o.runs {
        eprintln!("run {run}/{}: call round trips, alternating", o.runs);
        let (trips, direct) = round_trips(&peers, &buses, &o)?;
        alone.push(direct);
        eprintln!("run {run}/{}: signal floods", o.runs);
        // The bus alone first (through ferry's bridge, with no match rule), then each bridge
        // in turn.
        service.push(flood(&peers[0], &buses, o.signals, false)?);
        for ((peer, (typed, untyped)), runs) in peers.iter().zip(trips).zip(&mut measured) {
            let signals = flood(peer, &buses, o.signals, true)?;
            runs.push(Measures {
                typed,
                untyped,
                signals,
            });
        }
    }
    let results: Vec<Measures> = measured.iter().map(|runs| medians(runs)).collect();
    service.sort_by(f64::total_cmp);
    print_table(
        &peers,
        &results,
        median(&mut alone),
        service[service.len() / 2],
        &o,
    );
    drop(buses);
    Ok(())
}

/// The medians of several runs.
fn medians(runs: &[Measures]) -> Measures {
    let time = |f: fn(&Measures) -> Duration| median(&mut runs.iter().map(f).collect::<Vec<_>>());
    let mut rates: Vec<f64> = runs.iter().map(|m| m.signals).collect();
    rates.sort_by(f64::total_cmp);
    Measures {
        typed: time(|m| m.typed),
        untyped: time(|m| m.untyped),
        signals: rates[rates.len() / 2],
    }
}

/// Start `peer` on the test buses, past `init`.
fn start(peer: &Peer, buses: &TestBuses) -> Result<Bridge> {
    let (program, args) = peer.argv.split_first().context("empty bridge command")?;
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(buses.env())
        // Without an agent socket, cockpit-bridge 287 starts an ssh-agent of its own.
        .env("SSH_AUTH_SOCK", "/dev/null");
    let mut b = Bridge::start(command, true).with_context(|| format!("starting {}", peer.name))?;
    b.handshake()
        .with_context(|| format!("{}: no init", peer.name))?;
    Ok(b)
}

/// Open a `dbus-json3` channel for `name` on the system bus.
fn open(b: &mut Bridge, channel: &str, name: &str) -> Result<()> {
    b.send_control(&json!({
        "command": "open", "channel": channel, "payload": "dbus-json3",
        "bus": "system", "name": name,
    }))?;
    b.wait_control(channel, "ready")
        .with_context(|| format!("opening dbus-json3 for {name}"))
}

/// The next message on `channel` other than `owner` (which the bridges send when they open
/// the channel).
fn next_message(b: &mut Bridge, channel: &str) -> Result<Value> {
    loop {
        let m = b.next_json(channel)?;
        if m.get("owner").is_none() {
            return Ok(m);
        }
    }
}

/// The next message on `channel` with this `id`; the messages before it are passed to
/// `other`.
fn reply(
    b: &mut Bridge,
    channel: &str,
    id: &str,
    mut other: impl FnMut(Value) -> Result<()>,
) -> Result<Value> {
    loop {
        let m = next_message(b, channel)?;
        if m["id"] == id {
            if m.get("error").is_some() {
                bail!("call {id} failed: {m}");
            }
            return Ok(m);
        }
        other(m)?;
    }
}

/// One value of every type in [`TYPES`], as dbus-json3 writes them (the `a{is}` is empty:
/// Cockpit 337 cannot read the JSON text of an integer key).
fn types_args() -> Value {
    json!([
        200, true, -300, 60000, -70000, 4000000000u32, -5000000000i64, 6000000000u64, 1.5,
        "text", "/a/b", "a{sv}", {"t": "s", "v": "variant"}, "AAEC/w==", ["x", "y"],
        {"k": {"t": "i", "v": 7}}, {}, [-7, "s"], ["aGk=", ""],
    ])
}

/// The test service called from this process, without a bridge.
struct Direct {
    runtime: tokio::runtime::Runtime,
    conn: Connection,
    /// Kept open: the connection's reader stops when nobody takes its events.
    _events: UnboundedReceiver<Event>,
}

impl Direct {
    fn connect(buses: &TestBuses) -> Result<Direct> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (conn, events) = runtime
            .block_on(Connection::open(&buses.system, true))
            .context("connecting to the test bus")?;
        Ok(Direct {
            runtime,
            conn,
            _events: events,
        })
    }

    /// `Types` with `args`, from JSON to the wire and back: the time and the values answered.
    fn types(&mut self, args: &Value) -> Result<(Duration, usize)> {
        let t = Instant::now();
        let m = Message::method_call(Some(TEST_NAME), PATH, IFACE, "Types")
            .with_body(TYPES, args)
            .map_err(|e| anyhow::anyhow!("{}", e.0))?;
        let reply = self
            .runtime
            .block_on(self.conn.call(m, Duration::from_secs(60)))?;
        let values = reply.args()?;
        Ok((t.elapsed(), values.len()))
    }
}

/// Call round trips through every bridge, alternating: per bridge, the median with `type` and
/// the median without; and last, the median without a bridge.
fn round_trips(
    peers: &[Peer],
    buses: &TestBuses,
    o: &Options,
) -> Result<(Vec<(Duration, Duration)>, Duration)> {
    let mut direct = Direct::connect(buses)?;
    let mut sessions = Vec::new();
    for peer in peers {
        let mut b = start(peer, buses)?;
        open(&mut b, "d", TEST_NAME).with_context(|| peer.name)?;
        sessions.push(b);
    }
    let args = types_args();
    let expected = args.as_array().map_or(0, Vec::len);
    let mut serial = 0u64;
    let mut call = |b: &mut Bridge, name: &str, typed: bool| -> Result<Duration> {
        serial += 1;
        let id = serial.to_string();
        let mut message = json!({"call": [PATH, IFACE, "Types", args], "id": id});
        if typed {
            message["type"] = TYPES.into();
        }
        let text = message.to_string();
        let t = Instant::now();
        b.send_frame("d", text.as_bytes())?;
        let m = reply(b, "d", &id, |m| bail!("unexpected {m}")).context(name.to_owned())?;
        let took = t.elapsed();
        let got = m["reply"][0].as_array().map_or(0, Vec::len);
        if got != expected {
            bail!("{name}: Types answered {got} values, not {expected}: {m}");
        }
        Ok(took)
    };
    // Unmeasured: the first call without `type` introspects the object.
    for (b, peer) in sessions.iter_mut().zip(peers) {
        for _ in 0..10 {
            call(b, peer.name, false)?;
            call(b, peer.name, true)?;
        }
    }
    let mut alone = Vec::new();
    let mut typed: Vec<Vec<Duration>> = peers.iter().map(|_| Vec::new()).collect();
    let mut untyped: Vec<Vec<Duration>> = peers.iter().map(|_| Vec::new()).collect();
    for trip in 0..o.round_trips {
        let (took, got) = direct.types(&args)?;
        if got != expected {
            bail!("without a bridge, Types answered {got} values, not {expected}");
        }
        alone.push(took);
        for (((b, peer), typed), untyped) in sessions
            .iter_mut()
            .zip(peers)
            .zip(&mut typed)
            .zip(&mut untyped)
        {
            // Each kind goes first every other time: the first call after a pause pays for
            // waking the bridge up.
            if trip % 2 == 0 {
                typed.push(call(b, peer.name, true)?);
                untyped.push(call(b, peer.name, false)?);
            } else {
                untyped.push(call(b, peer.name, false)?);
                typed.push(call(b, peer.name, true)?);
            }
        }
    }
    for b in sessions {
        b.finish();
    }
    let bridges = typed
        .iter_mut()
        .zip(&mut untyped)
        .map(|(t, u)| (median(t), median(u)))
        .collect();
    Ok((bridges, median(&mut alone)))
}

/// One flood of `n` signals in a session of its own: signals per second, from the call of
/// `Flood` to its reply and, with `subscribe`, every signal. The call goes through a channel
/// for the service; with `subscribe`, a second channel for the name that sends the signals
/// (the service's second connection) has an `add-match` for them, and each of them must
/// arrive on it, in order.
fn flood(peer: &Peer, buses: &TestBuses, n: u32, subscribe: bool) -> Result<f64> {
    let mut b = start(peer, buses)?;
    open(&mut b, "a", TEST_NAME).with_context(|| peer.name)?;
    let mut serial = 0u64;
    let mut call = |b: &mut Bridge, n: u32, signals: bool| -> Result<Duration> {
        serial += 1;
        let id = serial.to_string();
        let message = json!({"call": [PATH, IFACE, "Flood", [n]], "id": id, "type": "u"});
        let t = Instant::now();
        b.send_frame("a", message.to_string().as_bytes())?;
        reply(b, "a", &id, |m| bail!("unexpected {m}"))?;
        for i in 0..if signals { n } else { 0 } {
            let m = next_message(b, "b")?;
            if m["signal"][3] != json!(["flood", i]) {
                bail!("signal {i} of {n} is {m}");
            }
        }
        Ok(t.elapsed())
    };
    // The first flood starts the service's second connection, which the second channel
    // follows by name.
    call(&mut b, 1, false).with_context(|| format!("{}: flood of 1", peer.name))?;
    if subscribe {
        open(&mut b, "b", FLOOD_NAME).with_context(|| peer.name)?;
        b.send_frame(
            "b",
            json!({"add-match": {"path": PATH, "interface": IFACE, "member": "Signal"}})
                .to_string()
                .as_bytes(),
        )?;
        // Unmeasured: a small flood, so that the match is in force and everything is warm.
        call(&mut b, 100, true).with_context(|| format!("{}: flood of 100", peer.name))?;
    }
    let took =
        call(&mut b, n, subscribe).with_context(|| format!("{}: flood of {n}", peer.name))?;
    for channel in ["a", "b"].into_iter().take(if subscribe { 2 } else { 1 }) {
        b.send_control(&json!({"command": "close", "channel": channel}))?;
        b.wait_control(channel, "close")
            .with_context(|| format!("{}: closing dbus-json3", peer.name))?;
    }
    b.finish();
    Ok(f64::from(n) / took.as_secs_f64().max(1e-9))
}

fn print_table(peers: &[Peer], results: &[Measures], alone: Duration, service: f64, o: &Options) {
    let ferry = &results[0];
    let reference = |name: &str| {
        peers
            .iter()
            .position(|p| p.name == name)
            .map(|i| results[i])
    };
    let r287 = reference("cockpit-bridge 287");
    let r337 = reference("Cockpit 337");
    println!();
    println!(
        "{:<32} {:>13} {:>19} {:>13} {:>7} {:>7}  {:<9} met",
        "measure (medians)",
        "ferry-bridge",
        "cockpit-bridge 287",
        "Cockpit 337",
        "vs 287",
        "vs 337",
        "target"
    );
    let ratio = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.2}x"));
    let row = |name: &str,
               f: String,
               a: Option<String>,
               b: Option<String>,
               ra: Option<f64>,
               rb: Option<f64>,
               target: Option<f64>| {
        let met = target.map(|t| [ra, rb].iter().flatten().all(|x| *x <= t));
        println!(
            "{:<32} {:>13} {:>19} {:>13} {:>7} {:>7}  {:<9} {}",
            name,
            f,
            a.unwrap_or_else(|| "-".into()),
            b.unwrap_or_else(|| "-".into()),
            ratio(ra),
            ratio(rb),
            target.map_or_else(|| "-".to_owned(), |t| format!("<= {t}x")),
            match met {
                Some(true) => "met",
                Some(false) => "NOT MET",
                None => "-",
            }
        );
    };
    let time = |name: &str, f: fn(&Measures) -> Duration| {
        let x =
            |r: Option<Measures>| r.map(|r| f(ferry).as_secs_f64() / f(&r).as_secs_f64().max(1e-9));
        row(
            name,
            us(f(ferry)),
            r287.map(|r| us(f(&r))),
            r337.map(|r| us(f(&r))),
            x(r287),
            x(r337),
            Some(ROUND_TRIP_TARGET),
        );
    };
    time("call round trip, with type", |m| m.typed);
    time("call round trip, without type", |m| m.untyped);
    println!("{:<32} {:>13}", "  without a bridge", us(alone));
    // What each bridge adds to the call without a bridge.
    let added = |name: &str, f: fn(&Measures) -> Duration| {
        let add = |m: &Measures| f(m).saturating_sub(alone);
        let x = |r: Option<Measures>| {
            r.map(|r| add(ferry).as_secs_f64() / add(&r).as_secs_f64().max(1e-9))
        };
        row(
            name,
            us(add(ferry)),
            r287.map(|r| us(add(&r))),
            r337.map(|r| us(add(&r))),
            x(r287),
            x(r337),
            None,
        );
    };
    added("  added by the bridge, with type", |m| m.typed);
    added("  added, without type", |m| m.untyped);
    let rate = |r: f64| format!("{r:.0}/s");
    let x = |r: Option<Measures>| r.map(|r| ferry.signals / r.signals.max(1e-9));
    row(
        &format!("signal throughput ({})", o.signals),
        rate(ferry.signals),
        r287.map(|r| rate(r.signals)),
        r337.map(|r| rate(r.signals)),
        x(r287),
        x(r337),
        None,
    );
    println!(
        "{:<32} {:>13}",
        "  the bus's own pace (no match)",
        rate(service)
    );
    println!();
    println!(
        "ratio = ferry-bridge / reference (times: lower is better; signals: higher is better); \
         a missed target is reported, not a failure."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let o = parse_options(&args(&["--runs", "3", "--signals", "10"])).unwrap();
        assert_eq!((o.runs, o.round_trips, o.signals), (3, 300, 10));
        assert!(parse_options(&args(&["--runs", "0"])).is_err());
        assert!(parse_options(&args(&["--round-trips"])).is_err());
        assert!(parse_options(&args(&["--size", "1G"])).is_err());
    }
}
