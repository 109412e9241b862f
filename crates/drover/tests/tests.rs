//! The integration tests: one binary with a module per topic, so a change
//! to drover-core relinks one test binary rather than sixteen (the way
//! ripgrep's `tests/tests.rs` does it; `Cargo.toml` sets `autotests = false`).
//!
//! One topic: `cargo test -p drover --test tests store::`; one test:
//! `cargo test -p drover --test tests store::gc_keeps_what_tags_reach_and_removes_the_rest`.

mod common;

mod api;
mod attest;
mod audit;
mod backup;
mod bad_input;
mod cli;
mod crash;
mod dashboard;
mod deploy;
mod drift;
mod events;
mod examples;
mod first_hour;
mod fleet;
mod fleet_net;
mod fleet_truth;
mod gc;
mod habits;
mod handover;
mod hostile;
mod hosts;
mod instances;
mod interop;
mod layers;
mod logformat;
mod logs;
mod metrics;
mod netns;
mod package_scripts;
mod packages;
mod policy;
mod readonly_root;
mod references;
mod registry;
mod reproducible;
mod run_layers;
mod serve;
mod smoke;
mod state;
mod store;
mod tokens;
mod trace;
mod volumes;

/// With `autotests = false`, a file added to `tests/` and not declared
/// above would never be compiled or run; this says so instead.
#[test]
fn every_file_in_tests_is_a_module_of_this_binary() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let root = include_str!("tests.rs");
    for entry in std::fs::read_dir(&dir).expect("read tests/") {
        let path = entry.expect("read tests/").path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let is_module = path.extension().is_some_and(|e| e == "rs") || path.join("mod.rs").exists();
        if is_module && stem != "tests" {
            assert!(
                root.lines().any(|l| l == format!("mod {stem};")),
                "tests/{} is not declared in tests/tests.rs: add `mod {stem};` there",
                path.file_name().unwrap().to_string_lossy()
            );
        }
    }
}
