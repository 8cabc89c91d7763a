//! Integration tests: the real `symphony-host` binary, real plugins built
//! from `plugins-example/` and `tests/plugins/`, and a private redis-server
//! per test on a free loopback port.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod admin;
mod admin_hostile;
mod architecture;
mod author;
mod browser;
mod checker;
mod cli;
mod cluster;
mod compat;
mod delivery;
mod dispatch;
mod example;
mod faults;
mod hardening;
mod memory;
mod polyglot;
mod protocol;
mod reload;
mod repos;
mod sandbox;
