//! The hops benchmark: what a hop that switches user or enters a container costs, what the
//! privileged bridge costs, and what crosses the first hop of a longer route.
//!
//! Against the test bed (loopback sshd, sudo and doas rules, the podman containers), each round
//! measures, side by side:
//!
//! - for each local hop kind, `ferry connect HOP` from launch to the bridge's `init` (warm
//!   caches), against running `true` through the same tool;
//! - the cold chain `ssh:sudoer sudo podman:ferry-running` (every cache emptied) against
//!   `ssh sudoer sudo -n podman exec -i ferry-running true`;
//! - in a session as `ferry-sudoer`, an `open` with `"superuser": "require"` to its `ready`
//!   (the root copy starts through sudo, root's cache warm), against `sudo -n true` as that user;
//!
//! and, from `--stats`, the bytes over the first hop of the chain when only the first leg is
//! warm, against one image. Prints medians and ratios; it never fails on a missed target. Run it
//! with `cargo xtask bench hops [--runs N]`.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferry_testbed::{Component, Sshd};

use crate::bootstrap::{ferry_bin, image_sizes, median, ms, ratio, verdict, whole_frame};

const SUPERUSER_TARGET: f64 = 1.5;
const FIRST_HOP_BYTES_TARGET: f64 = 0.1;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(args: &[String]) -> Result<()> {
    let mut runs = 10usize;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" | "-n" => {
                runs = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .context("--runs needs a number of at least 1")?;
            }
            other => bail!("hops: unknown argument {other:?} (use --runs N)"),
        }
    }
    for component in [
        Component::Sshd,
        Component::Sudo,
        Component::Doas,
        Component::Podman,
    ] {
        component
            .check()
            .map_err(|why| anyhow::anyhow!("{component}: {why} (run `cargo xtask setup`)"))?;
    }
    let ferry = ferry_bin()?;
    let sshd = Sshd::start().context("start the loopback sshd")?;
    let config = sshd.client_config();
    let sudoer = ferry_testbed::user("sudoer");
    let uid = sudoer.uid().context("ferry-sudoer has no uid")?;
    println!("hops benchmark: {runs} rounds; ferry: {}", ferry.display());

    // (name, ferry's hops, the same tool running `true`)
    let podman_true = [
        "podman",
        "exec",
        "-i",
        ferry_testbed::RUNNING_CONTAINER,
        "true",
    ];
    let kinds: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        ("sudo", vec!["sudo".into()], vec!["sudo", "-n", "true"]),
        (
            "su:ferry-dash",
            vec!["su:ferry-dash".into()],
            vec!["su", "ferry-dash", "-c", "true"],
        ),
        ("doas", vec!["doas".into()], vec!["doas", "-n", "true"]),
        (
            "podman",
            vec![format!("podman:{}", ferry_testbed::RUNNING_CONTAINER)],
            podman_true.to_vec(),
        ),
    ];
    // One unmeasured round of each, so that caches are warm and first-use costs do not count.
    for (_, hops, baseline) in &kinds {
        time_command(baseline)?;
        connect(&ferry, &config, hops)?;
    }

    let chain: Vec<String> = [
        "ssh:sudoer".to_owned(),
        "sudo".to_owned(),
        format!("podman:{}", ferry_testbed::RUNNING_CONTAINER),
    ]
    .to_vec();
    let chain_baseline: Vec<String> = [
        "ssh",
        "-F",
        &config.to_string_lossy(),
        "sudoer",
        "sudo",
        "-n",
        "podman",
        "exec",
        "-i",
        ferry_testbed::RUNNING_CONTAINER,
        "true",
    ]
    .map(String::from)
    .to_vec();
    let chain_baseline: Vec<&str> = chain_baseline.iter().map(String::as_str).collect();
    // The caches of the later legs (root's, the container's), and with `first_too` the first
    // leg's (ferry-sudoer's).
    let caches = |first_too: bool| {
        let container = ferry_testbed::container_root();
        let mut dirs = vec![
            PathBuf::from("/root/.cache/ferry"),
            container.join("root/.cache/ferry"),
            container.join("tmp/ferry-0"),
        ];
        if first_too {
            dirs.push(sudoer.home().join(".cache/ferry"));
            dirs.extend(
                ["/dev/shm", "/tmp", "/var/tmp"]
                    .iter()
                    .map(|d| PathBuf::from(format!("{d}/ferry-{uid}"))),
            );
        }
        dirs
    };
    let setpriv_sudo: Vec<String> = [
        "setpriv".to_owned(),
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--init-groups".to_owned(),
        "sudo".to_owned(),
        "-n".to_owned(),
        "true".to_owned(),
    ]
    .to_vec();
    let setpriv_sudo: Vec<&str> = setpriv_sudo.iter().map(String::as_str).collect();

    let mut kind_rows: Vec<(Vec<Duration>, Vec<Duration>)> = vec![Default::default(); kinds.len()];
    let (mut chain_cold, mut chain_base) = (Vec::new(), Vec::new());
    let (mut su_open, mut su_base) = (Vec::new(), Vec::new());
    let mut first_hop_bytes = Vec::new();
    for _ in 0..runs {
        for (i, (_, hops, baseline)) in kinds.iter().enumerate() {
            kind_rows[i].1.push(time_command(baseline)?);
            kind_rows[i].0.push(connect(&ferry, &config, hops)?.0);
        }
        chain_base.push(time_command(&chain_baseline)?);
        clear(&caches(true));
        chain_cold.push(connect(&ferry, &config, &chain)?.0);
        // Only the first leg warm: what crosses the first hop is frames, not images.
        clear(&caches(false));
        let stats = connect(&ferry, &config, &chain)?.1;
        if stats["cached"] != true {
            bail!("the first leg was not warm: {stats}");
        }
        first_hop_bytes.push(stats["sent_bytes"].as_u64().unwrap_or(0));
        su_base.push(time_command(&setpriv_sudo)?);
        su_open.push(superuser_open(&ferry, &config)?);
        eprint!(".");
    }
    eprintln!();

    println!();
    println!(
        "{:<44} {:>9} {:>9} {:>8}  target",
        "", "ferry", "baseline", "ratio"
    );
    for ((name, _, baseline), (ferry_times, base_times)) in kinds.iter().zip(&kind_rows) {
        let (f, b) = (median(ferry_times.clone()), median(base_times.clone()));
        println!(
            "{:<44} {:>9} {:>9} {:>7.2}x  (baseline: {})",
            format!("{name}: to a ready bridge (warm)"),
            ms(f),
            ms(b),
            ratio(f, b),
            baseline.join(" ")
        );
    }
    let (f, b) = (median(chain_cold), median(chain_base));
    println!(
        "{:<44} {:>9} {:>9} {:>7.2}x  (baseline: ssh + sudo -n + podman exec, true)",
        "ssh:sudoer sudo podman: cold, to init",
        ms(f),
        ms(b),
        ratio(f, b)
    );
    let (f, b) = (median(su_open), median(su_base));
    let r = ratio(f, b);
    println!(
        "{:<44} {:>9} {:>9} {:>7.2}x  <= {SUPERUSER_TARGET:.1}x {} (baseline: sudo -n true)",
        "superuser require: open to ready",
        ms(f),
        ms(b),
        r,
        verdict(r <= SUPERUSER_TARGET)
    );
    let one_image = image_sizes(&ferry)?
        .into_iter()
        .find(|(arch, _)| arch == std::env::consts::ARCH)
        .map(|(_, size)| size)
        .context("no image for this machine")?;
    let bytes = first_hop_bytes.iter().copied().max().unwrap_or(0);
    let r = bytes as f64 / one_image as f64;
    println!(
        "{:<44} {:>9} {:>9} {:>7.3}x  <= {FIRST_HOP_BYTES_TARGET}x {} (vs one image)",
        "bytes over the first hop, later legs cold",
        bytes,
        one_image,
        r,
        verdict(r <= FIRST_HOP_BYTES_TARGET)
    );
    drop(sshd);
    Ok(())
}

fn clear(dirs: &[PathBuf]) {
    for dir in dirs {
        let _ = fs::remove_dir_all(dir);
    }
}

/// Run a command to its end; how long it took.
fn time_command(argv: &[&str]) -> Result<Duration> {
    let start = Instant::now();
    let output = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {}", argv.join(" ")))?;
    let took = start.elapsed();
    if !output.status.success() {
        bail!(
            "{}: {}: {}",
            argv.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(took)
}

/// `ferry --stats connect HOPS`: time to the first frame, and the stats line.
fn connect(ferry: &Path, config: &Path, hops: &[String]) -> Result<(Duration, serde_json::Value)> {
    let start = Instant::now();
    let mut child = Command::new(ferry)
        .args(["--stats", "connect", "--ssh-config"])
        .arg(config)
        .args(hops)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run ferry")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        let result = loop {
            if whole_frame(&buffer).is_some() {
                break Ok(start.elapsed());
            }
            match stdout.read(&mut chunk) {
                Ok(0) => break Err(String::from_utf8_lossy(&buffer).into_owned()),
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                Err(e) => break Err(e.to_string()),
            }
        };
        let _ = tx.send(result);
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    });
    let took = rx.recv_timeout(ATTEMPT_TIMEOUT);
    drop(child.stdin.take());
    let mut stderr = String::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut stderr);
    }
    let _ = child.wait();
    let took = match took {
        Ok(Ok(t)) => t,
        _ => bail!("ferry connect {}: no init: {stderr}", hops.join(" ")),
    };
    let stats = stderr
        .lines()
        .find_map(|l| l.strip_prefix("ferry: stats "))
        .with_context(|| format!("no stats line: {stderr}"))?;
    Ok((took, serde_json::from_str(stats)?))
}

/// In a session as ferry-sudoer: time from an `open` with `"superuser": "require"` to `ready`.
fn superuser_open(ferry: &Path, config: &Path) -> Result<Duration> {
    let mut child = Command::new(ferry)
        .args(["connect", "--ssh-config"])
        .arg(config)
        .arg("ssh:sudoer")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("run ferry")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, String)>();
    std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(len) = whole_frame(&buffer) {
                let frame: Vec<u8> = buffer.drain(..len).collect();
                let text = String::from_utf8_lossy(&frame).into_owned();
                if tx.send((Instant::now(), text)).is_err() {
                    return;
                }
            }
            match stdout.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
    });
    let control = |json: &str| {
        let body = format!("\n{json}");
        format!("{}\n{body}", body.len()).into_bytes()
    };
    // The bridge's init first.
    rx.recv_timeout(ATTEMPT_TIMEOUT).context("no init")?;
    stdin.write_all(&control(
        r#"{"command":"init","version":1,"host":"localhost"}"#,
    ))?;
    let start = Instant::now();
    stdin.write_all(&control(
        r#"{"command":"open","channel":"su","payload":"null","superuser":"require"}"#,
    ))?;
    stdin.flush()?;
    let took = loop {
        let (at, text) = rx.recv_timeout(ATTEMPT_TIMEOUT).context("no ready")?;
        if text.contains(r#""channel":"su""#) {
            if text.contains(r#""command":"ready""#) {
                break at - start;
            }
            bail!("the superuser channel did not open: {text}");
        }
    };
    drop(stdin);
    let _ = child.wait();
    Ok(took)
}
