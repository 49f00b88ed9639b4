use std::fmt;
use std::str::FromStr;

use crate::login_shell::{self, Unquotable};
use crate::ssh::SESSION_OPTIONS;
use crate::transport::Ended;
use crate::LaunchError;

// One module per kind of hop that switches user or enters a container.
mod container;
mod doas;
mod docker;
mod flatpak;
mod podman;
mod su;
mod sudo;

/// `PROGRAM -n [-u USER] --`: sudo and doas take the same options for running as USER (root
/// by default) without ever prompting.
fn no_prompt_argv(program: &str, user: Option<&str>) -> Vec<String> {
    let mut v = vec![program.to_owned(), "-n".to_owned()];
    if let Some(u) = user {
        v.extend(["-u".to_owned(), u.to_owned()]);
    }
    v.push("--".to_owned());
    v
}

/// One step of a route: a way to run a command somewhere else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hop {
    /// This machine, through `sh`.
    Local,
    /// System OpenSSH to `[USER@]HOST[:PORT]`.
    Ssh {
        user: Option<String>,
        host: String,
        port: Option<u16>,
    },
    /// Any command that runs a command elsewhere: `PROGRAM ARGS... sh -c STAGE1`.
    Exec { argv: Vec<String> },
    /// `sudo` (root) or `sudo:USER`.
    Sudo { user: Option<String> },
    /// `su:USER`.
    Su { user: String },
    /// `doas` (root) or `doas:USER`.
    Doas { user: Option<String> },
    /// `podman:CONTAINER[:USER]`: a running container.
    Podman {
        container: String,
        user: Option<String>,
    },
    /// `docker:CONTAINER[:USER]`: a running container.
    Docker {
        container: String,
        user: Option<String>,
    },
    /// `flatpak-host`: from inside a Flatpak sandbox to its host.
    FlatpakHost,
}

#[derive(Debug, thiserror::Error)]
pub enum HopParseError {
    #[error("unknown hop {0:?}: use local, ssh:[USER@]HOST[:PORT], sudo[:USER], su:USER, doas[:USER], podman:CONTAINER[:USER], docker:CONTAINER[:USER], flatpak-host or exec:PROGRAM [ARGS...]")]
    Unknown(String),
    #[error("hop {0:?} names no valid user or container (no spaces, not starting with `-`)")]
    BadName(String),
    #[error("ssh hop {0:?} has no host: use ssh:[USER@]HOST[:PORT]")]
    NoHost(String),
    #[error("ssh hop {0:?} has an invalid port")]
    BadPort(String),
    #[error("exec hop {0:?} names no program: use exec:PROGRAM [ARGS...]")]
    NoProgram(String),
    #[error("exec hop {0:?} has unbalanced quotes")]
    Quotes(String),
}

impl FromStr for Hop {
    type Err = HopParseError;

    fn from_str(s: &str) -> Result<Self, HopParseError> {
        if s == "local" {
            return Ok(Hop::Local);
        }
        if let Some(rest) = s.strip_prefix("ssh:") {
            return parse_ssh(s, rest);
        }
        if let Some(hop) = parse_door(s)? {
            return Ok(hop);
        }
        if let Some(rest) = s.strip_prefix("exec:") {
            let argv = shell_words::split(rest).map_err(|_| HopParseError::Quotes(s.into()))?;
            if argv.is_empty() {
                return Err(HopParseError::NoProgram(s.into()));
            }
            return Ok(Hop::Exec { argv });
        }
        Err(HopParseError::Unknown(s.into()))
    }
}

/// A user or container name as a hop takes it: not empty, no whitespace or `:`, no leading `-`.
fn name(whole: &str, word: &str) -> Result<String, HopParseError> {
    if word.is_empty()
        || word.starts_with('-')
        || word.contains(|c: char| c.is_whitespace() || c == ':' || c.is_control())
    {
        return Err(HopParseError::BadName(whole.into()));
    }
    Ok(word.to_owned())
}

/// `sudo[:USER]`, `su:USER`, `doas[:USER]`, `podman:C[:USER]`, `docker:C[:USER]`,
/// `flatpak-host`; `None` for any other hop.
fn parse_door(s: &str) -> Result<Option<Hop>, HopParseError> {
    let (kind, rest) = match s.split_once(':') {
        Some((k, r)) => (k, Some(r)),
        None => (s, None),
    };
    let user = |r: Option<&str>| r.map(|u| name(s, u)).transpose();
    let container = |r: Option<&str>| -> Result<(String, Option<String>), HopParseError> {
        let r = r.ok_or_else(|| HopParseError::BadName(s.into()))?;
        let (c, u) = match r.split_once(':') {
            Some((c, u)) => (c, Some(u)),
            None => (r, None),
        };
        Ok((name(s, c)?, user(u)?))
    };
    Ok(Some(match kind {
        "sudo" => Hop::Sudo { user: user(rest)? },
        "doas" => Hop::Doas { user: user(rest)? },
        "su" => Hop::Su {
            user: name(s, rest.unwrap_or(""))?,
        },
        "podman" => {
            let (container, user) = container(rest)?;
            Hop::Podman { container, user }
        }
        "docker" => {
            let (container, user) = container(rest)?;
            Hop::Docker { container, user }
        }
        "flatpak-host" if rest.is_none() => Hop::FlatpakHost,
        _ => return Ok(None),
    }))
}

fn parse_ssh(whole: &str, rest: &str) -> Result<Hop, HopParseError> {
    let (user, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) if !u.is_empty() => (Some(u.to_owned()), h),
        Some(_) => return Err(HopParseError::NoHost(whole.into())),
        None => (None, rest),
    };
    // [v6addr]:port, host:port, or host.
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| HopParseError::NoHost(whole.into()))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(HopParseError::BadPort(whole.into())),
        };
        (addr, port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(HopParseError::NoHost(whole.into()));
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| HopParseError::BadPort(whole.into()))
        })
        .transpose()?;
    Ok(Hop::Ssh {
        user,
        host: host.to_owned(),
        port,
    })
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hop::Local => f.write_str("local"),
            Hop::Ssh { user, host, port } => {
                f.write_str("ssh:")?;
                if let Some(u) = user {
                    write!(f, "{u}@")?;
                }
                if host.contains(':') {
                    write!(f, "[{host}]")?;
                } else {
                    f.write_str(host)?;
                }
                if let Some(p) = port {
                    write!(f, ":{p}")?;
                }
                Ok(())
            }
            Hop::Exec { argv } => write!(f, "exec:{}", shell_words::join(argv)),
            Hop::Sudo { user } => with_user(f, "sudo", user.as_deref()),
            Hop::Doas { user } => with_user(f, "doas", user.as_deref()),
            Hop::Su { user } => write!(f, "su:{user}"),
            Hop::Podman { container, user } => {
                with_user(f, &format!("podman:{container}"), user.as_deref())
            }
            Hop::Docker { container, user } => {
                with_user(f, &format!("docker:{container}"), user.as_deref())
            }
            Hop::FlatpakHost => f.write_str("flatpak-host"),
        }
    }
}

fn with_user(f: &mut fmt::Formatter<'_>, kind: &str, user: Option<&str>) -> fmt::Result {
    match user {
        Some(u) => write!(f, "{kind}:{u}"),
        None => f.write_str(kind),
    }
}

/// What a tool's words say about why it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Said {
    NotAllowed,
    Password,
    NoUser,
    NoContainer,
    Stopped,
}

/// The first line of `stderr` that contains one of the `phrases` (compared case-insensitively),
/// trimmed, with what it says: a tool's own words.
fn words(stderr: &str, phrases: &[(&str, Said)]) -> Option<(String, Said)> {
    stderr.lines().map(str::trim).find_map(|line| {
        let lower = line.to_lowercase();
        phrases
            .iter()
            .find(|(p, _)| lower.contains(&p.to_lowercase()))
            .map(|(_, said)| (line.to_owned(), *said))
    })
}

/// The [`LaunchError`] for what a hop's tool said.
fn said_error(hop: &str, words: String, said: Said, start: impl FnOnce() -> String) -> LaunchError {
    let hop = hop.to_owned();
    match said {
        Said::NotAllowed => LaunchError::HopDenied { hop, words },
        Said::Password => LaunchError::PasswordRequired { hop, words },
        Said::NoUser => LaunchError::NoSuchUser { hop, words },
        Said::NoContainer => LaunchError::NoContainer { hop, words },
        Said::Stopped => LaunchError::ContainerStopped {
            hop,
            words,
            start: start(),
        },
    }
}

impl Hop {
    /// Does this hop start a new leg of the route (a new machine, user or container, reached
    /// by the bridge of the leg before it)? `local` and `exec:` hops join the leg they are in.
    pub fn is_door(&self) -> bool {
        !matches!(self, Hop::Local | Hop::Exec { .. })
    }

    /// The command prefix of a hop that runs the rest of the route as an argv.
    fn prefix(&self) -> Option<Vec<String>> {
        match self {
            Hop::Exec { argv } => Some(argv.clone()),
            Hop::Sudo { user } => Some(sudo::argv(user.as_deref())),
            Hop::Doas { user } => Some(doas::argv(user.as_deref())),
            Hop::Podman { container, user } => Some(podman::argv(container, user.as_deref())),
            Hop::Docker { container, user } => Some(docker::argv(container, user.as_deref())),
            Hop::FlatpakHost => Some(flatpak::argv()),
            Hop::Local | Hop::Ssh { .. } | Hop::Su { .. } => None,
        }
    }

    /// Why this hop's command ended before a bridge ran, when its own words on stderr say so:
    /// not allowed, a password needed, no such user, no such container, container stopped.
    pub fn failure(&self, stderr: &str, ended: Ended) -> Option<LaunchError> {
        let shown = self.to_string();
        match self {
            Hop::Sudo { .. } => sudo::failure(&shown, stderr, ended),
            Hop::Doas { .. } => doas::failure(&shown, stderr, ended),
            Hop::Su { .. } => su::failure(&shown, stderr, ended),
            Hop::Podman { container, .. } => podman::failure(container, &shown, stderr, ended),
            Hop::Docker { container, .. } => docker::failure(container, &shown, stderr, ended),
            Hop::FlatpakHost => flatpak::failure(&shown, stderr, ended),
            Hop::Local | Hop::Ssh { .. } | Hop::Exec { .. } => None,
        }
    }

    /// The destination as ssh takes it (`[user@]host`), for an ssh hop.
    pub fn ssh_destination(&self) -> Option<String> {
        match self {
            Hop::Ssh { user, host, .. } => Some(match user {
                Some(u) => format!("{u}@{host}"),
                None => host.clone(),
            }),
            _ => None,
        }
    }
}

/// Where the bridge should run: the hops in order, from this machine outwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub hops: Vec<Hop>,
}

/// How to start the route's first process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launch {
    /// Run this argv on this machine.
    Command(Vec<String>),
    /// Connect to the first hop with OpenSSH and run this command line there.
    Ssh { hop: Hop, command_line: String },
}

impl Route {
    pub fn new(hops: Vec<Hop>) -> Self {
        Route { hops }
    }

    /// Compose the hops around `argv` (the loader's argument vector) into one launch.
    ///
    /// Exec hops prefix their argv; an ssh hop turns everything after it into one command line
    /// for the remote login shell. An ssh hop that starts on this machine (nothing but `local`
    /// before it) uses the OpenSSH master connection; later ones are plain `ssh` commands run on
    /// the previous machine, with that machine's own ssh configuration, and with
    /// [`SESSION_OPTIONS`](crate::ssh::SESSION_OPTIONS) so that it runs the command as given.
    ///
    /// Fails when a word after an ssh hop cannot pass through every login shell unchanged (see
    /// [`login_shell`](crate::login_shell)).
    pub fn launch(&self, argv: Vec<String>) -> Result<Launch, Unquotable> {
        let mut tail = argv;
        for (i, hop) in self.hops.iter().enumerate().rev() {
            match hop {
                Hop::Local => {}
                Hop::Su { user } => {
                    let mut v = su::argv(user);
                    v.push(shell_words::join(&tail));
                    tail = v;
                }
                Hop::Exec { .. }
                | Hop::Sudo { .. }
                | Hop::Doas { .. }
                | Hop::Podman { .. }
                | Hop::Docker { .. }
                | Hop::FlatpakHost => {
                    let mut v = hop.prefix().unwrap_or_default();
                    v.append(&mut tail);
                    tail = v;
                }
                Hop::Ssh { port, .. } => {
                    let command_line = login_shell::command_line(&tail)?;
                    if self.hops[..i].iter().all(|h| *h == Hop::Local) {
                        return Ok(Launch::Ssh {
                            hop: hop.clone(),
                            command_line,
                        });
                    }
                    let mut v = vec!["ssh".to_owned()];
                    v.extend(SESSION_OPTIONS.map(str::to_owned));
                    if let Some(p) = port {
                        v.extend(["-p".to_owned(), p.to_string()]);
                    }
                    v.push(hop.ssh_destination().expect("ssh hop"));
                    v.push("--".to_owned());
                    v.push(command_line);
                    tail = v;
                }
            }
        }
        Ok(Launch::Command(tail))
    }
}

impl Route {
    /// The route cut into legs: each leg holds one door hop (see [`Hop::is_door`]) and the
    /// `local` and `exec:` hops after it; hops before the first door belong to the first leg.
    /// The launcher starts the first leg; the bridge at the end of each leg starts the next.
    pub fn legs(&self) -> Vec<Route> {
        let mut legs: Vec<Route> = vec![Route::new(Vec::new())];
        for hop in &self.hops {
            let last = legs.last_mut().expect("never empty");
            if hop.is_door() && last.hops.iter().any(Hop::is_door) {
                legs.push(Route::new(vec![hop.clone()]));
            } else {
                last.hops.push(hop.clone());
            }
        }
        legs
    }

    /// The leg's door hop, if it has one.
    pub fn door(&self) -> Option<&Hop> {
        self.hops.iter().find(|h| h.is_door())
    }
}

impl Launch {
    /// The launch as one argv, run on the machine before the route (a bridge runs a later leg
    /// this way): an ssh first hop becomes a plain `ssh -T` command.
    pub fn into_argv(self) -> Vec<String> {
        match self {
            Launch::Command(argv) => argv,
            Launch::Ssh { hop, command_line } => {
                let mut v = vec!["ssh".to_owned(), "-T".to_owned()];
                if let Hop::Ssh { port: Some(p), .. } = &hop {
                    v.extend(["-p".to_owned(), p.to_string()]);
                }
                v.push(hop.ssh_destination().unwrap_or_default());
                v.push("--".to_owned());
                v.push(command_line);
                v
            }
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<String> = self.hops.iter().map(ToString::to_string).collect();
        f.write_str(&words.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh(user: Option<&str>, host: &str, port: Option<u16>) -> Hop {
        Hop::Ssh {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn parses_hops() {
        assert_eq!("local".parse::<Hop>().unwrap(), Hop::Local);
        assert_eq!("ssh:h".parse::<Hop>().unwrap(), ssh(None, "h", None));
        assert_eq!(
            "ssh:u@h:2222".parse::<Hop>().unwrap(),
            ssh(Some("u"), "h", Some(2222))
        );
        assert_eq!(
            "ssh:[::1]:22".parse::<Hop>().unwrap(),
            ssh(None, "::1", Some(22))
        );
        assert_eq!(
            "exec:chroot '/srv/arm 64'".parse::<Hop>().unwrap(),
            Hop::Exec {
                argv: vec!["chroot".into(), "/srv/arm 64".into()]
            }
        );
        for bad in [
            "ssh:",
            "ssh:@h",
            "ssh:h:x",
            "ssh:h:99999",
            "exec:",
            "exec:'a",
            "nope",
        ] {
            assert!(bad.parse::<Hop>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn parses_door_hops() {
        let user = |u: &str| Some(u.to_owned());
        assert_eq!("sudo".parse::<Hop>().unwrap(), Hop::Sudo { user: None });
        assert_eq!(
            "sudo:bob".parse::<Hop>().unwrap(),
            Hop::Sudo { user: user("bob") }
        );
        assert_eq!("doas".parse::<Hop>().unwrap(), Hop::Doas { user: None });
        assert_eq!(
            "su:bob".parse::<Hop>().unwrap(),
            Hop::Su { user: "bob".into() }
        );
        assert_eq!(
            "podman:db:bob".parse::<Hop>().unwrap(),
            Hop::Podman {
                container: "db".into(),
                user: user("bob")
            }
        );
        assert_eq!(
            "docker:db".parse::<Hop>().unwrap(),
            Hop::Docker {
                container: "db".into(),
                user: None
            }
        );
        assert_eq!("flatpak-host".parse::<Hop>().unwrap(), Hop::FlatpakHost);
        for bad in [
            "sudo:",
            "sudo:-u",
            "su",
            "su:a b",
            "podman:",
            "podman::u",
            "docker:c:",
        ] {
            assert!(bad.parse::<Hop>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn names_failures_in_the_tools_words() {
        // Messages as the tools print them (sudo 1.9.13, opendoas 6.8, util-linux su, podman 4.3).
        let cases: [(&str, &str, u8); 13] = [
            ("sudo", "sudo: a password is required\n", 202),
            (
                "sudo",
                "Sorry, user ferry-limited is not allowed to execute '/bin/sh' as root on vm.\n",
                212,
            ),
            ("sudo", "sudo: sorry, you must have a tty to run sudo\n", 212),
            (
                "sudo:x",
                "sudo: unknown user x\nsudo: error initializing audit plugin sudoers_audit\n",
                213,
            ),
            ("doas", "doas: Operation not permitted\n", 212),
            (
                "su:x",
                "su: user x does not exist or the user entry does not contain all the required fields\n",
                213,
            ),
            (
                "podman:c",
                "Error: can only create exec sessions on running containers: container state improper\n",
                201,
            ),
            (
                "podman:c",
                "Error: OCI runtime error: runc: exec failed: cannot exec in a stopped container\n",
                201,
            ),
            (
                "podman:c",
                "Error: no container with name or ID \"c\" found: no such container\n",
                201,
            ),
            (
                "docker:c",
                "Error response from daemon: Container 0fa13d40d2ad is not running\n",
                201,
            ),
            ("docker:c", "Error response from daemon: No such container: c\n", 201),
            (
                "docker:c:u",
                "unable to find user u: no matching entries in passwd file\n",
                213,
            ),
            (
                "podman:c:u",
                "Error: unable to find user u: no matching entries in passwd file\n",
                213,
            ),
        ];
        for (hop, stderr, status) in cases {
            let hop: Hop = hop.parse().unwrap();
            let err = hop
                .failure(stderr, Ended::Code(1))
                .unwrap_or_else(|| panic!("{hop}: {stderr:?} not named"));
            assert_eq!(err.exit_code(), status, "{hop}: {err}");
            let first = stderr.lines().find(|l| !l.contains("audit")).unwrap();
            assert!(
                err.to_string().contains(first),
                "{err} does not quote {first:?}"
            );
        }
        // Words it does not know are left to the generic failure.
        let sudo: Hop = "sudo".parse().unwrap();
        assert!(sudo.failure("something else\n", Ended::Code(1)).is_none());
    }

    #[test]
    fn cuts_legs_at_doors() {
        let route = |s: &str| Route::new(s.split(' ').map(|h| h.parse().unwrap()).collect());
        let legs =
            |s: &str| -> Vec<String> { route(s).legs().iter().map(ToString::to_string).collect() };
        assert_eq!(legs("ssh:h sudo podman:db"), ["ssh:h", "sudo", "podman:db"]);
        assert_eq!(legs("exec:a ssh:h exec:b"), ["exec:a ssh:h exec:b"]);
        assert_eq!(
            legs("local sudo exec:c su:u"),
            ["local sudo exec:c", "su:u"]
        );
        assert_eq!(legs("exec:a"), ["exec:a"]);
    }

    #[test]
    fn composes_door_hops() {
        let argv = vec!["sh".to_owned(), "-c".to_owned(), "echo $x".to_owned()];
        let route = Route::new(vec![
            "sudo:bob".parse().unwrap(),
            "exec:chroot /x".parse().unwrap(),
        ]);
        assert_eq!(
            route.launch(argv.clone()).unwrap().into_argv(),
            ["sudo", "-n", "-u", "bob", "--", "chroot", "/x", "sh", "-c", "echo $x"]
        );
        let route = Route::new(vec!["su:bob".parse().unwrap()]);
        assert_eq!(
            route.launch(argv.clone()).unwrap().into_argv(),
            ["su", "bob", "-c", "sh -c 'echo $x'"]
        );
        let route = Route::new(vec!["ssh:u@h:2".parse().unwrap()]);
        assert_eq!(
            route.launch(argv).unwrap().into_argv(),
            ["ssh", "-T", "-p", "2", "u@h", "--", "sh -c 'echo $x'"]
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "local",
            "ssh:u@h:22",
            "ssh:[::1]:22",
            "exec:chroot '/a b'",
            "sudo",
            "sudo:u",
            "su:u",
            "doas:u",
            "podman:c:u",
            "docker:c",
            "flatpak-host",
        ] {
            assert_eq!(s.parse::<Hop>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn composes_prefixes() {
        let argv = vec!["sh".to_owned(), "-c".to_owned(), "echo $x".to_owned()];
        let route = Route::new(vec![
            "exec:sudo -n".parse().unwrap(),
            "exec:chroot /x".parse().unwrap(),
        ]);
        assert_eq!(
            route.launch(argv.clone()).unwrap(),
            Launch::Command(
                ["sudo", "-n", "chroot", "/x", "sh", "-c", "echo $x"]
                    .map(String::from)
                    .to_vec()
            )
        );
        let route = Route::new(vec!["ssh:h".parse().unwrap(), "exec:sudo".parse().unwrap()]);
        assert_eq!(
            route.launch(argv.clone()).unwrap(),
            Launch::Ssh {
                hop: ssh(None, "h", None),
                command_line: "sudo sh -c 'echo $x'".into()
            }
        );
        // A nested ssh hop runs the command as given, without a terminal.
        let route = Route::new(vec!["ssh:h".parse().unwrap(), "ssh:u@g:2".parse().unwrap()]);
        let Launch::Ssh { command_line, .. } = route.launch(argv).unwrap() else {
            panic!("not an ssh launch");
        };
        assert!(
            command_line.starts_with(
                "ssh -T -o IgnoreUnknown=RemoteCommand -o RemoteCommand=none -o RequestTTY=no \
                 -p 2 u@g -- "
            ),
            "{command_line}"
        );
        // What cannot pass every login shell is refused.
        let route = Route::new(vec!["ssh:h".parse().unwrap()]);
        assert!(route.launch(vec!["a\nb".into()]).is_err());
    }
}
