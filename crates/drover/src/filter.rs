//! `--filter key=value` for listings (`ps`, `images`, `releases`): parsing,
//! the check that each key is one the listing knows (naming the ones it
//! does), and the glob `reference=` patterns use. Every filter must match
//! (AND), as the keys differ.

use drover_core::Error;

/// One `--filter key=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub key: String,
    pub value: String,
}

/// clap's value parser for `--filter`.
pub fn parse(s: &str) -> Result<Filter, String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok(Filter {
            key: k.trim().to_string(),
            value: v.trim().to_string(),
        }),
        _ => Err(format!(
            "{s:?} is not a filter (expected KEY=VALUE, e.g. state=running)"
        )),
    }
}

/// Refuse a key the listing does not know (exit 2), naming those it does.
pub fn check(filters: &[Filter], what: &str, valid: &[&str]) -> Result<(), Error> {
    for f in filters {
        if !valid.contains(&f.key.as_str()) {
            return Err(Error::Usage(format!(
                "unknown filter {:?} for {what} (valid keys: {})",
                f.key,
                valid.join(", ")
            )));
        }
    }
    Ok(())
}

/// A `true`/`false` filter value, or a usage error naming the key.
pub fn boolean(f: &Filter) -> Result<bool, Error> {
    match f.value.as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        v => Err(Error::Usage(format!(
            "filter {}={v:?}: expected true or false",
            f.key
        ))),
    }
}

/// Shell-style glob: `*` any run of characters, `?` one character.
pub fn glob(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    // Classic two-pointer match with backtracking to the last `*`.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_unknown_keys_name_the_valid_ones() {
        let f = parse("state=running").unwrap();
        assert_eq!((f.key.as_str(), f.value.as_str()), ("state", "running"));
        assert!(parse("state").is_err());
        assert!(parse("=x").is_err());
        let e = check(&[parse("colour=red").unwrap()], "ps", &["state", "service"]).unwrap_err();
        assert_eq!(e.kind(), drover_core::ErrorKind::Invalid);
        assert!(e.to_string().contains("state, service"), "{e}");
    }

    #[test]
    fn globs() {
        assert!(glob("hello:*", "hello:1"));
        assert!(glob("*", ""));
        assert!(glob("h?llo*", "hallo:x"));
        assert!(glob("*:1", "a/b:1"));
        assert!(!glob("hello", "hello:1"));
        assert!(!glob("*:2", "a:1"));
        assert!(glob("a*b*c", "axxbyyc"));
    }
}
