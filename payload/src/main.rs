//! ferry-bridge: the Cockpit-protocol bridge that ferry ships to every machine it reaches.
//!
//! A thin wrapper around the `ferry_bridge` library: parses the command line and runs the
//! bridge on stdin and stdout.

const USAGE: &str = "\
Usage: ferry-bridge [--interact=BOUNDARY] [--packages] [--version] [--help]

Speaks the Cockpit protocol on stdin and stdout.

Options:
  --interact=BOUNDARY  read and write messages as CHANNEL\\nPAYLOAD separated by
                       \\nBOUNDARY\\n, for a person to type (control channel: empty line)
  --packages           list the Cockpit packages this bridge serves and exit
  --version            print the version and exit
  --help               print this help and exit
";

/// Wait for SIGTERM, SIGHUP or SIGINT; returns its number. Never returns if none can be
/// watched.
async fn terminated() -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let watch = |kind: SignalKind| signal(kind).ok();
    let (mut term, mut hup, mut int) = (
        watch(SignalKind::terminate()),
        watch(SignalKind::hangup()),
        watch(SignalKind::interrupt()),
    );
    async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    tokio::select! {
        _ = next(&mut term) => libc::SIGTERM,
        _ = next(&mut hup) => libc::SIGHUP,
        _ = next(&mut int) => libc::SIGINT,
    }
}

enum Mode {
    Frames,
    Interact(String),
}

fn main() -> std::process::ExitCode {
    // Run by sudo as its askpass, for the bridge that runs sudo.
    if let Some(status) = ferry_bridge::askpass::client() {
        return std::process::ExitCode::from(status);
    }
    let mut mode = Mode::Frames;
    for arg in std::env::args().skip(1) {
        if let Some(boundary) = arg.strip_prefix("--interact=") {
            if boundary.is_empty() {
                eprintln!("ferry-bridge: --interact needs a boundary");
                return std::process::ExitCode::from(2);
            }
            mode = Mode::Interact(boundary.to_owned());
            continue;
        }
        match arg.as_str() {
            "--version" => {
                println!("ferry-bridge {}", env!("CARGO_PKG_VERSION"));
                return std::process::ExitCode::SUCCESS;
            }
            "--packages" => {
                print!("{}", ferry_bridge::packages::Packages::load().show());
                return std::process::ExitCode::SUCCESS;
            }
            "--help" => {
                print!("{USAGE}");
                return std::process::ExitCode::SUCCESS;
            }
            other => {
                eprintln!("ferry-bridge: unknown option {other:?}; see --help");
                return std::process::ExitCode::from(2);
            }
        }
    }
    ferry_bridge::raise_fd_limit();
    ferry_bridge::user_environment();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry-bridge: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Inside the runtime: pipes and sockets are registered with its reactor.
        let (stdin, stdout) = (ferry_bridge::stdin(), ferry_bridge::stdout());
        let bridge = async {
            match &mode {
                Mode::Frames => ferry_bridge::run(stdin, stdout).await,
                Mode::Interact(boundary) => {
                    ferry_bridge::run_interact(stdin, stdout, boundary).await
                }
            }
        };
        tokio::select! {
            result = bridge => result,
            // Dropping the bridge here and shutting down the runtime below tears down every
            // channel, and with them their child processes.
            signal = terminated() => {
                eprintln!("ferry-bridge: terminated by signal {signal}");
                Ok(())
            }
        }
    });
    // A read of stdin may still be blocked in a thread: do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-bridge: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
