//! ferry-bridge: the Cockpit-protocol bridge that ferry ships to every machine it reaches.
//!
//! A thin wrapper around the `ferry_bridge` library: parses the command line and runs the
//! bridge on stdin and stdout.

const USAGE: &str = "\
Usage: ferry-bridge [--interact=BOUNDARY] [--version] [--help]

Speaks the Cockpit protocol on stdin and stdout.

Options:
  --interact=BOUNDARY  read and write messages as CHANNEL\\nPAYLOAD separated by
                       \\nBOUNDARY\\n, for a person to type (control channel: empty line)
  --version            print the version and exit
  --help               print this help and exit
";

fn main() -> std::process::ExitCode {
    if let Some(arg) = std::env::args().nth(1) {
        match arg.as_str() {
            "--version" => {
                println!("ferry-bridge {}", env!("CARGO_PKG_VERSION"));
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
    match runtime.block_on(ferry_bridge::run(tokio::io::stdin(), tokio::io::stdout())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-bridge: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
