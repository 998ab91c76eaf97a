//! The host policy of probes, checked on the URL and again on every resolved address.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Name of the environment variable that lists extra hosts probes may reach.
pub const ALLOWED_HOSTS_VARIABLE: &str = "INTEGRATIONS_PROBE_ALLOWED_HOSTS";

/// Host names of cloud metadata services, rejected even when the allow-list contains them.
const METADATA_HOST_NAMES: &[&str] = &["metadata.google.internal", "metadata"];

/// The AWS instance metadata service over IPv6.
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// Hosts one probe may reach: the platform's public API hosts plus the hosts the operator allowed.
///
/// Plain `http` is accepted only for operator-allowed loopback hosts (`localhost`, `127.0.0.0/8`,
/// `::1`). Link-local addresses (`169.254.0.0/16`, `fe80::/10`), unspecified addresses and cloud
/// metadata endpoints are rejected even when allowed, both as URL hosts and as resolved
/// addresses.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    platform: &'static str,
    public_hosts: Vec<HostPattern>,
    allowed_hosts: Vec<HostPattern>,
    /// Scheme, host and port of operator-configured URLs (API base URL, Entra authority).
    configured_origins: Vec<url::Origin>,
}

impl HostPolicy {
    /// Creates a policy for `platform` (used in messages) with its public API host patterns
    /// (`api.github.com`, `*.visualstudio.com`) and the operator's allow-list.
    pub fn new(platform: &'static str, public_hosts: &[&str], allowed_hosts: &[String]) -> Self {
        Self {
            platform,
            public_hosts: public_hosts
                .iter()
                .map(|host| HostPattern::parse(host))
                .collect(),
            allowed_hosts: allowed_hosts
                .iter()
                .map(|host| HostPattern::parse(host))
                .filter(|pattern| !pattern.is_empty())
                .collect(),
            configured_origins: Vec::new(),
        }
    }

    /// Allows the origin (scheme, host and port) of an operator-configured URL, such as an API
    /// base URL or an Entra authority. Only that origin is allowed, not every port of its host,
    /// and plain http still needs a loopback host.
    pub(crate) fn allow_origin_of(mut self, url: &Url) -> Self {
        self.configured_origins.push(url.origin());
        self
    }

    /// Checks that a request to `url` is permitted; the error is a message for the operator
    /// that names the host and how to allow it.
    pub fn check_url(&self, url: &Url) -> Result<(), String> {
        let host_text = display_host(url);
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "the URL for {host_text} contains a user name or password; remove them, \
                 credentials belong in the integration's credential fields"
            ));
        }
        let Some(host) = url.host() else {
            return Err("the URL has no host".to_owned());
        };
        let name = normalized_host(&host);

        if let Some(reason) = blocked_host_reason(&host) {
            return Err(format!(
                "{host_text} is {reason}; probes never reach such addresses, even when allowed"
            ));
        }

        let operator_allowed = self
            .allowed_hosts
            .iter()
            .any(|pattern| pattern.matches(&name))
            || self.configured_origins.contains(&url.origin());
        match url.scheme() {
            "https" => {
                let public = self
                    .public_hosts
                    .iter()
                    .any(|pattern| pattern.matches(&name));
                if public || operator_allowed {
                    Ok(())
                } else {
                    Err(format!(
                        "{host_text} is not a {} API host that probes may reach; to allow it, \
                         add {name} to {ALLOWED_HOSTS_VARIABLE} (comma separated)",
                        self.platform
                    ))
                }
            }
            "http" if operator_allowed && is_loopback_host(&host) => Ok(()),
            "http" if is_loopback_host(&host) => Err(format!(
                "{host_text} uses plain http; plain http is accepted only for loopback hosts \
                 listed in {ALLOWED_HOSTS_VARIABLE}, so add {name} there or use https"
            )),
            "http" => Err(format!(
                "{host_text} uses plain http; use https (plain http is accepted only for \
                 loopback hosts listed in {ALLOWED_HOSTS_VARIABLE})"
            )),
            other => Err(format!(
                "{host_text} uses the scheme '{other}'; probes use https only"
            )),
        }
    }

    /// Returns the host names for which plain http may be used, so the resolver can insist on
    /// loopback addresses for them.
    pub(crate) fn loopback_names(&self) -> BTreeSet<String> {
        let allowed = self
            .allowed_hosts
            .iter()
            .filter_map(|pattern| match pattern {
                HostPattern::Exact(name) => Some(name.clone()),
                HostPattern::Suffix(_) => None,
            });
        let configured = self
            .configured_origins
            .iter()
            .filter_map(|origin| match origin {
                url::Origin::Tuple(_, Host::Domain(name), _) => Some(name.to_ascii_lowercase()),
                _ => None,
            });
        allowed
            .chain(configured)
            .filter(|name| name == "localhost")
            .collect()
    }
}

/// One allow-list entry: an exact host or a `*.suffix` wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    Suffix(String),
}

impl HostPattern {
    fn parse(text: &str) -> Self {
        let text = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let text = text
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        match text.strip_prefix("*.") {
            Some(suffix) => HostPattern::Suffix(format!(".{suffix}")),
            None => HostPattern::Exact(text),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, HostPattern::Exact(name) if name.is_empty())
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => name == host,
            HostPattern::Suffix(suffix) => host.ends_with(suffix.as_str()),
        }
    }
}

/// Lowercase host without brackets or a trailing dot, as allow-list entries are written.
fn normalized_host(host: &Host<&str>) -> String {
    match host {
        Host::Domain(name) => name.trim_end_matches('.').to_ascii_lowercase(),
        Host::Ipv4(address) => address.to_string(),
        Host::Ipv6(address) => address.to_string(),
    }
}

/// Host and port as shown in messages, without path or query.
pub(crate) fn display_host(url: &Url) -> String {
    let host = url.host_str().unwrap_or("(no host)");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

fn is_loopback_host(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => name.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
        Host::Ipv4(address) => address.is_loopback(),
        Host::Ipv6(address) => address.is_loopback(),
    }
}

fn blocked_host_reason(host: &Host<&str>) -> Option<&'static str> {
    match host {
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            METADATA_HOST_NAMES
                .contains(&name.as_str())
                .then_some("a cloud metadata host")
        }
        Host::Ipv4(address) => blocked_address_reason(IpAddr::V4(*address)),
        Host::Ipv6(address) => blocked_address_reason(IpAddr::V6(*address)),
    }
}

/// Returns why an address must never be reached, or `None` when it may be.
pub(crate) fn blocked_address_reason(address: IpAddr) -> Option<&'static str> {
    let address = match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(address),
        IpAddr::V4(_) => address,
    };
    match address {
        IpAddr::V4(v4) if v4.octets() == [169, 254, 169, 254] => Some("a cloud metadata address"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("a link-local address"),
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_broadcast() => {
            Some("an unspecified or broadcast address")
        }
        IpAddr::V6(v6) if v6 == AWS_METADATA_V6 => Some("a cloud metadata address"),
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Some("a link-local address"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("an unspecified address"),
        _ => None,
    }
}

/// A resolved host name had only addresses that probes must not reach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} resolves only to addresses probes may not reach ({reason})")]
pub struct BlockedAddressError {
    /// The resolved host name.
    pub host: String,
    /// Reason the addresses were dropped.
    pub reason: String,
}

/// Keeps the addresses a probe may connect to: drops link-local and metadata addresses, and
/// for names that may use plain http keeps loopback addresses only.
pub(crate) fn filter_addresses(
    host: &str,
    addresses: Vec<SocketAddr>,
    loopback_only: bool,
) -> Result<Vec<SocketAddr>, BlockedAddressError> {
    let mut reason = "no address";
    let kept: Vec<SocketAddr> = addresses
        .into_iter()
        .filter(|address| {
            if let Some(blocked) = blocked_address_reason(address.ip()) {
                reason = blocked;
                return false;
            }
            if loopback_only && !address.ip().is_loopback() {
                reason = "a non-loopback address for a host allowed over plain http";
                return false;
            }
            true
        })
        .collect();
    if kept.is_empty() {
        return Err(BlockedAddressError {
            host: host.to_owned(),
            reason: reason.to_owned(),
        });
    }
    Ok(kept)
}

/// DNS resolver for probe clients: resolves with the system resolver, then applies
/// [`filter_addresses`], so a permitted name cannot lead to a forbidden address.
pub(crate) struct GuardedResolver {
    loopback_names: Arc<BTreeSet<String>>,
}

impl GuardedResolver {
    pub(crate) fn new(loopback_names: BTreeSet<String>) -> Self {
        Self {
            loopback_names: Arc::new(loopback_names),
        }
    }
}

impl fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedResolver").finish_non_exhaustive()
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        let loopback_names = Arc::clone(&self.loopback_names);
        Box::pin(async move {
            if METADATA_HOST_NAMES.contains(&host.as_str()) {
                return Err(Box::new(BlockedAddressError {
                    host,
                    reason: "a cloud metadata host".to_owned(),
                })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            // The port is replaced by the connector; 0 only satisfies the lookup signature.
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let loopback_only = loopback_names.contains(&host);
            let kept = filter_addresses(&host, addresses, loopback_only)?;
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str]) -> HostPolicy {
        let allowed: Vec<String> = allowed.iter().map(|host| (*host).to_owned()).collect();
        HostPolicy::new(
            "Azure DevOps",
            &["dev.azure.com", "*.visualstudio.com"],
            &allowed,
        )
    }

    fn check(policy: &HostPolicy, url: &str) -> Result<(), String> {
        policy.check_url(&Url::parse(url).unwrap())
    }

    #[test]
    fn public_host_allowed() {
        assert!(check(&policy(&[]), "https://dev.azure.com/org").is_ok());
    }

    #[test]
    fn wildcard_public_host_allowed() {
        assert!(check(&policy(&[]), "https://org.visualstudio.com").is_ok());
    }

    #[test]
    fn unknown_host_names_fix() {
        let message = check(&policy(&[]), "https://evil.example.com/org").unwrap_err();
        assert!(message.contains("evil.example.com"), "{message}");
        assert!(message.contains(ALLOWED_HOSTS_VARIABLE), "{message}");
    }

    #[test]
    fn allowed_host_over_https() {
        assert!(check(&policy(&["tfs.example.com"]), "https://tfs.example.com/c").is_ok());
    }

    #[test]
    fn http_needs_allowed_loopback() {
        assert!(check(&policy(&["127.0.0.1"]), "http://127.0.0.1:9000/org").is_ok());
        assert!(check(&policy(&[]), "http://127.0.0.1:9000/org").is_err());
        assert!(check(&policy(&["tfs.example.com"]), "http://tfs.example.com/org").is_err());
    }

    #[test]
    fn metadata_rejected_even_if_allowed() {
        let allowed = policy(&[
            "169.254.169.254",
            "metadata.google.internal",
            "fd00:ec2::254",
        ]);
        assert!(check(&allowed, "http://169.254.169.254/latest").is_err());
        assert!(check(&allowed, "https://metadata.google.internal/").is_err());
        assert!(check(&allowed, "https://[fd00:ec2::254]/").is_err());
    }

    #[test]
    fn link_local_rejected() {
        let allowed = policy(&["169.254.10.1", "fe80::1"]);
        assert!(check(&allowed, "https://169.254.10.1/").is_err());
        assert!(check(&allowed, "https://[fe80::1]/").is_err());
        assert!(check(&allowed, "https://[::ffff:169.254.169.254]/").is_err());
    }

    #[test]
    fn user_info_rejected() {
        let message = check(&policy(&[]), "https://user:pw@dev.azure.com/org").unwrap_err();
        assert!(!message.contains("pw"), "{message}");
    }

    #[test]
    fn resolved_link_local_dropped() {
        let addresses = vec![
            "169.254.169.254:443".parse().unwrap(),
            "[fe80::1]:443".parse().unwrap(),
        ];
        let error = filter_addresses("rebind.example.com", addresses, false).unwrap_err();
        assert_eq!(error.host, "rebind.example.com");
    }

    #[test]
    fn resolved_public_kept() {
        let addresses = vec![
            "169.254.169.254:443".parse().unwrap(),
            "203.0.113.7:443".parse().unwrap(),
        ];
        let kept = filter_addresses("platform.example.com", addresses, false).unwrap();
        assert_eq!(kept, vec!["203.0.113.7:443".parse().unwrap()]);
    }

    #[test]
    fn resolved_http_name_needs_loopback() {
        let addresses = vec!["10.0.0.5:80".parse().unwrap()];
        assert!(filter_addresses("localhost", addresses, true).is_err());
    }
}
