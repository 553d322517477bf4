//! `fuzz-netfilter [CASES] [SEED]`: random netfilter batches through the
//! host (binding edge, guard, journal, recording fake) and random model ops
//! at the nf_tables encoder, CASES of each (1,000,000 by default). A case
//! that panics, traps the host, or leaves a refused batch's changes behind
//! is a crash; the run prints how many there were. Not part of CI.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use netshim_tests::nft_gen::{self, FakeHost, Sizes};
use netshim_tests::TempDir;
use proptest::strategy::{Strategy, ValueTree};

fn main() {
    let (cases, seed, mut runner) = netshim_tests::fuzz_args();
    let batches = nft_gen::batch(Sizes::FUZZ);
    let model = nft_gen::model_ops(Sizes::FUZZ);
    let dir = TempDir::new("fuzz-nft");
    // Silence the default panic message per case; panics are counted.
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let (mut crashes, mut applied, mut refused, mut ops) = (0u64, 0u64, 0u64, 0u64);
    // One store session at a time: the old host goes before a new one.
    let mut host: Option<FakeHost> = None;
    for i in 0..cases {
        if i % 1000 == 0 {
            // A fresh table now and then, so batches meet both states.
            host = None;
        }
        let h = host.get_or_insert_with(|| FakeHost::new(&dir.0));
        let b = batches.new_tree(&mut runner).expect("generate").current();
        ops += b.len() as u64;
        match catch_unwind(AssertUnwindSafe(|| h.apply(b))) {
            Ok(Ok(true)) => applied += 1,
            Ok(Ok(false)) => refused += 1,
            Ok(Err(e)) => {
                crashes += 1;
                eprintln!("case {i}: {e}");
            }
            Err(_) => {
                crashes += 1;
                eprintln!("case {i}: the host panicked");
                host = None;
            }
        }
        let m = model.new_tree(&mut runner).expect("generate").current();
        ops += m.len() as u64;
        match catch_unwind(AssertUnwindSafe(|| nft_gen::encode(&m))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                crashes += 1;
                eprintln!("case {i} (encoder): {e}");
            }
            Err(_) => {
                crashes += 1;
                eprintln!("case {i} (encoder): panicked");
            }
        }
        if (i + 1) % 100_000 == 0 {
            eprintln!(
                "fuzz-netfilter: {} cases, {crashes} crashes, {:.0} s",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "fuzz-netfilter: {cases} host batches ({applied} applied, {refused} refused) and {cases} encoder batches, {ops} ops, seed {seed}: {crashes} crashes in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if crashes > 0 {
        std::process::exit(1);
    }
}
