//! `fuzz-http [CASES] [SEED]`: CASES generated clients (1,000,000 by
//! default) through the daemon's HTTP and JSON layers in memory, against a
//! core on the recording fake. A client that makes the daemon panic
//! (in hyper, or while answering: a 500 saying netshim failed),
//! answer with something that is not HTTP, or stop serving a good request
//! is a crash; the run prints how many there were. Not part of CI.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use netshim_tests::http_gen::{self, FakeDaemon};
use netshim_tests::TempDir;
use proptest::strategy::{Strategy, ValueTree};

fn main() {
    let (cases, seed, mut runner) = netshim_tests::fuzz_args();
    let clients = http_gen::client();
    let dir = TempDir::new("fuzz-http");
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let (mut crashes, mut ok, mut bytes) = (0u64, 0u64, 0u64);
    // Answers by the status of their first response: 2xx, 4xx, 5xx, none.
    let mut classes = [0u64; 4];
    let mut daemon: Option<FakeDaemon> = None;
    for i in 0..cases {
        if i % 10_000 == 0 {
            // A fresh state now and then, so requests meet both kinds.
            daemon = None;
            let _ = std::fs::remove_dir_all(dir.0.join("state"));
        }
        let d = daemon.get_or_insert_with(|| FakeDaemon::new(&dir.0));
        let c = clients.new_tree(&mut runner).expect("generate").current();
        bytes += c.len() as u64;
        match catch_unwind(AssertUnwindSafe(|| d.exchange(&c))) {
            Ok(Ok(out)) => {
                ok += 1;
                let class = match out.get(9) {
                    Some(b'2') => 0,
                    Some(b'4') => 1,
                    Some(b'5') => 2,
                    _ => 3,
                };
                classes[class] += 1;
            }
            Ok(Err(e)) => {
                crashes += 1;
                eprintln!("case {i}: {e}");
            }
            Err(_) => {
                crashes += 1;
                eprintln!("case {i}: panicked");
                daemon = None;
            }
        }
        if (i + 1) % 1000 == 0 {
            if let Some(d) = &daemon {
                if !d.serves() {
                    crashes += 1;
                    eprintln!("case {i}: a good request is no longer served");
                    daemon = None;
                }
            }
        }
        if (i + 1) % 100_000 == 0 {
            eprintln!(
                "fuzz-http: {} clients, {crashes} crashes, {:.0} s",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "fuzz-http: {cases} clients ({ok} answered or closed cleanly: first answer 2xx {}, 4xx {}, 5xx {}, closed {}), {bytes} bytes, seed {seed}: {crashes} crashes in {:.0} s",
        classes[0],
        classes[1],
        classes[2],
        classes[3],
        started.elapsed().as_secs_f64()
    );
    if crashes > 0 {
        std::process::exit(1);
    }
}
