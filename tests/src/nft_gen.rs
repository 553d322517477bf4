//! Random netfilter batches, as a hostile guest would send them: any op,
//! any size, any name. Shared by the CI property test (small, fixed seed)
//! and `fuzz-netfilter` (as many as asked for).

use std::sync::Arc;

use netshim_host_api::bindings::netshim::plugin::netfilter::{
    Action, BaseChain, ChainType, Hook, Host, Match, Op, Protocol, Rule, SetType,
};
use netshim_host_api::bindings::netshim::plugin::types::{IpAddress, IpPrefix};
use netshim_host_api::host::{Grant, HostError, HostState};
use netshim_host_api::kernel::fake::FakeKernel;
use netshim_host_api::kernel::nft::encode_offline;
use netshim_host_api::model::nft as m;
use netshim_host_api::store::LocalStore;
use proptest::prelude::*;

/// How big a batch and a rule get: mostly small, sometimes far over the
/// host's limits.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub big_batch: usize,
    pub big_rule: usize,
}

impl Sizes {
    pub const CI: Sizes = Sizes {
        big_batch: 1100,
        big_rule: 3000,
    };
    /// Over every limit, but small enough for a million cases.
    pub const FUZZ: Sizes = Sizes {
        big_batch: 1030,
        big_rule: 40,
    };
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["forward", "postrouting", "pre", "c1", "s1", "netshim-ifs", "netshim-filter-input", "br-*", "*"]).prop_map(str::to_string),
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
    (addr(), any::<u8>()).prop_map(|(address, prefix_len)| IpPrefix {
        address,
        prefix_len,
    })
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
        prop::sample::select(vec![
            Protocol::Tcp,
            Protocol::Udp,
            Protocol::Sctp,
            Protocol::Icmp
        ])
        .prop_map(Match::Protocol),
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

fn rule(s: Sizes) -> impl Strategy<Value = Rule> {
    (
        name(),
        prop_oneof![4 => prop::collection::vec(r#match(), 0..6), 1 => prop::collection::vec(r#match(), 0..s.big_rule)],
        any::<bool>(),
        action(),
    )
        .prop_map(|(id, matches, counter, action)| Rule { id, matches, counter, action })
}

fn base() -> impl Strategy<Value = Option<BaseChain>> {
    prop::option::of(
        (
            prop::sample::select(vec![
                Hook::Prerouting,
                Hook::Input,
                Hook::Forward,
                Hook::Output,
                Hook::Postrouting,
            ]),
            prop::sample::select(vec![ChainType::Filter, ChainType::Nat, ChainType::Route]),
            any::<i32>(),
            any::<bool>(),
        )
            .prop_map(|(hook, chain_type, priority, policy_drop)| BaseChain {
                hook,
                chain_type,
                priority,
                policy_drop,
            }),
    )
}

fn op(s: Sizes) -> impl Strategy<Value = Op> {
    prop_oneof![
        (name(), base()).prop_map(Op::AddChain),
        name().prop_map(Op::DeleteChain),
        name().prop_map(Op::FlushChain),
        (name(), rule(s)).prop_map(Op::AddRule),
        (name(), name()).prop_map(Op::DeleteRule),
        (
            name(),
            prop::sample::select(vec![SetType::Ipv4Addr, SetType::Ipv6Addr, SetType::Ifname])
        )
            .prop_map(Op::AddSet),
        name().prop_map(Op::DeleteSet),
        (name(), name()).prop_map(Op::AddElement),
        (name(), name()).prop_map(Op::DeleteElement),
        Just(Op::DeleteTable),
    ]
}

/// One batch as a guest's `netfilter.apply` sends it.
pub fn batch(s: Sizes) -> impl Strategy<Value = Vec<Op>> {
    prop_oneof![
        8 => prop::collection::vec(op(s), 0..12),
        1 => prop::collection::vec(op(s), s.big_batch - 100..s.big_batch),
    ]
}

/// Model ops for the encoder: what reaches the kernel backend.
pub fn model_ops(s: Sizes) -> impl Strategy<Value = Vec<m::Op>> {
    let mname = || prop_oneof![3 => prop::sample::select(vec!["c", "s", "br-*", "*"]).prop_map(str::to_string), 1 => ".{0,300}"];
    let net = || {
        prop_oneof![
            (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, l)| ipnet::IpNet::new(
                std::net::IpAddr::from(a),
                l
            )
            .unwrap()),
            (any::<[u8; 16]>(), 0u8..=128).prop_map(|(a, l)| ipnet::IpNet::new(
                std::net::IpAddr::from(a),
                l
            )
            .unwrap()),
        ]
    };
    let mmatch = || {
        prop_oneof![
            mname().prop_map(m::Match::Iifname),
            net().prop_map(m::Match::Saddr),
            mname().prop_map(m::Match::DaddrIn),
            mname().prop_map(m::Match::IifNotIn),
            mname().prop_map(m::Match::DportIn),
            prop::sample::select(vec![m::Protocol::Tcp, m::Protocol::Icmp])
                .prop_map(m::Match::Protocol),
            (any::<u16>(), any::<u16>()).prop_map(|(a, b)| m::Match::DportRange(a, b)),
            any::<u8>().prop_map(m::Match::IcmpType),
            any::<u32>().prop_map(|x| m::Match::CtState(m::CtStates(x))),
            Just(m::Match::FromNetwork),
        ]
    };
    let matches = prop_oneof![
        4 => prop::collection::vec(mmatch(), 0..6),
        1 => prop::collection::vec(mmatch(), 0..s.big_rule),
    ];
    let addr = || net().prop_map(|n| n.addr());
    let action = prop_oneof![
        Just(m::Action::Accept),
        Just(m::Action::Drop),
        Just(m::Action::Return),
        Just(m::Action::Reject),
        mname().prop_map(m::Action::Jump),
        Just(m::Action::Masquerade),
        addr().prop_map(m::Action::Snat),
        (addr(), any::<Option<u16>>()).prop_map(|(a, p)| m::Action::Dnat(a, p)),
    ];
    let rule =
        (mname(), matches, any::<bool>(), action).prop_map(|(id, matches, counter, action)| {
            m::Rule {
                id,
                matches,
                counter,
                action,
            }
        });
    let ty = prop::sample::select(vec![
        m::SetType::Ipv4Addr,
        m::SetType::Ipv6Addr,
        m::SetType::Ifname,
        m::SetType::Ifindex,
        m::SetType::InetService,
    ]);
    let elem = prop_oneof![
        net().prop_map(m::Element::Addr),
        mname().prop_map(m::Element::Ifname),
        any::<u32>().prop_map(m::Element::Ifindex),
        any::<u16>().prop_map(m::Element::Port),
    ];
    let op = prop_oneof![
        (mname(), rule).prop_map(|(chain, rule)| m::Op::AddRule { chain, rule }),
        (mname(), ty).prop_map(|(name, ty)| m::Op::AddSet { name, ty }),
        (mname(), elem).prop_map(|(set, elem)| m::Op::AddElement { set, elem }),
        mname().prop_map(|name| m::Op::AddChain { name, base: None }),
        Just(m::Op::DeleteTable),
    ];
    prop::collection::vec(op, 0..16)
}

/// A host for one driver network on the recording fake, as the CNM core
/// sets it up for a guest call.
pub struct FakeHost {
    pub kernel: Arc<FakeKernel>,
    pub host: HostState,
}

impl FakeHost {
    pub fn new(state_dir: &std::path::Path) -> FakeHost {
        let store = LocalStore::open(state_dir).unwrap();
        let kernel = Arc::new(FakeKernel::new());
        let grant = Grant {
            driver: "prop".into(),
            network_id: Some("n1".into()),
            route_prefixes: vec!["10.77.0.0/24".parse().unwrap()],
            pools: vec!["10.77.0.0/24".parse().unwrap()],
            ..Grant::default()
        };
        let host = HostState::new(
            kernel.clone(),
            Box::new(store.session().unwrap()),
            grant,
            "prop",
        );
        FakeHost { kernel, host }
    }

    /// Apply a guest's batch: Ok(true) applied, Ok(false) refused with the
    /// table as it was, Err(why) for anything else (a trap, a refused
    /// batch that changed the table).
    pub fn apply(&mut self, b: Vec<Op>) -> Result<bool, String> {
        let before = self.kernel.nft_rule_list("netshim-prop");
        match self.host.apply(b) {
            Ok(()) => Ok(true),
            Err(HostError::Guest(_)) => {
                if self.kernel.nft_rule_list("netshim-prop") != before {
                    return Err("a refused batch changed the table".into());
                }
                Ok(false)
            }
            Err(HostError::Trap(t)) => Err(format!("a batch trapped the host: {t:#}")),
        }
    }
}

/// The encoder on its own: bytes within bounds or an error, never a panic.
pub fn encode(ops: &[m::Op]) -> Result<(), String> {
    match encode_offline("netshim-prop", ops) {
        Ok(bytes) if bytes.len() > (16 << 20) => {
            Err(format!("{} bytes, over the batch bound", bytes.len()))
        }
        _ => Ok(()),
    }
}
