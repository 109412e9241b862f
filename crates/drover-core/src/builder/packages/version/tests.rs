use std::cmp::Ordering::{self, Equal, Greater, Less};

use super::*;

fn v(s: &str) -> Version {
    Version::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn cmp(a: &str, b: &str) -> Ordering {
    v(a).cmp(&v(b))
}

#[test]
fn policy_and_dpkg_cases() {
    // (a, b, expected a.cmp(b)); many from dpkg's own test suite
    // (lib/dpkg/t/t-version.c) and from versions in bookworm.
    let cases: &[(&str, &str, Ordering)] = &[
        ("1.0", "1.0", Equal),
        ("0:1.0", "1.0", Equal),
        ("1.0-0", "1.0", Equal),
        ("1.00", "1.0", Equal),
        ("1.0~rc1", "1.0", Less),
        ("1.0~rc1", "1.0~rc2", Less),
        ("1.0~~", "1.0~", Less),
        ("1.0~~a", "1.0~~", Greater),
        ("1.0~", "1.0", Less),
        ("1.0", "1.0+", Less),
        ("1.0", "1.0.0", Less),
        ("1.0a", "1.0", Greater),
        ("1.0a", "1.0+", Less),
        ("1.0a", "1.0.", Less),
        ("1.0-1", "1.0", Greater),
        ("1.0-1", "1.0-1~bpo1", Greater),
        ("1:0.1", "2.0", Greater),
        ("1:0.1", "1:0.1", Equal),
        ("2:1", "10:0", Less),
        ("2.30-1+deb12u1", "2.30-1", Greater),
        ("2.30-1+deb12u1", "2.30-1+deb12u2", Less),
        ("2.30-1+deb12u10", "2.30-1+deb12u9", Greater),
        ("2.36-9+deb12u10", "2.36-9+deb12u9", Greater),
        ("2.36-9+deb12u9", "2.99", Less),
        ("1.22.1-9+deb12u9", "1.22.1-9+deb12u9.1~", Less),
        ("1:0.63-4~", "1:0.63-4", Less),
        ("1:0.63-4", "1:0.63-4~", Greater),
        ("3.0.11-1~deb12u2", "3.0.11-1", Less),
        ("1.2.3", "1.2.10", Less),
        ("1.002", "1.2", Equal),
        ("1.10", "1.9", Greater),
        ("a", "b", Less),
        ("1a", "1b", Less),
        ("1.0-a", "1.0-b", Less),
        ("1.0-1a", "1.0-1", Greater),
        ("1.0-2", "1.0-10", Less),
        ("1.2-3-4", "1.2-3", Greater),
        ("1.2-3-4", "1.2-3-4", Equal),
        ("0.9", "1.0", Less),
        ("1.0-1", "0:1.0-1", Equal),
        ("9", "10", Less),
        ("1.0.0", "1.0", Greater),
        ("1.0+dfsg1", "1.0", Greater),
        ("1.0+dfsg1", "1.0.1", Less), // `+` (43) sorts before `.` (46)
        ("20230311", "20230311+nmu1", Less),
        ("7.88.1-10+deb12u12", "7.88.1-10+deb12u5", Greater),
        ("4.2-3~", "4.2-3", Less),
        ("1:8.1p1-5", "1:9.2p1-2+deb12u3", Less),
        ("5.2.15-2", "5.2.15-2+b2", Less),
    ];
    for &(a, b, want) in cases {
        assert_eq!(cmp(a, b), want, "{a} vs {b}");
        assert_eq!(cmp(b, a), want.reverse(), "{b} vs {a}");
    }
}

#[test]
fn compare_part_is_dpkg_verrevcmp() {
    assert_eq!(compare_part("", ""), Equal);
    assert_eq!(compare_part("", "0"), Equal);
    assert_eq!(compare_part("~", ""), Less);
    assert_eq!(compare_part("a", ""), Greater);
    assert_eq!(compare_part("+", "a"), Greater);
    assert_eq!(compare_part("00001", "1"), Equal);
    assert_eq!(
        compare_part("99999999999999999999999", "99999999999999999999998"),
        Greater
    );
    assert_eq!(compare_part("1.0", "1_0"), Less); // `.` (46) < `_` (95)
}

#[test]
fn parts_and_display() {
    let x = v("1:2.30-1+deb12u1");
    assert_eq!(
        (x.epoch(), x.upstream(), x.revision()),
        (1, "2.30", "1+deb12u1")
    );
    assert_eq!(x.to_string(), "1:2.30-1+deb12u1");
    let y = v("1.2-3-4");
    assert_eq!((y.epoch(), y.upstream(), y.revision()), (0, "1.2-3", "4"));
    let z = v("7");
    assert_eq!((z.upstream(), z.revision()), ("7", ""));
    assert_eq!(serde_json::to_string(&x).unwrap(), "\"1:2.30-1+deb12u1\"");
    let back: Version = serde_json::from_str("\"1:2.30-1+deb12u1\"").unwrap();
    assert_eq!(back.as_str(), "1:2.30-1+deb12u1");
}

#[test]
fn malformed_versions_are_refused() {
    for bad in [
        "",
        ":1.0",
        "a:1.0",
        "1.0-",
        "-1",
        "1.0 beta",
        "1.0_1",
        "1:2:3-a:b",
        "99999999999999999999999:1",
        "é",
    ] {
        assert!(Version::parse(bad).is_err(), "{bad:?} parsed");
    }
    let e = Version::parse("1.0 beta").unwrap_err();
    assert!(e.to_string().contains("1.0 beta"), "{e}");
}

#[test]
fn operators() {
    let table: &[(&str, &str, &str, bool)] = &[
        ("1.0", "<<", "1.1", true),
        ("1.1", "<<", "1.1", false),
        ("1.1", "<=", "1.1", true),
        ("1.1", "<", "1.1", true), // obsolete `<` is `<=`
        ("1.2", "<", "1.1", false),
        ("1.1", "=", "1.1-0", true),
        ("1.1", "=", "1.1-1", false),
        ("1.1", ">=", "1.1", true),
        ("1.1", ">", "1.1", true), // obsolete `>` is `>=`
        ("1.0", ">", "1.1", false),
        ("1.1", ">>", "1.1", false),
        ("1.1+b1", ">>", "1.1", true),
        ("1.22.1-9+deb12u9", "<<", "1.22.1-9+deb12u9.1~", true),
    ];
    for &(have, op, want, holds) in table {
        let o = Op::parse(op).unwrap();
        assert_eq!(o.holds(&v(have), &v(want)), holds, "{have} {op} {want}");
    }
    assert_eq!(Op::parse("<").unwrap().as_str(), "<=");
    assert_eq!(Op::parse("=="), None);
    assert_eq!(Op::parse("!="), None);
}
