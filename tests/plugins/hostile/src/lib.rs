//! Test plugin that misbehaves on purpose; the action picks how.
//!
//! `h_loop` spins, `h_grow` allocates without end, `h_recurse` recurses
//! without end, `h_panic` panics, `h_bigret` returns a 100 MB error string,
//! `h_calls` makes a million host calls, `h_file` reads and writes files,
//! `h_socket` connects to the port in its id, `h_sleep` sleeps an hour,
//! `h_exit` calls `exit(7)`, `h_steal` tries to reach other tenants through
//! crafted ids and patterns, `h_nocap` calls a repository it was not granted,
//! `h_bigerr` returns a 20 MiB error (within a 64 MiB plugin), `h_clocks`
//! reads the clock two million times (WASI calls), `h_nul` arms a trigger
//! whose id holds a NUL (the index's member separator), `h_quiet` returns
//! at once without a call, `h_fill` stores 16 KiB values until a write
//! fails and returns that failure.

#![allow(clippy::panic)]

use std::hint::black_box;
use std::time::Duration;
use symphony_sdk::{Error, Expiry, Plugin, Result, generic, shared_state, table, tenant, user};

struct Hostile;

fn recurse(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        black_box(recurse(black_box(n - 1))) + 1
    }
}

fn steal() -> Result<()> {
    let mut leaks = Vec::new();
    for id in [
        "*",
        "../other:user:u1",
        "u1",
        "other:user:u1",
        "[a-z]*",
        "?1",
    ] {
        if let Some(found) = user::get(id)? {
            leaks.push(format!("user {id}: {found}"));
        }
    }
    if let Some(found) = user::find_by_field("name", "\"secret\"")? {
        leaks.push(format!("find: {found}"));
    }
    for key in ["other:secret", "*", "../other:secret"] {
        if let Some(found) = generic::get(key)? {
            leaks.push(format!("generic {key}: {found}"));
        }
    }
    if let Some(found) = table::find_by_field("*", "v", "1")? {
        leaks.push(format!("table: {found}"));
    }
    let states = shared_state::list_states("*")?;
    if !states.is_empty() {
        leaks.push(format!("states: {states:?}"));
    }
    // Writes with crafted keys land under this tenant, whatever they say.
    generic::set("other:secret", "\"overwritten\"", None)?;
    generic::set("../other:secret", "\"overwritten\"", None)?;
    if leaks.is_empty() {
        Ok(())
    } else {
        Err(Error::msg(format!("read across tenants: {leaks:?}")))
    }
}

impl Plugin for Hostile {
    fn on_expire(e: Expiry) -> Result<()> {
        match e.action.as_str() {
            "h_loop" => {
                let mut n: u64 = 0;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "h_grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![7u8; 1 << 20]));
                }
            }
            "h_recurse" => Err(Error::msg(format!("{}", recurse(u64::MAX)))),
            "h_panic" => panic!("hostile plugin panicked on purpose"),
            "h_bigret" => Err(Error::msg("x".repeat(100 << 20))),
            "h_bigerr" => Err(Error::msg("e".repeat(20 << 20))),
            // An error as long as the host keeps (16 KiB).
            "h_err16k" => Err(Error::msg("e".repeat(16 << 10))),
            "h_quiet" => Ok(()),
            "h_fill" => {
                let value = format!("\"{}\"", "f".repeat(16 << 10));
                for i in 0..100_000u32 {
                    if let Err(err) = generic::set(&format!("fill:{}:{i}", e.id), &value, None) {
                        let err = Error::from(err);
                        return Err(Error::msg(format!("stored {i} values, then: {err}")));
                    }
                }
                Ok(())
            }
            "h_clocks" => {
                let start = std::time::Instant::now();
                for _ in 0..2_000_000 {
                    black_box(std::time::Instant::now());
                }
                black_box(start.elapsed());
                Ok(())
            }
            "h_nul" => {
                symphony_sdk::trigger::set("x_nulchild", "n1\0r1", Duration::from_secs(300))?;
                Ok(())
            }
            "h_calls" => {
                for _ in 0..1_000_000 {
                    black_box(tenant());
                }
                Ok(())
            }
            "h_file" => {
                let read = std::fs::read_to_string("/etc/passwd");
                let wrote = std::fs::write("/tmp/symphony-hostile-was-here", "x");
                let listed = std::fs::read_dir("/");
                Err(Error::msg(format!(
                    "read: {:?}; write: {:?}; list: {:?}",
                    read.map(|s| s.len()),
                    wrote,
                    listed.map(|_| "listed")
                )))
            }
            "h_socket" => {
                let port: u16 = e.id.parse().unwrap_or(6379);
                let tcp = std::net::TcpStream::connect(("127.0.0.1", port));
                let udp = std::net::UdpSocket::bind("0.0.0.0:0");
                Err(Error::msg(format!(
                    "tcp: {:?}; udp: {:?}",
                    tcp.map(|_| "connected"),
                    udp.map(|_| "bound")
                )))
            }
            "h_sleep" => {
                std::thread::sleep(Duration::from_secs(3600));
                Ok(())
            }
            "h_exit" => std::process::exit(7),
            "h_steal" => steal(),
            "h_nocap" => {
                symphony_sdk::trigger::set("anything", &e.id, Duration::from_secs(60))?;
                Ok(())
            }
            other => Err(Error::msg(format!("unknown hostile action {other}"))),
        }
    }
}

symphony_sdk::export_plugin!(Hostile);
