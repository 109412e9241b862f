//! A full disk never locks the operator out: stop and rm work on a full store, a failed run leaves nothing half-made.

#[allow(unused_imports)]
use crate::common;
