//! The outbound-HTTP allow-list of a tenant: host and port pairs, and
//! address ranges (CIDR) the tenant may reach, special-purpose ones included.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::egress::literal_address;

/// Hosts a tenant's tools may call. Empty: no outbound HTTP at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<AllowedHost>,
    ranges: Vec<AllowedRange>,
}

/// `10.0.0.0/8`, `127.0.0.1/32:8080`, `[fd00::/8]:443`: addresses in the
/// range, on the port if one is given, may be called by address and may be
/// where a listed name resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedRange {
    pub range: IpNet,
    pub port: Option<u16>,
}

/// A request's host and port, on the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub host: String,
    pub port: u16,
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
    /// Reads entries such as `api.example.com`, `127.0.0.1:8080`,
    /// `10.0.0.0/8`, `127.0.0.1/32:8080`.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowList, String> {
        let mut list = AllowList::default();
        for entry in entries {
            let entry = entry.as_ref().trim().to_ascii_lowercase();
            if entry.contains('/') {
                list.ranges.push(parse_range(&entry)?);
                continue;
            }
            let (host, port) = split_authority(&entry);
            let port = parse_port(&entry, port)?;
            if host.is_empty() || host.contains(['@', ' ']) {
                return Err(format!(
                    "\"{entry}\" is not a host, host:port or CIDR range"
                ));
            }
            list.entries.push(AllowedHost {
                host: host.to_owned(),
                port,
            });
        }
        Ok(list)
    }

    /// Whether a range entry opens `address` on `port`.
    pub fn opens(&self, address: IpAddr, port: u16) -> bool {
        self.ranges
            .iter()
            .any(|r| r.range.contains(&address) && r.port.is_none_or(|p| p == port))
    }

    /// Whether the request's authority is on the list: a host entry by its
    /// text, or an address literal inside a range entry. Where it resolves
    /// to is checked next, by the egress policy.
    pub fn check(&self, authority: &str, https: bool) -> Result<Listed, Denied> {
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
        let named = self
            .entries
            .iter()
            .any(|e| e.host == host && e.port.unwrap_or(default_port) == port);
        let in_range = || literal_address(host).is_some_and(|address| self.opens(address, port));
        if host.is_empty() || !(named || in_range()) {
            return Err(denied());
        }
        Ok(Listed {
            host: host.to_owned(),
            port,
        })
    }
}

fn parse_port(entry: &str, port: Option<&str>) -> Result<Option<u16>, String> {
    port.map(|p| p.parse().map_err(|_| format!("bad port in \"{entry}\"")))
        .transpose()
}

/// `range`, `range:port`, `[v6range]:port`.
fn parse_range(entry: &str) -> Result<AllowedRange, String> {
    let (range, port) = match entry.strip_prefix('[') {
        Some(rest) => {
            let (range, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("\"{entry}\" has no closing ']'"))?;
            (range, after.strip_prefix(':'))
        }
        None => {
            let (address, prefix) = entry.split_once('/').unwrap_or((entry, ""));
            match prefix.split_once(':') {
                Some((prefix, port)) => (&entry[..address.len() + 1 + prefix.len()], Some(port)),
                None => (entry, None),
            }
        }
    };
    let range = range
        .parse::<IpNet>()
        .map_err(|_| format!("\"{entry}\" is not a CIDR range such as 10.0.0.0/8"))?;
    Ok(AllowedRange {
        range: range.trunc(),
        port: parse_port(entry, port)?,
    })
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
        assert!(AllowList::parse(&["10.0.0.0/33"]).is_err());
        assert!(AllowList::parse(&["10.0.0.0/8:http"]).is_err());
        let v6 = AllowList::parse(&["[::1]:9000"]).unwrap();
        assert!(v6.check("[::1]:9000", false).is_ok());
    }

    #[test]
    fn range_entries_list_addresses_inside_them_on_their_port() {
        let list =
            AllowList::parse(&["10.1.0.0/16", "127.0.0.1/32:8080", "[fd00::/8]:443"]).unwrap();
        assert!(list.check("10.1.200.3:5000", false).is_ok());
        assert!(list.check("10.2.0.1", false).is_err());
        assert!(list.check("127.0.0.1:8080", false).is_ok());
        assert!(list.check("127.0.0.1:8081", false).is_err());
        assert!(list.check("[fd12::1]", true).is_ok());
        assert!(list.check("[fd12::1]", false).is_err(), "port 80");
        assert!(list.opens("10.1.0.9".parse().unwrap(), 1));
        assert!(!list.opens("127.0.0.1".parse().unwrap(), 22));
    }
}
