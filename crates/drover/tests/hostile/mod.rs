//! Hostile input, one regression test per attack an adversarial review
//! found to work or to be weak (issue 16). Each file is one attack surface;
//! every test here shows the attack now fails, with a clear error, and that
//! nothing is lost or left half-made.

mod database;
mod disk;
mod limits;
mod parse;
mod registry;
mod userns;
