//! Where API webhook subscriptions may send (SSRF): never to an internal address.
//!
//! One rule, [`public_addresses`], applied twice: when a subscription is made (its host must
//! resolve to public addresses only) and again when each delivery connects
//! ([`PublicOnlyResolver`], the resolver of the subscription client), because a name that
//! resolved to a public address at subscription time may resolve to `127.0.0.1` or the
//! cloud metadata address later (DNS rebinding). The resolver's answer is what the HTTP
//! client connects to, so the addresses checked are the addresses used: nothing resolves
//! the name again between the check and the connect. IP-literal hosts never reach a
//! resolver, so the delivery worker checks them itself ([`refuse_internal_literal`]).
//!
//! Deployment-wide URLs from the environment (`AEGIS_WEBHOOK_URL`, …) are trusted and are
//! not checked; `AEGIS_WEBHOOK_ALLOW_PRIVATE=true` turns the check off for subscriptions too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// How long a name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest subscription URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Why a destination is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The host is, or resolves to (among others), an internal address.
    Internal,
    /// The name does not resolve, or not in time.
    Unresolvable,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Internal => {
                "resolves to a private, loopback, link-local or otherwise internal address"
            }
            Refusal::Unresolvable => "does not resolve",
        })
    }
}

impl std::error::Error for Refusal {}

/// IPv4 blocks that are not the public internet (RFC 6890 and its updates), as
/// (network, prefix length).
const NON_PUBLIC_V4: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),       // "this network"
    ([10, 0, 0, 0], 8),      // private
    ([100, 64, 0, 0], 10),   // shared address space (CGNAT)
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local, including cloud metadata (169.254.169.254)
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
    ([192, 88, 99, 0], 24),  // 6to4 relay anycast
    ([192, 168, 0, 0], 16),  // private
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
    ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, and the limited broadcast address
];

/// Blocks inside global unicast (2000::/3) that are not the public internet.
const NON_PUBLIC_V6: &[(Ipv6Addr, u8)] = &[
    // IETF protocol assignments: Teredo (2001::/32), benchmarking, ORCHID, AMT. Teredo
    // tunnels to whatever IPv4 server and client its address names; no webhook lives there.
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),     // documentation (RFC 9637)
];

fn in_block(address: u128, network: u128, prefix: u8, bits: u32) -> bool {
    let shift = bits - u32::from(prefix);
    (address >> shift) == (network >> shift)
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    NON_PUBLIC_V4.iter().any(|(network, prefix)| {
        in_block(
            u32::from(ip).into(),
            u32::from(Ipv4Addr::from(*network)).into(),
            *prefix,
            32,
        )
    })
}

/// The IPv4 address an IPv6 transition form carries, where the packet would go to it:
/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, deprecated), NAT64
/// (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::/48`).
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let last32 = || Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] => Some(last32()),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(last32()),
        [0x2002, high, low, ..] => Some(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low))),
        _ => None,
    }
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_ipv4(ip) {
        return is_internal_v4(v4);
    }
    // Everything outside global unicast is loopback, unspecified, unique-local (fc00::/7),
    // link-local (fe80::/10), site-local (fec0::/10), multicast, local-use NAT64
    // (64:ff9b:1::/48), discard-only (100::/64) or reserved.
    let global_unicast = in_block(u128::from(ip), 0x2000 << 112, 3, 128);
    !global_unicast
        || NON_PUBLIC_V6
            .iter()
            .any(|(network, prefix)| in_block(u128::from(ip), u128::from(*network), *prefix, 128))
}

/// Whether a webhook must not be sent to `ip`: anything but a public unicast address,
/// including the IPv4 an IPv6 transition form embeds.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

/// Resolves `host` (a name or an IP literal) and returns its addresses if every one of them
/// is public: the SSRF rule, at subscription and at delivery.
pub async fn public_addresses(host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
    let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| Refusal::Unresolvable)?
            .map_err(|_| Refusal::Unresolvable)?
            .collect(),
    };
    if addresses.is_empty() {
        return Err(Refusal::Unresolvable);
    }
    if addresses.iter().any(|a| is_internal(a.ip())) {
        return Err(Refusal::Internal);
    }
    Ok(addresses)
}

/// Checks a subscription URL: at most [`MAX_URL_LEN`] characters, absolute http(s), a host,
/// no credentials, and (unless `allow_private`) a host whose addresses are all public.
/// The error says why, for the `url` field.
pub async fn check_subscription_url(raw: &str, allow_private: bool) -> Result<(), String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!("must be at most {MAX_URL_LEN} characters"));
    }
    let url = url::Url::parse(raw).map_err(|_| "must be an absolute http(s) URL".to_owned())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must use http or https".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    let host = host_of(&url).ok_or_else(|| "must name a host".to_owned())?;
    if allow_private {
        return Ok(());
    }
    let port = url.port_or_known_default().unwrap_or(443);
    public_addresses(&host, port)
        .await
        .map(drop)
        .map_err(|refusal| format!("must not point to an internal address: the host {refusal}"))
}

/// The host of a URL as a resolver or `IpAddr::from_str` takes it (IPv6 without brackets).
fn host_of(url: &url::Url) -> Option<String> {
    Some(match url.host()? {
        url::Host::Domain(name) => name.to_owned(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => ip.to_string(),
    })
}

/// At delivery: refuses a URL whose host is an internal IP literal (names are checked by
/// [`PublicOnlyResolver`] as the connection is made).
pub fn refuse_internal_literal(raw: &str) -> Result<(), Refusal> {
    let Ok(url) = url::Url::parse(raw) else {
        // The HTTP client reports it as a failed request.
        return Ok(());
    };
    let internal = match url.host() {
        Some(url::Host::Ipv4(ip)) => is_internal(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_internal(IpAddr::V6(ip)),
        _ => false,
    };
    if internal {
        Err(Refusal::Internal)
    } else {
        Ok(())
    }
}

/// The DNS resolver of the client that delivers to API subscriptions: resolves each name
/// when the connection is made and fails with [`Refusal::Internal`] unless every address is
/// public; the client connects only to the addresses it returns.
#[derive(Debug, Default)]
pub struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: the client puts in the URL's port.
            let addresses = public_addresses(&host, 0).await?;
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether a failed request was refused by [`PublicOnlyResolver`].
pub fn refused_by_resolver(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.downcast_ref::<Refusal>() == Some(&Refusal::Internal) {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internal(ip: &str) -> bool {
        is_internal(ip.parse().unwrap_or_else(|_| panic!("{ip} is an address")))
    }

    #[test]
    fn internal_ipv4_ranges_are_refused() {
        for ip in [
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "240.0.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "192.88.99.1",
        ] {
            assert!(internal(ip), "{ip}");
        }
    }

    #[test]
    fn public_ipv4_addresses_pass() {
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.255.255",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert!(!internal(ip), "{ip}");
        }
    }

    #[test]
    fn internal_ipv6_addresses_are_refused() {
        for ip in [
            "::1",                  // loopback
            "::",                   // unspecified
            "fd00::1",              // unique local
            "fc00::1",              // unique local
            "fe80::1",              // link-local
            "fec0::1",              // site-local (deprecated)
            "ff02::1",              // multicast
            "ff0e::1",              // global multicast
            "100::1",               // discard-only
            "64:ff9b:1::a9fe:a9fe", // local-use NAT64
            "2001:db8::1",          // documentation
            "3fff::1",              // documentation
            "2001:2::1",            // benchmarking
            "2001:10::1",           // ORCHID
        ] {
            assert!(internal(ip), "{ip}");
        }
    }

    #[test]
    fn transition_forms_are_judged_by_the_ipv4_they_carry() {
        for ip in [
            "::ffff:127.0.0.1",       // IPv4-mapped loopback
            "::ffff:169.254.169.254", // IPv4-mapped metadata
            "::ffff:10.1.2.3",
            "::a9fe:a9fe",         // IPv4-compatible 169.254.169.254
            "::127.0.0.1",         // IPv4-compatible loopback
            "::10.0.0.1",          // IPv4-compatible private
            "64:ff9b::a9fe:a9fe",  // NAT64 of 169.254.169.254
            "64:ff9b::7f00:1",     // NAT64 of 127.0.0.1
            "64:ff9b::c0a8:101",   // NAT64 of 192.168.1.1
            "2002:7f00:1::",       // 6to4 of 127.0.0.1
            "2002:a9fe:a9fe::1",   // 6to4 of 169.254.169.254
            "2002:a00:1::",        // 6to4 of 10.0.0.1
            "2001::1",             // Teredo
            "2001:0:7f00:1::",     // Teredo, server 127.0.0.1
            "2001:0:5db8:d822::1", // Teredo, public server: refused all the same
        ] {
            assert!(internal(ip), "{ip}");
        }
        for ip in [
            "::ffff:93.184.216.34",
            "64:ff9b::808:808",  // NAT64 of 8.8.8.8 (DNS64 networks)
            "2002:5db8:d822::1", // 6to4 of 93.184.216.34
        ] {
            assert!(!internal(ip), "{ip}");
        }
    }

    #[test]
    fn public_ipv6_addresses_pass() {
        for ip in [
            "2606:4700::1111",
            "2a00:1450:4001:80b::200e",
            "2001:200::1",
            "2001:4860:4860::8888",
        ] {
            assert!(!internal(ip), "{ip}");
        }
    }

    #[tokio::test]
    async fn names_and_literals_resolving_to_internal_addresses_are_refused() {
        assert_eq!(
            public_addresses("localhost", 80).await,
            Err(Refusal::Internal)
        );
        assert_eq!(
            public_addresses("169.254.169.254", 80).await,
            Err(Refusal::Internal)
        );
        assert_eq!(
            public_addresses("::ffff:7f00:1", 80).await,
            Err(Refusal::Internal)
        );
        assert_eq!(
            public_addresses("no-such-host.invalid", 80).await,
            Err(Refusal::Unresolvable)
        );
        assert_eq!(
            public_addresses("93.184.216.34", 443).await,
            Ok(vec!["93.184.216.34:443".parse().unwrap()])
        );
    }

    #[tokio::test]
    async fn subscription_urls_are_checked_for_shape_and_address() {
        for (url, why) in [
            ("ftp://example.com/hook", "http or https"),
            ("http://user:pw@93.184.216.34/", "credentials"),
            ("not a url", "absolute"),
            ("http://127.0.0.1:9/hook", "internal"),
            ("http://[::ffff:a9fe:a9fe]/", "internal"),
            ("http://[64:ff9b::a9fe:a9fe]/", "internal"),
            ("http://[2002:7f00:1::]/", "internal"),
            ("http://2130706433/", "internal"), // 127.0.0.1 as one number
            ("http://0x7f.1/", "internal"),
            ("http://localhost:8080/", "internal"),
        ] {
            let error = check_subscription_url(url, false).await.unwrap_err();
            assert!(error.contains(why), "{url}: {error}");
        }
        let long = format!("https://93.184.216.34/{}", "a".repeat(MAX_URL_LEN));
        assert!(check_subscription_url(&long, false).await.is_err());
        assert_eq!(
            check_subscription_url("https://93.184.216.34/hook", false).await,
            Ok(())
        );
        assert_eq!(
            check_subscription_url("http://127.0.0.1:9/hook", true).await,
            Ok(())
        );
    }

    #[test]
    fn internal_literals_are_refused_at_delivery() {
        for url in [
            "http://127.0.0.1:9/",
            "http://[::1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://2130706433/",
        ] {
            assert_eq!(
                refuse_internal_literal(url),
                Err(Refusal::Internal),
                "{url}"
            );
        }
        for url in ["https://93.184.216.34/", "https://hooks.example.com/x"] {
            assert_eq!(refuse_internal_literal(url), Ok(()), "{url}");
        }
    }
}
