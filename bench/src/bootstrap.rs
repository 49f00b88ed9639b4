//! The bootstrap benchmark: how long until a bridge answers, compared with `ssh host true`.
//!
//! Against the test bed's loopback sshd, each round measures, in this order:
//!
//! - `ssh -F CONFIG HOST true`, launch to exit: the floor;
//! - `ferry connect` with an empty remote cache (cold), launch to the bridge's `init` frame;
//! - the same again with the image cached (warm);
//!
//! and the bytes sent (`--stats`). Prints medians, ratios to `ssh true`, and whether each target is
//! met; it never fails on a missed target. Run it with `cargo xtask bench bootstrap [--runs N]
//! [--host ALIAS]` (a release build; `FERRY_BIN` names the `ferry` binary).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferry_testbed::{Component, Sshd};

const COLD_TARGET: f64 = 1.25;
const WARM_TARGET: f64 = 1.10;
const PAYLOAD_TARGET: u64 = 400_000;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

struct Options {
    runs: usize,
    host: String,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        runs: 10,
        host: "dash".into(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" | "-n" => {
                options.runs = args
                    .next()
                    .context("--runs needs a number")?
                    .parse()
                    .context("--runs needs a number")?;
                if options.runs == 0 {
                    bail!("--runs must be at least 1");
                }
            }
            "--host" => options.host = args.next().context("--host needs a test user")?.clone(),
            other => bail!("bootstrap: unknown argument {other:?} (use --runs N, --host ALIAS)"),
        }
    }
    Ok(options)
}

/// What one `ferry connect` cost.
struct Boot {
    to_init: Duration,
    payload_bytes: u64,
    sent_bytes: u64,
    cached: bool,
}

pub fn run(args: &[String]) -> Result<()> {
    let options = parse(args)?;
    let short = ferry_testbed::users()
        .into_iter()
        .map(|u| u.short)
        .find(|s| *s == options.host)
        .with_context(|| format!("--host {}: no such test user", options.host))?;
    for component in [Component::Sshd, Component::User(short)] {
        component
            .check()
            .map_err(|why| anyhow::anyhow!("{component}: {why} (run `cargo xtask setup`)"))?;
    }
    let ferry = ferry_bin()?;
    let sshd = Sshd::start().context("start the loopback sshd")?;
    let config = sshd.client_config();
    let user = ferry_testbed::user(&options.host);
    let uid = user.uid().context("the test user has no uid")?;
    let mut cache_dirs = vec![user.home().join(".cache/ferry")];
    cache_dirs.extend(
        ["/dev/shm", "/tmp", "/var/tmp"]
            .iter()
            .map(|d| PathBuf::from(format!("{d}/ferry-{uid}"))),
    );

    println!(
        "bootstrap benchmark: {} rounds against a loopback sshd as {}; ferry: {}",
        options.runs,
        user.name(),
        ferry.display()
    );
    // One unmeasured round of each, so that first-use costs (page cache, sshd) do not count.
    ssh_true(&config, &options.host)?;
    clear(&cache_dirs);
    boot(&ferry, &config, &options.host)?;

    let (mut ssh, mut cold, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..options.runs {
        ssh.push(ssh_true(&config, &options.host)?);
        clear(&cache_dirs);
        let c = boot(&ferry, &config, &options.host)?;
        if c.cached {
            bail!("round {round}: the cold start found a cached image");
        }
        cold.push(c);
        let w = boot(&ferry, &config, &options.host)?;
        if !w.cached {
            bail!("round {round}: the warm start found no cached image");
        }
        warm.push(w);
        eprint!(".");
    }
    eprintln!();

    let ssh_median = median(ssh.clone());
    let cold_median = median(cold.iter().map(|b| b.to_init).collect());
    let warm_median = median(warm.iter().map(|b| b.to_init).collect());
    let cold_ratio = ratio(cold_median, ssh_median);
    let warm_ratio = ratio(warm_median, ssh_median);
    let cold_payload = cold.iter().map(|b| b.payload_bytes).max().unwrap_or(0);
    let cold_sent = cold.iter().map(|b| b.sent_bytes).max().unwrap_or(0);
    let warm_payload = warm.iter().map(|b| b.payload_bytes).max().unwrap_or(0);
    let warm_sent = warm.iter().map(|b| b.sent_bytes).max().unwrap_or(0);

    println!();
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>8}  target",
        "", "median", "min", "max", "vs ssh"
    );
    let row = |name: &str, samples: &[Duration], target: Option<(f64, f64)>| {
        let min = samples.iter().min().copied().unwrap_or_default();
        let max = samples.iter().max().copied().unwrap_or_default();
        let m = median(samples.to_vec());
        let r = ratio(m, ssh_median);
        let target = match target {
            Some((limit, actual)) => format!("<= {limit:.2}x {}", verdict(actual <= limit)),
            None => String::new(),
        };
        println!(
            "{name:<34} {:>9} {:>9} {:>9} {:>7.2}x  {target}",
            ms(m),
            ms(min),
            ms(max),
            r
        );
    };
    row("ssh true", &ssh, None);
    row(
        "ferry connect, cold (to init)",
        &cold.iter().map(|b| b.to_init).collect::<Vec<_>>(),
        Some((COLD_TARGET, cold_ratio)),
    );
    row(
        "ferry connect, warm (to init)",
        &warm.iter().map(|b| b.to_init).collect::<Vec<_>>(),
        Some((WARM_TARGET, warm_ratio)),
    );
    println!();
    println!("{:<34} {:>9}  target", "bytes", "");
    println!(
        "{:<34} {:>9}  <= {PAYLOAD_TARGET} {}",
        "cold: image sent",
        cold_payload,
        verdict(cold_payload <= PAYLOAD_TARGET)
    );
    println!("{:<34} {:>9}", "cold: everything sent", cold_sent);
    println!(
        "{:<34} {:>9}  == 0 {}",
        "warm: image sent",
        warm_payload,
        verdict(warm_payload == 0)
    );
    println!("{:<34} {:>9}", "warm: everything sent", warm_sent);
    for (arch, compressed) in image_sizes(&ferry)? {
        println!(
            "{:<34} {:>9}  <= {PAYLOAD_TARGET} {}",
            format!("image {arch} (compressed)"),
            compressed,
            verdict(compressed <= PAYLOAD_TARGET)
        );
    }
    drop(sshd);
    Ok(())
}

pub(crate) fn ferry_bin() -> Result<PathBuf> {
    let path = std::env::var_os("FERRY_BIN")
        .map(PathBuf::from)
        .context("FERRY_BIN is not set: run this with `cargo xtask bench bootstrap`")?;
    if !path.is_file() {
        bail!("FERRY_BIN={} does not exist", path.display());
    }
    Ok(path)
}

fn clear(dirs: &[PathBuf]) {
    for dir in dirs {
        let _ = fs::remove_dir_all(dir);
    }
}

fn ssh_true(config: &Path, host: &str) -> Result<Duration> {
    let start = Instant::now();
    let output = Command::new("ssh")
        .arg("-F")
        .arg(config)
        .args([host, "true"])
        .stdin(Stdio::null())
        .output()
        .context("run ssh")?;
    let took = start.elapsed();
    if !output.status.success() {
        bail!(
            "ssh {host} true: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(took)
}

/// Launch `ferry --stats connect`, time until the first whole frame (the bridge's `init`) is on
/// its stdout, then close its stdin and read the stats line.
fn boot(ferry: &Path, config: &Path, host: &str) -> Result<Boot> {
    let start = Instant::now();
    let mut child = Command::new(ferry)
        .arg("connect")
        .arg("--stats")
        .arg("--ssh-config")
        .arg(config)
        .arg(format!("ssh:{host}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run ferry")?;
    let result = read_init(&mut child, start);
    // Closing stdin ends the bridge, and with it ferry.
    drop(child.stdin.take());
    let to_init = match result {
        Ok(t) => t,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            let mut stderr = String::new();
            if let Some(mut s) = child.stderr.take() {
                let _ = s.read_to_string(&mut stderr);
            }
            return Err(e.context(format!("ferry connect ssh:{host}: {stderr}")));
        }
    };
    let mut stderr = String::new();
    if let Some(mut s) = child.stderr.take() {
        s.read_to_string(&mut stderr)
            .context("read ferry's stderr")?;
    }
    if let Some(mut out) = child.stdout.take() {
        std::io::copy(&mut out, &mut std::io::sink()).ok();
    }
    let status = child.wait()?;
    let stats = stderr
        .lines()
        .find_map(|l| l.strip_prefix("ferry: stats "))
        .with_context(|| format!("no stats line from ferry ({status}): {stderr}"))?;
    let stats: serde_json::Value = serde_json::from_str(stats).context("stats line")?;
    let field = |name: &str| -> Result<u64> {
        stats[name]
            .as_u64()
            .with_context(|| format!("stats has no {name}: {stats}"))
    };
    Ok(Boot {
        to_init,
        payload_bytes: field("payload_bytes")?,
        sent_bytes: field("sent_bytes")?,
        cached: stats["cached"]
            .as_bool()
            .with_context(|| format!("stats has no cached: {stats}"))?,
    })
}

/// Read stdout until one whole frame has arrived; the time since `start`.
fn read_init(child: &mut Child, start: Instant) -> Result<Duration> {
    let mut stdout = child.stdout.take().context("ferry's stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        let result = loop {
            if let Some(len) = whole_frame(&buffer) {
                break Ok((start.elapsed(), len));
            }
            match stdout.read(&mut chunk) {
                Ok(0) => break Err(format!("stdout ended after {} bytes", buffer.len())),
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                Err(e) => break Err(e.to_string()),
            }
        };
        let _ = tx.send(result);
        // Drain the rest so that ferry never blocks on a full pipe.
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    });
    match rx.recv_timeout(ATTEMPT_TIMEOUT) {
        Ok(Ok((took, _))) => Ok(took),
        Ok(Err(e)) => bail!("no init frame: {e}"),
        Err(_) => bail!("no init frame within {ATTEMPT_TIMEOUT:?}"),
    }
}

/// The length of the first frame in `buffer`, once it is all there.
pub(crate) fn whole_frame(buffer: &[u8]) -> Option<usize> {
    let newline = buffer.iter().position(|b| *b == b'\n')?;
    let size: usize = std::str::from_utf8(&buffer[..newline]).ok()?.parse().ok()?;
    (buffer.len() >= newline + 1 + size).then_some(newline + 1 + size)
}

/// (arch, compressed size) of each embedded image, from `ferry payloads`.
pub(crate) fn image_sizes(ferry: &Path) -> Result<Vec<(String, u64)>> {
    let output = Command::new(ferry).arg("payloads").output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let (Some(arch_col), Some(raw_col)) = (
        header.iter().position(|h| *h == "arch"),
        header.iter().position(|h| *h == "raw"),
    ) else {
        bail!("cannot read the table of `ferry payloads`:\n{text}");
    };
    // The compressed size is the column after the raw size.
    Ok(lines
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            Some((
                cols.get(arch_col)?.to_string(),
                cols.get(raw_col + 1)?.parse().ok()?,
            ))
        })
        .collect())
}

pub(crate) fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

pub(crate) fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

pub(crate) fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT MET"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_whole_frame() {
        assert_eq!(whole_frame(b"5\n\n{}"), None);
        assert_eq!(whole_frame(b"3\n\n{}"), Some(5));
        assert_eq!(whole_frame(b"3\n\n{}more"), Some(5));
        assert_eq!(whole_frame(b"3"), None);
    }

    #[test]
    fn median_of_odd_and_even() {
        let ms = |v: &[u64]| v.iter().map(|m| Duration::from_millis(*m)).collect();
        assert_eq!(median(ms(&[3, 1, 2])), Duration::from_millis(2));
        assert_eq!(median(ms(&[4, 1, 3, 2])), Duration::from_millis(3));
    }
}
