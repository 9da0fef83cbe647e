//! `api::client_address`: the client's address from the peer and arbitrary `Forwarded` and
//! `X-Forwarded-For` header bytes. A peer that is not a trusted proxy is always the answer.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use axum::http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Peer {
    V4([u8; 4]),
    V6([u8; 16]),
    /// Inside 10.0.0.0/8, a trusted network.
    TrustedV4([u8; 3]),
    /// Inside fd00::/8, a trusted network.
    TrustedV6([u8; 15]),
}

#[derive(Arbitrary, Debug)]
enum Name {
    Forwarded,
    XForwardedFor,
    Other,
}

#[derive(Arbitrary, Debug)]
struct Input {
    peer: Peer,
    headers: Vec<(Name, Vec<u8>)>,
}

fn peer(peer: &Peer) -> IpAddr {
    match *peer {
        Peer::V4(b) => IpAddr::V4(Ipv4Addr::from(b)),
        Peer::V6(b) => IpAddr::V6(Ipv6Addr::from(b)),
        Peer::TrustedV4([a, b, c]) => IpAddr::V4(Ipv4Addr::new(10, a, b, c)),
        Peer::TrustedV6(rest) => {
            let mut bytes = [0xfd; 16];
            bytes[1..].copy_from_slice(&rest);
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
    }
}

fuzz_target!(|input: Input| {
    let trusted: Vec<IpNet> = ["10.0.0.0/8", "fd00::/8", "127.0.0.0/8"]
        .iter()
        .map(|n| n.parse().expect("a network"))
        .collect();
    let mut headers = HeaderMap::new();
    for (name, value) in &input.headers {
        let Ok(value) = HeaderValue::from_bytes(value) else { continue };
        let name = match name {
            Name::Forwarded => "forwarded",
            Name::XForwardedFor => "x-forwarded-for",
            Name::Other => "x-real-ip",
        };
        headers.append(name, value);
    }
    let peer = peer(&input.peer);
    let client = geobridge::api::client_address(peer, &headers, &trusted);
    let canonical = peer.to_canonical();
    if !trusted.iter().any(|n| n.contains(&canonical)) {
        assert_eq!(client, canonical, "headers of an untrusted peer were believed");
    }
    if headers.is_empty() {
        assert_eq!(client, canonical);
    }
});
