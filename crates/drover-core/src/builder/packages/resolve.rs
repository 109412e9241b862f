//! The dependency closure, as apt would choose it, but pure and
//! deterministic: a universe of packages (from several repositories, maybe
//! several versions of a name) and a request in; the packages to install,
//! each with the chain of relations that pulled it in, and the choices made
//! among providers of a virtual package, out.
//!
//! The rules: one version per package name; a name's candidate is its
//! highest version (first repository on a tie) unless a requirement or
//! relation asks for another, then the highest that satisfies it. Pre-Depends
//! and Depends are followed, Recommends only when asked (and skipped when
//! unsatisfiable, as apt does), Suggests never. Of `a | b`, an alternative
//! already selected wins, else the first that can be satisfied, in order. A
//! virtual package is satisfied by a provider already selected, else the
//! real package of that name, else its only provider, else the provider with
//! the best Priority, then the first name (recorded as a [`Choice`]). With
//! `essential`, every candidate marked `Essential: yes` is added too.
//! Conflicts and Breaks among the result are refused naming both sides.
//! Nothing depends on hash-map iteration order.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use super::index::Package;
use super::relation::{Alternatives, Relation, alternatives_text};
use super::version::{Op, Version};

/// The packages resolution chooses from, with the lookups it needs built
/// once: name → versions (best first), virtual name → providers.
pub struct Universe<'a> {
    packages: &'a [Package],
    by_name: HashMap<&'a str, Vec<usize>>,
    providers: HashMap<&'a str, Vec<(usize, Option<&'a Version>)>>,
}

impl<'a> Universe<'a> {
    pub fn new(packages: &'a [Package]) -> Universe<'a> {
        let mut by_name: HashMap<&str, Vec<usize>> = HashMap::with_capacity(packages.len());
        let mut providers: HashMap<&str, Vec<(usize, Option<&Version>)>> = HashMap::new();
        for (i, p) in packages.iter().enumerate() {
            by_name.entry(p.name.as_str()).or_default().push(i);
            for prov in &p.provides {
                let version = match &prov.constraint {
                    Some((Op::Equal, v)) => Some(v),
                    _ => None,
                };
                providers
                    .entry(prov.name.as_str())
                    .or_default()
                    .push((i, version));
            }
        }
        let best_first = |a: &usize, b: &usize| {
            let (pa, pb) = (&packages[*a], &packages[*b]);
            pb.version
                .cmp(&pa.version)
                .then(pa.repo.cmp(&pb.repo))
                .then(a.cmp(b))
        };
        for list in by_name.values_mut() {
            if list.len() > 1 {
                list.sort_by(best_first);
            }
        }
        for list in providers.values_mut() {
            list.sort_by(|(a, _), (b, _)| {
                packages[*a]
                    .name
                    .cmp(&packages[*b].name)
                    .then(best_first(a, b))
            });
        }
        Universe {
            packages,
            by_name,
            providers,
        }
    }

    pub fn packages(&self) -> &'a [Package] {
        self.packages
    }

    /// The versions of `name` (indexes into [`Universe::packages`]), best first.
    pub fn versions(&self, name: &str) -> &[usize] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }

    /// The highest version of `name`.
    pub fn candidate(&self, name: &str) -> Option<&'a Package> {
        self.versions(name).first().map(|&i| &self.packages[i])
    }

    /// The packages that provide `name`, with the version they provide.
    pub fn providers(&self, name: &str) -> &[(usize, Option<&'a Version>)] {
        self.providers.get(name).map_or(&[], Vec::as_slice)
    }
}

/// One requested package: a name, maybe with a version constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub name: String,
    pub constraint: Option<(Op, Version)>,
}

impl Requirement {
    /// `nginx`, `nginx=1.22.1-9`, `nginx (>= 1.22)`, `nginx>=1.22`.
    pub fn parse(text: &str) -> Result<Requirement, ResolveError> {
        let bad = |reason: &str| ResolveError::BadRequirement {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let s = text.trim();
        let end = s
            .find(|c: char| c.is_ascii_whitespace() || matches!(c, '(' | '<' | '>' | '='))
            .unwrap_or(s.len());
        let name = &s[..end];
        // Upper case is let through: it cannot match, and the error for an
        // unknown name then suggests the right spelling.
        if name.is_empty()
            || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return Err(bad("a package name is letters, digits and + - ."));
        }
        let mut rest = s[end..].trim();
        if rest.is_empty() {
            return Ok(Requirement {
                name: name.to_string(),
                constraint: None,
            });
        }
        if let Some(inner) = rest.strip_prefix('(') {
            rest = inner
                .strip_suffix(')')
                .ok_or_else(|| bad("missing `)`"))?
                .trim();
        }
        let op_len = rest
            .find(|c: char| !matches!(c, '<' | '>' | '='))
            .unwrap_or(rest.len());
        let op = Op::parse(&rest[..op_len])
            .ok_or_else(|| bad("expected one of = << <= >= >> before the version"))?;
        let version = Version::parse(rest[op_len..].trim()).map_err(|e| bad(&e.to_string()))?;
        Ok(Requirement {
            name: name.to_string(),
            constraint: Some((op, version)),
        })
    }

    fn relation(&self) -> Relation {
        Relation {
            name: self.name.clone(),
            arch: None,
            constraint: self.constraint.clone(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.constraint {
            None => f.write_str(&self.name),
            Some((Op::Equal, v)) => write!(f, "{}={v}", self.name),
            Some((op, v)) => write!(f, "{} ({op} {v})", self.name),
        }
    }
}

/// What to resolve.
#[derive(Debug, Clone)]
pub struct Request {
    pub packages: Vec<Requirement>,
    /// The target architecture (for `name:arch` qualifiers).
    pub arch: String,
    /// Follow Recommends too.
    pub recommends: bool,
    /// Add every `Essential: yes` package and its closure.
    pub essential: bool,
}

/// One package of the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Index into [`Universe::packages`].
    pub package: usize,
    /// How it got in: the requirement (or `<name> (essential)`), then each
    /// relation that led here, as written: `["nginx-light", "nginx (>=
    /// 1.22.1-9)", "libc6 (>= 2.34)"]`.
    pub why: Vec<String>,
}

impl Resolved {
    /// `nginx-light → nginx (>= 1.22.1-9) → libc6 (>= 2.34)`.
    pub fn why_text(&self) -> String {
        self.why.join(" → ")
    }
}

/// A provider picked among several for a virtual package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The relation, as written (`awk`, `debconf-2.0`).
    pub relation: String,
    /// The chain that asked for it (see [`Resolved::why`]).
    pub why: Vec<String>,
    /// The provider taken.
    pub chosen: String,
    /// Every provider that would have done, sorted by name.
    pub providers: Vec<String>,
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let others: Vec<&str> = self
            .providers
            .iter()
            .map(String::as_str)
            .filter(|p| *p != self.chosen)
            .collect();
        let asked = match self.why.as_slice() {
            [] => "requested".to_string(),
            why => format!("for {}", why.join(" → ")),
        };
        write!(
            f,
            "{} ({asked}): chose {} over {} (best Priority, then name; request the one you want to pick it)",
            self.relation,
            self.chosen,
            others.join(", ")
        )
    }
}

/// The result: packages sorted by name, and the provider choices made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub packages: Vec<Resolved>,
    pub choices: Vec<Choice>,
}

/// Why a request cannot be resolved; each message is meant for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "{text:?} is not a package requirement ({reason}); write `name`, `name=version` or `name (>= version)`"
    )]
    BadRequirement { text: String, reason: String },

    #[error("{}", unknown_message(.name, .suggestions, .mentioned_by))]
    UnknownPackage {
        name: String,
        /// Up to three close names that exist.
        suggestions: Vec<String>,
        /// When nothing provides it but packages name it in a relation: a
        /// virtual package without a provider here. Up to three of them.
        mentioned_by: Vec<String>,
    },

    #[error("{requirement}: no such version; available: {}", .available.join(", "))]
    VersionNotAvailable {
        requirement: String,
        available: Vec<String>,
    },

    #[error("unsatisfiable dependency: {}: {detail}", .chain.join(" → "))]
    Unsatisfiable { chain: Vec<String>, detail: String },

    #[error("{0}")]
    Conflict(Box<Conflict>),
}

/// Two selected packages that cannot be installed together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{a} and {b} cannot be installed together ({a_name} has {field}: {relation}); {a_name} comes from {why_a}, {b_name} from {why_b}"
)]
pub struct Conflict {
    /// `name version` of the package whose field says so.
    pub a: String,
    pub a_name: String,
    pub b: String,
    pub b_name: String,
    /// `Conflicts` or `Breaks`.
    pub field: &'static str,
    pub relation: String,
    pub why_a: String,
    pub why_b: String,
}

fn unknown_message(name: &str, suggestions: &[String], mentioned_by: &[String]) -> String {
    if !mentioned_by.is_empty() {
        return format!(
            "package {name:?} is a virtual package that no package in these repositories provides (named by {}); list a package that provides it",
            mentioned_by.join(", ")
        );
    }
    match suggestions {
        [] => format!(
            "package {name:?} is not in these repositories (check the name, the suite and the components)"
        ),
        s => format!(
            "package {name:?} is not in these repositories; did you mean {}?",
            s.join(", ")
        ),
    }
}

/// Resolve `request` against `universe`.
pub fn resolve(universe: &Universe<'_>, request: &Request) -> Result<Resolution, ResolveError> {
    let mut r = Resolver {
        u: universe,
        arch: &request.arch,
        selected: HashMap::new(),
        provided: HashMap::new(),
        order: Vec::new(),
        why: Vec::new(),
        choices: Vec::new(),
    };
    // Real names first, so `awk` after `gawk` in one request takes gawk.
    let (real, virt): (Vec<&Requirement>, Vec<&Requirement>) = request
        .packages
        .iter()
        .partition(|q| !universe.versions(&q.name).is_empty());
    for q in real.into_iter().chain(virt) {
        r.request(q)?;
    }
    if request.essential {
        let mut names: Vec<&str> = universe
            .by_name
            .iter()
            .filter(|(_, v)| universe.packages[v[0]].essential)
            .map(|(n, _)| *n)
            .collect();
        names.sort_unstable();
        for name in names {
            if !r.selected.contains_key(name) {
                let i = universe.versions(name)[0];
                r.select(i, vec![format!("{name} (essential)")]);
            }
        }
    }
    let mut queue: VecDeque<usize> = (0..r.order.len()).collect();
    while let Some(at) = queue.pop_front() {
        let p = &universe.packages[r.order[at]];
        let fields = p.pre_depends.iter().chain(&p.depends).map(|a| (a, true));
        let recommends = p
            .recommends
            .iter()
            .filter(|_| request.recommends)
            .map(|a| (a, false));
        for (alts, required) in fields.chain(recommends) {
            let before = r.order.len();
            r.satisfy(at, alts, required)?;
            queue.extend(before..r.order.len());
        }
    }
    r.check_conflicts()?;
    let mut packages: Vec<Resolved> = r
        .order
        .iter()
        .zip(r.why)
        .map(|(&package, why)| Resolved { package, why })
        .collect();
    packages.sort_by(|a, b| {
        universe.packages[a.package]
            .name
            .cmp(&universe.packages[b.package].name)
    });
    Ok(Resolution {
        packages,
        choices: r.choices,
    })
}

struct Resolver<'u, 'a> {
    u: &'u Universe<'a>,
    arch: &'u str,
    /// Name → position in `order`.
    selected: HashMap<&'a str, usize>,
    /// Virtual name → (position in `order`, provided version).
    provided: HashMap<&'a str, Vec<(usize, Option<&'a Version>)>>,
    /// Selected package indexes, in the order they were selected.
    order: Vec<usize>,
    why: Vec<Vec<String>>,
    choices: Vec<Choice>,
}

/// How a relation can be met by a package not selected yet.
enum Way {
    Package(usize),
    /// Several providers: the one taken and every name that would do.
    Chosen(usize, Vec<String>),
}

impl<'u, 'a> Resolver<'u, 'a> {
    fn pkg(&self, at: usize) -> &'a Package {
        &self.u.packages[self.order[at]]
    }

    fn select(&mut self, i: usize, why: Vec<String>) {
        let p = &self.u.packages[i];
        let at = self.order.len();
        self.order.push(i);
        self.why.push(why);
        self.selected.insert(p.name.as_str(), at);
        for prov in &p.provides {
            let v = match &prov.constraint {
                Some((Op::Equal, v)) => Some(v),
                _ => None,
            };
            self.provided
                .entry(prov.name.as_str())
                .or_default()
                .push((at, v));
        }
    }

    /// Whether a `:qualifier` can be met on this single-architecture system.
    fn qualifier_ok(&self, rel: &Relation) -> bool {
        match rel.arch.as_deref() {
            None | Some("any") | Some("native") => true,
            Some(a) => a == self.arch,
        }
    }

    /// The selected package that satisfies `rel`, if any.
    fn satisfied(&self, rel: &Relation) -> Option<usize> {
        if !self.qualifier_ok(rel) {
            return None;
        }
        if let Some(&at) = self.selected.get(rel.name.as_str())
            && rel.accepts(&self.pkg(at).version)
        {
            return Some(at);
        }
        self.provided
            .get(rel.name.as_str())?
            .iter()
            .find(|(_, pv)| provides_match(rel, *pv))
            .map(|(at, _)| *at)
    }

    /// A package not yet selected that would satisfy `rel`.
    fn way(&self, rel: &Relation) -> Option<Way> {
        if !self.qualifier_ok(rel) {
            return None;
        }
        if !self.selected.contains_key(rel.name.as_str())
            && let Some(&i) = self
                .u
                .versions(&rel.name)
                .iter()
                .find(|&&i| rel.accepts(&self.u.packages[i].version))
        {
            return Some(Way::Package(i));
        }
        // Providers: the best version of each name not selected yet
        // (the list is sorted by name, then best version first).
        let mut options: Vec<usize> = Vec::new();
        for &(i, pv) in self.u.providers(&rel.name) {
            let p = &self.u.packages[i];
            if self.selected.contains_key(p.name.as_str()) || !provides_match(rel, pv) {
                continue;
            }
            if options
                .last()
                .is_some_and(|&j| self.u.packages[j].name == p.name)
            {
                continue;
            }
            options.push(i);
        }
        match options.len() {
            0 => None,
            1 => Some(Way::Package(options[0])),
            _ => {
                let names = options
                    .iter()
                    .map(|&i| self.u.packages[i].name.clone())
                    .collect();
                let best = *options
                    .iter()
                    .min_by(|&&a, &&b| {
                        let (pa, pb) = (&self.u.packages[a], &self.u.packages[b]);
                        pa.priority.cmp(&pb.priority).then(pa.name.cmp(&pb.name))
                    })
                    .expect("two or more options");
                Some(Way::Chosen(best, names))
            }
        }
    }

    fn take(&mut self, way: Way, relation: String, why: Vec<String>) {
        let mut chain = why;
        chain.push(relation.clone());
        match way {
            Way::Package(i) => self.select(i, chain),
            Way::Chosen(i, providers) => {
                self.choices.push(Choice {
                    relation,
                    why: chain[..chain.len() - 1].to_vec(),
                    chosen: self.u.packages[i].name.clone(),
                    providers,
                });
                self.select(i, chain);
            }
        }
    }

    fn request(&mut self, q: &Requirement) -> Result<(), ResolveError> {
        let rel = q.relation();
        if self.satisfied(&rel).is_some() {
            return Ok(());
        }
        if let Some(&at) = self.selected.get(q.name.as_str()) {
            return Err(ResolveError::Unsatisfiable {
                chain: vec![q.to_string()],
                detail: format!("{} is already requested", self.pkg(at).label()),
            });
        }
        match self.way(&rel) {
            Some(way) => {
                // The chain starts with the requirement itself.
                let text = q.to_string();
                match way {
                    Way::Package(i) => self.select(i, vec![text]),
                    Way::Chosen(..) => self.take(way, text, Vec::new()),
                }
                Ok(())
            }
            None => {
                let versions = self.u.versions(&q.name);
                let provs = self.u.providers(&q.name);
                if versions.is_empty() && provs.is_empty() {
                    return Err(unknown(self.u, &q.name));
                }
                let mut available: Vec<String> = versions
                    .iter()
                    .map(|&i| self.u.packages[i].version.to_string())
                    .collect();
                available.extend(provs.iter().map(|&(i, pv)| {
                    let p = &self.u.packages[i];
                    match pv {
                        Some(v) => format!("{v} (provided by {})", p.label()),
                        None => format!("provided without a version by {}", p.label()),
                    }
                }));
                available.dedup();
                Err(ResolveError::VersionNotAvailable {
                    requirement: q.to_string(),
                    available,
                })
            }
        }
    }

    /// Meet one entry of a relation field of the package at `at`.
    fn satisfy(
        &mut self,
        at: usize,
        alts: &Alternatives,
        required: bool,
    ) -> Result<(), ResolveError> {
        if alts.iter().any(|rel| self.satisfied(rel).is_some()) {
            return Ok(());
        }
        for rel in alts {
            if let Some(way) = self.way(rel) {
                let why = self.why[at].clone();
                let text = if alts.len() == 1 {
                    rel.to_string()
                } else {
                    alternatives_text(alts)
                };
                self.take(way, text, why);
                return Ok(());
            }
        }
        if !required {
            return Ok(());
        }
        let mut chain = self.why[at].clone();
        let name = &self.pkg(at).name;
        let last = chain.last().map_or("", String::as_str);
        let named = last
            .strip_prefix(name.as_str())
            .is_some_and(|r| r.is_empty() || r.starts_with([' ', ':', '=']));
        if !named {
            // Reached through a virtual name or an essential root: name
            // the package itself too.
            chain.push(name.clone());
        }
        chain.push(alternatives_text(alts));
        let details: Vec<String> = alts.iter().map(|rel| self.why_not(rel)).collect();
        let detail = if alts.len() == 1 {
            details.into_iter().next().unwrap_or_default()
        } else {
            alts.iter()
                .zip(details)
                .map(|(rel, d)| format!("{}: {d}", rel.name))
                .collect::<Vec<_>>()
                .join("; ")
        };
        Err(ResolveError::Unsatisfiable { chain, detail })
    }

    /// Why nothing satisfies `rel`.
    fn why_not(&self, rel: &Relation) -> String {
        if !self.qualifier_ok(rel) {
            return format!(
                "architecture {:?} is not the target {}",
                rel.arch.as_deref().unwrap_or(""),
                self.arch
            );
        }
        if let Some(&at) = self.selected.get(rel.name.as_str()) {
            return format!(
                "{} is already selected (by {})",
                self.pkg(at).label(),
                self.why[at].join(" → ")
            );
        }
        let versions: Vec<String> = self
            .u
            .versions(&rel.name)
            .iter()
            .map(|&i| self.u.packages[i].version.to_string())
            .collect();
        let provs: Vec<String> = self
            .u
            .providers(&rel.name)
            .iter()
            .map(|&(i, pv)| match pv {
                Some(v) => format!("{} provides {v}", self.u.packages[i].name),
                None => format!("{} provides it without a version", self.u.packages[i].name),
            })
            .collect();
        match (versions.is_empty(), provs.is_empty()) {
            (true, true) => format!("{} is not in these repositories", rel.name),
            (false, true) => format!("available {}", versions.join(", ")),
            (true, false) => provs.join(", "),
            (false, false) => format!("available {}; {}", versions.join(", "), provs.join(", ")),
        }
    }

    /// Refuse Conflicts and Breaks among the selected packages.
    fn check_conflicts(&self) -> Result<(), ResolveError> {
        let mut positions: Vec<usize> = (0..self.order.len()).collect();
        positions.sort_by(|&a, &b| self.pkg(a).name.cmp(&self.pkg(b).name));
        for &at in &positions {
            let p = self.pkg(at);
            let fields = p
                .conflicts
                .iter()
                .map(|r| ("Conflicts", r))
                .chain(p.breaks.iter().map(|r| ("Breaks", r)));
            for (field, rel) in fields {
                let mut hits: Vec<usize> = Vec::new();
                if let Some(&other) = self.selected.get(rel.name.as_str())
                    && other != at
                    && rel.accepts(&self.pkg(other).version)
                {
                    hits.push(other);
                }
                if let Some(list) = self.provided.get(rel.name.as_str()) {
                    hits.extend(
                        list.iter()
                            .filter(|(o, pv)| *o != at && provides_match(rel, *pv))
                            .map(|(o, _)| *o),
                    );
                }
                if let Some(&other) = hits
                    .iter()
                    .min_by(|&&a, &&b| self.pkg(a).name.cmp(&self.pkg(b).name))
                {
                    return Err(ResolveError::Conflict(Box::new(Conflict {
                        a: p.label(),
                        a_name: p.name.clone(),
                        b: self.pkg(other).label(),
                        b_name: self.pkg(other).name.clone(),
                        field,
                        relation: rel.to_string(),
                        why_a: self.why[at].join(" → "),
                        why_b: self.why[other].join(" → "),
                    })));
                }
            }
        }
        Ok(())
    }
}

/// Whether a provision (with its version, if any) meets `rel`: an
/// unversioned relation takes any provider; a versioned one only a
/// versioned provision that satisfies it.
fn provides_match(rel: &Relation, provided: Option<&Version>) -> bool {
    match (&rel.constraint, provided) {
        (None, _) => true,
        (Some((op, want)), Some(v)) => op.holds(v, want),
        (Some(_), None) => false,
    }
}

/// The error for a name nothing has or provides: close names, or the
/// packages that mention it when it is a virtual package without provider.
fn unknown(u: &Universe<'_>, name: &str) -> ResolveError {
    let mut mentioned_by: Vec<&str> = u
        .packages
        .iter()
        .filter(|p| {
            p.depends
                .iter()
                .chain(&p.pre_depends)
                .chain(&p.recommends)
                .flatten()
                .any(|r| r.name == name)
        })
        .map(|p| p.name.as_str())
        .collect();
    mentioned_by.sort_unstable();
    mentioned_by.dedup();
    mentioned_by.truncate(3);
    let names = u.by_name.keys().chain(u.providers.keys()).copied();
    ResolveError::UnknownPackage {
        name: name.to_string(),
        suggestions: suggest(name, names),
        mentioned_by: mentioned_by.into_iter().map(str::to_string).collect(),
    }
}

/// Up to three names close to `wanted`: by edit distance (transpositions
/// count one), then those that start with it, then those that contain it,
/// then those it starts with.
pub fn suggest<'n>(wanted: &str, names: impl Iterator<Item = &'n str>) -> Vec<String> {
    let wanted = wanted.to_ascii_lowercase();
    let w = wanted.as_bytes();
    let limit = (w.len() / 3).clamp(1, 3);
    let mut scored: Vec<((u8, usize), &str)> = Vec::new();
    for name in names {
        let n = name.as_bytes();
        let score = if n.len().abs_diff(w.len()) <= limit && osa_distance(w, n) <= limit {
            (0, osa_distance(w, n))
        } else if w.len() >= 3 && name.starts_with(wanted.as_str()) {
            (1, n.len() - w.len())
        } else if w.len() >= 3 && name.contains(wanted.as_str()) {
            (2, n.len() - w.len())
        } else if n.len() >= 4 && wanted.starts_with(name) {
            (3, w.len() - n.len())
        } else {
            continue;
        };
        scored.push((score, name));
    }
    scored.sort_unstable();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(3)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// Optimal string alignment distance (Levenshtein plus adjacent swaps).
fn osa_distance(a: &[u8], b: &[u8]) -> usize {
    let mut prev2 = vec![0usize; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0usize; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(prev2[j - 2] + 1);
            }
            cur[j] = d;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests;
