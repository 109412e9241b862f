//! Per-service deploy locks: a lease with a fencing token, in the state
//! database.
//!
//! A lock row names its holder (`user@host pid N`), a token that grows by
//! one at every acquisition, and when the lease expires. The holder renews
//! the lease as it works; every write a deploy makes checks, in the same
//! transaction, that its token is still the current one ([`Lease::check`]),
//! so a holder whose lease was taken over (it stalled past the expiry) can
//! no longer change anything — it is fenced off, not trusted to notice.
//!
//! A lock never sticks: a lease left by a killed `apply` expires by itself,
//! and one whose holder is a dead process on this host is taken over at once.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::runtime;
use crate::state::{Db, LeaseRow, Tx};

/// How long a lease lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(30);

/// A held lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub token: i64,
    pub holder: String,
    expires_ms: i64,
}

/// Who we are, as a lock holder: `user@host pid N start T`.
pub fn me() -> String {
    let pid = std::process::id();
    format!(
        "{} pid {pid} start {}",
        crate::ledger::actor(),
        runtime::start_time(pid).unwrap_or(0)
    )
}

fn host_of(holder: &str) -> &str {
    holder
        .split_whitespace()
        .next()
        .and_then(|a| a.rsplit_once('@'))
        .map_or("", |(_, h)| h)
}

/// Whether `holder` is a process on this host that no longer runs.
fn holder_is_dead(holder: &str) -> bool {
    let me = me();
    if host_of(holder) != host_of(&me) {
        return false;
    }
    let words: Vec<&str> = holder.split_whitespace().collect();
    let field = |name: &str| {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    match (field("pid"), field("start")) {
        (Some(pid), Some(start)) => {
            !(runtime::alive(pid as u32) && runtime::start_time(pid as u32) == Some(start))
        }
        _ => false,
    }
}

/// Take the lock `name`. With `wait`, wait for the holder to finish (or its
/// lease to run out); without, fail at once naming the holder.
pub fn acquire(db: &mut Db, name: &str, wait: bool) -> Result<Lease> {
    let holder = me();
    loop {
        let got = db.write(|tx| try_acquire(tx, name, &holder))?;
        match got {
            Ok(lease) => return Ok(lease),
            Err((other, expires_ms)) if !wait => {
                let left = (expires_ms - now_ms()).max(0) / 1000;
                return Err(Error::Busy {
                    what: name.to_string(),
                    reason: format!(
                        "another deploy holds its lock: {other} (lease runs out in {left} s \
                         unless renewed); wait for it, or leave out --no-wait to queue"
                    ),
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Who holds lock `name` now, if anyone does (a lease that ran out, or
/// whose holder on this host is dead, holds nothing).
pub fn holder(db: &mut Db, name: &str) -> Result<Option<String>> {
    let row = db.write(|tx| tx.lease(name))?;
    Ok(row
        .filter(|l| l.expires > now_ms() && !holder_is_dead(&l.holder))
        .map(|l| l.holder))
}

type Taken = std::result::Result<Lease, (String, i64)>;

/// Leases this process gave up while the database could not hear it (lost
/// or unreachable at [`Lease::release`]), by lock name and token: their
/// rows still name this process as holder until they run out. This
/// process takes such a lock again at once instead of waiting out the
/// lease — only that token, so a lease it holds elsewhere (an `apply` in
/// the same process) is never taken over.
static GIVEN_UP: Mutex<BTreeSet<(String, i64)>> = Mutex::new(BTreeSet::new());

fn given_up(name: &str, token: i64) -> bool {
    GIVEN_UP
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&(name.to_string(), token))
}

fn try_acquire(tx: &Tx<'_>, name: &str, holder: &str) -> Result<Taken> {
    let now = now_ms();
    let token = match tx.lease(name)? {
        Some(l)
            if l.expires > now
                && !holder_is_dead(&l.holder)
                && !(l.holder == holder && given_up(name, l.token)) =>
        {
            return Ok(Err((l.holder, l.expires)));
        }
        Some(l) => l.token + 1,
        None => 1,
    };
    let expires_ms = now + LEASE.as_millis() as i64;
    tx.put_lease(
        name,
        &LeaseRow {
            holder: holder.to_string(),
            token,
            expires: expires_ms,
        },
    )?;
    Ok(Ok(Lease {
        name: name.to_string(),
        token,
        holder: holder.to_string(),
        expires_ms,
    }))
}

impl Lease {
    /// Fail unless this lease is still the lock's current one. Call inside
    /// the transaction of every write made under the lock.
    pub fn check(&self, tx: &Tx<'_>) -> Result<()> {
        let token = tx.lease(&self.name)?.map(|l| l.token);
        if token == Some(self.token) {
            Ok(())
        } else {
            Err(Error::Busy {
                what: self.name.clone(),
                reason: format!(
                    "this deploy lost its lock (token {} is no longer current; another \
                     deploy took over after the lease ran out); it stopped without changing more",
                    self.token
                ),
            })
        }
    }

    /// Extend the lease if a third of it has passed; fails if it was lost.
    pub fn renew(&mut self, db: &mut Db) -> Result<()> {
        let now = now_ms();
        if self.expires_ms - now > (LEASE.as_millis() as i64) * 2 / 3 {
            return Ok(());
        }
        let expires = now + LEASE.as_millis() as i64;
        db.write(|tx| {
            self.check(tx)?;
            tx.set_lease_expiry(&self.name, self.token, expires)
        })?;
        self.expires_ms = expires;
        Ok(())
    }

    /// Give the lock up (the token stays, so the next holder's is higher).
    /// If the database cannot be told (it went away), this process
    /// remembers the lease as given up, so it can take the lock again when
    /// the database answers rather than wait for the lease to run out.
    pub fn release(self, db: &mut Db) -> Result<()> {
        let done = db.write(|tx| tx.set_lease_expiry(&self.name, self.token, 0).map(drop));
        if done.is_err() {
            self.given_up();
        }
        done
    }

    fn given_up(&self) {
        GIVEN_UP
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((self.name.clone(), self.token));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::pgtest::{self, backends};

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = pgtest::open(&dir.path().join("drover.db")).unwrap();
        (dir, db)
    }

    backends! {
    fn a_second_holder_is_refused_with_the_holders_name_then_gets_a_higher_token() {
        let (_d, mut db) = db();
        let first = acquire(&mut db, "service web", false).unwrap();
        assert_eq!(first.token, 1);
        let err = acquire(&mut db, "service web", false).unwrap_err();
        assert!(err.to_string().contains(&first.holder), "{err}");
        // Other locks are independent.
        assert_eq!(acquire(&mut db, "service api", false).unwrap().token, 1);
        first.release(&mut db).unwrap();
        let second = acquire(&mut db, "service web", false).unwrap();
        assert_eq!(second.token, 2);
    }
    }

    backends! {
    fn a_lease_given_up_unheard_is_taken_again_at_once_by_its_process_only() {
        let (_d, mut db) = db();
        let first = acquire(&mut db, "service gone", false).unwrap();
        let held = acquire(&mut db, "service kept", false).unwrap();
        // The database did not hear the release of "gone" (it was away).
        first.given_up();
        let again = acquire(&mut db, "service gone", false).unwrap();
        assert_eq!(again.token, first.token + 1);
        // Another lock this process holds stays held.
        let err = acquire(&mut db, "service kept", false).unwrap_err();
        assert!(err.to_string().contains(&held.holder), "{err}");
        // Only that token: the new lease is held as any other.
        assert!(acquire(&mut db, "service gone", false).is_err());
        // Another process does not take it early.
        let taken = db.write(|tx| try_acquire(tx, "service gone", "someone@else pid 1 start 1"));
        assert!(taken.unwrap().is_err());
    }
    }

    backends! {
    fn an_expired_lease_is_taken_over_and_the_old_holder_is_fenced_off() {
        let (_d, mut db) = db();
        let mut stale = acquire(&mut db, "l", false).unwrap();
        db.sql()
            .execute(
                "UPDATE locks SET expires = 1, holder = 'x@elsewhere pid 1 start 1'",
                (),
            )
            .unwrap();
        let fresh = acquire(&mut db, "l", false).unwrap();
        assert_eq!(fresh.token, 2);
        let tx = db.begin().unwrap();
        assert!(stale.check(&tx).is_err());
        assert!(fresh.check(&tx).is_ok());
        drop(tx);
        stale.expires_ms = 0;
        assert!(stale.renew(&mut db).is_err());
    }
    }

    backends! {
    fn a_lock_held_by_a_dead_process_here_is_free_at_once() {
        let (_d, mut db) = db();
        acquire(&mut db, "l", false).unwrap();
        let dead = format!("{} pid {} start 1", crate::ledger::actor(), u32::MAX / 2);
        db.sql()
            .execute("UPDATE locks SET holder = ?1", [&dead])
            .unwrap();
        assert_eq!(acquire(&mut db, "l", false).unwrap().token, 2);
    }
    }
}
