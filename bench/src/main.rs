//! `ferry-bench NAME [ARGS...]`: ferry's benchmarks (run them with `cargo xtask bench NAME`).

mod bootstrap;
mod bridge;
mod dbus;
mod hops;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (name, rest) = args
        .split_first()
        .map_or(("", &[][..]), |(n, r)| (n.as_str(), r));
    match name {
        "bootstrap" => bootstrap::run(rest),
        "bridge" => bridge::run(rest),
        "dbus" => dbus::run(rest),
        "hops" => hops::run(rest),
        _ => anyhow::bail!("usage: ferry-bench <bootstrap|bridge|dbus|hops> [ARGS...]"),
    }
}
