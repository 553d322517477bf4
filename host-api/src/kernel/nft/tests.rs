//! Root-only tests, each in a throwaway namespace it creates and always
//! deletes. `nft list` is run only to check results.

use super::*;
use crate::model::nft::{
    Action, BaseChain, ChainType, CtStates, Hook, Match, Protocol, Rule, SetType,
};
use ipnet::IpNet;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, BorrowedFd};
use std::process::Command;
use std::sync::atomic::AtomicUsize;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// `ip netns add` on creation, `ip netns delete` on drop (also when the
/// test panics).
struct TestNs {
    name: String,
    file: Option<File>,
}

impl TestNs {
    fn new() -> Option<TestNs> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: nftables tests need root");
            return None;
        }
        let name = format!(
            "nsh-nft-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("skipping: `ip netns add {name}` failed");
            return None;
        }
        let mut ns = TestNs { name, file: None };
        ns.file = Some(File::open(format!("/run/netns/{}", ns.name)).expect("open netns"));
        Some(ns)
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.file.as_ref().unwrap().as_fd())
    }

    fn exec(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("ip netns exec");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    fn list(&self, table: &str) -> String {
        let (ok, text) = self.exec(&["nft", "list", "table", "inet", table]);
        assert!(ok, "nft list table inet {table}: {text}");
        text
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        self.file = None;
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn p4(a: u8, b: u8, c: u8, d: u8, len: u8) -> IpNet {
    IpNet::new(v4(a, b, c, d), len).unwrap()
}

/// An element from its text: a prefix, an address, or an interface name.
fn el(s: &str) -> Element {
    if let Ok(n) = s.parse::<IpNet>() {
        Element::Addr(n)
    } else if let Ok(a) = s.parse::<IpAddr>() {
        Element::Addr(a.into())
    } else {
        Element::Ifname(s.into())
    }
}

fn add_rule(chain: &str, rule: Rule) -> Op {
    Op::AddRule {
        chain: chain.into(),
        rule,
    }
}
fn add_chain(name: &str, base: Option<BaseChain>) -> Op {
    Op::AddChain {
        name: name.into(),
        base,
    }
}
fn del_rule(chain: &str, id: &str) -> Op {
    Op::DeleteRule {
        chain: chain.into(),
        id: id.into(),
    }
}
fn add_set(name: &str, ty: SetType) -> Op {
    Op::AddSet {
        name: name.into(),
        ty,
    }
}
fn add_el(set: &str, elem: &str) -> Op {
    Op::AddElement {
        set: set.into(),
        elem: el(elem),
    }
}
fn del_el(set: &str, elem: &str) -> Op {
    Op::DeleteElement {
        set: set.into(),
        elem: el(elem),
    }
}

fn rule(id: &str, matches: Vec<Match>, action: Action) -> Rule {
    Rule {
        id: id.into(),
        matches,
        counter: false,
        action,
    }
}

fn base(hook: Hook, chain_type: ChainType, priority: i32) -> Option<BaseChain> {
    Some(BaseChain {
        hook,
        chain_type,
        priority,
        policy_drop: false,
    })
}

fn setup_ops() -> Vec<Op> {
    vec![
        add_set("bridges", SetType::Ifname),
        add_el("bridges", "br-test0"),
        add_set("nets", SetType::Ipv4Addr),
        add_el("nets", "10.88.0.0/16"),
        add_el("nets", "10.99.0.5"),
        add_chain("postrouting", base(Hook::Postrouting, ChainType::Nat, 100)),
        add_chain("forward", base(Hook::Forward, ChainType::Filter, 0)),
        add_chain("prerouting", base(Hook::Prerouting, ChainType::Nat, -100)),
        add_chain("sub", None),
    ]
}

#[test]
fn nft_apply_lists_and_deletes() {
    let Some(ns) = TestNs::new() else { return };
    let nft = Nft::new();
    let t = "nsh-test";
    assert_eq!(nft.tables(ns.fd()).unwrap(), Vec::<String>::new());
    assert_eq!(nft.chains(ns.fd(), t).unwrap(), Vec::<String>::new());

    let mut ops = setup_ops();
    ops.extend([
        add_rule(
            "postrouting",
            Rule {
                id: "masq".into(),
                matches: vec![
                    Match::Saddr(p4(10, 0, 0, 0, 24)),
                    Match::OifnameNot("br0".into()),
                ],
                counter: true,
                action: Action::Masquerade,
            },
        ),
        add_rule(
            "postrouting",
            rule(
                "snat",
                vec![Match::Saddr(p4(10, 2, 3, 4, 15))],
                Action::Snat(v4(198, 51, 100, 1)),
            ),
        ),
        add_rule(
            "forward",
            rule(
                "isolate",
                vec![
                    Match::Iifname("br0".into()),
                    Match::OifnameIn("bridges".into()),
                ],
                Action::Drop,
            ),
        ),
        add_rule(
            "forward",
            rule(
                "est",
                vec![Match::CtState(CtStates(
                    CtStates::ESTABLISHED | CtStates::RELATED,
                ))],
                Action::Accept,
            ),
        ),
        add_rule(
            "forward",
            rule(
                "nets",
                vec![Match::SaddrIn("nets".into()), Match::Iifname("br-*".into())],
                Action::Jump("sub".into()),
            ),
        ),
        add_rule(
            "forward",
            rule(
                "ifset",
                vec![
                    Match::IifnameIn("bridges".into()),
                    Match::DaddrIn("nets".into()),
                ],
                Action::Accept,
            ),
        ),
        add_rule(
            "sub",
            rule(
                "ret",
                vec![Match::DaddrNot(p4(10, 1, 0, 0, 16))],
                Action::Return,
            ),
        ),
        add_rule(
            "prerouting",
            rule(
                "dnat",
                vec![
                    Match::Protocol(Protocol::Tcp),
                    Match::Dport(8080),
                    Match::DaddrLocal,
                ],
                Action::Dnat(v4(10, 0, 0, 2), Some(80)),
            ),
        ),
        add_rule(
            "prerouting",
            rule(
                "dnat-noport",
                vec![
                    Match::Protocol(Protocol::Udp),
                    Match::Daddr(p4(203, 0, 113, 7, 32)),
                ],
                Action::Dnat(v4(10, 0, 0, 3), None),
            ),
        ),
    ]);
    nft.apply(ns.fd(), t, &ops).expect("apply");

    let text = ns.list(t);
    for want in [
        "type nat hook postrouting priority srcnat; policy accept;",
        "type filter hook forward priority filter; policy accept;",
        "type nat hook prerouting priority dstnat; policy accept;",
        "ip saddr 10.0.0.0/24 oifname != \"br0\" counter packets 0 bytes 0 masquerade comment \"masq\"",
        "ip saddr 10.2.0.0/15 snat ip to 198.51.100.1 comment \"snat\"",
        "iifname \"br0\" oifname @bridges drop comment \"isolate\"",
        "ct state established,related accept comment \"est\"",
        "ip saddr @nets iifname \"br-*\" jump sub comment \"nets\"",
        "iifname @bridges ip daddr @nets accept comment \"ifset\"",
        "ip daddr != 10.1.0.0/16 return comment \"ret\"",
        "tcp dport 8080 fib daddr type local dnat ip to 10.0.0.2:80 comment \"dnat\"",
        "meta l4proto udp ip daddr 203.0.113.7 dnat ip to 10.0.0.3 comment \"dnat-noport\"",
        "elements = { \"br-test0\" }",
        "type ipv4_addr",
        "flags interval",
        "10.88.0.0/16",
        "10.99.0.5",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }

    assert_eq!(nft.tables(ns.fd()).unwrap(), vec![t.to_string()]);
    let mut chains = nft.chains(ns.fd(), t).unwrap();
    chains.sort();
    assert_eq!(chains, ["forward", "postrouting", "prerouting", "sub"]);
    assert_eq!(
        nft.rules(ns.fd(), t, "forward").unwrap(),
        ["isolate", "est", "nets", "ifset"]
    );
    assert_eq!(
        nft.rules(ns.fd(), t, "postrouting").unwrap(),
        ["masq", "snat"]
    );

    // Idempotent re-creation of chains, sets and elements.
    nft.apply(ns.fd(), t, &setup_ops()).expect("re-apply setup");
    assert_eq!(
        nft.rules(ns.fd(), t, "forward").unwrap(),
        ["isolate", "est", "nets", "ifset"]
    );

    // Delete by id, delete elements.
    nft.apply(
        ns.fd(),
        t,
        &[
            del_rule("forward", "est"),
            del_el("nets", "10.99.0.5"),
            del_el("bridges", "br-test0"),
        ],
    )
    .expect("delete rule and elements");
    assert_eq!(
        nft.rules(ns.fd(), t, "forward").unwrap(),
        ["isolate", "nets", "ifset"]
    );
    let text = ns.list(t);
    assert!(!text.contains("10.99.0.5"), "element still there:\n{text}");
    assert!(!text.contains("br-test0"), "element still there:\n{text}");
    assert!(
        !text.contains("comment \"est\""),
        "rule still there:\n{text}"
    );
    assert!(
        text.contains("10.88.0.0/16"),
        "wrong element deleted:\n{text}"
    );

    // Things that are not there.
    match nft.apply(ns.fd(), t, &[del_rule("forward", "est")]) {
        Err(KernelError::NotFound(m)) => assert!(m.contains("est"), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    match nft.apply(ns.fd(), t, &[del_el("nets", "10.99.0.5")]) {
        Err(KernelError::NotFound(m)) => assert!(m.contains("10.99.0.5"), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    match nft.rules(ns.fd(), t, "nope") {
        Err(KernelError::NotFound(m)) => assert!(m.contains("nope"), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    // A chain with rules is not deleted implicitly.
    assert!(matches!(
        nft.apply(ns.fd(), t, &[Op::DeleteChain("sub".into())]),
        Err(KernelError::Other(_))
    ));
    // Flush then delete (the jump into it goes first).
    nft.apply(
        ns.fd(),
        t,
        &[
            del_rule("forward", "nets"),
            Op::FlushChain("sub".into()),
            Op::DeleteChain("sub".into()),
        ],
    )
    .expect("flush and delete chain");
    assert!(!nft.chains(ns.fd(), t).unwrap().contains(&"sub".to_string()));

    // The whole table.
    nft.apply(ns.fd(), t, &[Op::DeleteTable])
        .expect("delete table");
    assert_eq!(nft.tables(ns.fd()).unwrap(), Vec::<String>::new());
    assert_eq!(nft.chains(ns.fd(), t).unwrap(), Vec::<String>::new());
    match nft.apply(ns.fd(), t, &[Op::DeleteTable]) {
        Err(KernelError::NotFound(m)) => assert!(m.contains(t), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn nft_failed_batch_leaves_nothing() {
    let Some(ns) = TestNs::new() else { return };
    let nft = Nft::new();
    let t = "nsh-atomic";
    let bad = vec![
        add_chain("forward", base(Hook::Forward, ChainType::Filter, 0)),
        add_set("s", SetType::Ipv4Addr),
        add_el("s", "10.0.0.0/8"),
        add_rule("forward", rule("ok", vec![], Action::Accept)),
        add_rule("missing", rule("bad", vec![], Action::Accept)),
    ];
    match nft.apply(ns.fd(), t, &bad) {
        Err(KernelError::NotFound(m)) => assert!(m.contains("missing"), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    // Not even the table is left.
    assert_eq!(nft.tables(ns.fd()).unwrap(), Vec::<String>::new());

    // On an existing table: nothing of the failed batch remains.
    nft.apply(ns.fd(), t, &[add_chain("a", None)]).unwrap();
    let bad = vec![
        add_chain("b", None),
        add_rule("a", rule("r1", vec![], Action::Accept)),
        add_rule("a", rule("r2", vec![], Action::Jump("nowhere".into()))),
    ];
    assert!(matches!(
        nft.apply(ns.fd(), t, &bad),
        Err(KernelError::NotFound(_))
    ));
    assert_eq!(nft.chains(ns.fd(), t).unwrap(), ["a"]);
    assert_eq!(nft.rules(ns.fd(), t, "a").unwrap(), Vec::<String>::new());

    // Rejected before anything is sent.
    let invalid = [
        rule("p", vec![Match::Dport(80)], Action::Accept),
        rule(
            "r",
            vec![Match::Iifname("a-very-long-interface-name".into())],
            Action::Accept,
        ),
        rule(
            "s",
            vec![Match::Protocol(Protocol::Icmp)],
            Action::Dnat(v4(10, 0, 0, 1), Some(80)),
        ),
    ];
    for r in invalid {
        let res = nft.apply(ns.fd(), t, &[add_rule("a", r.clone())]);
        assert!(
            matches!(res, Err(KernelError::Invalid(_))),
            "{} gave {res:?}",
            r.id
        );
    }
    // Unknown set.
    match nft.apply(
        ns.fd(),
        t,
        &[add_rule(
            "a",
            rule("u", vec![Match::SaddrIn("nope".into())], Action::Drop),
        )],
    ) {
        Err(KernelError::NotFound(m)) => assert!(m.contains("set nope"), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    // The kernel refuses NAT in a filter chain.
    nft.apply(
        ns.fd(),
        t,
        &[add_chain("f", base(Hook::Forward, ChainType::Filter, 0))],
    )
    .unwrap();
    let res = nft.apply(
        ns.fd(),
        t,
        &[add_rule("f", rule("m", vec![], Action::Masquerade))],
    );
    assert!(matches!(res, Err(KernelError::Invalid(_))), "{res:?}");
    assert_eq!(nft.rules(ns.fd(), t, "f").unwrap(), Vec::<String>::new());

    // Re-creating objects with another shape is refused, not merged.
    let res = nft.apply(
        ns.fd(),
        t,
        &[add_chain("f", base(Hook::Prerouting, ChainType::Nat, -100))],
    );
    assert!(
        matches!(
            res,
            Err(KernelError::Exists(_)) | Err(KernelError::Invalid(_))
        ),
        "{res:?}"
    );
    nft.apply(ns.fd(), t, &[add_set("s4", SetType::Ipv4Addr)])
        .unwrap();
    let res = nft.apply(ns.fd(), t, &[add_set("s4", SetType::Ifname)]);
    assert!(matches!(res, Err(KernelError::Exists(_))), "{res:?}");
    let res = nft.apply(ns.fd(), t, &[add_el("s4", "eth0")]);
    assert!(matches!(res, Err(KernelError::Invalid(_))), "{res:?}");
    // Overlapping intervals.
    nft.apply(ns.fd(), t, &[add_el("s4", "10.0.0.0/24")])
        .unwrap();
    nft.apply(ns.fd(), t, &[add_el("s4", "10.0.0.0/24")])
        .expect("same element twice");
    let res = nft.apply(ns.fd(), t, &[add_el("s4", "10.0.0.0/16")]);
    assert!(
        matches!(
            res,
            Err(KernelError::Exists(_)) | Err(KernelError::Invalid(_))
        ),
        "{res:?}"
    );
    let res = nft.apply(ns.fd(), t, &[Op::DeleteSet("nope".into())]);
    assert!(matches!(res, Err(KernelError::NotFound(_))), "{res:?}");

    // Atomic replace: delete the table and rebuild it in one batch.
    nft.apply(
        ns.fd(),
        t,
        &[
            Op::DeleteTable,
            add_chain("c", None),
            add_rule("c", rule("x", vec![], Action::Accept)),
        ],
    )
    .unwrap();
    assert_eq!(nft.chains(ns.fd(), t).unwrap(), ["c"]);
    assert_eq!(nft.rules(ns.fd(), t, "c").unwrap(), ["x"]);
    nft.apply(ns.fd(), t, &[Op::DeleteTable]).unwrap();
}

#[test]
fn nft_large_batch() {
    let Some(ns) = TestNs::new() else { return };
    let nft = Nft::new();
    let t = "nsh-large";
    let mut ops = vec![add_set("big", SetType::Ipv4Addr), add_chain("c", None)];
    for i in 0..4000u32 {
        ops.push(add_el("big", &format!("10.{}.{}.0/24", i / 256, i % 256)));
    }
    for i in 0..500 {
        ops.push(add_rule(
            "c",
            rule(
                &format!("r{i}"),
                vec![Match::Iifname(format!("veth{i}"))],
                Action::Accept,
            ),
        ));
    }
    nft.apply(ns.fd(), t, &ops).expect("large batch");
    assert_eq!(nft.rules(ns.fd(), t, "c").unwrap().len(), 500);
    let text = ns.list(t);
    assert!(text.contains("10.15.159.0/24"), "last element missing");
    // A large failing batch still reports the failing op.
    ops.push(del_el("big", "192.0.2.0/24"));
    match nft.apply(ns.fd(), t, &ops) {
        Err(KernelError::NotFound(m)) => assert!(m.contains("192.0.2.0/24"), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(nft.rules(ns.fd(), t, "c").unwrap().len(), 500);
    nft.apply(ns.fd(), t, &[Op::DeleteTable]).unwrap();
}

#[test]
fn nft_ipv6_and_traffic() {
    let Some(ns) = TestNs::new() else { return };
    let (ok, text) = ns.exec(&["ip", "link", "set", "lo", "up"]);
    assert!(ok, "{text}");
    let nft = Nft::new();
    let t = "nsh-traffic";
    let v6 = |s: &str, len: u8| IpNet::new(s.parse::<Ipv6Addr>().unwrap().into(), len).unwrap();
    nft.apply(
        ns.fd(),
        t,
        &[
            add_set("v6nets", SetType::Ipv6Addr),
            add_el("v6nets", "fd00:1::/48"),
            add_chain("output", base(Hook::Output, ChainType::Filter, 0)),
            add_rule(
                "output",
                Rule {
                    id: "block".into(),
                    matches: vec![Match::Daddr(p4(127, 0, 0, 2, 32))],
                    counter: true,
                    action: Action::Drop,
                },
            ),
            add_rule(
                "output",
                rule(
                    "v6",
                    vec![Match::SaddrNot(v6("fd00::", 64))],
                    Action::Accept,
                ),
            ),
            add_rule(
                "output",
                rule("v6set", vec![Match::DaddrIn("v6nets".into())], Action::Drop),
            ),
        ],
    )
    .unwrap();
    let text = ns.list(t);
    for want in [
        "ip6 saddr != fd00::/64 accept",
        "ip6 daddr @v6nets drop",
        "type ipv6_addr",
        "fd00:1::/48",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let (ok, _) = ns.exec(&["ping", "-c1", "-W1", "127.0.0.1"]);
    assert!(ok, "127.0.0.1 should answer");
    let (ok, _) = ns.exec(&["ping", "-c1", "-W1", "127.0.0.2"]);
    assert!(!ok, "127.0.0.2 should be dropped");
    let text = ns.list(t);
    assert!(
        text.contains("ip daddr 127.0.0.2 counter packets 1 "),
        "counter did not count:\n{text}"
    );

    nft.apply(ns.fd(), t, &[del_rule("output", "block")])
        .unwrap();
    let (ok, _) = ns.exec(&["ping", "-c1", "-W1", "127.0.0.2"]);
    assert!(ok, "127.0.0.2 should answer once the rule is gone");
    nft.apply(ns.fd(), t, &[Op::DeleteTable]).unwrap();
    assert_eq!(nft.tables(ns.fd()).unwrap(), Vec::<String>::new());
}

/// The set types the host's dispatch and policy use: interface indexes
/// (looked up, also inverted, with `meta iif`/`oif`) and ports.
#[test]
fn nft_ifindex_and_port_sets() {
    let Some(ns) = TestNs::new() else { return };
    let nft = Nft::new();
    let t = "nsh-ifidx";
    nft.apply(
        ns.fd(),
        t,
        &[
            add_set("ifs", SetType::Ifindex),
            Op::AddElement {
                set: "ifs".into(),
                elem: Element::Ifindex(1),
            },
            add_set("ports", SetType::InetService),
            Op::AddElement {
                set: "ports".into(),
                elem: Element::Port(8080),
            },
            Op::AddElement {
                set: "ports".into(),
                elem: Element::Port(443),
            },
            add_chain("fwd", base(Hook::Forward, ChainType::Filter, 0)),
            add_rule(
                "fwd",
                rule("in", vec![Match::IifIn("ifs".into())], Action::Accept),
            ),
            add_rule(
                "fwd",
                rule(
                    "out",
                    vec![Match::IifNotIn("ifs".into()), Match::OifIn("ifs".into())],
                    Action::Accept,
                ),
            ),
            add_rule(
                "fwd",
                rule(
                    "not-out",
                    vec![Match::OifNotIn("ifs".into())],
                    Action::Return,
                ),
            ),
            add_rule(
                "fwd",
                rule(
                    "ports",
                    vec![
                        Match::Protocol(Protocol::Tcp),
                        Match::DportIn("ports".into()),
                    ],
                    Action::Drop,
                ),
            ),
        ],
    )
    .expect("apply");
    let text = ns.list(t);
    for want in [
        "type iface_index",
        "type inet_service",
        "iif @ifs accept comment \"in\"",
        "iif != @ifs oif @ifs accept comment \"out\"",
        "oif != @ifs return comment \"not-out\"",
        "tcp dport @ports drop comment \"ports\"",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(text.contains("8080") && text.contains("443"), "{text}");
    // A set of one type is not looked up as another.
    let res = nft.apply(
        ns.fd(),
        t,
        &[add_rule(
            "fwd",
            rule("x", vec![Match::SaddrIn("ifs".into())], Action::Drop),
        )],
    );
    assert!(matches!(res, Err(KernelError::Invalid(_))), "{res:?}");
    let res = nft.apply(
        ns.fd(),
        t,
        &[Op::AddElement {
            set: "ifs".into(),
            elem: Element::Port(1),
        }],
    );
    assert!(matches!(res, Err(KernelError::Invalid(_))), "{res:?}");
    nft.apply(
        ns.fd(),
        t,
        &[Op::DeleteElement {
            set: "ifs".into(),
            elem: Element::Ifindex(1),
        }],
    )
    .unwrap();
    assert!(!ns.list(t).contains("elements = { lo }"));
    nft.apply(ns.fd(), t, &[Op::DeleteTable]).unwrap();
}

/// A rule far over every size the kernel accepts is an error, not a
/// crash (the old C builder wrote it into a fixed buffer).
#[test]
fn nft_oversize_rule_is_an_error() {
    let Some(ns) = TestNs::new() else { return };
    let nft = Nft::new();
    let t = "nsh-big";
    let matches = (0..5000)
        .map(|i| Match::IifnameNot(format!("x{i}")))
        .collect();
    let res = nft.apply(
        ns.fd(),
        t,
        &[
            add_chain("c", None),
            add_rule("c", rule("huge", matches, Action::Accept)),
        ],
    );
    assert!(
        matches!(&res, Err(KernelError::Invalid(m)) if m.contains("larger than")),
        "{res:?}"
    );
    assert_eq!(nft.tables(ns.fd()).unwrap(), Vec::<String>::new());
}
