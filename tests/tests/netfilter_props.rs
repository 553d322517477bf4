//! Random netfilter batches thrown at the host through the recording fake
//! (no root): whatever a guest sends — any op, any size, any name — the
//! host answers with a value (applied, or an error naming the problem),
//! never a panic or a trap, and a refused batch leaves the table as it was.

use std::sync::Arc;

use netshim_host_api::bindings::netshim::plugin::netfilter::{
    Action, BaseChain, ChainType, Hook, Host, Match, Op, Protocol, Rule, SetType,
};
use netshim_host_api::bindings::netshim::plugin::types::{IpAddress, IpPrefix};
use netshim_host_api::host::{Grant, HostError, HostState};
use netshim_host_api::kernel::fake::FakeKernel;
use netshim_host_api::store::LocalStore;
use netshim_tests::TempDir;
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["forward", "postrouting", "pre", "c1", "s1", "netshim-ifs", "netshim-filter-input"]).prop_map(str::to_string),
        1 => ".{0,80}",
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

fn addr() -> impl Strategy<Value = IpAddress> {
    prop_oneof![
        any::<(u8, u8, u8, u8)>().prop_map(IpAddress::Ipv4),
        any::<(u16, u16, u16, u16, u16, u16, u16, u16)>().prop_map(IpAddress::Ipv6),
    ]
}

fn prefix() -> impl Strategy<Value = IpPrefix> {
    (addr(), any::<u8>()).prop_map(|(address, prefix_len)| IpPrefix { address, prefix_len })
}

fn r#match() -> impl Strategy<Value = Match> {
    prop_oneof![
        name().prop_map(Match::Iifname),
        name().prop_map(Match::IifnameNot),
        name().prop_map(Match::OifnameNot),
        prefix().prop_map(Match::Saddr),
        prefix().prop_map(Match::DaddrNot),
        name().prop_map(Match::SaddrIn),
        name().prop_map(Match::OifnameIn),
        prop::sample::select(vec![Protocol::Tcp, Protocol::Udp, Protocol::Sctp, Protocol::Icmp]).prop_map(Match::Protocol),
        any::<u16>().prop_map(Match::Dport),
        Just(Match::DaddrLocal),
        Just(Match::CtEstablished),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Accept),
        Just(Action::Drop),
        Just(Action::ReturnChain),
        name().prop_map(Action::Jump),
        Just(Action::Masquerade),
        addr().prop_map(Action::Snat),
        (addr(), any::<Option<u16>>()).prop_map(Action::Dnat),
    ]
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        name(),
        prop_oneof![4 => prop::collection::vec(r#match(), 0..6), 1 => prop::collection::vec(r#match(), 0..3000)],
        any::<bool>(),
        action(),
    )
        .prop_map(|(id, matches, counter, action)| Rule { id, matches, counter, action })
}

fn base() -> impl Strategy<Value = Option<BaseChain>> {
    prop::option::of(
        (
            prop::sample::select(vec![Hook::Prerouting, Hook::Input, Hook::Forward, Hook::Output, Hook::Postrouting]),
            prop::sample::select(vec![ChainType::Filter, ChainType::Nat, ChainType::Route]),
            any::<i32>(),
            any::<bool>(),
        )
            .prop_map(|(hook, chain_type, priority, policy_drop)| BaseChain { hook, chain_type, priority, policy_drop }),
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (name(), base()).prop_map(Op::AddChain),
        name().prop_map(Op::DeleteChain),
        name().prop_map(Op::FlushChain),
        (name(), rule()).prop_map(Op::AddRule),
        (name(), name()).prop_map(Op::DeleteRule),
        (name(), prop::sample::select(vec![SetType::Ipv4Addr, SetType::Ipv6Addr, SetType::Ifname])).prop_map(Op::AddSet),
        name().prop_map(Op::DeleteSet),
        (name(), name()).prop_map(Op::AddElement),
        (name(), name()).prop_map(Op::DeleteElement),
        Just(Op::DeleteTable),
    ]
}

fn batch() -> impl Strategy<Value = Vec<Op>> {
    prop_oneof![
        8 => prop::collection::vec(op(), 0..12),
        1 => prop::collection::vec(op(), 1000..1100),
    ]
}

/// 256 cases with a fixed seed in CI; `scripts/fuzz-netfilter.sh` sets
/// NETSHIM_PROP_CASES (and may set NETSHIM_PROP_SEED) for long runs.
fn cases() -> u32 {
    std::env::var("NETSHIM_PROP_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

fn seed() -> prop::test_runner::RngSeed {
    let s = std::env::var("NETSHIM_PROP_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed);
    prop::test_runner::RngSeed::Fixed(s)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), rng_seed: seed(), ..ProptestConfig::default() })]

    #[test]
    fn any_batch_is_a_value_never_a_crash(batches in prop::collection::vec(batch(), 1..4)) {
        let dir = TempDir::new("nft-props");
        let store = LocalStore::open(&dir.0).unwrap();
        let kernel = Arc::new(FakeKernel::new());
        let grant = Grant {
            driver: "prop".into(),
            network_id: Some("n1".into()),
            route_prefixes: vec!["10.77.0.0/24".parse().unwrap()],
            pools: vec!["10.77.0.0/24".parse().unwrap()],
            ..Grant::default()
        };
        let mut host = HostState::new(kernel.clone(), Box::new(store.session().unwrap()), grant, "prop");
        for b in batches {
            let before = kernel.nft_rule_list("netshim-prop");
            match host.apply(b) {
                Ok(()) => {}
                Err(HostError::Guest(_)) => {
                    prop_assert_eq!(kernel.nft_rule_list("netshim-prop"), before, "a refused batch changed the table");
                }
                Err(HostError::Trap(t)) => prop_assert!(false, "a batch trapped the host: {t:#}"),
            }
        }
    }
}
