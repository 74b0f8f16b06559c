//! Where a plugin's outbound HTTP may go, decided in one place: the name is
//! resolved once, every address it resolves to is checked, and the
//! connection goes to an address that was checked (no second lookup a DNS
//! answer could change in between).
//!
//! Loopback, private, link-local, shared (CGNAT), multicast, reserved and
//! unspecified addresses are refused, in every spelling: IP literals,
//! IPv4-mapped and other IPv6 forms embedding an IPv4 address, and the
//! decimal, octal and hexadecimal forms `inet_aton` accepts. An operator may
//! open a range explicitly ([`Egress::allowed_ranges`]), and so may a tenant's
//! allow-list, with CIDR entries.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
pub use ipnet::IpNet;
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};

use crate::allow_list::AllowList;

/// Addresses a name resolves to.
pub type Resolution = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// Turns a host name into addresses. The engine uses the system resolver;
/// tests give the host one of their own.
pub trait Resolve: Send + Sync {
    fn resolve(&self, host: &str) -> Resolution;
}

/// The operating system's resolver (getaddrinfo, on a blocking thread).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str) -> Resolution {
        let host = host.to_owned();
        Box::pin(async move {
            let addresses = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addresses.map(|a| a.ip()).collect())
        })
    }
}

/// The operator's part of the egress policy.
#[derive(Clone)]
pub struct Egress {
    /// Special-purpose ranges the operator opens for every tenant (the
    /// setting `EGRESS_ALLOW_RANGES`). Empty: none.
    pub allowed_ranges: Vec<IpNet>,
    pub resolver: Arc<dyn Resolve>,
}

impl Default for Egress {
    fn default() -> Self {
        Egress {
            allowed_ranges: Vec::new(),
            resolver: Arc::new(SystemResolver),
        }
    }
}

impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Egress")
            .field("allowed_ranges", &self.allowed_ranges)
            .finish_non_exhaustive()
    }
}

/// `10.0.0.0/8, fd00::/8`: an operator's list of ranges; empty text is none.
pub fn parse_ranges(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            r.parse::<IpNet>()
                .map(|net| net.trunc())
                .map_err(|_| format!("{r:?} is not a CIDR range such as 10.0.0.0/8"))
        })
        .collect()
}

/// Why a request was not let out. The plugin sees this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("egress denied: {authority} is not on the tenant's outbound allow-list")]
    NotListed { authority: String },
    #[error("egress denied: {host} is {address}, a {class} address")]
    Address {
        host: String,
        address: IpAddr,
        class: &'static str,
    },
    #[error("egress denied: {host} could not be resolved: {reason}")]
    Unresolvable { host: String, reason: String },
    #[error("egress denied: the request has no host")]
    NoHost,
}

impl Refusal {
    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::NotListed { .. } => "not_listed",
            Refusal::Address { class, .. } => class,
            Refusal::Unresolvable { .. } => "unresolvable",
            Refusal::NoHost => "no_host",
        }
    }
}

/// The policy and its counters, shared by every call of a host.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    pub policy: Egress,
    pub counters: EgressCounters,
}

/// Denials since the host started, by kind: what `/metrics` shows.
#[derive(Debug, Default)]
pub struct EgressCounters {
    counts: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    allowed: AtomicU64,
}

impl EgressCounters {
    fn denied(&self, refusal: &Refusal) {
        *self
            .counts
            .lock()
            .unwrap()
            .entry(refusal.kind())
            .or_default() += 1;
    }

    /// (kind, count) of every denial kind seen.
    pub fn denials(&self) -> Vec<(&'static str, u64)> {
        let counts = self.counts.lock().unwrap();
        counts.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Requests let out.
    pub fn allowed(&self) -> u64 {
        self.allowed.load(Ordering::Relaxed)
    }
}

/// A request's destination, checked: where to connect and what to call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The host as written (a name, or an address), for TLS and logs.
    pub host: String,
    pub port: u16,
    /// Checked addresses, in the resolver's order.
    pub addresses: Vec<IpAddr>,
}

/// The whole decision for one request: on the tenant's list, resolved once,
/// every address checked.
pub async fn decide(
    egress: &Egress,
    allow_list: &AllowList,
    authority: &str,
    https: bool,
) -> Result<Destination, Refusal> {
    let listed = allow_list
        .check(authority, https)
        .map_err(|_| Refusal::NotListed {
            authority: authority.to_owned(),
        })?;
    let host = listed.host;
    let port = listed.port;
    let addresses = match literal_address(&host) {
        Some(address) => vec![address],
        None if host.contains(':') => {
            return Err(Refusal::Unresolvable {
                host,
                reason: "not a valid IPv6 address".into(),
            });
        }
        None => {
            let resolved = tokio::time::timeout(RESOLVE_TIMEOUT, egress.resolver.resolve(&host))
                .await
                .map_err(|_| Refusal::Unresolvable {
                    host: host.clone(),
                    reason: "the lookup timed out".into(),
                })?
                .map_err(|e| Refusal::Unresolvable {
                    host: host.clone(),
                    reason: e.to_string(),
                })?;
            if resolved.is_empty() {
                return Err(Refusal::Unresolvable {
                    host,
                    reason: "no addresses".into(),
                });
            }
            resolved
        }
    };
    // Every address must pass: a name with one public and one private
    // address is refused, so no choice of address can reach inside.
    for &address in &addresses {
        let Some(class) = special_purpose(address) else {
            continue;
        };
        let opened = egress
            .allowed_ranges
            .iter()
            .any(|range| range.contains(&address))
            || allow_list.opens(address, port);
        if !opened {
            return Err(Refusal::Address {
                host,
                address,
                class,
            });
        }
    }
    Ok(Destination {
        host,
        port,
        addresses,
    })
}

/// Bounds a lookup that would otherwise wait on the system's resolver.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The address a host names literally, in any form a resolver would accept:
/// `[v6]` or bare IPv6, dotted IPv4, and `inet_aton`'s shorter, decimal,
/// octal and hexadecimal forms (`2130706433`, `0177.1`, `0x7f.0.0.1`).
pub fn literal_address(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(v6) = bare.parse::<Ipv6Addr>() {
        return Some(IpAddr::V6(v6));
    }
    loose_ipv4(bare).map(IpAddr::V4)
}

/// `inet_aton`: one to four parts, each decimal, octal (leading 0) or hex
/// (leading 0x); the last part fills the remaining bytes.
fn loose_ipv4(host: &str) -> Option<Ipv4Addr> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let (digits, radix) =
            if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
                (hex, 16)
            } else if part.len() > 1 && part.starts_with('0') {
                (&part[1..], 8)
            } else {
                (*part, 10)
            };
        if part.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        let value = if digits.is_empty() {
            0
        } else {
            u64::from_str_radix(digits, radix).ok()?
        };
        values.push(value);
    }
    let (last, leading) = values.split_last()?;
    if leading.iter().any(|&v| v > 255) {
        return None;
    }
    let last_bits = 8 * (4 - leading.len() as u32);
    if *last >= 1u64 << last_bits {
        return None;
    }
    let mut address = *last as u32;
    for (i, &v) in leading.iter().enumerate() {
        address |= (v as u32) << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from(address))
}

/// The special-purpose class of an address a plugin may not reach by
/// default, or `None` for a public address. IPv6 forms that carry an IPv4
/// address (mapped, compatible, NAT64, 6to4) are judged by that address.
pub fn special_purpose(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(v4: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = v4.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified",
        (127, _, _) => "loopback",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "shared (CGNAT)",
        (192, 0, 0) => "IETF protocol",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn special_v6(v6: Ipv6Addr) -> Option<&'static str> {
    let segments = v6.segments();
    if let Some(v4) = embedded_v4(v6) {
        return special_v4(v4);
    }
    if v6.is_unspecified() {
        return Some("unspecified");
    }
    if v6.is_loopback() {
        return Some("loopback");
    }
    Some(match segments[0] {
        0xfc00..=0xfdff => "private",
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local",
        0xff00..=0xffff => "multicast",
        // The rest of ::/8 (besides the forms above) is reserved.
        0x0000..=0x00ff => "reserved",
        _ => return None,
    })
}

/// The IPv4 address an IPv6 address carries, in the forms that route to it.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated);
        // :: and ::1 themselves are judged as IPv6.
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        [0, 0, 0, 0, 0, 0, _, _] if !v6.is_unspecified() && !v6.is_loopback() => Some(low),
        // NAT64's well-known prefix, 64:ff9b::/96.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        // 6to4, 2002:a.b.c.d::/48.
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

/// Sends a request to a checked destination: connect to one of its
/// addresses, TLS for https with the name as written, HTTP/1.1.
/// Redirects are not followed: they come back to the plugin.
pub(crate) async fn send(
    destination: Destination,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<(http::Response<WasiBody>, IoDriver), HttpError> {
    let https = request.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(Duration::from_secs(30));
    let first_byte_timeout = options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(Duration::from_secs(600));

    let stream = connect(&destination, connect_timeout).await?;
    let stream: Box<dyn Stream> = if https {
        Box::new(tls(&destination, stream, connect_timeout).await?)
    } else {
        Box::new(stream)
    };
    let (mut sender, connection) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::handshake::<_, WasiBody>(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;

    // The request line carries the path only; the host header names the host.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;

    // The connection must be driven while the response is awaited; after
    // it, the caller drives it with the body.
    let mut connection = Box::pin(connection);
    let mut connection_done = false;
    let response = {
        let send = tokio::time::timeout(first_byte_timeout, sender.send_request(request));
        tokio::pin!(send);
        tokio::select! {
            response = &mut send => response,
            done = &mut connection => {
                done?;
                connection_done = true;
                // The connection ended first; the response may still be whole.
                send.await
            }
        }
    };
    let response = response
        .map_err(|_| HttpError::ConnectionReadTimeout)?
        .map_err(HttpError::from)?;
    let driver: IoDriver = Box::new(async move {
        // A finished connection must not be polled again.
        if connection_done {
            return Ok(());
        }
        connection.await.map_err(|e| {
            if e.is_timeout() {
                HttpError::HttpResponseTimeout
            } else {
                HttpError::from(e)
            }
        })
    });
    Ok((
        response.map(|body| body.map_err(HttpError::from).boxed_unsync()),
        driver,
    ))
}

/// What drives a connection after its response arrived.
pub(crate) type IoDriver = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin> Stream for T {}

async fn connect(destination: &Destination, timeout: Duration) -> Result<TcpStream, HttpError> {
    let mut last = HttpError::DestinationUnavailable;
    for &address in &destination.addresses {
        let target = SocketAddr::new(address, destination.port);
        match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                last = HttpError::ConnectionRefused
            }
            Ok(Err(e)) => last = HttpError::Connect(e),
            Err(_) => last = HttpError::ConnectionTimeout,
        }
    }
    Err(last)
}

async fn tls(
    destination: &Destination,
    stream: TcpStream,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HttpError> {
    use rustls::pki_types::ServerName;
    let name = match literal_address(&destination.host) {
        Some(address) => ServerName::from(address),
        None => ServerName::try_from(destination.host.clone())
            .map_err(HttpError::InvalidDnsNameError)?,
    };
    let connector = tokio_rustls::TlsConnector::from(tls_config());
    tokio::time::timeout(timeout, connector.connect(name, stream))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(HttpError::Tls)
}

/// One client configuration for the process: the web's root certificates.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            Arc::new(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default protocol versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        })
        .clone()
}

/// Counts a decision, logs a denial.
pub(crate) fn record(
    counters: &EgressCounters,
    tenant: &str,
    plugin: &str,
    outcome: &Result<Destination, Refusal>,
) {
    match outcome {
        Ok(_) => {
            counters.allowed.fetch_add(1, Ordering::Relaxed);
        }
        Err(refusal) => {
            counters.denied(refusal);
            tracing::warn!(tenant, plugin, %refusal, "outbound request denied");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(text: &str) -> Option<Ipv4Addr> {
        match literal_address(text)? {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }

    #[test]
    fn every_spelling_of_an_ipv4_address_is_read_as_a_resolver_would() {
        let loopback = Some(Ipv4Addr::new(127, 0, 0, 1));
        for spelling in [
            "127.0.0.1",
            "2130706433",
            "0x7f000001",
            "017700000001",
            "0177.0.0.1",
            "0x7f.0.0.1",
            "127.1",
            "127.0.1",
            "0x7F.1",
            "127.0.0.1.",
        ] {
            assert_eq!(v4(spelling), loopback, "{spelling}");
        }
        assert_eq!(v4("0"), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(v4("0.0.0.0"), Some(Ipv4Addr::UNSPECIFIED));
        for name in [
            "example.com",
            "1.2.3.4.5",
            "256.1.1.1",
            "08.1.1.1",
            "0xg.1",
            "1..1",
            "",
        ] {
            assert_eq!(v4(name), None, "{name}");
        }
    }

    #[test]
    fn special_purpose_addresses_are_named_in_every_form() {
        let class = |text: &str| special_purpose(literal_address(text).unwrap());
        assert_eq!(class("127.0.0.1"), Some("loopback"));
        assert_eq!(class("2130706433"), Some("loopback"));
        assert_eq!(class("0.0.0.0"), Some("unspecified"));
        assert_eq!(class("10.1.2.3"), Some("private"));
        assert_eq!(class("172.20.0.1"), Some("private"));
        assert_eq!(class("192.168.1.1"), Some("private"));
        assert_eq!(class("169.254.169.254"), Some("link-local"));
        assert_eq!(class("100.64.0.1"), Some("shared (CGNAT)"));
        assert_eq!(class("224.0.0.1"), Some("multicast"));
        assert_eq!(class("255.255.255.255"), Some("reserved"));
        assert_eq!(class("[::1]"), Some("loopback"));
        assert_eq!(class("::"), Some("unspecified"));
        assert_eq!(class("[::ffff:127.0.0.1]"), Some("loopback"));
        assert_eq!(class("::ffff:a9fe:a9fe"), Some("link-local"));
        assert_eq!(class("::127.0.0.1"), Some("loopback"));
        assert_eq!(class("64:ff9b::10.0.0.1"), Some("private"));
        assert_eq!(class("2002:7f00:1::"), Some("loopback"));
        assert_eq!(class("fd00::1"), Some("private"));
        assert_eq!(class("fe80::1"), Some("link-local"));
        assert_eq!(class("ff02::1"), Some("multicast"));
        assert_eq!(class("93.184.215.14"), None);
        assert_eq!(class("172.32.0.1"), None);
        assert_eq!(class("2606:4700::1111"), None);
        assert_eq!(class("::ffff:8.8.8.8"), None);
    }

    /// A resolver that answers from a table, so no test depends on DNS.
    struct Table(Vec<(&'static str, Vec<IpAddr>)>);

    impl Resolve for Table {
        fn resolve(&self, host: &str) -> Resolution {
            let found = self.0.iter().find(|(name, _)| *name == host);
            let answer = found.map(|(_, addresses)| addresses.clone());
            Box::pin(async move {
                answer.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
            })
        }
    }

    fn egress(ranges: &[&str]) -> Egress {
        Egress {
            allowed_ranges: ranges.iter().map(|r| r.parse().unwrap()).collect(),
            resolver: Arc::new(Table(vec![
                ("internal.test", vec!["127.0.0.1".parse().unwrap()]),
                ("public.test", vec!["93.184.215.14".parse().unwrap()]),
                (
                    "mixed.test",
                    vec![
                        "93.184.215.14".parse().unwrap(),
                        "10.0.0.7".parse().unwrap(),
                    ],
                ),
            ])),
        }
    }

    #[tokio::test]
    async fn a_name_is_resolved_once_and_every_address_checked() {
        let list = AllowList::parse(&["internal.test", "public.test", "mixed.test"]).unwrap();
        let public = decide(&egress(&[]), &list, "public.test", false)
            .await
            .unwrap();
        assert_eq!(
            public.addresses,
            vec!["93.184.215.14".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(public.port, 80);

        let inside = decide(&egress(&[]), &list, "internal.test", true)
            .await
            .unwrap_err();
        assert_eq!(
            inside.to_string(),
            "egress denied: internal.test is 127.0.0.1, a loopback address"
        );
        let mixed = decide(&egress(&[]), &list, "mixed.test", false)
            .await
            .unwrap_err();
        assert_eq!(mixed.kind(), "private");

        // The operator opens a range for everyone.
        assert!(
            decide(&egress(&["127.0.0.0/8"]), &list, "internal.test", true)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn literals_in_any_form_meet_the_same_check() {
        let list = AllowList::parse(&[
            "127.0.0.1:8080",
            "2130706433:8080",
            "[::ffff:127.0.0.1]:8080",
            "0:8080",
            "0177.0.0.1:8080",
        ])
        .unwrap();
        for authority in [
            "127.0.0.1:8080",
            "2130706433:8080",
            "[::ffff:127.0.0.1]:8080",
            "0177.0.0.1:8080",
        ] {
            let refusal = decide(&egress(&[]), &list, authority, false)
                .await
                .unwrap_err();
            assert_eq!(refusal.kind(), "loopback", "{authority}");
        }
        let zero = decide(&egress(&[]), &list, "0:8080", false)
            .await
            .unwrap_err();
        assert_eq!(zero.kind(), "unspecified");
    }

    #[tokio::test]
    async fn a_tenants_cidr_entry_opens_its_range_on_its_port() {
        let list = AllowList::parse(&["127.0.0.1/32:8080", "internal.test:8080"]).unwrap();
        let literal = decide(&egress(&[]), &list, "127.0.0.1:8080", false)
            .await
            .unwrap();
        assert_eq!(
            literal.addresses,
            vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(
            decide(&egress(&[]), &list, "internal.test:8080", false)
                .await
                .is_ok()
        );
        let other_port = decide(&egress(&[]), &list, "127.0.0.1:9090", false)
            .await
            .unwrap_err();
        assert_eq!(other_port.kind(), "not_listed");
        let unknown = AllowList::parse(&["nowhere.test"]).unwrap();
        let refusal = decide(&egress(&[]), &unknown, "nowhere.test", false)
            .await
            .unwrap_err();
        assert_eq!(refusal.kind(), "unresolvable");
    }
}
