//! The CNM core and the built-in bridge guest against the recording fake
//! kernel: no root, no namespaces, real wasm.

use std::path::PathBuf;
use std::sync::Arc;

use netshim_host_api::kernel::fake::FakeKernel;
use netshim_host_api::kernel::{Kernel, NsId, Route};

use super::*;
use crate::runtime::{Limits, Runtime};

struct Fixture {
    core: Core,
    fake: Arc<FakeKernel>,
    dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fixture(tag: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("netshim-cnm-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fake = Arc::new(FakeKernel::new());
    let cache = std::env::temp_dir().join("netshim-unit-cache");
    let runtime = Runtime::new(Limits::default(), Some(cache)).unwrap();
    let core = Core::new(runtime, fake.clone(), &dir.join("state"), Vec::new()).unwrap();
    Fixture { core, fake, dir }
}

impl Fixture {
    fn create(&self, name: &str, subnet: Option<&str>, internal: bool) -> CnmResult<Network> {
        self.core.network_create(CreateNetwork {
            name: name.into(),
            driver: "bridge".into(),
            subnet: subnet.map(|s| s.parse().unwrap()),
            gateway: None,
            internal,
            options: Vec::new(),
        })
    }

    /// A file standing in for a namespace path.
    fn sandbox(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, b"").unwrap();
        p
    }

    fn attach(&self, net: &str, sb: &PathBuf, ip: Option<&str>) -> CnmResult<Endpoint> {
        self.core.attach(Attach {
            ip: ip.map(|i| i.parse().unwrap()),
            ..Attach::new(net, sb.clone())
        })
    }
}

#[test]
fn network_create_makes_a_bridge_with_gateway_nat_and_isolation() {
    let f = fixture("create");
    let net = f.create("net1", Some("10.77.0.0/24"), false).unwrap();
    let bridge = format!("br-{}", &net.id[..12]);
    assert!(f.fake.link_names(NsId::NODE).contains(&bridge));
    assert_eq!(
        f.fake.addresses_of(NsId::NODE, &bridge),
        vec!["10.77.0.1/24".parse().unwrap()]
    );
    assert_eq!(
        f.fake.sysctl(NsId::NODE, "net/ipv4/ip_forward").as_deref(),
        Some("1")
    );
    let rules = f.fake.nft_rule_list("netshim-bridge");
    assert!(
        rules.contains(&format!("postrouting/masq-{bridge}")),
        "{rules:?}"
    );
    assert!(
        rules.contains(&format!("forward/iso-{bridge}")),
        "{rules:?}"
    );
    assert_eq!(
        f.fake.nft_set_elements("netshim-bridge", "bridges"),
        vec![bridge]
    );
    assert_eq!(net.ipv4[0].gateway, Some("10.77.0.1/24".parse().unwrap()));
}

#[test]
fn internal_network_has_no_nat_and_drops_traffic_leaving_it() {
    let f = fixture("internal");
    let net = f.create("priv", Some("10.78.0.0/24"), true).unwrap();
    let bridge = format!("br-{}", &net.id[..12]);
    let rules = f.fake.nft_rule_list("netshim-bridge");
    assert!(
        !rules.iter().any(|r| r.starts_with("postrouting/")),
        "{rules:?}"
    );
    assert!(
        rules.contains(&format!("forward/int-out-{bridge}"))
            && rules.contains(&format!("forward/int-in-{bridge}")),
        "{rules:?}"
    );
    assert_eq!(
        f.fake.sysctl(NsId::NODE, "net/ipv4/ip_forward"),
        None,
        "an internal network needs no forwarding"
    );
}

#[test]
fn attach_and_detach_leave_nothing_behind() {
    let f = fixture("roundtrip");
    let links = f.fake.link_names(NsId::NODE);
    f.create("net1", Some("10.77.0.0/24"), false).unwrap();
    let sb = f.sandbox("c1");
    let ep = f.attach("net1", &sb, None).unwrap();
    assert_eq!(ep.ipv4, Some("10.77.0.2/24".parse().unwrap()));
    assert_eq!(ep.mac.as_deref(), Some("02:42:0a:4d:00:02"));
    assert_eq!(ep.gateway, Some("10.77.0.1".parse().unwrap()));
    let calls = f.fake.calls();
    assert!(
        calls.iter().any(|c| c.starts_with("create_link veth")),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("add_route 0.0.0.0/0 via Some(10.77.0.1)")),
        "{calls:?}"
    );
    assert!(
        calls.iter().all(|c| !c.contains("exec")),
        "no process in the attach path"
    );

    let again = f.attach("net1", &sb, None).unwrap();
    assert_eq!(again.id, ep.id, "attach is idempotent");

    f.core
        .detach(DetachTarget::Sandbox {
            network: "net1".into(),
            netns: sb.clone(),
        })
        .unwrap();
    assert!(!f
        .fake
        .link_names(NsId::NODE)
        .iter()
        .any(|l| l.starts_with("veth")));
    f.core.network_rm("net1").unwrap();
    assert_eq!(f.fake.link_names(NsId::NODE), links);
    assert!(f.fake.nft_rule_list("netshim-bridge").is_empty());
    assert!(
        f.fake.nft_tables(NsId::NODE).unwrap().is_empty(),
        "the driver's table goes with its last network"
    );
    let state = netshim_host_api::store::LocalStore::open(&f.dir.join("state"))
        .unwrap()
        .snapshot()
        .unwrap();
    assert!(state.is_empty(), "state left behind: {state:?}");
}

#[test]
fn a_refused_attach_reserves_nothing_and_creates_nothing() {
    let f = fixture("refused");
    f.create("net1", Some("10.77.0.0/24"), false).unwrap();
    let (a, b) = (f.sandbox("a"), f.sandbox("b"));
    f.attach("net1", &a, Some("10.77.0.9")).unwrap();
    let links = f.fake.link_names(NsId::NODE);
    let err = f
        .attach("net1", &b, Some("10.77.0.9"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("already in use"), "{err}");
    let err = f
        .attach("net1", &b, Some("10.1.0.1"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("10.77.0.0/24"), "{err}");
    assert_eq!(f.fake.link_names(NsId::NODE), links);
    assert_eq!(
        f.attach("net1", &b, None).unwrap().ipv4,
        Some("10.77.0.2/24".parse().unwrap())
    );
}

#[test]
fn a_failure_after_the_veth_exists_rolls_the_veth_back() {
    let f = fixture("rollback");
    f.create("net1", Some("10.77.0.0/24"), false).unwrap();
    let links = f.fake.link_names(NsId::NODE);
    // The sandbox configurator's route fails after the driver made the veth.
    f.fake.fail("add_route");
    let sb = f.sandbox("c1");
    let err = f.attach("net1", &sb, None).unwrap_err().to_string();
    assert!(err.contains("default route"), "{err}");
    assert!(
        f.fake
            .calls()
            .iter()
            .any(|c| c.starts_with("create_link veth")),
        "the veth was made before the failure"
    );
    assert_eq!(
        f.fake.link_names(NsId::NODE),
        links,
        "the node end of the veth is left"
    );
    f.fake.clear_failures();
    assert_eq!(
        f.fake.link_names(NsId(1)),
        vec!["lo".to_string()],
        "the sandbox end is left"
    );
    let other = f.sandbox("c2");
    assert_eq!(
        f.attach("net1", &other, None).unwrap().ipv4,
        Some("10.77.0.2/24".parse().unwrap()),
        "the failed attach kept its address"
    );
}

#[test]
fn default_pool_avoids_routes_the_node_already_has() {
    let f = fixture("pool");
    let mut r = Route::new("172.17.0.0/16".parse().unwrap());
    r.oif = Some(2);
    f.fake.add_route(NsId::NODE, &r, false).unwrap();
    let net = f.create("auto", None, false).unwrap();
    assert_eq!(net.ipv4[0].subnet.to_string(), "172.18.0.0/16");
    let second = f.create("auto2", None, false).unwrap();
    assert_eq!(
        second.ipv4[0].subnet.to_string(),
        "172.19.0.0/16",
        "pools held by networks are skipped too"
    );
    let err = f
        .create("clash", Some("172.18.5.0/24"), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("172.18.0.0/16"), "{err}");
}

#[test]
fn networks_are_listed_and_names_are_unique() {
    let f = fixture("names");
    f.create("a", Some("10.1.0.0/24"), false).unwrap();
    f.create("b", Some("10.2.0.0/24"), false).unwrap();
    assert!(matches!(
        f.create("a", Some("10.3.0.0/24"), false),
        Err(CnmError::Exists(_))
    ));
    let names: Vec<String> = f
        .core
        .networks()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert!(f
        .core
        .network_rm("nope")
        .unwrap_err()
        .to_string()
        .contains("not found"));
}

#[test]
fn a_sandbox_on_two_networks_gets_one_default_route() {
    let f = fixture("two");
    f.create("a", Some("10.1.0.0/24"), false).unwrap();
    f.create("b", Some("10.2.0.0/24"), false).unwrap();
    let sb = f.sandbox("c1");
    f.attach("a", &sb, None).unwrap();
    let second = f
        .core
        .attach(Attach {
            ifname: "eth1".into(),
            ..Attach::new("b", sb.clone())
        })
        .unwrap();
    assert_eq!(second.ipv4, Some("10.2.0.2/24".parse().unwrap()));
    assert_eq!(second.ifname, "eth1");
}

#[test]
fn gc_undoes_a_dead_create_and_removes_only_netshim_orphans() {
    use netshim_host_api::host::ownership_mark;
    use netshim_host_api::kernel::{LinkChange, LinkKind, NewLink, LINK_GROUP};

    let f = fixture("gc");
    let kept = f.create("kept", Some("10.77.0.0/24"), false).unwrap();
    let link = |name: &str, alias: Option<String>| NewLink {
        ns: NsId::NODE,
        name: name.into(),
        mtu: None,
        mac: None,
        alias,
        up: false,
        kind: LinkKind::Bridge,
    };
    // A create that died after its bridge existed: its record is pending.
    let dead = Network {
        id: "d".repeat(64),
        name: "dead".into(),
        driver: "bridge".into(),
        internal: false,
        options: Vec::new(),
        ipv4: Vec::new(),
        created: 0,
    };
    {
        let mut s = f.core.store.session().unwrap();
        let p = model::Pending::CreateNetwork {
            network: dead.clone(),
        };
        put_json(&mut s, &p.key(), &p).unwrap();
        s.commit().unwrap();
    }
    f.fake
        .create_link(&link(
            &format!("br-{}", &dead.id[..12]),
            Some(ownership_mark(&dead.id)),
        ))
        .unwrap();
    // Killed between the RTM_NEWLINK and the alias: only the group says whose.
    let half = f
        .fake
        .create_link(&link("half0", Some("x".into())))
        .unwrap();
    f.fake
        .set_link(half[0].link_ref(), &LinkChange::Alias(None))
        .unwrap();
    assert_eq!(
        f.fake
            .link_by_name(NsId::NODE, "half0")
            .unwrap()
            .unwrap()
            .group,
        LINK_GROUP
    );
    // The operator's links, one with an alias of its own: never touched.
    f.fake.create_link(&link("user0", None)).unwrap();
    f.fake
        .create_link(&link("user1", Some("uplink to rack 4".into())))
        .unwrap();

    let report = f.core.gc(Orphans::HalfMade).unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(report.settled.len(), 1, "{report:?}");
    let names = f.fake.link_names(NsId::NODE);
    assert!(
        !names.contains(&format!("br-{}", &dead.id[..12])),
        "{names:?}"
    );
    assert!(!names.contains(&"half0".to_string()), "{names:?}");
    for keep in ["user0", "user1"] {
        assert!(names.contains(&keep.to_string()), "{names:?}");
    }
    assert!(
        names.contains(&format!("br-{}", &kept.id[..12])),
        "{names:?}"
    );
    let mut s = f.core.store.session().unwrap();
    assert!(s.list(SPACE, model::PENDING_PREFIX).unwrap().is_empty());
    drop(s);
    // A second run finds nothing.
    assert!(f.core.gc(Orphans::HalfMade).unwrap().is_empty());

    // A link marked for a network this store does not know is removed only
    // on request: to an empty or wrong state directory, every network of
    // the node looks dead.
    f.fake
        .create_link(&link("stray0", Some(ownership_mark(&"e".repeat(64)))))
        .unwrap();
    f.core.gc(Orphans::HalfMade).unwrap();
    assert!(f
        .fake
        .link_names(NsId::NODE)
        .contains(&"stray0".to_string()));
    // Not while a network record is unreadable: its network would look dead.
    {
        let mut s = f.core.store.session().unwrap();
        s.put(
            SPACE,
            "networks/broken",
            b"{not json",
            Condition::None,
            None,
        )
        .unwrap();
        s.commit().unwrap();
    }
    let report = f.core.gc(Orphans::Unowned).unwrap();
    assert!(report.errors[0].contains("networks/broken"), "{report:?}");
    assert!(f
        .fake
        .link_names(NsId::NODE)
        .contains(&"stray0".to_string()));
    {
        let mut s = f.core.store.session().unwrap();
        s.delete(SPACE, "networks/broken", Condition::None).unwrap();
        s.commit().unwrap();
    }
    let report = f.core.gc(Orphans::Unowned).unwrap();
    assert_eq!(report.links.len(), 1, "{report:?}");
    let names = f.fake.link_names(NsId::NODE);
    assert!(!names.contains(&"stray0".to_string()), "{names:?}");
    assert!(
        names.contains(&format!("br-{}", &kept.id[..12])),
        "{names:?}"
    );
    assert!(names.contains(&"user1".to_string()), "{names:?}");
}
