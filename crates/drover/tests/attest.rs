//! Every build attaches a signed SLSA provenance and an SPDX SBOM; outside
//! tools (securesystemslib's DSSE verifier, spdx-tools' validator, from
//! `.test-venv`) accept them as they are stored.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.test-venv/bin/python");

/// The venv's python, or `None` (skip, saying why) when scripts/setup.sh
/// has not been run; CI runs it, so there it is required.
fn python() -> Option<&'static str> {
    if Path::new(PYTHON).exists() {
        return Some(PYTHON);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{PYTHON} is required in CI (scripts/setup.sh makes it)"
    );
    eprintln!("skipping: {PYTHON} missing (run scripts/setup.sh)");
    None
}

/// Run a python script with arguments; returns its stdout, panics with
/// its output when it fails.
fn py(python: &str, script: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    assert!(out.status.success(), "python failed:\n{}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const DPKG_STATUS: &str = "\
Package: busybox-static
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 1:1.36.1-9
Description: Standalone rescue shell
 with tons of builtin utilities

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 2.0

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2024a-0+deb12u1
";

/// The content of the artifact of `artifact_type` attached to `image`,
/// read from the store's blobs the way any OCI tool would.
fn artifact(env: &Env, image: &str, artifact_type: &str) -> (String, PathBuf) {
    let inspect: Value = env.json(&["inspect", image]);
    let found: Vec<&Value> = inspect["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["artifact_type"] == artifact_type)
        .collect();
    assert_eq!(found.len(), 1, "one {artifact_type} in {inspect:#}");
    let digest = found[0]["digest"].as_str().unwrap().to_string();
    let blob = |d: &str| {
        env.store()
            .join("blobs/sha256")
            .join(d.strip_prefix("sha256:").unwrap())
    };
    let manifest: Value = serde_json::from_slice(&fs::read(blob(&digest)).unwrap()).unwrap();
    assert_eq!(manifest["artifactType"], artifact_type);
    assert_eq!(manifest["subject"]["digest"], image);
    (
        digest,
        blob(manifest["layers"][0]["digest"].as_str().unwrap()),
    )
}

const DSSE_CHECK: &str = r#"
import copy, json, sys
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.signer import SSlibKey
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError

key = SSlibKey.from_crypto(load_pem_public_key(open(sys.argv[1], "rb").read()))
raw = json.load(open(sys.argv[2]))
# from_dict rewrites the signatures of the dict it is given.
env = Envelope.from_dict(copy.deepcopy(raw))
env.verify([key], 1)
assert env.payload_type == "application/vnd.in-toto+json", env.payload_type

# One payload byte changed: the signature no longer holds.
bad = Envelope.from_dict(copy.deepcopy(raw))
bad.payload = bytes([bad.payload[0] ^ 0x20]) + bad.payload[1:]
try:
    bad.verify([key], 1)
    sys.exit("a tampered envelope verified")
except VerificationError:
    pass

statement = json.loads(env.payload)
assert statement["_type"] == "https://in-toto.io/Statement/v1", statement["_type"]
assert statement["predicateType"] == "https://slsa.dev/provenance/v1", statement["predicateType"]
assert [s["digest"]["sha256"] for s in statement["subject"]] == [sys.argv[3]], statement["subject"]
print(json.dumps(statement))
"#;

const SPDX_CHECK: &str = r#"
import json, sys
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

doc = parse_file(sys.argv[1])
messages = validate_full_spdx_document(doc)
if messages:
    sys.exit("\n".join(m.validation_message for m in messages))
print(json.dumps({
    "version": doc.creation_info.spdx_version,
    "packages": [
        {"name": p.name, "version": p.version,
         "purls": [r.locator for r in p.external_references if r.reference_type == "purl"]}
        for p in doc.packages
    ],
    "files": {f.name: {c.algorithm.name: c.value for c in f.checksums} for f in doc.files},
}))
"#;

fn sha1_hex(bytes: &[u8]) -> String {
    let out = Command::new(PYTHON)
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.sha1(sys.stdin.buffer.read()).hexdigest())",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .expect("python hashlib");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The in-toto statement of the DSSE envelope at `envelope`, after
/// securesystemslib verified it with the store's host key (and refused it
/// with one payload byte changed) and python checked that it is an in-toto
/// v1 SLSA provenance statement about `image` alone.
fn verified_statement(python: &str, env: &Env, envelope: &Path, image: &str) -> Value {
    let public = env.store().join("keys/host.pub");
    let hex = image.strip_prefix("sha256:").unwrap();
    serde_json::from_str(&py(
        python,
        DSSE_CHECK,
        &[public.as_os_str(), envelope.as_os_str(), hex.as_ref()],
    ))
    .unwrap()
}

/// A busybox image with a dpkg status file, and an app on top of it.
fn images(env: &Env) -> (String, String) {
    let root = env.ctx().join("rootfs");
    let busybox = fs::read("/bin/busybox").expect("busybox-static at /bin/busybox");
    write(&root.join("bin/busybox"), &busybox, 0o755);
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    write(
        &root.join("var/lib/dpkg/status"),
        DPKG_STATUS.as_bytes(),
        0o644,
    );
    env.write_def(
        r#"
[image]
name = "base"
tag = "1"

[[layer]]
kind = "copy"
src = "rootfs"
dest = "/"
"#,
    );
    let base = env.build(&[]);
    // Without the SHA-1s cached for the base's layer, the app's SBOM reads
    // them from the layer blob, as for a pulled base.
    fs::remove_dir_all(env.store().join("cache/sbom")).unwrap();
    env.write_def(&format!(
        r#"
[image]
name = "app"
tag = "1"
base = {{ image = "{base}" }}

[[layer]]
kind = "file"
dest = "/etc/app.conf"
content = "port = 80\n"
"#
    ));
    let app = env.build(&[]);
    (base, app)
}

#[test]
fn provenance_is_a_dsse_envelope_securesystemslib_verifies() {
    let Some(python) = python() else { return };
    if !require("busybox") {
        return;
    }
    let env = Env::new();
    let (base, app) = images(&env);
    let (_, envelope) = artifact(&env, &app, "application/vnd.drover.provenance.v1+json");
    let statement = verified_statement(python, &env, &envelope, &app);

    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(statement["subject"][0]["name"], "app:1");
    assert_eq!(
        format!(
            "sha256:{}",
            statement["subject"][0]["digest"]["sha256"]
                .as_str()
                .unwrap()
        ),
        app
    );
    let p = &statement["predicate"];
    assert_eq!(
        p["runDetails"]["builder"]["id"],
        "https://drover.dev/builder/v1"
    );
    assert_eq!(
        p["runDetails"]["builder"]["version"]["drover"],
        env!("CARGO_PKG_VERSION")
    );
    for t in ["startedOn", "finishedOn"] {
        let v = p["runDetails"]["metadata"][t].as_str().unwrap();
        assert!(v.ends_with('Z') && v.len() >= 20, "{t}: {v}");
    }
    let bd = &p["buildDefinition"];
    assert_eq!(bd["buildType"], "https://drover.dev/build/v1");
    let def_bytes = fs::read(env.ctx().join("drover.toml")).unwrap();
    let def_sha = sha256_hex(&def_bytes);
    assert_eq!(
        bd["externalParameters"]["definition"]["digest"]["sha256"],
        def_sha
    );
    assert_eq!(bd["externalParameters"]["tag"], "app:1");
    let deps = bd["resolvedDependencies"].as_array().unwrap();
    let dep = |name: &str| {
        deps.iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {deps:#?}"))
    };
    assert_eq!(dep("definition")["digest"]["sha256"], def_sha);
    assert_eq!(
        *dep("base-image"),
        serde_json::json!({
            "name": "base-image",
            "uri": format!("oci:{base}"),
            "digest": { "sha256": base.strip_prefix("sha256:").unwrap() },
        })
    );
    assert_eq!(
        dep("file /etc/app.conf")["digest"]["sha256"],
        sha256_hex(b"port = 80\n")
    );

    // `inspect` shows the newest provenance the host key verifies.
    let inspect: Value = env.json(&["inspect", &app]);
    assert_eq!(inspect["provenance"]["base_image"], base.as_str());
    assert_eq!(
        inspect["provenance"]["definition"],
        format!("sha256:{def_sha}")
    );
    assert_eq!(
        inspect["provenance"]["builder_id"],
        "https://drover.dev/builder/v1"
    );

    // The base's provenance names its copy source, and no base image.
    let (_, envelope) = artifact(&env, &base, "application/vnd.drover.provenance.v1+json");
    let statement = verified_statement(python, &env, &envelope, &base);
    let deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!deps.iter().any(|d| d["name"] == "base-image"), "{deps:#?}");
    let copy = deps
        .iter()
        .find(|d| d["name"] == "copy rootfs -> /")
        .unwrap_or_else(|| panic!("{deps:#?}"));
    assert_eq!(copy["uri"], "file:rootfs");
    assert_eq!(copy["digest"]["sha256"].as_str().unwrap().len(), 64);
}

fn sha256_hex(bytes: &[u8]) -> String {
    drover_core::digest::Digest::of(bytes).hex()
}

#[test]
fn sbom_is_valid_spdx_with_the_dpkg_packages_and_every_file() {
    let Some(python) = python() else { return };
    if !require("busybox") {
        return;
    }
    let env = Env::new();
    let (_, app) = images(&env);
    let (_, sbom) = artifact(&env, &app, "application/spdx+json");
    // spdx-tools picks the parser by the file name.
    let file = env.dir.path().join("app.spdx.json");
    fs::copy(&sbom, &file).unwrap();
    let doc: Value = serde_json::from_str(&py(python, SPDX_CHECK, &[file.as_os_str()])).unwrap();

    assert_eq!(doc["version"], "SPDX-2.3");
    let packages = doc["packages"].as_array().unwrap();
    let purls: Vec<&str> = packages
        .iter()
        .flat_map(|p| p["purls"].as_array().unwrap())
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        purls,
        [
            "pkg:deb/debian/busybox-static@1%3A1.36.1-9?arch=amd64",
            "pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all",
        ],
        "installed packages only: {packages:#?}"
    );
    assert!(
        packages.iter().any(|p| p["name"] == app),
        "the image is a package"
    );

    let files = doc["files"].as_object().unwrap();
    let busybox = fs::read("/bin/busybox").unwrap();
    assert_eq!(files["./bin/busybox"]["SHA1"], sha1_hex(&busybox));
    assert_eq!(files["./bin/busybox"]["SHA256"], sha256_hex(&busybox));
    assert_eq!(files["./etc/app.conf"]["SHA1"], sha1_hex(b"port = 80\n"));
    assert!(files.contains_key("./var/lib/dpkg/status"));
    assert!(!files.contains_key("./bin/sh"), "symlinks are not files");
    assert_eq!(files.len(), 3, "{files:#?}");
}

#[test]
fn a_rebuild_keeps_one_provenance_and_one_sbom_and_the_same_digest() {
    let env = sample_env();
    let first = env.build(&[]);
    let out: Value = env.json(&[
        "build",
        "-f",
        env.ctx().join("drover.toml").to_str().unwrap(),
    ]);
    assert_eq!(out["digest"], first.as_str());
    let inspect: Value = env.json(&["inspect", &first]);
    let of_type = |t: &str| -> Vec<String> {
        inspect["referrers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["artifact_type"] == t)
            .map(|r| r["digest"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        of_type("application/vnd.drover.provenance.v1+json"),
        [out["provenance"].as_str().unwrap()],
        "the newest provenance replaces the older one"
    );
    assert_eq!(inspect["provenance"]["artifact"], out["provenance"]);
    assert_eq!(
        of_type("application/spdx+json"),
        [out["sbom"].as_str().unwrap()]
    );
    // Both builds are in the ledger, each naming its provenance.
    let audit = env.ok(&["--json", "audit"]);
    assert_eq!(audit.matches("image.build").count(), 2, "{audit}");
}
