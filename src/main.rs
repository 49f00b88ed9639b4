//! `ferry`: boot a Cockpit bridge on any machine you can run a command on.

mod payloads;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_launcher::local_packages::{self, PackagesFrom};
use ferry_launcher::prompt::{Answerer, Conversation};
use ferry_launcher::{BootOptions, Hop, LaunchError, Route, Stats};
use ferry_protocol::control;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Boot a Cockpit bridge on any machine you can run a command on",
    after_help = "Hops: local | ssh:[USER@]HOST[:PORT] | sudo[:USER] | su:USER | doas[:USER] | \
                  podman:CONTAINER[:USER] | docker:CONTAINER[:USER] | flatpak-host | \
                  exec:'PROGRAM [ARGS...]' (any command that runs a command elsewhere), chained \
                  left to right.\n\
                  Examples:\n  ferry run local -- uname -a\n  ferry run ssh:web1 -- df -h\n  \
                  ferry run ssh:admin@web1 sudo podman:db -- id\n  ferry connect ssh:web1"
)]
struct Cli {
    /// More logging on stderr (-v: info, -vv: debug, -vvv: trace); RUST_LOG also works.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// ssh config file for the first ssh hop (as `ssh -F`).
    #[arg(long, value_name = "FILE", env = "FERRY_SSH_CONFIG", global = true)]
    ssh_config: Option<PathBuf>,
    /// Print what was sent on stderr at the end, as one JSON line (on every exit).
    #[arg(long, global = true)]
    stats: bool,
    /// How long to wait for the connection, and for the remote to start ferry's loader after
    /// its login scripts, before giving up with status 211.
    #[arg(long, value_name = "SECS", default_value_t = 30, global = true,
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    connect_timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command at the end of the route, relaying stdin, stdout and stderr.
    Run {
        /// The route, from here outwards.
        #[arg(required = true, value_name = "HOP")]
        hops: Vec<Hop>,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Speak the Cockpit protocol on stdin/stdout with the bridge at the end of the route.
    Connect {
        #[arg(required = true, value_name = "HOP")]
        hops: Vec<Hop>,
        /// Where the web console's files (the packages channel) come from: the remote's own,
        /// or this machine's when it has none (auto); always this machine's (local); always
        /// the remote's (remote).
        #[arg(long, value_name = "FROM", default_value = "auto")]
        packages: PackagesFrom,
    },
    /// cockpit-ws's login command (`[Ssh-Login] Command = ferry cockpit-ssh`): take the login
    /// page's credentials, reach DESTINATION over ssh, and speak the Cockpit protocol.
    #[command(name = "cockpit-ssh")]
    CockpitSsh {
        /// `[USER@]HOST[:PORT]`, as cockpit-ws appends it.
        #[arg(value_name = "DESTINATION", allow_hyphen_values = true)]
        destination: String,
        /// Where the web console's files come from (as for `connect`).
        #[arg(long, value_name = "FROM", default_value = "auto")]
        packages: PackagesFrom,
    },
    /// List the embedded bridge images.
    Payloads {
        /// Write each raw image to DIR/<arch>.
        #[arg(long, value_name = "DIR")]
        unpack: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // Run by ssh as its askpass program (see the prompt relay).
    if ferry_launcher::prompt::is_askpass() {
        return ExitCode::from(ferry_launcher::prompt::askpass_main());
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // A command line that is not understood sent nothing, and says so if asked.
            if err.use_stderr() && std::env::args_os().any(|a| a == "--stats") {
                eprintln!("ferry: stats {}", Stats::default().to_json());
            }
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    init_logging(cli.verbose);
    let show_stats = cli.stats;
    match real_main(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if show_stats {
                eprintln!("ferry: stats {}", Stats::default().to_json());
            }
            eprintln!("ferry: {err:#}");
            ExitCode::from(210)
        }
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn real_main(cli: Cli) -> anyhow::Result<u8> {
    let opts = BootOptions {
        ssh_config: cli.ssh_config.map(|p| p.to_string_lossy().into_owned()),
        progress: true,
        timeout: std::time::Duration::from_secs(cli.connect_timeout),
        meter: Default::default(),
        prompts: Answerer::Nobody,
        ssh_options: Vec::new(),
    };
    let mut login_destination = None;
    let mut packages_from = PackagesFrom::Auto;
    let (route, command) = match cli.command {
        Command::Payloads { unpack } => return payloads_command(unpack),
        Command::Run { hops, command } => (Route::new(hops), Some(command)),
        Command::Connect { hops, packages } => {
            packages_from = packages;
            (Route::new(hops), None)
        }
        Command::CockpitSsh {
            destination,
            packages,
        } => {
            login_destination = Some(destination);
            packages_from = packages;
            (Route::new(Vec::new()), None)
        }
    };
    // `run` asks on the user's terminal; `connect` asks its client, in the protocol.
    let conversation = std::sync::Arc::new(Conversation::default());
    let opts = BootOptions {
        prompts: if command.is_some() {
            Answerer::for_this_process()
        } else {
            Answerer::Conversation(conversation.clone())
        },
        ..opts
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let protocol = command.is_none();
    let outcome = runtime.block_on(async {
        let work = async {
            if let Some(destination) = &login_destination {
                return cockpit_ssh(destination, &conversation, &opts, packages_from).await;
            }
            let images = payloads::images();
            let session = ferry_launcher::boot(&route, &images, &opts).await?;
            match &command {
                Some(command) => ferry_launcher::run(session, command).await,
                None => {
                    let pending = conversation.take_pending().await;
                    local_packages::connect(session, pending, &images, packages_from).await
                }
            }
        };
        // Dropping `work` ends the route: its processes and the ssh master are killed, and the
        // master's control directory removed.
        tokio::select! {
            result = work => Ok(result),
            signal = terminated() => Err(signal),
        }
    });
    // Reading stdin blocks a thread that nothing can wake: do not wait for it (a terminal
    // would need Enter).
    runtime.shutdown_background();
    let stats = opts.meter.stats();
    Ok(match outcome {
        Ok(result) => finish(result.map(|(code, _)| code), &stats, cli.stats, protocol),
        Err(signal) => {
            if cli.stats {
                eprintln!("ferry: stats {}", stats.to_json());
            }
            128 + signal as u8
        }
    })
}

/// `ferry cockpit-ssh`: the login page's credentials, the route to `destination`, the known
/// hosts back to the browser, then the protocol (see `ferry_launcher::cockpit_ssh`). A failure
/// after a host key was accepted carries the known hosts in its `init`.
async fn cockpit_ssh(
    destination: &str,
    conversation: &std::sync::Arc<Conversation>,
    opts: &BootOptions,
    packages_from: PackagesFrom,
) -> Result<(i32, Stats), LaunchError> {
    use ferry_launcher::cockpit_ssh;
    use tokio::io::AsyncWriteExt;
    let hop = cockpit_ssh::destination(destination)?;
    // cockpit-ws answers the `*` challenge at once; its absence is bounded like any wait.
    let login = tokio::time::timeout(opts.timeout, cockpit_ssh::login(conversation))
        .await
        .map_err(|_| LaunchError::Timeout {
            what: format!(
                "cockpit-ws did not send the login's credentials within {} s",
                opts.timeout.as_secs()
            ),
            said: String::new(),
        })??;
    let opts = BootOptions {
        ssh_options: login.ssh_options.clone(),
        ..opts.clone()
    };
    let images = payloads::images();
    let session = match ferry_launcher::boot(&Route::new(vec![hop]), &images, &opts).await {
        Ok(session) => session,
        Err(err) => {
            if let Some(hosts) = login.known_hosts().filter(|h| !h.is_empty()) {
                eprintln!("ferry: {err}");
                let frame = control::init_problem(err.problem(), &err.to_string())
                    .with("known-hosts", hosts)
                    .into_frame();
                let mut out = tokio::io::stdout();
                let _ = out.write_all(&frame.to_bytes()).await;
                let _ = out.flush().await;
                return Ok((i32::from(err.exit_code()), opts.meter.stats()));
            }
            return Err(err);
        }
    };
    if let Some(message) = login.login_data() {
        let mut out = tokio::io::stdout();
        let sent = out.write_all(&message.into_frame().to_bytes()).await;
        if sent.is_err() || out.flush().await.is_err() {
            return Err(LaunchError::Terminated("cockpit-ws went away".into()));
        }
    }
    let pending = conversation.take_pending().await;
    local_packages::connect(session, pending, &images, packages_from).await
}

/// The first of SIGTERM, SIGINT and SIGHUP to arrive (its number). Never, if they cannot be
/// watched.
async fn terminated() -> i32 {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::warn!("cannot watch for signals");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => 15,
        _ = int.recv() => 2,
        _ = hup.recv() => 1,
    }
}

/// Report the outcome: stats (on every exit), the error line, and in protocol mode an `init`
/// with a problem.
fn finish(result: Result<i32, LaunchError>, stats: &Stats, show_stats: bool, protocol: bool) -> u8 {
    if show_stats {
        eprintln!("ferry: stats {}", stats.to_json());
    }
    match result {
        Ok(code) => u8::try_from(code).unwrap_or(255),
        Err(err) => {
            eprintln!("ferry: {err}");
            if protocol {
                let frame = control::init_problem(err.problem(), &err.to_string()).into_frame();
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&frame.to_bytes());
                let _ = out.flush();
            }
            err.exit_code()
        }
    }
}

fn payloads_command(unpack: Option<PathBuf>) -> anyhow::Result<u8> {
    let images = payloads::images();
    if let Some(dir) = unpack {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for image in &images.0 {
            let path = dir.join(image.arch);
            let raw = image.raw().context("embedded image does not decompress")?;
            std::fs::write(&path, raw)
                .with_context(|| format!("cannot write {}", path.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            println!("{}", path.display());
        }
        return Ok(0);
    }
    println!(
        "{:<8} {:<28} {:>10} {:>10}  sha256",
        "arch", "target", "raw", "zstd"
    );
    for image in &images.0 {
        println!(
            "{:<8} {:<28} {:>10} {:>10}  {}",
            image.arch,
            image.target,
            image.raw_size,
            image.zstd.len(),
            image.sha256
        );
    }
    Ok(0)
}
