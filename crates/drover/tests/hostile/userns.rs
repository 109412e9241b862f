//! Container root is not host root: user namespaces, volumes owned by mapped ids, the store closed to other users.

#[allow(unused_imports)]
use crate::common;
