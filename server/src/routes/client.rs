//! The client's address, for the login throttle and the logs: the peer's, or, when the peer is a
//! trusted proxy (`SAULPOS_TRUSTED_PROXIES`), the nearest address in `X-Forwarded-For` that is
//! not one of those proxies. A client that is not behind a trusted proxy cannot pick its own
//! address with a forged header.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

use super::AppState;

/// The client's address; `None` when the request came without a socket (tests' `oneshot`).
pub struct Client(pub Option<IpAddr>);

impl FromRequestParts<AppState> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Client, Infallible> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        Ok(Client(peer.map(|peer| {
            client_address(peer, &parts.headers, &state.trusted_proxies)
        })))
    }
}

fn trusted(address: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|proxy| proxy.contains(&address))
}

/// The client behind `peer`: the peer itself unless it is a trusted proxy; then, reading
/// `X-Forwarded-For` from the right (the entries the proxies appended), the first address that
/// is not a trusted proxy. An unreadable entry stops the walk at the last trusted hop.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted(peer, proxies) {
        return peer;
    }
    let mut client = peer;
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        let Ok(address) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = address.to_canonical();
        if !trusted(client, proxies) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let outsider: IpAddr = "192.0.2.7".parse().unwrap();
        let address =
            |peer, forwarded: &[&str]| client_address(peer, &headers(forwarded), &proxies);
        assert_eq!(
            address(peer, &["198.51.100.1"]),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        // The client's own entries come first; the proxies' last: a forged first entry is passed.
        assert_eq!(
            address(peer, &["203.0.113.9, 198.51.100.1, 10.0.0.4"]),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            address(peer, &["10.0.0.4", "198.51.100.2"]),
            "198.51.100.2".parse::<IpAddr>().unwrap()
        );
        // Not behind a trusted proxy: the header is the client's own word, and ignored.
        assert_eq!(address(outsider, &["198.51.100.1"]), outsider);
        // No header, or an unreadable one: the proxy itself.
        assert_eq!(address(peer, &[]), peer);
        assert_eq!(address(peer, &["unknown"]), peer);
        let mapped: IpAddr = "::ffff:10.0.0.5".parse().unwrap();
        assert_eq!(
            address(mapped, &["198.51.100.3"]),
            "198.51.100.3".parse::<IpAddr>().unwrap()
        );
    }
}
