//! `ferry`: boot a Cockpit bridge on any machine you can run a command on.

mod payloads;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_launcher::{BootOptions, Hop, LaunchError, Route, Stats};
use ferry_protocol::control;

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
    /// Print what was sent on stderr at the end, as one JSON line.
    #[arg(long, global = true)]
    stats: bool,
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
    },
    /// List the embedded bridge images.
    Payloads {
        /// Write each raw image to DIR/<arch>.
        #[arg(long, value_name = "DIR")]
        unpack: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match real_main(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
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
    };
    match cli.command {
        Command::Payloads { unpack } => payloads_command(unpack),
        Command::Run { hops, command } => {
            let route = Route::new(hops);
            let result = runtime()?.block_on(async {
                let session = ferry_launcher::boot(&route, &payloads::images(), &opts).await?;
                ferry_launcher::run(session, &command).await
            });
            Ok(finish(result, cli.stats, false))
        }
        Command::Connect { hops } => {
            let route = Route::new(hops);
            let result = runtime()?.block_on(async {
                let session = ferry_launcher::boot(&route, &payloads::images(), &opts).await?;
                ferry_launcher::connect(session).await
            });
            Ok(finish(result, cli.stats, true))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Report the outcome: stats, the error line, and in protocol mode an `init` with a problem.
fn finish(result: Result<(i32, Stats), LaunchError>, show_stats: bool, protocol: bool) -> u8 {
    match result {
        Ok((code, stats)) => {
            if show_stats {
                eprintln!("ferry: stats {}", stats.to_json());
            }
            u8::try_from(code).unwrap_or(255)
        }
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
