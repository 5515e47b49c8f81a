//! Where to connect and how to trust each address, as a user gives it
//! (flags, environment variables, keyword arguments): one address or
//! several (cluster gateways), and either certificate fingerprints, one for
//! all addresses or one per address in order, or a CA file for all. The
//! `tensorgate` command line and the Python bindings both go through
//! [`trust_per_address`], so they accept and refuse the same settings.

use std::net::SocketAddr;
use std::path::Path;

use crate::transport::Trust;

/// Why addresses and trust settings do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetsError {
    /// No address at all.
    #[error("no host address given")]
    NoAddress,
    /// Several fingerprints, but not one per address.
    #[error("{fingerprints} fingerprints for {addresses} addresses: give one per address, or one for all")]
    FingerprintCount {
        /// Fingerprints given.
        fingerprints: usize,
        /// Addresses given.
        addresses: usize,
    },
    /// Both a fingerprint and a CA file: which one to trust is unclear.
    #[error("give a fingerprint or a CA file to trust the host, not both")]
    FingerprintAndCa,
    /// Neither a fingerprint nor a CA file.
    #[error("give the host's certificate fingerprint (printed by tensorgate-host) or a CA file to trust the host")]
    NoTrust,
}

/// The trust for each of `addresses`, in order. `fingerprints` is a
/// comma-separated list (blanks around entries ignored): one fingerprint
/// pins every address, several pin one address each and must be exactly as
/// many as the addresses. Without fingerprints, `ca` verifies every
/// address. An absent or blank `fingerprints` counts as none.
pub fn trust_per_address(addresses: &[SocketAddr], fingerprints: Option<&str>, ca: Option<&Path>) -> Result<Vec<Trust>, TargetsError> {
    if addresses.is_empty() {
        return Err(TargetsError::NoAddress);
    }
    let fingerprints: Vec<&str> = match fingerprints.map(str::trim).filter(|f| !f.is_empty()) {
        Some(f) => f.split(',').map(str::trim).collect(),
        None => Vec::new(),
    };
    if fingerprints.len() > 1 && fingerprints.len() != addresses.len() {
        return Err(TargetsError::FingerprintCount { fingerprints: fingerprints.len(), addresses: addresses.len() });
    }
    match (fingerprints.as_slice(), ca) {
        ([], None) => Err(TargetsError::NoTrust),
        ([_, ..], Some(_)) => Err(TargetsError::FingerprintAndCa),
        ([], Some(ca)) => Ok(addresses.iter().map(|_| Trust::CaFile(ca.to_path_buf())).collect()),
        ([one], None) => Ok(addresses.iter().map(|_| Trust::Fingerprint(one.to_string())).collect()),
        (each, None) => Ok(each.iter().map(|f| Trust::Fingerprint(f.to_string())).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n).map(|i| SocketAddr::from(([127, 0, 0, 1], 7000 + i))).collect()
    }

    fn pins(trust: &[Trust]) -> Vec<String> {
        trust
            .iter()
            .map(|t| match t {
                Trust::Fingerprint(f) => f.clone(),
                Trust::CaFile(p) => format!("ca:{}", p.display()),
            })
            .collect()
    }

    #[test]
    fn one_fingerprint_pins_every_address_and_several_pin_one_each() {
        assert_eq!(pins(&trust_per_address(&addrs(3), Some("aa"), None).unwrap()), ["aa", "aa", "aa"]);
        assert_eq!(pins(&trust_per_address(&addrs(2), Some(" aa , bb "), None).unwrap()), ["aa", "bb"]);
        assert_eq!(pins(&trust_per_address(&addrs(2), None, Some(Path::new("ca.pem"))).unwrap()), ["ca:ca.pem", "ca:ca.pem"]);
        // A blank fingerprint (an empty environment variable) is none: the CA is used.
        assert_eq!(pins(&trust_per_address(&addrs(1), Some("  "), Some(Path::new("ca.pem"))).unwrap()), ["ca:ca.pem"]);
    }

    #[test]
    fn settings_that_do_not_fit_are_refused_with_the_reason() {
        let e = trust_per_address(&addrs(3), Some("aa,bb"), None).unwrap_err();
        assert_eq!(e, TargetsError::FingerprintCount { fingerprints: 2, addresses: 3 });
        assert_eq!(e.to_string(), "2 fingerprints for 3 addresses: give one per address, or one for all");
        assert_eq!(trust_per_address(&addrs(1), None, None), Err(TargetsError::NoTrust));
        assert!(TargetsError::NoTrust.to_string().contains("fingerprint"));
        assert_eq!(trust_per_address(&addrs(1), Some("aa"), Some(Path::new("ca.pem"))), Err(TargetsError::FingerprintAndCa));
        assert_eq!(trust_per_address(&[], Some("aa"), None), Err(TargetsError::NoAddress));
    }
}
