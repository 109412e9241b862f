//! Hostile registries: endless manifests and blobs, stalls, image indexes, hostile repository names.

#[allow(unused_imports)]
use crate::common;
