//! Whatever a client sends the plugin socket — HTTP framed right or wrong,
//! JSON bodies of Docker's field names with values of every type, or bytes
//! that are not HTTP — the daemon answers with HTTP (or closes), never
//! panics, and still serves a good request afterwards. In memory, against
//! a core on the recording fake (no root). `scripts/fuzz-http.sh` runs the
//! same generators a million times.

use netshim_tests::http_gen::{self, FakeDaemon};
use netshim_tests::TempDir;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, rng_seed: prop::test_runner::RngSeed::Fixed(0x5eed), ..ProptestConfig::default() })]

    #[test]
    fn any_client_gets_http_and_the_daemon_keeps_serving(clients in prop::collection::vec(http_gen::client(), 1..4)) {
        let dir = TempDir::new("http-props");
        let d = FakeDaemon::new(&dir.0);
        for c in clients {
            if let Err(e) = d.exchange(&c) {
                prop_assert!(false, "{}: {:?}", e, String::from_utf8_lossy(&c));
            }
        }
        prop_assert!(d.serves(), "a good request is no longer served");
    }
}
