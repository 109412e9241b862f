//! A database-level attacker (write access to drover.db, triggers dropped): policy at every start, tags re-derived from the ledger, a signed ledger head, fresh evidence in trace, xattrs in drift.

#[allow(unused_imports)]
use crate::common;
