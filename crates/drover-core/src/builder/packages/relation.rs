//! Relation fields (`Depends`, `Pre-Depends`, `Recommends`, `Provides`,
//! `Conflicts`, `Breaks`, ...): comma-separated entries, each a list of `|`
//! alternatives, each `name[:arch] [(op version)] [[arch list]] [<profiles>]`.
//! Architecture restrictions and build profiles (source-package syntax that
//! may still turn up) are evaluated for the target architecture with no
//! build profile active, and what does not apply is dropped.

use std::fmt;

use super::version::{Op, Version};

/// One package relation: a name, an optional architecture qualifier and an
/// optional version constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub name: String,
    /// The qualifier after `:` (`any`, `native`, `amd64`), as written.
    pub arch: Option<String>,
    pub constraint: Option<(Op, Version)>,
}

/// One entry of a relation field: it holds when any alternative holds.
pub type Alternatives = Vec<Relation>;

impl Relation {
    /// Whether `version` satisfies the constraint (always, without one).
    pub fn accepts(&self, version: &Version) -> bool {
        match &self.constraint {
            None => true,
            Some((op, want)) => op.holds(version, want),
        }
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(a) = &self.arch {
            write!(f, ":{a}")?;
        }
        if let Some((op, v)) = &self.constraint {
            write!(f, " ({op} {v})")?;
        }
        Ok(())
    }
}

/// `a | b (>= 1)` as written back.
pub fn alternatives_text(alts: &[Relation]) -> String {
    let parts: Vec<String> = alts.iter().map(Relation::to_string).collect();
    parts.join(" | ")
}

/// Parse a relation field for architecture `arch`. Empty entries (a
/// trailing comma) are skipped.
pub fn parse_relations(field: &str, arch: &str) -> Result<Vec<Alternatives>, String> {
    let mut out = Vec::new();
    for entry in field.split(',') {
        if entry.trim().is_empty() {
            continue;
        }
        let mut alts = Vec::with_capacity(1);
        for alt in entry.split('|') {
            if let Some(rel) =
                parse_one(alt, arch).map_err(|e| format!("{e} in {:?}", entry.trim()))?
            {
                alts.push(rel);
            }
        }
        if !alts.is_empty() {
            out.push(alts);
        }
    }
    Ok(out)
}

/// Parse a field without alternatives (`Provides`, `Conflicts`, `Breaks`):
/// every relation of every entry, flattened.
pub fn parse_flat(field: &str, arch: &str) -> Result<Vec<Relation>, String> {
    Ok(parse_relations(field, arch)?
        .into_iter()
        .flatten()
        .collect())
}

fn is_ws(c: char) -> bool {
    c.is_ascii_whitespace()
}

/// One alternative; `None` when an architecture restriction or build
/// profile excludes it.
fn parse_one(text: &str, arch: &str) -> Result<Option<Relation>, String> {
    let s = text.trim_matches(is_ws);
    let end = s
        .find(|c: char| is_ws(c) || matches!(c, '(' | '[' | '<' | ':'))
        .unwrap_or(s.len());
    let name = &s[..end];
    if name.is_empty() {
        return Err("a package name is missing".to_string());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.' | b'_'))
    {
        return Err(format!("bad package name {name:?}"));
    }
    let mut rest = &s[end..];
    let mut qualifier = None;
    if let Some(q) = rest.strip_prefix(':') {
        let qend = q
            .find(|c: char| is_ws(c) || matches!(c, '(' | '[' | '<'))
            .unwrap_or(q.len());
        if qend == 0 {
            return Err(format!("empty architecture qualifier after {name:?}"));
        }
        qualifier = Some(q[..qend].to_string());
        rest = &q[qend..];
    }
    let mut constraint = None;
    let mut applies = true;
    let mut profiles_seen = false;
    let mut profiles_apply = false;
    loop {
        rest = rest.trim_start_matches(is_ws);
        let Some(c) = rest.chars().next() else { break };
        let close = match c {
            '(' => ')',
            '[' => ']',
            '<' => '>',
            _ => return Err(format!("unexpected {:?} after {name:?}", rest)),
        };
        let Some(len) = rest.find(close) else {
            return Err(format!("missing `{close}` after {name:?}"));
        };
        let inner = rest[1..len].trim_matches(is_ws);
        rest = &rest[len + 1..];
        match c {
            '(' => {
                if constraint.is_some() {
                    return Err(format!("two version constraints on {name:?}"));
                }
                constraint = Some(parse_constraint(inner, name)?);
            }
            '[' => applies &= arch_list_applies(inner, arch, name)?,
            _ => {
                profiles_seen = true;
                // A group holds when all its terms do; with no profile
                // active, only negated terms hold.
                let terms: Vec<&str> = inner.split_ascii_whitespace().collect();
                if terms.is_empty() {
                    return Err(format!("empty build profile list on {name:?}"));
                }
                profiles_apply |= terms.iter().all(|t| t.starts_with('!'));
            }
        }
    }
    if !applies || (profiles_seen && !profiles_apply) {
        return Ok(None);
    }
    Ok(Some(Relation {
        name: name.to_string(),
        arch: qualifier,
        constraint,
    }))
}

fn parse_constraint(inner: &str, name: &str) -> Result<(Op, Version), String> {
    let op_len = inner
        .find(|c: char| !matches!(c, '<' | '>' | '='))
        .unwrap_or(inner.len());
    let op = Op::parse(&inner[..op_len])
        .ok_or_else(|| format!("bad relation operator {:?} on {name:?}", &inner[..op_len]))?;
    let version = inner[op_len..].trim_matches(is_ws);
    let version = Version::parse(version).map_err(|e| format!("{e} on {name:?}"))?;
    Ok((op, version))
}

/// `[amd64 !i386]`: a list of architectures (or wildcards) it applies to, or
/// (all negated) that it does not.
fn arch_list_applies(inner: &str, arch: &str, name: &str) -> Result<bool, String> {
    let terms: Vec<&str> = inner.split_ascii_whitespace().collect();
    if terms.is_empty() {
        return Err(format!("empty architecture list on {name:?}"));
    }
    let negated = terms.iter().filter(|t| t.starts_with('!')).count();
    if negated != 0 && negated != terms.len() {
        return Err(format!(
            "architecture list on {name:?} mixes negated and plain entries"
        ));
    }
    let hit = terms
        .iter()
        .any(|t| arch_matches(t.trim_start_matches('!'), arch));
    Ok(if negated == 0 { hit } else { !hit })
}

/// Whether architecture `arch` (a Linux one) matches `pattern`: itself,
/// `any`, `linux-any`, `any-<arch>`, `linux-<arch>`.
pub fn arch_matches(pattern: &str, arch: &str) -> bool {
    pattern == arch
        || pattern == "any"
        || pattern == "linux-any"
        || pattern.strip_prefix("any-") == Some(arch)
        || pattern.strip_prefix("linux-") == Some(arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rels(s: &str) -> Vec<Vec<String>> {
        parse_relations(s, "amd64")
            .unwrap()
            .iter()
            .map(|alts| alts.iter().map(Relation::to_string).collect())
            .collect()
    }

    #[test]
    fn entries_alternatives_constraints_and_qualifiers() {
        assert_eq!(
            rels(
                "libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0,python3:any,\n libfoo:amd64 (<< 2~),"
            ),
            vec![
                vec!["libc6 (>= 2.34)".to_string()],
                vec!["debconf (>= 0.5)".to_string(), "debconf-2.0".to_string()],
                vec!["python3:any".to_string()],
                vec!["libfoo:amd64 (<< 2~)".to_string()],
            ]
        );
        // Spacing inside the constraint, obsolete `<` / `>`.
        assert_eq!(
            rels("a(>=1.0),b ( =  2:1-1 ),c (<1), d (> 1)"),
            vec![
                vec!["a (>= 1.0)".to_string()],
                vec!["b (= 2:1-1)".to_string()],
                vec!["c (<= 1)".to_string()],
                vec!["d (>= 1)".to_string()],
            ]
        );
        let r = &parse_relations("nginx (>= 1.22.1-9)", "amd64").unwrap()[0][0];
        assert!(r.accepts(&Version::parse("1.22.1-9+deb12u9").unwrap()));
        assert!(!r.accepts(&Version::parse("1.22.1-8").unwrap()));
        assert!(parse_relations("", "amd64").unwrap().is_empty());
    }

    #[test]
    fn arch_restrictions_and_build_profiles() {
        assert_eq!(
            rels("a [amd64], b [!amd64], c [i386 arm64] | d, e [!i386] <!nocheck>"),
            vec![
                vec!["a".to_string()],
                vec!["d".to_string()],
                vec!["e".to_string()],
            ]
        );
        assert_eq!(
            rels("a [linux-any], b [any-amd64], c [kfreebsd-any]"),
            vec![vec!["a".to_string()], vec!["b".to_string()],]
        );
        assert_eq!(
            rels(
                "a <nocheck>, b <!nocheck> <stage1>, c <stage1 !cross>, d (>= 1) [amd64] <!nodoc>"
            ),
            vec![vec!["b".to_string()], vec!["d (>= 1)".to_string()],]
        );
    }

    #[test]
    fn malformed_relations_are_refused() {
        for bad in [
            "a (>= )",
            "a (~ 1)",
            "a (>= 1",
            "a | | b",
            "a [amd64 !i386]",
            "a []",
            "a b",
            "a (>= 1) (<< 2)",
            "a:",
            "A$",
        ] {
            assert!(parse_relations(bad, "amd64").is_err(), "{bad:?} parsed");
        }
        let e = parse_relations("libc6 (=> 2.3)", "amd64").unwrap_err();
        assert!(e.contains("=>") && e.contains("libc6"), "{e}");
    }

    #[test]
    fn flat_fields() {
        let p = parse_flat("awk, mail-transport-agent, python3-foo (= 1.2)", "amd64").unwrap();
        let names: Vec<String> = p.iter().map(Relation::to_string).collect();
        assert_eq!(
            names,
            ["awk", "mail-transport-agent", "python3-foo (= 1.2)"]
        );
    }
}
