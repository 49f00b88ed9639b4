//! Differential conformance: the same sessions against ferry-bridge and two reference bridges.
//!
//! Each scenario in `tests/conformance/NAME.scenario` (format: see `conformance/scenario.rs`)
//! is run against ferry's bridge and both references: Debian 12's `cockpit-bridge` 287 (the last
//! C bridge) and Cockpit 337's Python bridge (today's). Their answers are normalised (what
//! legitimately differs: pids, tags, times, init details, chunking of data) and ferry's are
//! compared with each reference's, channel by channel. A remaining difference fails the test
//! unless `tests/conformance/DIFFERENCES.md` lists it with its reason and a rule that erases
//! exactly it (for one reference, `allow[287]`/`allow[337]`, or both). Where the references
//! disagree, ferry follows 337. A scenario with `reference 337` is compared with 337 only.
//!
//! ferry's bridge: `FERRY_BRIDGE` if set, else the host's payload unpacked from the `ferry`
//! binary (`ferry payloads --unpack DIR`). The references: `/usr/bin/cockpit-bridge` and
//! [`ferry_testbed::cockpit337_bridge_command`], which `cargo xtask setup` installs; without
//! them the tests fail under CI and are skipped otherwise.
//! `FERRY_CONFORMANCE_DUMP=1` prints the transcripts of every scenario.

mod differences;
mod scenario;
mod servers;
mod session;
mod transcript;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ferry_testbed::Component;
use scenario::Scenario;
use transcript::{compare, normalise, render_event, Transcript};

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

/// A reference bridge: its short name (`287`, `337`) and its command.
struct Reference {
    name: &'static str,
    title: &'static str,
    command: Vec<String>,
}

/// The bridge commands to compare: ferry's and the references'.
struct Bridges {
    ferry: Vec<String>,
    references: Vec<Reference>,
}

/// The bridge commands, or `None` when the references are missing outside CI.
fn bridges() -> Option<&'static Bridges> {
    static BRIDGES: OnceLock<Result<Option<Bridges>, String>> = OnceLock::new();
    match BRIDGES.get_or_init(locate_bridges) {
        Ok(b) => b.as_ref(),
        Err(e) => panic!("{e}"),
    }
}

fn locate_bridges() -> Result<Option<Bridges>, String> {
    let mut references = Vec::new();
    for (component, name, title, command) in [
        (
            Component::CockpitBridge,
            "287",
            "cockpit-bridge 287",
            vec![ferry_testbed::COCKPIT_287_BRIDGE.to_owned()],
        ),
        (
            Component::Cockpit337,
            "337",
            "Cockpit 337's bridge",
            ferry_testbed::cockpit337_bridge_command(),
        ),
    ] {
        match component.check() {
            Ok(()) => references.push(Reference {
                name,
                title,
                command,
            }),
            Err(why) if ferry_testbed::in_ci() => {
                return Err(format!(
                    "{title} is missing ({why}): the conformance suite needs it in CI \
                     (`cargo xtask setup` installs it)"
                ));
            }
            Err(why) => {
                eprintln!("conformance: not comparing with {title}: {why} (`cargo xtask setup`)")
            }
        }
    }
    if references.is_empty() {
        eprintln!("skipping conformance: no reference bridge is installed (`cargo xtask setup`)");
        return Ok(None);
    }
    let ferry = match std::env::var_os("FERRY_BRIDGE") {
        Some(p) => PathBuf::from(p),
        None => unpack_ferry_bridge()?,
    };
    if !ferry.exists() {
        return Err(format!("ferry's bridge {} does not exist", ferry.display()));
    }
    Ok(Some(Bridges {
        ferry: vec![ferry.display().to_string()],
        references,
    }))
}

/// Unpack the payloads embedded in the `ferry` binary and pick the host's.
fn unpack_ferry_bridge() -> Result<PathBuf, String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance-payloads");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("payloads")
        .arg("--unpack")
        .arg(&dir)
        .output()
        .map_err(|e| format!("cannot run ferry payloads --unpack: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`ferry payloads --unpack` failed ({}): {}\n(set FERRY_BRIDGE to a ferry-bridge binary to test it directly)",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(dir.join(std::env::consts::ARCH))
}

fn differences() -> &'static [differences::Entry] {
    static ENTRIES: OnceLock<Result<Vec<differences::Entry>, String>> = OnceLock::new();
    let entries = ENTRIES.get_or_init(|| {
        let path = conformance_dir().join("DIFFERENCES.md");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        differences::parse(&text).map_err(|e| format!("DIFFERENCES.md: {e}"))
    });
    match entries {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    }
}

fn load(name: &str) -> Scenario {
    let path = conformance_dir().join(format!("{name}.scenario"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    Scenario::parse(name, &text).unwrap_or_else(|e| panic!("{e}"))
}

fn render(t: &Transcript) -> String {
    let mut s = String::new();
    for (channel, events) in &t.channels {
        s.push_str(&format!("  [{channel}]\n"));
        for e in events {
            s.push_str(&format!("    {}\n", render_event(e)));
        }
    }
    s.push_str(&format!("  end: {}\n", t.exit));
    s
}

fn check(name: &str) {
    let scenario = load(name);
    let entries = differences();
    let Some(bridges) = bridges() else {
        return;
    };
    if let Some(short) = &scenario.user {
        let spec = ferry_testbed::user(short);
        let ready = Component::Root
            .check()
            .and_then(|()| Component::User(spec.short).check());
        match ready {
            Ok(()) => {}
            Err(why) if ferry_testbed::in_ci() => {
                panic!("{name}: cannot run the bridges as {}: {why}", spec.name())
            }
            Err(why) => {
                eprintln!(
                    "{name}: skipped: cannot run the bridges as {}: {why}",
                    spec.name()
                );
                return;
            }
        }
    }
    let references: Vec<&Reference> = bridges
        .references
        .iter()
        .filter(|r| {
            scenario.references.is_empty() || scenario.references.iter().any(|n| n == r.name)
        })
        .collect();
    if references.is_empty() {
        eprintln!("{name}: skipped: none of its references is installed");
        return;
    }
    let (ferry, runs) = std::thread::scope(|s| {
        let f = s.spawn(|| session::run(&scenario, &bridges.ferry));
        let others: Vec<_> = references
            .iter()
            .map(|r| s.spawn(|| session::run(&scenario, &r.command)))
            .collect();
        let runs: Vec<_> = others
            .into_iter()
            .map(|h| h.join().expect("runner thread"))
            .collect();
        (f.join().expect("runner thread"), runs)
    });
    let ferry = ferry.unwrap_or_else(|e| panic!("{name}: running ferry's bridge: {e}"));
    let prepare = |t: &Transcript| {
        let mut t = t.clone();
        normalise(&mut t, &scenario.modes);
        for channel in &scenario.unordered {
            transcript::Rule::IgnoreOrder(channel.clone()).apply(&mut t);
        }
        t
    };
    let f = prepare(&ferry.transcript);
    let dump = std::env::var_os("FERRY_CONFORMANCE_DUMP").is_some();
    if dump {
        eprintln!("=== {name}: ferry\n{}", render(&f));
    }
    let mut failures = String::new();
    for (reference, run) in references.iter().zip(runs) {
        let title = reference.title;
        let run = run.unwrap_or_else(|e| panic!("{name}: running {title}: {e}"));
        let r = prepare(&run.transcript);
        if dump {
            eprintln!("=== {name}: {title}\n{}", render(&r));
        }
        let notes = r.notes();
        assert!(
            notes.is_empty(),
            "{name}: the scenario does not fit {title}: {notes:?}\n\
             {title} answered:\n{}\nits stderr:\n{}",
            render(&r),
            run.stderr
        );

        let rules = differences::rules_for(entries, name, reference.name);
        let apply = |t: &Transcript, skip: Option<usize>| {
            let mut t = t.clone();
            for (i, a) in rules.iter().enumerate() {
                if Some(i) != skip {
                    a.rule.apply(&mut t);
                }
            }
            t
        };
        let report = compare(&apply(&f, None), &apply(&r, None));
        if !report.is_empty() {
            failures.push_str(&format!(
                "{name}: ferry's bridge differs from {title} \
                 (fix it, or list it in tests/conformance/DIFFERENCES.md):\n{report}\n\
                 ferry-bridge stderr:\n{}\n{title} stderr:\n{}\n",
                ferry.stderr, run.stderr
            ));
            continue;
        }
        // An allowance for this scenario that is no longer needed is worth knowing about (but
        // is no failure: the difference may come back with another kernel or reference version).
        for (i, a) in rules.iter().enumerate() {
            if a.named && compare(&apply(&f, Some(i)), &apply(&r, Some(i))).is_empty() {
                eprintln!(
                    "{name}: note: DIFFERENCES.md `{}` rule {:?} is not needed against {title}",
                    a.id, a.rule
                );
            }
        }
    }
    if !failures.is_empty() {
        panic!("{failures}");
    }
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        const SCENARIOS: &[&str] = &[$(stringify!($name)),*];
        mod scenarios {
            $(#[test] fn $name() { super::check(stringify!($name)); })*
        }
    };
}

scenarios! {
    control_without_command,
    dbus_call,
    dbus_dict_keys,
    dbus_hostnamed,
    dbus_internal,
    dbus_internal_objects,
    dbus_internal_user,
    dbus_invalid_args,
    dbus_object_manager,
    dbus_open_errors,
    dbus_owner,
    dbus_signals,
    dbus_watch,
    data_before_init,
    data_unknown_channel,
    duplicate_open,
    echo,
    echo_binary,
    echo_text_invalid_utf8,
    echo_text_nul,
    flow_control,
    flow_control_window,
    fsinfo,
    fsinfo_entries,
    fslist,
    fslist_watch,
    fsread,
    fsread_errors,
    fsread_proc,
    fsreplace,
    fsreplace_errors,
    fsreplace_mode,
    fsreplace_tag,
    fswatch,
    fswatch_dir,
    http_stream,
    http_stream_errors,
    http_stream_unix,
    info,
    init,
    init_bad_version,
    kill_group,
    malformed_control,
    malformed_no_channel,
    malformed_oversize,
    malformed_size_not_integer,
    malformed_size_too_long,
    metrics,
    null,
    open_before_init,
    packages,
    packages_differences,
    ping,
    send_acks,
    stream_bad_options,
    stream_binary,
    stream_close_kills,
    stream_directory,
    stream_environ,
    stream_err_ignore,
    stream_err_message,
    stream_err_out,
    stream_exit_signal,
    stream_exit_status,
    stream_missing_program,
    stream_permission_denied,
    stream_pipes,
    stream_pty,
    stream_pty_invalid_utf8,
    stream_pty_window,
    stream_tcp,
    stream_text_input_invalid_utf8,
    stream_text_invalid_utf8,
    stream_text_nul,
    stream_unix,
    unknown_command,
    unknown_payload,
}

#[test]
fn every_scenario_file_has_a_test() {
    let mut files: Vec<String> = std::fs::read_dir(conformance_dir())
        .expect("tests/conformance")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".scenario").map(str::to_owned)
        })
        .collect();
    files.sort();
    let mut listed: Vec<String> = SCENARIOS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "scenario files and the scenarios! list differ"
    );
    for name in SCENARIOS {
        load(name);
    }
}

#[test]
fn differences_file_is_valid() {
    for entry in differences() {
        for allow in &entry.rules {
            let scenario = &allow.scenario;
            assert!(
                scenario == "*" || SCENARIOS.contains(&scenario.as_str()),
                "DIFFERENCES.md `{}` names unknown scenario {scenario:?}",
                entry.id
            );
        }
    }
}

/// `ferry-bridge --packages` lists what `cockpit-bridge --packages` (287, the one installed)
/// lists on this machine, line for line, but its `checksum = ...` line (ferry computes no
/// checksums: DIFFERENCES.md, `init-checksum`). Cockpit 337 lists the same packages, but the
/// labels of each in the order of its manifest; 287 and ferry sort them by their keys.
#[test]
fn packages_listing_matches_cockpit_bridge() {
    let Some(bridges) = bridges() else {
        return;
    };
    let Some(reference) = bridges.references.iter().find(|r| r.name == "287") else {
        eprintln!("skipping: cockpit-bridge 287 is not installed");
        return;
    };
    let list = |command: &[String]| -> Vec<String> {
        let out = std::process::Command::new(&command[0])
            .args(&command[1..])
            .arg("--packages")
            .stderr(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{command:?} --packages: {e}"));
        assert!(out.status.success(), "{command:?} --packages: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("checksum = "))
            .map(str::to_owned)
            .collect()
    };
    let reference = list(&reference.command);
    assert!(
        !reference.is_empty(),
        "cockpit-bridge lists no packages: is cockpit-system installed?"
    );
    assert_eq!(list(&bridges.ferry), reference);
}
