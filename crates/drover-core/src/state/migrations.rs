//! The schema and its versioned migrations (`PRAGMA user_version`).

use std::path::Path;

use super::DbContext;
use super::sql::{Conn, Dialect, OptionalExtension};
use crate::error::{Error, Result};

/// Schema migrations, in order. Migration `i` (0-based) takes the database
/// from `PRAGMA user_version` `i` to `i + 1`, in one transaction together with
/// the version bump, so a crash mid-migration leaves the previous version.
///
/// APPEND-ONLY. Never edit or reorder a migration that has shipped: databases
/// in the field have already run it, and would silently differ from fresh
/// ones. Fix mistakes with a new migration.
///
/// OLDER MONITORS KEEP WRITING. An instance's monitor outlives upgrades:
/// the drover binary that started it may be older than the schema
/// ([`super::Db::open_for_monitor`]). A migration must keep what it writes
/// valid — instance rows (`claim`, state transitions, exits) and ledger
/// entries: add tables, nullable or defaulted columns, indexes; never drop
/// or rename their columns, add a NOT NULL column without a default, or a
/// trigger that refuses what an older drover writes.
pub(super) const SQLITE: &[&str] = &[
    // 1: image tags, OCI referrers, store metadata, the ledger.
    r#"
-- Image tags: `name:tag` -> manifest digest.
CREATE TABLE tags (
    name       TEXT PRIMARY KEY,
    digest     TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size       INTEGER NOT NULL,
    created    TEXT NOT NULL
);

-- OCI 1.1 artifacts (signatures, SBOMs, ...) attached to a subject manifest.
CREATE TABLE referrers (
    digest        TEXT PRIMARY KEY,
    subject       TEXT NOT NULL,
    artifact_type TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    size          INTEGER NOT NULL
);
CREATE INDEX referrers_subject ON referrers (subject);

-- Small store-wide values, e.g. a generation counter.
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The audit ledger (see ledger/mod.rs for the hash chain). `subjects` is a
-- JSON array of strings, `details` canonical JSON.
CREATE TABLE ledger (
    seq       INTEGER PRIMARY KEY,
    time      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subjects  TEXT NOT NULL,
    details   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);

-- The seq and hash of the last entry, written in the same transaction as
-- the entry: deleting entries from the end leaves the head pointing past them.
CREATE TABLE ledger_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);

-- The ledger is append-only. These do not stop anyone who can drop them (the
-- hash chain is what detects that); they stop a drover bug or a careless
-- hand edit from rewriting history quietly.
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'the ledger is append-only: entries cannot be changed');
END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'the ledger is append-only: entries cannot be deleted');
END;
"#,
    // 2: instances (see instance/mod.rs for the state machine).
    r#"
CREATE TABLE instances (
    id            TEXT PRIMARY KEY,
    name          TEXT,
    image         TEXT NOT NULL,  -- manifest digest
    image_ref     TEXT NOT NULL,  -- what the user asked for
    release       INTEGER,
    driver        TEXT NOT NULL,
    state         TEXT NOT NULL,  -- created | running | stopping | exited | deleted
    pid           INTEGER,
    pid_start     INTEGER,        -- with pid, names one process despite pid reuse
    monitor_pid   INTEGER,
    monitor_start INTEGER,
    port          INTEGER,
    created       TEXT NOT NULL,
    started       TEXT,
    finished      TEXT,
    exit_code     INTEGER,
    exit_signal   INTEGER,
    stop_signal   INTEGER NOT NULL,
    launch        TEXT NOT NULL   -- JSON: everything the runtime config was made from
);
CREATE UNIQUE INDEX instances_live_name ON instances (name)
    WHERE name IS NOT NULL AND state != 'deleted';
"#,
    // 3: services, releases, quarantine, deploy locks, instance transitions.
    r#"
-- Services: what should run, as last applied (see deploy/mod.rs).
CREATE TABLE services (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,  -- JSON: replicas, strategy, the release content as written
    spec_digest TEXT NOT NULL,  -- digest of the fleet entry as written: apply acts when it changes
    desired     INTEGER,        -- the release that should run
    created     TEXT NOT NULL,
    updated     TEXT NOT NULL
);

-- Releases: numbered per service, immutable, append-only; only the outcome
-- moves, once, from pending.
CREATE TABLE releases (
    service       TEXT NOT NULL REFERENCES services (name),
    number        INTEGER NOT NULL,
    image         TEXT NOT NULL,  -- manifest digest
    image_ref     TEXT NOT NULL,  -- as written in the fleet file
    config        TEXT NOT NULL,  -- JSON: env, volumes, limits, capabilities, health, driver
    config_digest TEXT NOT NULL,
    author        TEXT NOT NULL,
    message       TEXT NOT NULL,
    created       TEXT NOT NULL,
    parent        INTEGER,        -- the release it replaced
    rollback_of   INTEGER,        -- for a rollback: the release whose content it repeats
    outcome       TEXT NOT NULL,  -- pending | healthy | failed
    reason        TEXT,
    PRIMARY KEY (service, number)
);
CREATE TRIGGER releases_no_delete BEFORE DELETE ON releases
BEGIN
    SELECT RAISE(ABORT, 'releases are append-only: they cannot be deleted');
END;
CREATE TRIGGER releases_immutable BEFORE UPDATE OF service, number, image, image_ref, config,
    config_digest, author, message, created, parent, rollback_of ON releases
BEGIN
    SELECT RAISE(ABORT, 'releases are immutable');
END;
CREATE TRIGGER releases_outcome_once BEFORE UPDATE OF outcome ON releases
    WHEN OLD.outcome != 'pending'
BEGIN
    SELECT RAISE(ABORT, 'a release outcome is final');
END;

-- Release contents (image digest + config digest) that failed for a
-- service; applying one again needs --force.
CREATE TABLE quarantine (
    service TEXT NOT NULL,
    image   TEXT NOT NULL,
    config  TEXT NOT NULL,
    release INTEGER NOT NULL,
    reason  TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (service, image, config)
);

-- Leases with fencing tokens (deploy/lock.rs). Rows stay, so tokens only grow.
CREATE TABLE locks (
    name    TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    token   INTEGER NOT NULL,
    expires INTEGER NOT NULL  -- unix milliseconds
);

-- Which service an instance belongs to, and every state change it made.
ALTER TABLE instances ADD COLUMN service TEXT;
CREATE INDEX instances_service ON instances (service);
CREATE TABLE instance_transitions (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    instance TEXT NOT NULL,
    time     TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL
);
CREATE INDEX instance_transitions_instance ON instance_transitions (instance);
"#,
    // 4: traffic, self-healing and drift (deploy/traffic.rs, reconcile.rs, drift/).
    r#"
-- Traffic: an instance takes requests once it passed its health check
-- (ready_at) and until a deploy drains it (drain_at); a proxy that saw its
-- last request finish says so (drained_at). Unix milliseconds.
ALTER TABLE instances ADD COLUMN ready_at INTEGER;
ALTER TABLE instances ADD COLUMN drain_at INTEGER;
ALTER TABLE instances ADD COLUMN drained_at INTEGER;
-- Why the instance must be replaced (drift, a failing health check).
ALTER TABLE instances ADD COLUMN condemned TEXT;
-- Digest of the config.json it was created with (drift compares the file).
ALTER TABLE instances ADD COLUMN config_digest TEXT;
-- Service instances running before this migration passed their gates.
UPDATE instances SET ready_at = 0 WHERE service IS NOT NULL AND state = 'running';

-- Live proxies of `drover serve`, one row per service; a deploy that stops
-- an instance waits for them to drain it while heartbeat is recent.
CREATE TABLE proxies (
    service   TEXT PRIMARY KEY,
    holder    TEXT NOT NULL,   -- user@host pid N start T (as deploy locks)
    heartbeat INTEGER NOT NULL -- unix milliseconds
);

-- The reconciler's view of each service: restarts of crashed instances and
-- the back-off of a failing or crash-looping service.
CREATE TABLE service_health (
    service       TEXT PRIMARY KEY,
    restarts      INTEGER NOT NULL DEFAULT 0,
    failures      INTEGER NOT NULL DEFAULT 0, -- in a row; reset by a healthy pass
    backoff_until INTEGER,                    -- unix milliseconds
    last_error    TEXT,
    updated       TEXT NOT NULL
);

-- Drift findings: what a scan found on an instance, and what was done.
CREATE TABLE drift_findings (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    time     TEXT NOT NULL,
    instance TEXT NOT NULL,
    image    TEXT NOT NULL,
    findings TEXT NOT NULL, -- JSON list of {path, change}
    action   TEXT NOT NULL  -- replaced | reported
);
CREATE INDEX drift_findings_instance ON drift_findings (instance);
"#,
    // 5: the trust chain (sign/, signed ledger, revocation).
    r#"
-- Each ledger entry's Ed25519 signature of its hash by the host key
-- (ledger/): the key id (hex) and the signature (base64). NULL for entries
-- written before this migration.
ALTER TABLE ledger ADD COLUMN keyid TEXT;
ALTER TABLE ledger ADD COLUMN signature TEXT;
-- Where signing began: every entry from this seq on must be signed, so
-- stripping signatures cannot pass the ledger off as older than signing.
INSERT OR REPLACE INTO store_meta (key, value)
    SELECT 'ledger_signed_from', CAST(coalesce(max(seq), 0) + 1 AS TEXT) FROM ledger;

-- Revoked images: never deployed, run or built FROM again.
CREATE TABLE revocations (
    digest TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    time   TEXT NOT NULL,
    actor  TEXT NOT NULL
);
"#,
    // 6: user-namespace id ranges (instance/userns.rs).
    r#"
-- Host id ranges that instances' user namespaces map to: range `idx` is
-- host ids FIRST + idx * 65536 .. + 65536, held by one owner (a service, so
-- its volumes keep their owner across releases; or one ad-hoc instance).
CREATE TABLE id_ranges (
    idx     INTEGER PRIMARY KEY,
    owner   TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL
);
"#,
    // 7: stable releases and crash loops (deploy/converge.rs, reconcile.rs).
    r#"
-- Why a release that had been healthy was rolled back later (it crash-
-- looped under `serve`): set once; such a release is no rollback target.
ALTER TABLE releases ADD COLUMN unstable TEXT;
CREATE TRIGGER releases_unstable_once BEFORE UPDATE OF unstable ON releases
    WHEN OLD.unstable IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'a release is found unstable once');
END;
-- The release the reconciler's counts are about, and the times (unix
-- milliseconds, JSON array) its instances were restarted lately.
ALTER TABLE service_health ADD COLUMN release INTEGER;
ALTER TABLE service_health ADD COLUMN recent TEXT NOT NULL DEFAULT '[]';
"#,
    // 8: fleet truth (deploy/sync.rs, deploy/remove.rs).
    r#"
-- The release whose content the fleet file last asked for (set by apply;
-- kept across rollbacks, so status can say the service is out of sync).
ALTER TABLE services ADD COLUMN fleet_release INTEGER;
-- When the service was removed (`service rm`, `apply --prune`): its row,
-- releases and ledger stay; applying the name again revives it.
ALTER TABLE services ADD COLUMN removed TEXT;
"#,
    // 9: replica slots and the volumes each instance mounts (instance/volume.rs).
    r#"
-- A service's instance holds a replica slot (0-based; it names its
-- per-replica volumes); NULL for ad-hoc instances and those from before.
ALTER TABLE instances ADD COLUMN slot INTEGER;
-- The volumes it mounts, names resolved, with their access: JSON
-- [{"name": "data", "access": "exclusive"}]. NULL for instances from before.
ALTER TABLE instances ADD COLUMN volumes TEXT;
"#,
    // 10: host identity (instance/host.rs): the machine and boot an
    // instance's monitor and process were started on; under another
    // identity its pid names nothing of its own.
    r#"
ALTER TABLE instances ADD COLUMN machine_id TEXT;
ALTER TABLE instances ADD COLUMN boot_id TEXT;
"#,
    // 11: API tokens (crate::tokens): the SHA-256 of each secret, never the
    // secret; names stay taken after revocation, so the ledger's names are
    // unambiguous.
    r#"
CREATE TABLE tokens (
    name     TEXT PRIMARY KEY,
    role     TEXT NOT NULL,
    hash     TEXT NOT NULL UNIQUE,
    created  TEXT NOT NULL,
    creator  TEXT NOT NULL,
    expires  TEXT,
    revoked  TEXT
);
"#,
    // 12: hosts of a fleet (state/hosts.rs), and which host an instance
    // lives on. NULL host: the single host of a store that never joined.
    r#"
CREATE TABLE hosts (
    name       TEXT PRIMARY KEY,
    labels     TEXT NOT NULL DEFAULT '{}',
    capacity   TEXT NOT NULL DEFAULT '{}',
    address    TEXT,
    keyid      TEXT UNIQUE,
    public_key TEXT,
    state      TEXT NOT NULL,
    epoch      INTEGER NOT NULL DEFAULT 1,
    heartbeat  INTEGER,
    joined     TEXT NOT NULL,
    updated    TEXT NOT NULL,
    version    TEXT,
    reason     TEXT
);
ALTER TABLE instances ADD COLUMN host TEXT;
ALTER TABLE instances ADD COLUMN host_epoch INTEGER;
ALTER TABLE instances ADD COLUMN lost TEXT;
CREATE INDEX instances_host ON instances (host);
"#,
    // 13: one trust domain: image signing keys every host trusts
    // (`drover policy trust`); removed keys stay, so the ledger's keyids
    // keep their names.
    r#"
CREATE TABLE trusted_keys (
    keyid      TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    name       TEXT,
    added      TEXT NOT NULL,
    actor      TEXT NOT NULL,
    removed    TEXT
);
"#,
    // 14: traffic across hosts: each host's proxy beats per service
    // (`proxies` is one row per service, so it cannot say which hosts route
    // it), and acknowledges each drain itself; an instance of a fleet is
    // drained once every up host whose proxy routes its service acked.
    r#"
CREATE TABLE proxy_beats (
    host      TEXT NOT NULL,
    service   TEXT NOT NULL,
    holder    TEXT NOT NULL,
    heartbeat INTEGER NOT NULL,
    PRIMARY KEY (host, service)
);
CREATE TABLE drain_acks (
    instance TEXT NOT NULL,
    host     TEXT NOT NULL,
    at       INTEGER NOT NULL,
    PRIMARY KEY (instance, host)
);
"#,
    // 15: fleet-wide settings (state/fleet.rs): the fleet's deploy policy
    // (`policy set`, key `policy`, the policy.toml text) and its registry
    // (`fleet registry set`, key `registry`), with who set them and when.
    r#"
CREATE TABLE fleet_settings (
    key     TEXT PRIMARY KEY,
    value   TEXT NOT NULL,
    updated TEXT NOT NULL,
    actor   TEXT NOT NULL
);
"#,
    // 16: change notification is PostgreSQL's (LISTEN/NOTIFY triggers);
    // SQLite's readers keep polling, so nothing changes here.
    "-- nothing: SQLite has no notifications",
    // 17: desired placements of a fleet's services: which host runs a
    // slot of a release, decided by the holder of the service's lease
    // (its token fences it); the host's serve realizes it. `retired`: no
    // longer wanted.
    r#"
CREATE TABLE placements (
    service TEXT NOT NULL,
    slot    INTEGER NOT NULL,
    release INTEGER NOT NULL,
    host    TEXT NOT NULL,
    token   INTEGER NOT NULL,
    reason  TEXT NOT NULL,
    decided TEXT NOT NULL,
    retired TEXT,
    PRIMARY KEY (service, slot, release)
);
CREATE INDEX placements_host ON placements (host);
"#,
];

/// The same migrations for PostgreSQL, one for one: migration `i` here
/// makes the tables, columns and rules migration `i` of [`SQLITE`] makes
/// (a test compares the two schemas), so a schema version means the same
/// on both. Integers are BIGINT throughout; append-only tables refuse
/// TRUNCATE too (it skips row triggers). Helpers only PostgreSQL needs
/// (`drover_refuse`, `drover_jsonb`) come with migration 1. APPEND-ONLY,
/// like [`SQLITE`], and under the same rule for older monitors.
pub(super) const POSTGRES: &[&str] = &[
    // 1: image tags, OCI referrers, store metadata, the ledger.
    r#"
CREATE FUNCTION drover_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0];
END $$;
-- Text as JSON, or NULL when it is not JSON (a tampered row must not fail
-- a query that merely looks at it).
CREATE FUNCTION drover_jsonb(t TEXT) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN t::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;

CREATE TABLE tags (
    name       TEXT PRIMARY KEY,
    digest     TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size       BIGINT NOT NULL,
    created    TEXT NOT NULL
);
CREATE TABLE referrers (
    digest        TEXT PRIMARY KEY,
    subject       TEXT NOT NULL,
    artifact_type TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    size          BIGINT NOT NULL
);
CREATE INDEX referrers_subject ON referrers (subject);
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE ledger (
    seq       BIGINT PRIMARY KEY,
    time      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subjects  TEXT NOT NULL,
    details   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE TABLE ledger_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger FOR EACH ROW
    EXECUTE FUNCTION drover_refuse('the ledger is append-only: entries cannot be changed');
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger FOR EACH ROW
    EXECUTE FUNCTION drover_refuse('the ledger is append-only: entries cannot be deleted');
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger FOR EACH STATEMENT
    EXECUTE FUNCTION drover_refuse('the ledger is append-only: entries cannot be deleted');
"#,
    // 2: instances.
    r#"
CREATE TABLE instances (
    id            TEXT PRIMARY KEY,
    name          TEXT,
    image         TEXT NOT NULL,
    image_ref     TEXT NOT NULL,
    release       BIGINT,
    driver        TEXT NOT NULL,
    state         TEXT NOT NULL,
    pid           BIGINT,
    pid_start     BIGINT,
    monitor_pid   BIGINT,
    monitor_start BIGINT,
    port          BIGINT,
    created       TEXT NOT NULL,
    started       TEXT,
    finished      TEXT,
    exit_code     BIGINT,
    exit_signal   BIGINT,
    stop_signal   BIGINT NOT NULL,
    launch        TEXT NOT NULL
);
CREATE UNIQUE INDEX instances_live_name ON instances (name)
    WHERE name IS NOT NULL AND state != 'deleted';
"#,
    // 3: services, releases, quarantine, deploy locks, instance transitions.
    r#"
CREATE TABLE services (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    spec_digest TEXT NOT NULL,
    desired     BIGINT,
    created     TEXT NOT NULL,
    updated     TEXT NOT NULL
);
CREATE TABLE releases (
    service       TEXT NOT NULL REFERENCES services (name),
    number        BIGINT NOT NULL,
    image         TEXT NOT NULL,
    image_ref     TEXT NOT NULL,
    config        TEXT NOT NULL,
    config_digest TEXT NOT NULL,
    author        TEXT NOT NULL,
    message       TEXT NOT NULL,
    created       TEXT NOT NULL,
    parent        BIGINT,
    rollback_of   BIGINT,
    outcome       TEXT NOT NULL,
    reason        TEXT,
    PRIMARY KEY (service, number)
);
CREATE TRIGGER releases_no_delete BEFORE DELETE ON releases FOR EACH ROW
    EXECUTE FUNCTION drover_refuse('releases are append-only: they cannot be deleted');
CREATE TRIGGER releases_no_truncate BEFORE TRUNCATE ON releases FOR EACH STATEMENT
    EXECUTE FUNCTION drover_refuse('releases are append-only: they cannot be deleted');
CREATE TRIGGER releases_immutable BEFORE UPDATE OF service, number, image, image_ref, config,
    config_digest, author, message, created, parent, rollback_of ON releases FOR EACH ROW
    EXECUTE FUNCTION drover_refuse('releases are immutable');
CREATE TRIGGER releases_outcome_once BEFORE UPDATE OF outcome ON releases FOR EACH ROW
    WHEN (OLD.outcome != 'pending')
    EXECUTE FUNCTION drover_refuse('a release outcome is final');
CREATE TABLE quarantine (
    service TEXT NOT NULL,
    image   TEXT NOT NULL,
    config  TEXT NOT NULL,
    release BIGINT NOT NULL,
    reason  TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (service, image, config)
);
CREATE TABLE locks (
    name    TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    token   BIGINT NOT NULL,
    expires BIGINT NOT NULL
);
ALTER TABLE instances ADD COLUMN service TEXT;
CREATE INDEX instances_service ON instances (service);
CREATE TABLE instance_transitions (
    seq      BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    instance TEXT NOT NULL,
    time     TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL
);
CREATE INDEX instance_transitions_instance ON instance_transitions (instance);
"#,
    // 4: traffic, self-healing and drift.
    r#"
ALTER TABLE instances ADD COLUMN ready_at BIGINT;
ALTER TABLE instances ADD COLUMN drain_at BIGINT;
ALTER TABLE instances ADD COLUMN drained_at BIGINT;
ALTER TABLE instances ADD COLUMN condemned TEXT;
ALTER TABLE instances ADD COLUMN config_digest TEXT;
UPDATE instances SET ready_at = 0 WHERE service IS NOT NULL AND state = 'running';
CREATE TABLE proxies (
    service   TEXT PRIMARY KEY,
    holder    TEXT NOT NULL,
    heartbeat BIGINT NOT NULL
);
CREATE TABLE service_health (
    service       TEXT PRIMARY KEY,
    restarts      BIGINT NOT NULL DEFAULT 0,
    failures      BIGINT NOT NULL DEFAULT 0,
    backoff_until BIGINT,
    last_error    TEXT,
    updated       TEXT NOT NULL
);
CREATE TABLE drift_findings (
    seq      BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    time     TEXT NOT NULL,
    instance TEXT NOT NULL,
    image    TEXT NOT NULL,
    findings TEXT NOT NULL,
    action   TEXT NOT NULL
);
CREATE INDEX drift_findings_instance ON drift_findings (instance);
"#,
    // 5: the trust chain.
    r#"
ALTER TABLE ledger ADD COLUMN keyid TEXT;
ALTER TABLE ledger ADD COLUMN signature TEXT;
INSERT INTO store_meta (key, value)
    SELECT 'ledger_signed_from', CAST(coalesce(max(seq), 0) + 1 AS TEXT) FROM ledger
    ON CONFLICT (key) DO UPDATE SET value = excluded.value;
CREATE TABLE revocations (
    digest TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    time   TEXT NOT NULL,
    actor  TEXT NOT NULL
);
"#,
    // 6: user-namespace id ranges.
    r#"
CREATE TABLE id_ranges (
    idx     BIGINT PRIMARY KEY,
    owner   TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL
);
"#,
    // 7: stable releases and crash loops.
    r#"
ALTER TABLE releases ADD COLUMN unstable TEXT;
CREATE TRIGGER releases_unstable_once BEFORE UPDATE OF unstable ON releases FOR EACH ROW
    WHEN (OLD.unstable IS NOT NULL)
    EXECUTE FUNCTION drover_refuse('a release is found unstable once');
ALTER TABLE service_health ADD COLUMN release BIGINT;
ALTER TABLE service_health ADD COLUMN recent TEXT NOT NULL DEFAULT '[]';
"#,
    // 8: fleet truth.
    r#"
ALTER TABLE services ADD COLUMN fleet_release BIGINT;
ALTER TABLE services ADD COLUMN removed TEXT;
"#,
    // 9: replica slots and volumes.
    r#"
ALTER TABLE instances ADD COLUMN slot BIGINT;
ALTER TABLE instances ADD COLUMN volumes TEXT;
"#,
    // 10: host identity.
    r#"
ALTER TABLE instances ADD COLUMN machine_id TEXT;
ALTER TABLE instances ADD COLUMN boot_id TEXT;
"#,
    // 11: API tokens.
    r#"
CREATE TABLE tokens (
    name     TEXT PRIMARY KEY,
    role     TEXT NOT NULL,
    hash     TEXT NOT NULL UNIQUE,
    created  TEXT NOT NULL,
    creator  TEXT NOT NULL,
    expires  TEXT,
    revoked  TEXT
);
"#,
    // 12: hosts, and which host an instance lives on.
    r#"
CREATE TABLE hosts (
    name       TEXT PRIMARY KEY,
    labels     TEXT NOT NULL DEFAULT '{}',
    capacity   TEXT NOT NULL DEFAULT '{}',
    address    TEXT,
    keyid      TEXT UNIQUE,
    public_key TEXT,
    state      TEXT NOT NULL,
    epoch      BIGINT NOT NULL DEFAULT 1,
    heartbeat  BIGINT,
    joined     TEXT NOT NULL,
    updated    TEXT NOT NULL,
    version    TEXT,
    reason     TEXT
);
ALTER TABLE instances ADD COLUMN host TEXT;
ALTER TABLE instances ADD COLUMN host_epoch BIGINT;
ALTER TABLE instances ADD COLUMN lost TEXT;
CREATE INDEX instances_host ON instances (host);
"#,
    // 13: one trust domain.
    r#"
CREATE TABLE trusted_keys (
    keyid      TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    name       TEXT,
    added      TEXT NOT NULL,
    actor      TEXT NOT NULL,
    removed    TEXT
);
"#,
    // 14: proxy heartbeats and drain acknowledgements per host.
    r#"
CREATE TABLE proxy_beats (
    host      TEXT NOT NULL,
    service   TEXT NOT NULL,
    holder    TEXT NOT NULL,
    heartbeat BIGINT NOT NULL,
    PRIMARY KEY (host, service)
);
CREATE TABLE drain_acks (
    instance TEXT NOT NULL,
    host     TEXT NOT NULL,
    at       BIGINT NOT NULL,
    PRIMARY KEY (instance, host)
);
"#,
    // 15: fleet-wide settings.
    r#"
CREATE TABLE fleet_settings (
    key     TEXT PRIMARY KEY,
    value   TEXT NOT NULL,
    updated TEXT NOT NULL,
    actor   TEXT NOT NULL
);
"#,
    // 16: change notification (state/notify.rs): every statement changing
    // what `Reader::changes` looks at, or the hosts, notifies
    // `drover_changes` with the table's name (delivered at commit, once per
    // transaction and payload), so serve's readers wake at once instead of
    // polling.
    r#"
CREATE FUNCTION drover_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('drover_changes', TG_TABLE_NAME);
    RETURN NULL;
END $$;
CREATE TRIGGER instance_transitions_notify AFTER INSERT OR UPDATE OR DELETE ON instance_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION drover_notify();
CREATE TRIGGER services_notify AFTER INSERT OR UPDATE OR DELETE ON services
    FOR EACH STATEMENT EXECUTE FUNCTION drover_notify();
CREATE TRIGGER releases_notify AFTER INSERT OR UPDATE OR DELETE ON releases
    FOR EACH STATEMENT EXECUTE FUNCTION drover_notify();
CREATE TRIGGER revocations_notify AFTER INSERT OR UPDATE OR DELETE ON revocations
    FOR EACH STATEMENT EXECUTE FUNCTION drover_notify();
CREATE TRIGGER instances_notify AFTER UPDATE OF condemned, lost ON instances
    FOR EACH STATEMENT EXECUTE FUNCTION drover_notify();
CREATE TRIGGER hosts_notify AFTER INSERT OR UPDATE OF state, epoch, labels, address OR DELETE ON hosts
    FOR EACH STATEMENT EXECUTE FUNCTION drover_notify();
CREATE TRIGGER fleet_settings_notify AFTER INSERT OR UPDATE OR DELETE ON fleet_settings
    FOR EACH STATEMENT EXECUTE FUNCTION drover_notify();
CREATE TRIGGER trusted_keys_notify AFTER INSERT OR UPDATE OR DELETE ON trusted_keys
    FOR EACH STATEMENT EXECUTE FUNCTION drover_notify();
"#,
    // 17: desired placements of a fleet's services: which host runs a
    // slot of a release, decided by the holder of the service's lease
    // (its token fences it); the host's serve realizes it. `retired`: no
    // longer wanted.
    r#"
CREATE TABLE placements (
    service TEXT NOT NULL,
    slot    BIGINT NOT NULL,
    release BIGINT NOT NULL,
    host    TEXT NOT NULL,
    token   BIGINT NOT NULL,
    reason  TEXT NOT NULL,
    decided TEXT NOT NULL,
    retired TEXT,
    PRIMARY KEY (service, slot, release)
);
CREATE INDEX placements_host ON placements (host);
CREATE TRIGGER placements_notify AFTER INSERT OR UPDATE OR DELETE ON placements
    FOR EACH STATEMENT EXECUTE FUNCTION drover_notify();
"#,
];

const _: () = assert!(SQLITE.len() == POSTGRES.len());

/// The version the schema is at: SQLite's `PRAGMA user_version`, or
/// PostgreSQL's `drover_schema` row (0 before the first migration).
pub(super) fn user_version(conn: &Conn, path: &Path) -> Result<u32> {
    let v: i64 = match conn.dialect() {
        Dialect::Sqlite => conn
            .query_row("PRAGMA user_version", (), |row| row.get(0))
            .db_ctx(path)?,
        Dialect::Postgres => {
            let exists: bool = conn
                .query_row("SELECT to_regclass('drover_schema') IS NOT NULL", (), |r| {
                    r.get(0)
                })
                .db_ctx(path)?;
            match exists {
                false => 0,
                true => conn
                    .query_row("SELECT version FROM drover_schema WHERE id = 1", (), |r| {
                        r.get(0)
                    })
                    .optional()
                    .db_ctx(path)?
                    .unwrap_or(0),
            }
        }
    };
    u32::try_from(v).map_err(|_| {
        Error::corrupt(
            format!("state database {}", path.display()),
            format!("schema version {v} is not one drover ever writes"),
        )
    })
}

/// The advisory lock PostgreSQL migrations hold (each in its transaction).
const K_MIGRATE: i64 = 7_234_000;

/// Apply `migrations[user_version..]`, each in its own transaction.
pub(super) fn migrate(conn: &Conn, path: &Path, migrations: &[&str]) -> Result<()> {
    let supported = u32::try_from(migrations.len()).unwrap_or(u32::MAX);
    loop {
        // Checked outside a transaction first: the common case (up to date)
        // then never takes the write lock, so opening stays cheap under load.
        let current = user_version(conn, path)?;
        if current > supported {
            return Err(Error::DatabaseTooNew {
                path: path.to_path_buf(),
                found: current,
                supported,
            });
        }
        let Some(&sql) = migrations.get(current as usize) else {
            return Ok(());
        };
        let begin = match conn.dialect() {
            Dialect::Sqlite => "BEGIN IMMEDIATE".to_string(),
            Dialect::Postgres => format!(
                "BEGIN; SELECT pg_advisory_xact_lock({K_MIGRATE});
                 CREATE TABLE IF NOT EXISTS drover_schema (
                     id BIGINT PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL);
                 INSERT INTO drover_schema VALUES (1, 0) ON CONFLICT (id) DO NOTHING"
            ),
        };
        conn.begin(&begin).db_ctx(path)?;
        let step = (|| -> Result<bool> {
            // Another process may have migrated while we waited for the
            // lock; if so, roll back and look again.
            if user_version(conn, path)? != current {
                return Ok(false);
            }
            conn.execute_batch(sql).db_ctx(path)?;
            let bump = match conn.dialect() {
                Dialect::Sqlite => format!("PRAGMA user_version = {}", current + 1),
                Dialect::Postgres => {
                    format!(
                        "UPDATE drover_schema SET version = {} WHERE id = 1",
                        current + 1
                    )
                }
            };
            conn.execute_batch(&bump).db_ctx(path)?;
            conn.end("COMMIT").db_ctx(path)?;
            Ok(true)
        })();
        if !matches!(step, Ok(true)) {
            let _ = conn.end("ROLLBACK");
        }
        step?;
    }
}
