//! What the leader may call on a pipeline author's behalf: an analysis'
//! Prometheus or HTTP provider, a gate's webhook, an app's artifact by URL. Those URLs come from a
//! pipeline or a git repository, not from an admin, so without a limit
//! anyone who can push could have the leader read internal endpoints (a
//! cloud's instance metadata above all) and see the answer in `drover
//! rollout status`.
//!
//! - **Always refused:** link-local addresses (`169.254.0.0/16`, where
//!   clouds serve instance metadata and credentials, and `fe80::/10`), the
//!   unspecified and broadcast addresses, and multicast; whether written as
//!   the URL's host or resolved from its name.
//! - **`--outbound-allow`** (a list of host names, `*.example.com`
//!   wildcards and CIDRs, e.g. `prometheus.internal,10.0.0.0/8`) narrows
//!   it further: a URL's host must be a name on the list, or every address
//!   it resolves to must be in one of the CIDRs. Without it, any other host
//!   may be called.
//! - **No redirects** are followed by analyses and gates, so a 3xx cannot
//!   lead past the check; an artifact's download follows a few, each
//!   checked as the first URL is.
//!
//! The check runs on the resolved addresses (a resolver of its own given
//! to the HTTP client), so a name that resolves to a refused address is
//! refused as well.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

/// The most entries `--outbound-allow` takes.
pub const MAX_RULES: usize = 100;

/// Where the leader may call; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbound {
    names: Vec<String>,
    nets: Vec<IpNet>,
}

impl Outbound {
    /// Reads `--outbound-allow`'s entries; an empty list limits nothing but
    /// what is always refused.
    pub fn parse(entries: &[String]) -> Result<Outbound, String> {
        if entries.len() > MAX_RULES {
            return Err(format!("--outbound-allow has {} entries, over the limit of {MAX_RULES}", entries.len()));
        }
        let mut out = Outbound::default();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if let Ok(net) = entry.parse::<IpNet>() {
                out.nets.push(net);
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                out.nets.push(IpNet::from(ip));
            } else if valid_name(entry) {
                out.names.push(entry.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "--outbound-allow entry {entry:?} is neither a host name (`prometheus.internal`, \
                     `*.example.com`) nor an address or CIDR (`10.0.0.5`, `10.0.0.0/8`)"
                ));
            }
        }
        Ok(out)
    }

    /// Whether a list was given.
    fn limited(&self) -> bool {
        !self.names.is_empty() || !self.nets.is_empty()
    }

    fn name_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.names.iter().any(|rule| match rule.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => *rule == host,
        })
    }

    /// Why address `ip` (for host `host`) may not be called, if it may not.
    pub fn ip_problem(&self, host: &str, ip: IpAddr) -> Option<String> {
        if let Some(what) = always_refused(ip) {
            return Some(format!("{host} is {ip}, {what}, which the coordinator never calls for a pipeline"));
        }
        if self.limited() && !self.name_allowed(host) && !self.nets.iter().any(|n| n.contains(&ip)) {
            return Some(format!(
                "{host} ({ip}) is not on the coordinator's --outbound-allow list; ask its operator to add it"
            ));
        }
        None
    }

    /// Why `url` may not be called, as far as its text tells (an address
    /// as its host, a name not allowed); its name's addresses are checked
    /// when it is resolved.
    pub fn url_problem(&self, url: &str) -> Option<String> {
        let parsed = match reqwest::Url::parse(url) {
            Ok(u) => u,
            Err(e) => return Some(format!("{url} is not a URL: {e}")),
        };
        let Some(host) = parsed.host_str() else { return Some(format!("{url} names no host")) };
        match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => self.ip_problem(host, ip),
            Err(_) => {
                let name = host;
                let may = !self.limited() || self.name_allowed(name) || !self.nets.is_empty();
                (!may).then(|| {
                    format!("{name} is not on the coordinator's --outbound-allow list; ask its operator to add it")
                })
            }
        }
    }

    /// An HTTP client for such calls: `timeout` a call, no redirects, and
    /// every name resolved through this policy.
    pub fn client(&self, timeout: Duration) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(Guard(self.clone())))
            .build()
            .expect("a client with timeouts and a resolver builds")
    }

    /// A client builder that resolves every name through this policy and
    /// follows at most `redirects` redirects, each to a URL the policy
    /// allows (for downloads, whose servers often redirect to a CDN).
    pub fn builder(&self, redirects: usize) -> reqwest::ClientBuilder {
        let policy = self.clone();
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > redirects {
                return attempt.error(format!("more than {redirects} redirects"));
            }
            match policy.url_problem(attempt.url().as_str()) {
                Some(why) => attempt.error(why),
                None => attempt.follow(),
            }
        });
        reqwest::Client::builder().redirect(redirect).dns_resolver(Arc::new(Guard(self.clone())))
    }
}

/// Why `ip` is never called, if it is not.
fn always_refused(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local (where clouds serve instance metadata)"),
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_broadcast() => Some("not a host's address"),
        IpAddr::V4(v4) if v4.is_multicast() => Some("multicast"),
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Some("link-local"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("not a host's address"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("multicast"),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().and_then(|v4| always_refused(IpAddr::V4(v4))),
        _ => None,
    }
}

fn valid_name(entry: &str) -> bool {
    let name = entry.strip_prefix("*.").unwrap_or(entry);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
        })
}

/// The resolver the client uses: the system's, then this policy on every
/// address; a name with none left fails to resolve, saying why.
struct Guard(Outbound);

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.ip_problem(&host, a.ip()) {
                    Some(why) => {
                        refused.get_or_insert(why);
                        false
                    }
                    None => true,
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or_else(|| format!("{host} resolves to no address"));
                return Err(why.into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_may_be_called() {
        let open = Outbound::parse(&[]).unwrap();
        let narrow =
            Outbound::parse(&["prometheus.internal".into(), "*.example.com".into(), "10.0.0.0/8".into()]).unwrap();
        // (case, policy, url, the refusal says)
        let cases: &[(&str, &Outbound, &str, Option<&str>)] = &[
            ("a host", &open, "http://prometheus:9090/", None),
            ("loopback", &open, "http://127.0.0.1:9090/", None),
            ("instance metadata", &open, "http://169.254.169.254/latest/", Some("link-local")),
            ("v6 link-local", &open, "http://[fe80::1]/", Some("link-local")),
            ("v4-mapped metadata", &open, "http://[::ffff:169.254.169.254]/", Some("link-local")),
            ("unspecified", &open, "http://0.0.0.0:80/", Some("not a host's address")),
            ("a listed name", &narrow, "http://PROMETHEUS.internal:9090/", None),
            ("a wildcard", &narrow, "https://hooks.example.com/x", None),
            ("the bare domain is not its wildcard", &narrow, "https://example.com/x", None),
            ("an address in a CIDR", &narrow, "http://10.1.2.3/", None),
            ("an address outside", &narrow, "http://192.168.1.1/", Some("not on the coordinator's --outbound-allow")),
            (
                "metadata even if listed",
                &Outbound::parse(&["169.254.0.0/16".into()]).unwrap(),
                "http://169.254.169.254/",
                Some("link-local"),
            ),
        ];
        for (case, policy, url, want) in cases {
            let got = policy.url_problem(url);
            match (want, &got) {
                (None, None) => {}
                (Some(want), Some(got)) if got.contains(want) => {}
                _ => panic!("{case}: {url}: got {got:?}, want {want:?}"),
            }
        }
        // A name outside the names is decided on its addresses when there
        // are CIDRs: `example.com` above resolves later.
        assert!(narrow.ip_problem("example.com", "93.184.216.34".parse().unwrap()).is_some());
        assert!(narrow.ip_problem("db.example.com", "93.184.216.34".parse().unwrap()).is_none());
        assert!(Outbound::parse(&["not a host".into()]).unwrap_err().contains("neither a host name"));
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_a_refused_address_is_refused() {
        let narrow = Outbound::parse(&["10.0.0.0/8".into()]).unwrap();
        let err = narrow.client(Duration::from_secs(5)).get("http://localhost:9/").send().await.unwrap_err();
        let chain = format!("{:?}", err);
        assert!(chain.contains("not on the coordinator's --outbound-allow list"), "{chain}");
    }
}
