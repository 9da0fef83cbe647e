//! The client's address behind proxies: `Forwarded` and `X-Forwarded-For`, trusted only
//! from configured proxy networks.
//!
//! The connection's peer is the client unless it is a trusted proxy. Then the forwarding
//! headers are walked from the right (the hop nearest to us) past every trusted proxy; the
//! first address that is not trusted is the client. A hop that cannot be parsed ends the walk:
//! nothing to the left of it can be believed, so the last trusted hop is used instead.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client's address for a request from `peer` carrying `headers`.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops = hops(headers);
    let mut nearest = peer;
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) if is_trusted(&ip) => nearest = ip,
            Some(ip) => return ip,
            None => return nearest,
        }
    }
    nearest
}

/// Every hop, leftmost (farthest) first: from `Forwarded` when present, else from
/// `X-Forwarded-For`, across repeated headers in order.
fn hops(headers: &HeaderMap) -> Vec<String> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    };
    let forwarded = values("forwarded");
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .map(|element| forwarded_for(element).unwrap_or_default())
            .collect();
    }
    values("x-forwarded-for")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|hop| hop.trim().to_owned())
        .collect()
}

/// The `for=` parameter of one `Forwarded` element (RFC 7239), unquoted.
fn forwarded_for(element: &str) -> Option<String> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// One hop as an address: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return port_ok
            .then(|| inside.parse::<IpAddr>().ok())
            .flatten()
            .map(|ip| ip.to_canonical());
    }
    let (host, port) = hop.rsplit_once(':')?;
    let v4 = host.parse::<std::net::Ipv4Addr>().ok()?;
    is_port(port).then_some(IpAddr::V4(v4))
}

fn is_port(text: &str) -> bool {
    text.parse::<u16>().is_ok() && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, v.parse().expect("header value"));
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn trusted() -> Vec<IpNet> {
        vec![
            "10.0.0.0/8".parse().expect("net"),
            "fd00::/8".parse().expect("net"),
        ]
    }

    /// Headers from an untrusted peer are ignored.
    #[test]
    fn untrusted_peer_is_the_client() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(client_address(ip("8.8.8.8"), &h, &trusted()), ip("8.8.8.8"));
    }

    /// Trusted hops are walked past from the right; spoofed entries on the left are ignored.
    #[test]
    fn walks_past_trusted_hops() {
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 81.2.69.142 ,10.1.1.1"),
            ("x-forwarded-for", "10.2.2.2"),
        ]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &trusted()),
            ip("81.2.69.142")
        );
    }

    /// Ports, brackets, quotes and IPv4-mapped addresses are understood.
    #[test]
    fn address_forms() {
        assert_eq!(parse_hop("1.2.3.4:5678"), Some(ip("1.2.3.4")));
        assert_eq!(parse_hop("[2001:db8::1]:443"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop("[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop("::ffff:8.8.8.8"), Some(ip("8.8.8.8")));
        for garbage in [
            "",
            "unknown",
            "_hidden",
            "1.2.3.4:99999",
            "[::1",
            "[::1]x",
            "1.2.3.4:x",
        ] {
            assert_eq!(parse_hop(garbage), None, "{garbage:?}");
        }
    }

    /// `Forwarded` wins over `X-Forwarded-For`; quoted IPv6 with port works.
    #[test]
    fn forwarded_header() {
        let h = headers(&[
            (
                "forwarded",
                "for=192.0.2.60;proto=http, for=\"[2001:db8:cafe::17]:4711\"",
            ),
            ("x-forwarded-for", "9.9.9.9"),
        ]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &trusted()),
            ip("2001:db8:cafe::17")
        );
    }

    /// Garbage stops the walk at the last trusted hop, never beyond it.
    #[test]
    fn garbage_stops_the_walk() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1, not-an-ip, 10.3.3.3")]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &trusted()),
            ip("10.3.3.3")
        );
        let only_trusted = headers(&[("x-forwarded-for", "10.3.3.3")]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &only_trusted, &trusted()),
            ip("10.3.3.3")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &HeaderMap::new(), &trusted()),
            ip("10.0.0.1")
        );
    }
}
