//! Every input bounded: unpacked layer size and entry count, compression bombs, instance logs, the default pids limit.

#[allow(unused_imports)]
use crate::common;
