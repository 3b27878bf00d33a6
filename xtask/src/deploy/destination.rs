//! Where a release goes: a local folder, or `ssh://[user@]host[:port]/path`, given on the command
//! line or listed in a hosts file (docs/runbooks/fleet.md).

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// One destination, as the operator wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Local(PathBuf),
    Ssh(SshTarget),
}

/// `ssh://[user@]host[:port]/path`: the path is absolute on that host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshTarget {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub path: String,
}

impl SshTarget {
    /// `[user@]host`, as ssh takes it (the port goes with -p).
    pub fn login(&self) -> String {
        match &self.user {
            Some(user) => format!("{user}@{}", self.host),
            None => self.host.clone(),
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Local(path) => write!(f, "{}", path.display()),
            Destination::Ssh(target) => {
                write!(f, "ssh://{}", target.login())?;
                if let Some(port) = target.port {
                    write!(f, ":{port}")?;
                }
                write!(f, "{}", target.path)
            }
        }
    }
}

impl Destination {
    pub fn parse(text: &str) -> anyhow::Result<Destination> {
        let Some(rest) = text.strip_prefix("ssh://") else {
            if text.contains("://") {
                bail!(
                    "destination {text:?}: only ssh:// and local folders are supported; write ssh://[user@]host[:port]/path"
                );
            }
            if text.is_empty() {
                bail!("an empty destination; give a folder or ssh://[user@]host[:port]/path");
            }
            return Ok(Destination::Local(PathBuf::from(text)));
        };
        let usage = "write ssh://[user@]host[:port]/path, e.g. ssh://deploy@pos-1.example.com:22/opt/saulpos";
        let Some(slash) = rest.find('/') else {
            bail!("destination {text:?} names no folder on the host; {usage}");
        };
        let (authority, path) = rest.split_at(slash);
        let (user, host, port) =
            parse_authority(&format!("destination {text:?}"), authority, usage)?;
        if path.len() < 2 || path.contains('\n') || path.split('/').any(|part| part == "..") {
            bail!(
                "destination {text:?}: the folder {path:?} must be absolute, without ..; {usage}"
            );
        }
        Ok(Destination::Ssh(SshTarget {
            user,
            host,
            port,
            path: path.trim_end_matches('/').to_owned(),
        }))
    }
}

/// `[user@]host[:port]` of an ssh:// address: a plain login name, a host name or address (in
/// brackets for IPv6), a port from 1 to 65535. `what` (e.g. `destination "ssh://..."`) and `usage`
/// go into the messages.
pub fn parse_authority(
    what: &str,
    authority: &str,
    usage: &str,
) -> anyhow::Result<(Option<String>, String, Option<u16>)> {
    let (user, host_port) = match authority.rsplit_once('@') {
        Some((user, host_port)) => (Some(user), host_port),
        None => (None, authority),
    };
    if let Some(user) = user
        && (user.is_empty()
            || !user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
    {
        bail!("{what}: the user {user:?} is not a plain login name; {usage}");
    }
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            bail!("{what}: an unclosed [ in the host; {usage}");
        };
        (host, after.strip_prefix(':'))
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty()
        || host.starts_with('-')
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c))
    {
        bail!("{what}: {host:?} is not a host name or address; {usage}");
    }
    let port = match port {
        None => None,
        Some(port) => Some(
            port.parse::<u16>()
                .ok()
                .filter(|port| *port > 0)
                .with_context(|| format!("{what}: the port {port:?} is not 1 to 65535; {usage}"))?,
        ),
    };
    Ok((user.map(str::to_owned), host.to_owned(), port))
}

/// The destinations of a command: those given, then a hosts file's lines, in order; each at
/// most once.
pub fn gather(given: &[String], hosts_file: Option<&Path>) -> anyhow::Result<Vec<Destination>> {
    let mut all = Vec::new();
    for text in given {
        all.push(Destination::parse(text)?);
    }
    if let Some(file) = hosts_file {
        let text = std::fs::read_to_string(file).with_context(|| {
            format!("cannot read the hosts file {}; give a file with one destination a line (docs/runbooks/fleet.md)", file.display())
        })?;
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let destination = Destination::parse(line)
                .with_context(|| format!("{} line {}", file.display(), number + 1))?;
            all.push(destination);
        }
    }
    if all.is_empty() {
        bail!("no destination: give a folder, ssh://[user@]host[:port]/path, or --hosts FILE");
    }
    for (index, destination) in all.iter().enumerate() {
        if all[..index].contains(destination) {
            bail!("{destination} is given twice; name each destination once");
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_destinations_parse_with_and_without_user_and_port() {
        let parsed =
            Destination::parse("ssh://deploy@pos-1.example.com:2222/opt/saulpos/").unwrap();
        assert_eq!(
            parsed,
            Destination::Ssh(SshTarget {
                user: Some("deploy".into()),
                host: "pos-1.example.com".into(),
                port: Some(2222),
                path: "/opt/saulpos".into(),
            })
        );
        assert_eq!(
            parsed.to_string(),
            "ssh://deploy@pos-1.example.com:2222/opt/saulpos"
        );
        let bare = Destination::parse("ssh://[::1]/srv").unwrap();
        assert_eq!(bare.to_string(), "ssh://::1/srv");
        assert_eq!(
            Destination::parse("/opt/saulpos").unwrap(),
            Destination::Local("/opt/saulpos".into())
        );
    }

    #[test]
    fn bad_destinations_are_refused_naming_them() {
        for (text, says) in [
            ("ssh://host", "names no folder"),
            ("ssh://host:99999/opt", "is not 1 to 65535"),
            ("ssh://-oProxyCommand=x/opt", "is not a host name"),
            ("ssh://host/", "must be absolute"),
            ("ssh://host/opt/../etc", "without .."),
            ("ssh://a b@host/opt", "not a plain login name"),
            ("https://host/opt", "only ssh://"),
        ] {
            let error = Destination::parse(text).unwrap_err().to_string();
            assert!(
                error.contains(says) && error.contains(text),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn a_hosts_file_lists_one_destination_a_line_with_comments() {
        let dir = std::env::temp_dir().join(format!("saulpos-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hosts");
        std::fs::write(
            &file,
            "# the stores\nssh://pos-1/opt/saulpos  # front\n\n  ssh://pos-2:2222/opt/saulpos\n",
        )
        .unwrap();
        let all = gather(&["ssh://pos-0/opt/saulpos".into()], Some(&file)).unwrap();
        let names: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "ssh://pos-0/opt/saulpos",
                "ssh://pos-1/opt/saulpos",
                "ssh://pos-2:2222/opt/saulpos"
            ]
        );
        std::fs::write(&file, "ssh://pos-1/opt/saulpos\nssh://pos-1/opt/saulpos\n").unwrap();
        let error = gather(&[], Some(&file)).unwrap_err().to_string();
        assert!(error.contains("given twice"), "{error}");
        std::fs::write(&file, "ssh://pos-1\n").unwrap();
        let error = format!("{:#}", gather(&[], Some(&file)).unwrap_err());
        assert!(
            error.contains("line 1") && error.contains("names no folder"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
