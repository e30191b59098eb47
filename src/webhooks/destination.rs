//! Where a webhook may post. The admin's endpoints post anywhere: a backend on the same host is
//! the common case. Other tokens' endpoints post only to public addresses, unless
//! `WEBHOOK_ALLOW_PRIVATE=true`, so that a `webhooks:write` token cannot use the gateway to
//! reach the cloud's metadata service, the host's own ports or the private network, nor map them
//! by the `lastError` of its deliveries.
//!
//! The rule applies to the addresses a host resolves to, every one of them: once when the
//! endpoint is registered, and again by the delivery client's resolver each time it connects,
//! which hands the connector only addresses it has checked. A name that resolves to a public
//! address at registration and to a private one later (DNS rebinding) is refused when it
//! matters.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// Where an endpoint's posts may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destinations {
    /// Any address (the admin's endpoints, or `WEBHOOK_ALLOW_PRIVATE=true`).
    Any,
    /// Public addresses only.
    PublicOnly,
}

/// A destination refused by [`Destinations::PublicOnly`]. It names no address: the caller learns
/// only that the URL is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the address is not allowed: this endpoint may post only to public addresses")]
pub struct NotAllowed;

/// Whether `ip` is a public address: not loopback, unspecified, private (RFC 1918), shared
/// (CGNAT, 100.64.0.0/10), link-local (169.254.0.0/16, where clouds serve instance metadata;
/// fe80::/10), unique-local (fc00::/7), multicast or reserved, in either family. An IPv6
/// address that carries an IPv4 one (mapped, compatible, NAT64, 6to4) is judged by the IPv4 one.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let refused = a == 0 // 0.0.0.0/8, "this network", 0.0.0.0 included
        || ip.is_loopback() // 127.0.0.0/8
        || ip.is_private() // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local() // 169.254/16
        || (a == 100 && b & 0xc0 == 64) // 100.64/10, shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // 192.0.0/24, IETF protocol assignments
        || (a == 198 && b & 0xfe == 18) // 198.18/15, benchmarking
        || ip.is_multicast() // 224/4
        || a >= 240; // 240/4 reserved, and the broadcast address
    !refused
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    let [first, second, third, ..] = ip.segments();
    let refused = ip.is_unspecified()
        || ip.is_loopback()
        || first & 0xfe00 == 0xfc00 // fc00::/7, unique local
        || first & 0xffc0 == 0xfe80 // fe80::/10, link local
        || first & 0xffc0 == 0xfec0 // fec0::/10, the former site local
        || first & 0xff00 == 0xff00 // ff00::/8, multicast
        || (first, second, third) == (0x0100, 0, 0) // 100::/64 (discard; the /48 around it)
        || (first, second, third) == (0x64, 0xff9b, 1); // 64:ff9b:1::/48, local-use NAT64
    !refused
}

/// The IPv4 address an IPv6 one stands for: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`), well-known NAT64 (`64:ff9b::a.b.c.d`), or 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let [.., a, b, c, d] = ip.octets();
    let tail = Ipv4Addr::new(a, b, c, d);
    match ip.segments() {
        // `::` and `::1` are IPv6's own unspecified and loopback addresses, judged as such.
        [0, 0, 0, 0, 0, 0, _, _] if !ip.is_unspecified() && !ip.is_loopback() => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        [0x2002, ..] => {
            let [_, _, a, b, c, d, ..] = ip.octets();
            Some(Ipv4Addr::new(a, b, c, d))
        }
        _ => None,
    }
}

/// `Ok` if `destinations` allows every one of `addrs`, and there is at least one.
pub fn check_addresses(destinations: Destinations, addrs: &[SocketAddr]) -> Result<(), NotAllowed> {
    match destinations {
        Destinations::Any => Ok(()),
        Destinations::PublicOnly if !addrs.is_empty() && addrs.iter().all(|a| is_public(a.ip())) => Ok(()),
        Destinations::PublicOnly => Err(NotAllowed),
    }
}

/// The registration check: resolves the host of `url` (an http(s) URL that
/// [`super::is_http_url`] accepted) within `timeout` and checks every address. A host that does
/// not resolve is refused as well: what it would reach cannot be known.
pub async fn check_url(destinations: Destinations, url: &str, timeout: Duration) -> Result<(), NotAllowed> {
    if destinations == Destinations::Any {
        return Ok(());
    }
    let uri: axum::http::Uri = url.parse().map_err(|_| NotAllowed)?;
    let host = uri.host().ok_or(NotAllowed)?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
    let resolved = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await;
    let addrs: Vec<SocketAddr> = match resolved {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(_)) | Err(_) => return Err(NotAllowed),
    };
    check_addresses(destinations, &addrs)
}

/// The delivery client's resolver: `inner`'s answer, handed on only if every address in it is
/// public. The connector connects to nothing else.
#[derive(Debug)]
pub(super) struct CheckedResolver<R> {
    inner: R,
}

impl<R: Resolver> CheckedResolver<R> {
    pub(super) fn new(inner: R) -> CheckedResolver<R> {
        CheckedResolver { inner }
    }
}

impl<R: Resolver> Resolver for CheckedResolver<R> {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addrs = self.inner.resolve(uri, config, timeout)?;
        check_addresses(Destinations::PublicOnly, &addrs)
            .map_err(|refused| ureq::Error::Io(io::Error::new(io::ErrorKind::PermissionDenied, refused)))?;
        Ok(addrs)
    }
}

/// Whether a delivery client's error is the resolver's refusal.
pub(super) fn is_refusal(error: &ureq::Error) -> bool {
    matches!(error, ureq::Error::Io(e) if e.get_ref().is_some_and(|inner| inner.is::<NotAllowed>()))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn private_loopback_and_link_local_addresses_are_not_public() {
        for refused in [
            "127.0.0.1",
            "127.255.0.7",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "192.0.0.170",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fd00::1",
            "fc00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "2002:a00:1::1",
            "2002:7f00:1::",
            "100::1",
        ] {
            let ip: IpAddr = refused.parse().unwrap();
            assert!(!is_public(ip), "{refused} must be refused");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.215.14",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            let ip: IpAddr = public.parse().unwrap();
            assert!(is_public(ip), "{public} is public");
        }
    }

    #[test]
    fn every_address_must_be_public() {
        let public: SocketAddr = "8.8.8.8:443".parse().unwrap();
        let private: SocketAddr = "[fd00::1]:443".parse().unwrap();
        assert_eq!(check_addresses(Destinations::PublicOnly, &[public]), Ok(()));
        assert_eq!(check_addresses(Destinations::PublicOnly, &[public, private]), Err(NotAllowed));
        assert_eq!(check_addresses(Destinations::PublicOnly, &[]), Err(NotAllowed));
        assert_eq!(check_addresses(Destinations::Any, &[private]), Ok(()));
    }

    #[tokio::test]
    async fn registration_resolves_and_checks_literals_and_names() {
        let wait = Duration::from_secs(5);
        for refused in ["http://127.0.0.1:8080/h", "http://[::1]/h", "https://[fd00::1]/", "http://localhost:9/h"] {
            assert_eq!(check_url(Destinations::PublicOnly, refused, wait).await, Err(NotAllowed), "{refused}");
            assert_eq!(check_url(Destinations::Any, refused, wait).await, Ok(()), "{refused}");
        }
        // An IP literal needs no DNS (tests have none).
        assert_eq!(check_url(Destinations::PublicOnly, "https://93.184.215.14/h", wait).await, Ok(()));
        assert_eq!(check_url(Destinations::PublicOnly, "http://[2606:4700::1]:8443/h", wait).await, Ok(()));
    }

    /// Answers each lookup with the next of its answers: a DNS server that changes its mind.
    #[derive(Debug)]
    struct Rebinding {
        answers: Mutex<VecDeque<Vec<SocketAddr>>>,
    }

    impl Resolver for Rebinding {
        fn resolve(
            &self,
            _uri: &ureq::http::Uri,
            _config: &ureq::config::Config,
            _timeout: NextTimeout,
        ) -> Result<ResolvedSocketAddrs, ureq::Error> {
            let mut out = self.empty();
            for addr in self.answers.lock().unwrap().pop_front().ok_or(ureq::Error::HostNotFound)? {
                out.push(addr);
            }
            Ok(out)
        }
    }

    #[test]
    fn a_name_that_rebinds_to_a_private_address_is_refused_at_connect() {
        let public: SocketAddr = "93.184.215.14:80".parse().unwrap();
        let metadata: SocketAddr = "169.254.169.254:80".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:80".parse().unwrap();
        let resolver = CheckedResolver::new(Rebinding {
            answers: Mutex::new(VecDeque::from([vec![public], vec![metadata], vec![public, mapped]])),
        });
        let uri: ureq::http::Uri = "http://hooks.example.com/h".parse().unwrap();
        let config = ureq::config::Config::default();
        let resolve = || resolver.resolve(&uri, &config, NextTimeout::default());

        assert_eq!(resolve().unwrap().to_vec(), [public], "first answer: public, handed on");
        let refused = resolve().unwrap_err();
        assert!(is_refusal(&refused), "second answer: the metadata address, refused: {refused}");
        assert!(!refused.to_string().contains("169.254"), "the refusal names no address: {refused}");
        assert!(is_refusal(&resolve().unwrap_err()), "one private address among public ones is refused");
        assert!(!is_refusal(&resolve().unwrap_err()), "a lookup failure stays what it is");
    }
}
