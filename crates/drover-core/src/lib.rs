//! drover-core: all of drover's domain logic. The binary (`crates/drover`) is a
//! thin shell over this crate.
//!
//! Module index. Dependencies point down this list, never up: a module
//! imports only modules below it (tests excepted, which may build an image
//! with the builder to test the store, say). A test (`layering.rs`) reads
//! the sources and holds the code to this order.
//!
//! | module    | owns |
//! |-----------|------|
//! | [`supervisor`] | what `drover serve` runs: a reconciler per service, the traffic thread that drives the proxies (a trait: they are async, in `drover-proxy`), the drift scanner |
//! | [`hosts`] | a host in a fleet (`serve --join`): joining, fencing on return, the heartbeat and the check that marks lapsed hosts down |
//! | [`metrics`] | `drover serve`'s Prometheus metrics: the counters and histograms the supervisor and the proxies feed, what is read from the database at each scrape (instances, releases, ledger), the process's own resources; encoded by `prometheus-client` |
//! | [`trace`]  | `drover trace`: instance → release → image → signatures, provenance, SBOM, baseline, drift |
//! | [`reconcile`] | `drover serve`'s reconciler: the deploy pass, run forever, with back-off |
//! | [`drift`]  | drift: instances against their releases — image, runtime config, process, and the root's every file against the baseline (budgeted); condemns drifted instances for replacement |
//! | [`deploy`] | fleet files, releases, the rollout planner, health gates, traffic hand-over, rollback |
//! | [`backup`] | `store backup` and `store restore`: a whole store in one file, taken while it runs; a new store from it, checked member by member, its instances lost |
//! | [`instance`] | instances: run, stop, remove; logs (stamped in the CRI format, rotated per service, kept after removal until `gc`, read merged by service or release: `log`); their state machine and monitor process; user namespaces and the id-mapped views of roots and volumes (`userns`); the sandbox a build's `run` steps run in (`sandbox`) |
//! | [`builder`] | `drover.toml` parsing, the build plan, deterministic layers, Debian packages under `drover.lock` (`packages`, `lock`), sandboxed `run` steps, accounts, compression, the layer cache, SLSA provenance, SPDX SBOMs |
//! | [`fleet`]  | the fleet's registry (configured once, in the state database) and `fetch_image`: a release's image pulled by digest onto a host that lacks it, checked by the fleet's policy |
//! | [`trust`]  | signatures and attestations on images, the deploy policy, revocations: the one place that refuses an image |
//! | [`store`]  | the OCI image layout: atomic verified blobs, tags, referrers, baselines, unpacked roots, `gc`, `verify`, registries |
//! | [`events`] | `drover events`: what happened (release created / healthy / failed / rolled back, instance started / exited / healed / condemned / lost, drift, refusals, revocations), read from the ledger — nothing new is recorded for them |
//! | [`tokens`] | API tokens: created with a role, stored hashed, revoked, expired; `authenticate` for the HTTP API |
//! | [`state`]  | the transaction seam (`Db`, `Reader`, `Tx`): every mutation and its ledger entry in one transaction; SQLite, its migrations; what a second backend must provide |
//! | [`ledger`] | the audit log's rules: entries, canonical form, the hash chain, signatures, verification, export |
//! | [`keys`]   | Ed25519 keys, the host key, DSSE envelopes (a leaf: the ledger and the trust chain both sign with it) |
//! | [`runtime`] | the `Driver` trait (embedded libcontainer, runc, fake), the OCI runtime config, the embedded init (`--init`: a PID 1 that reaps and forwards signals) |
//! | [`health`] | the health check: its types, its `[...health]` table, its JSON form (an image label) |
//! | `toml_doc` | TOML with positions: every value located, errors naming file:line:column and dotted key |
//! | [`limits`] | every bound on untrusted input and on what drover keeps: manifest and layer sizes, registry time-outs, logs, pids; each named in its error, each set by `DROVER_LIMIT_<NAME>` |
//! | [`grammar`] | every small value grammar, written once: signals, durations, sizes, names, tags, modes, ports |
//! | `durable`, `sys` | atomic file writes (temp + fsync + rename); the few raw system calls |
//! | `fuzz` | (tests only) what the proptest fuzz targets share: their case counts, byte-level mutations. The targets live beside what they test, each in a `fuzz.rs` (run them long with `scripts/fuzz.sh`) |
//! | [`error`], [`digest`], [`clock`], [`progress`] | the error type and its one classifier, the `Digest` type, timestamps, the progress trait long work reports to |
//!
//! Every mutation writes its ledger entry through [`state::Tx::record`],
//! inside the same database transaction as the change itself, so the CLI and
//! the daemon leave the same trail.

pub mod backup;
pub mod builder;
pub mod clock;
pub mod deploy;
pub mod digest;
pub mod drift;
mod durable;
pub mod error;
pub mod events;
pub mod fleet;
#[cfg(test)]
mod fuzz;
pub mod grammar;
pub mod health;
pub mod hosts;
pub mod instance;
pub mod keys;
#[cfg(test)]
mod layering;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod progress;
pub mod reconcile;
pub mod runtime;
pub mod state;
pub mod store;
pub mod supervisor;
mod sys;
pub mod tokens;
mod toml_doc;
pub mod trace;
pub mod trust;

pub use digest::Digest;
pub use error::{Error, ErrorKind, Result};
