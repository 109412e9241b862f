//! Guards the dependency order the module index in `lib.rs` states: a
//! module may import only modules below it. Read from the source, so a new
//! upward `use` fails here, naming the file and both modules, instead of
//! quietly growing a loop (as store → ledger → sign → store once did).

use std::fs;
use std::path::{Path, PathBuf};

/// Top to bottom, as in the index in lib.rs. A module imports only modules
/// after it in this list.
const ORDER: &[&str] = &[
    "supervisor",
    "hosts",
    "metrics",
    "trace",
    "reconcile",
    "drift",
    "deploy",
    "backup",
    "instance",
    "builder",
    "fleet",
    "trust",
    "store",
    "events",
    "tokens",
    "state",
    "ledger",
    "keys",
    "runtime",
    "health",
    "toml_doc",
    "limits",
    "grammar",
    "durable",
    "sys",
    "error",
    "digest",
    "clock",
    "progress",
];

fn rank(module: &str) -> Option<usize> {
    ORDER.iter().position(|m| *m == module)
}

/// Every `.rs` file under `dir`, but test files (`tests.rs`, and the
/// proptest targets in `fuzz.rs`).
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path
                .file_name()
                .is_some_and(|n| n != "tests.rs" && n != "fuzz.rs")
        {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
}

/// `crate::X` paths in the code before its test module (comments skipped).
fn imports(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break;
        }
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

#[test]
fn no_module_imports_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        if matches!(module.as_str(), "lib" | "layering") {
            continue;
        }
        let Some(own) = rank(&module) else {
            wrong.push(format!(
                "{}: module {module} is not in the order (add it to ORDER here and to lib.rs's index)",
                file.display()
            ));
            continue;
        };
        for used in imports(&fs::read_to_string(file).unwrap()) {
            if used == module {
                continue;
            }
            match rank(&used) {
                Some(r) if r > own => {}
                Some(_) => wrong.push(format!(
                    "{}: {module} imports {used}, which is above it",
                    file.display()
                )),
                // Re-exported names at the crate root (`crate::Digest`).
                None => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_order_here_is_the_index_in_lib_rs() {
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let mut listed = Vec::new();
    for line in lib.lines().filter(|l| l.starts_with("//! | ")) {
        let cell = line
            .trim_start_matches("//! | ")
            .split('|')
            .next()
            .unwrap_or("");
        for name in cell.split(',') {
            let name = name.trim().trim_matches(|c| "[]`".contains(c));
            if rank(name).is_some() {
                listed.push(name.to_string());
            }
        }
    }
    assert_eq!(listed, ORDER, "lib.rs's module index and ORDER disagree");
}
