//! Source-address allow-lists (CIDRs) for the listeners. An empty list allows nobody; the
//! example configuration lists the PBX's addresses, and the demo allows loopback.

use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// A shared list of allowed networks: every clone sees a [`Allow::replace`] (a reload).
#[derive(Debug, Clone, Default)]
pub struct Allow(Arc<RwLock<Arc<[IpNet]>>>);

impl Allow {
    /// Allows the given networks.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        Allow(Arc::new(RwLock::new(nets.into_iter().collect())))
    }

    /// Allows these networks from now on, in every clone.
    pub fn replace(&self, nets: impl IntoIterator<Item = IpNet>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = nets.into_iter().collect();
    }

    /// Whether `ip` is inside one of the networks (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|net| net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let allow = Allow::new([
            "10.0.0.0/8".parse().expect("net"),
            "::1/128".parse().expect("net"),
        ]);
        assert!(allow.permits("10.2.3.4".parse().expect("ip")));
        assert!(allow.permits("::ffff:10.2.3.4".parse().expect("ip")));
        assert!(allow.permits("::1".parse().expect("ip")));
        assert!(!allow.permits("192.0.2.1".parse().expect("ip")));
        assert!(!Allow::default().permits("127.0.0.1".parse().expect("ip")));
    }
}
