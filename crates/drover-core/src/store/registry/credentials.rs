//! Who drover is to a registry: `DROVER_REGISTRY_USER` and
//! `DROVER_REGISTRY_PASSWORD` if both are set, else what Docker's
//! `config.json` (`$DOCKER_CONFIG/config.json`, or `~/.docker/config.json`)
//! says, in Docker's order:
//!
//! 1. `credHelpers.<registry>`: the helper `docker-credential-<name>`;
//! 2. `credsStore`: the helper for every registry;
//! 3. `auths.<registry>.auth`: base64 of `user:password`.
//!
//! A helper is run as `docker-credential-<name> get` with the server on
//! stdin, and answers `{"ServerURL", "Username", "Secret"}`; one that has
//! nothing for the server fails saying "credentials not found", which means
//! anonymous (or the `auths` entry, if there is one). Docker Hub's entries
//! are keyed `https://index.docker.io/v1/`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::error::{Error, Result};

/// The key Docker files Docker Hub's credentials under.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Credentials for `registry` (`host[:port]`, `docker.io` for Docker Hub),
/// or `None` for anonymous access.
pub fn credentials(registry: &str) -> Result<Option<(String, String)>> {
    if let (Ok(user), Ok(pass)) = (
        std::env::var("DROVER_REGISTRY_USER"),
        std::env::var("DROVER_REGISTRY_PASSWORD"),
    ) {
        return Ok(Some((user, pass)));
    }
    let path = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir).join("config.json"),
        None => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".docker/config.json"),
            None => return Ok(None),
        },
    };
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(None);
    };
    let what = || format!("docker config {}", path.display());
    let config: Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(what(), e.to_string()))?;
    if let Some(helper) = helper_for(&config, registry)
        && let Some(found) = from_helper(&helper, &server_key(registry))?
    {
        return Ok(Some(found));
    }
    docker_config_auth(&config, registry).map_err(|reason| Error::corrupt(what(), reason))
}

/// What Docker names `registry` by in its config and to its helpers.
fn server_key(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_KEY.into(),
        r => r.into(),
    }
}

/// The keys an entry for `registry` may be filed under.
fn keys(registry: &str) -> Vec<String> {
    let key = server_key(registry);
    vec![
        key.clone(),
        format!("https://{key}"),
        format!("http://{key}"),
    ]
}

/// The helper `config` names for `registry`: its `credHelpers` entry, else
/// `credsStore`.
fn helper_for(config: &Value, registry: &str) -> Option<String> {
    let helpers = config.get("credHelpers");
    keys(registry)
        .iter()
        .find_map(|k| helpers.and_then(|h| h.get(k)))
        .or_else(|| config.get("credsStore"))
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// Ask `docker-credential-<helper>` for `server`'s credentials.
fn from_helper(helper: &str, server: &str) -> Result<Option<(String, String)>> {
    let program = format!("docker-credential-{helper}");
    let failed = |why: String| Error::Failed(format!("credential helper {program}: {why}"));
    if helper.contains('/') {
        return Err(failed("a helper is named, not a path".into()));
    }
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            failed(format!(
                "{e} (Docker's config.json names it; install it on PATH, or remove the entry)"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is reported by its status.
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    parse_helper_answer(out.status.success(), &out.stdout, &out.stderr, server).map_err(failed)
}

/// A helper's answer to `get`: credentials, none, or why it is unusable.
fn parse_helper_answer(
    ok: bool,
    stdout: &[u8],
    stderr: &[u8],
    server: &str,
) -> std::result::Result<Option<(String, String)>, String> {
    if !ok {
        let said = String::from_utf8_lossy(if stdout.is_empty() { stderr } else { stdout });
        let said = said.trim();
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(format!("get {server} failed: {said}"));
    }
    let answer: Value = serde_json::from_slice(stdout)
        .map_err(|e| format!("its answer for {server} is not JSON: {e}"))?;
    let field = |k: &str| answer.get(k).and_then(Value::as_str).unwrap_or_default();
    let (user, secret) = (field("Username"), field("Secret"));
    if secret.is_empty() {
        return Ok(None);
    }
    if user == "<token>" {
        return Err(format!(
            "it holds an identity token for {server}, which drover cannot exchange yet; \
             set DROVER_REGISTRY_USER and DROVER_REGISTRY_PASSWORD instead"
        ));
    }
    Ok(Some((user.to_string(), secret.to_string())))
}

/// The basic-auth credentials `auths` holds for `registry`, if any.
fn docker_config_auth(
    config: &Value,
    registry: &str,
) -> std::result::Result<Option<(String, String)>, String> {
    let auths = config.get("auths");
    let entry = keys(registry)
        .iter()
        .find_map(|k| auths.and_then(|a| a.get(k)))
        .and_then(|e| e.get("auth"))
        .and_then(|a| a.as_str());
    let Some(encoded) = entry else {
        return Ok(None);
    };
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        })
        .map(Some)
        .ok_or_else(|| format!("auths.{registry}.auth is not base64 of user:password"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &[u8]) -> Value {
        serde_json::from_slice(s).unwrap()
    }

    #[test]
    fn reads_docker_config_auths() {
        // base64("me:pa:ss") — the password may hold colons.
        let config = json(
            br#"{"auths":{"r.io":{"auth":"bWU6cGE6c3M="},"https://s.io":{"auth":"bWU6cGE6c3M="},"bad.io":{"auth":"!!"},"https://index.docker.io/v1/":{"auth":"bWU6cGE6c3M="}}}"#,
        );
        let me = Some(("me".to_string(), "pa:ss".to_string()));
        assert_eq!(docker_config_auth(&config, "r.io").unwrap(), me);
        assert_eq!(docker_config_auth(&config, "s.io").unwrap(), me);
        assert_eq!(docker_config_auth(&config, "docker.io").unwrap(), me);
        assert_eq!(docker_config_auth(&config, "t.io").unwrap(), None);
        assert!(docker_config_auth(&config, "bad.io").is_err());
        assert_eq!(docker_config_auth(&json(b"{}"), "r.io").unwrap(), None);
    }

    #[test]
    fn cred_helpers_come_before_the_store() {
        let config = json(br#"{"credsStore":"desktop","credHelpers":{"r.io":"pass"}}"#);
        assert_eq!(helper_for(&config, "r.io").as_deref(), Some("pass"));
        assert_eq!(helper_for(&config, "s.io").as_deref(), Some("desktop"));
        assert_eq!(helper_for(&json(b"{}"), "s.io"), None);
        let hub = json(br#"{"credHelpers":{"https://index.docker.io/v1/":"hub"}}"#);
        assert_eq!(helper_for(&hub, "docker.io").as_deref(), Some("hub"));
    }

    #[test]
    fn reads_helper_answers() {
        let ok = br#"{"ServerURL":"r.io","Username":"me","Secret":"s3"}"#;
        assert_eq!(
            parse_helper_answer(true, ok, b"", "r.io").unwrap(),
            Some(("me".into(), "s3".into()))
        );
        assert_eq!(
            parse_helper_answer(
                false,
                b"credentials not found in native keychain\n",
                b"",
                "r.io"
            )
            .unwrap(),
            None
        );
        let e = parse_helper_answer(false, b"", b"boom", "r.io").unwrap_err();
        assert!(e.contains("boom"), "{e}");
        let token = br#"{"Username":"<token>","Secret":"t"}"#;
        let e = parse_helper_answer(true, token, b"", "r.io").unwrap_err();
        assert!(e.contains("identity token"), "{e}");
        assert!(parse_helper_answer(true, b"nope", b"", "r.io").is_err());
    }
}
