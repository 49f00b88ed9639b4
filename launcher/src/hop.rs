use std::fmt;
use std::str::FromStr;

use crate::login_shell::{self, Unquotable};
use crate::ssh::SESSION_OPTIONS;

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
}

#[derive(Debug, thiserror::Error)]
pub enum HopParseError {
    #[error("unknown hop {0:?}: use local, ssh:[USER@]HOST[:PORT] or exec:PROGRAM [ARGS...]")]
    Unknown(String),
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
        }
    }
}

impl Hop {
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
                Hop::Exec { argv } => {
                    let mut v = argv.clone();
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
    fn display_round_trips() {
        for s in ["local", "ssh:u@h:22", "ssh:[::1]:22", "exec:chroot '/a b'"] {
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
