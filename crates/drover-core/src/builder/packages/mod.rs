//! Debian package layers: a list of package names in, a layer holding
//! them and their dependencies out, resolved under `drover.lock`.

pub mod dpkg;
