//! The outbound-HTTP allow-list of a tenant: host and port pairs.

use std::fmt;

/// Hosts a tenant's tools may call. Empty: no outbound HTTP at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<AllowedHost>,
}

/// `host` or `host:port`; without a port, the scheme's default port only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    pub host: String,
    pub port: Option<u16>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub authority: String,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not on the tenant's outbound allow-list",
            self.authority
        )
    }
}

impl AllowList {
    /// Reads entries such as `api.example.com`, `127.0.0.1:8080`.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowList, String> {
        let entries = entries
            .iter()
            .map(|entry| {
                let entry = entry.as_ref().trim().to_ascii_lowercase();
                let (host, port) = split_authority(&entry);
                let port = match port {
                    None => None,
                    Some(p) => Some(p.parse().map_err(|_| format!("bad port in \"{entry}\""))?),
                };
                if host.is_empty() || host.contains(['/', '@', ' ']) {
                    return Err(format!("\"{entry}\" is not a host or host:port"));
                }
                Ok(AllowedHost {
                    host: host.to_owned(),
                    port,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(AllowList { entries })
    }

    /// The one place that decides whether a request may leave.
    pub fn check(&self, authority: &str, https: bool) -> Result<(), Denied> {
        let denied = || Denied {
            authority: authority.to_owned(),
        };
        // User info could make a listed name look like part of another URL.
        if authority.contains('@') {
            return Err(denied());
        }
        let lower = authority.to_ascii_lowercase();
        let (host, port) = split_authority(&lower);
        let default_port = if https { 443 } else { 80 };
        let port = port
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(default_port);
        let allowed = self
            .entries
            .iter()
            .any(|e| e.host == host && e.port.unwrap_or(default_port) == port);
        if allowed { Ok(()) } else { Err(denied()) }
    }
}

/// `host:port` → (host, port); handles `[v6]:port`.
fn split_authority(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').unwrap_or((rest, ""));
        return (host, after.strip_prefix(':'));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_hosts_and_ports_pass() {
        let list = AllowList::parse(&["127.0.0.1:8080", "api.example.com"]).unwrap();
        assert!(list.check("127.0.0.1:8080", false).is_ok());
        assert!(list.check("127.0.0.1:8081", false).is_err());
        assert!(
            list.check("API.example.com", true).is_ok(),
            "https on its own port"
        );
        assert!(list.check("api.example.com:8443", true).is_err());
        assert!(list.check("api.example.com", false).is_ok());
        assert!(list.check("api.example.com:80", false).is_ok());
        assert!(list.check("evil.example.com", false).is_err());
        assert!(
            list.check("user@127.0.0.1:8080", false).is_err(),
            "no user info"
        );
        assert_eq!(
            list.check("10.0.0.1", false).unwrap_err().to_string(),
            "10.0.0.1 is not on the tenant's outbound allow-list"
        );
    }

    #[test]
    fn an_empty_list_denies_everything_and_bad_entries_are_refused() {
        assert!(AllowList::default().check("localhost", false).is_err());
        assert!(AllowList::parse(&["host:http"]).is_err());
        assert!(AllowList::parse(&["http://x"]).is_err());
        let v6 = AllowList::parse(&["[::1]:9000"]).unwrap();
        assert!(v6.check("[::1]:9000", false).is_ok());
    }
}
