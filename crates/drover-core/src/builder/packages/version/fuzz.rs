//! Fuzz target: Debian version order (see `crate::fuzz`). On generated
//! versions the order is total (reflexive, antisymmetric, transitive) and
//! agrees with equality; parsing arbitrary text never panics.

use std::cmp::Ordering;

use proptest::prelude::*;

use super::*;
use crate::fuzz::config;

/// Versions dense in the tricky parts: `~`, `+`, letters, leading zeros,
/// epochs, several hyphens.
fn version() -> impl Strategy<Value = Version> {
    let part = "[0-9]{1,3}|0[0-9]|[a-c~+.]{1,2}|~|[a-z][0-9]";
    let upstream = proptest::collection::vec(part, 1..5).prop_map(|p| format!("0{}", p.concat()));
    let revision =
        proptest::option::of(proptest::collection::vec(part, 1..3).prop_map(|p| p.concat()));
    let epoch = proptest::option::of(0..3u8);
    (epoch, upstream, revision).prop_map(|(e, u, r)| {
        let mut s = String::new();
        if let Some(e) = e {
            s.push_str(&format!("{e}:"));
        }
        s.push_str(&u);
        if let Some(r) = r {
            s.push('-');
            s.push_str(&r);
        }
        Version::parse(&s).unwrap_or_else(|e| panic!("generated {s:?}: {e}"))
    })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn fuzz_version_order_is_total(a in version(), b in version(), c in version()) {
        prop_assert_eq!(a.cmp(&a), Ordering::Equal);
        prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
        prop_assert_eq!(a == b, a.cmp(&b) == Ordering::Equal);
        if a <= b && b <= c {
            prop_assert!(a <= c, "{} <= {} <= {} but not {} <= {}", a, b, c, a, c);
        }
        // Sorting any permutation gives the same order.
        let mut x = [a.clone(), b.clone(), c.clone()];
        let mut y = [c, a, b];
        x.sort();
        y.sort();
        for (p, q) in x.iter().zip(&y) {
            prop_assert_eq!(p.cmp(q), Ordering::Equal);
        }
    }

    #[test]
    fn fuzz_version_parse_never_panics(s in "\\PC{0,16}|[0-9:~+.a-z-]{0,16}") {
        if let Ok(v) = Version::parse(&s) {
            prop_assert_eq!(v.as_str(), s.as_str());
            prop_assert_eq!(v.cmp(&v), Ordering::Equal);
        }
    }
}
