//! Hostile definitions and fleet files refused at parse time with file:line:key; hostile bases refused before anything is built on them; one signature per key per image.

#[allow(unused_imports)]
use crate::common;
