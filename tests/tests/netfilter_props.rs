//! Random netfilter batches thrown at the host through the recording fake
//! (no root): whatever a guest sends — any op, any size, any name — the
//! host answers with a value (applied, or an error naming the problem),
//! never a panic or a trap, and a refused batch leaves the table as it was.
//! The same for random model ops at the nf_tables encoder.
//! `scripts/fuzz-netfilter.sh` runs the same generators a million times.

use netshim_tests::nft_gen::{self, FakeHost, Sizes};
use netshim_tests::TempDir;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, rng_seed: prop::test_runner::RngSeed::Fixed(0x5eed), ..ProptestConfig::default() })]

    #[test]
    fn any_batch_is_a_value_never_a_crash(batches in prop::collection::vec(nft_gen::batch(Sizes::CI), 1..4)) {
        let dir = TempDir::new("nft-props");
        let mut h = FakeHost::new(&dir.0);
        for b in batches {
            if let Err(e) = h.apply(b) {
                prop_assert!(false, "{}", e);
            }
        }
    }

    #[test]
    fn the_encoder_answers_any_ops(ops in nft_gen::model_ops(Sizes::CI)) {
        if let Err(e) = nft_gen::encode(&ops) {
            prop_assert!(false, "{}", e);
        }
    }
}
