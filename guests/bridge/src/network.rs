//! Networks: one Linux bridge each, with the gateway address on it, NAT
//! (masquerade) out of the pool unless internal, and isolation from the
//! driver's other bridges.

use netshim_guest_sdk::guest::driver::Network;
use netshim_guest_sdk::host::link::BridgeSpec;
use netshim_guest_sdk::host::netfilter::{self, Action, Match, Op};
use netshim_guest_sdk::host::sysctl;
use netshim_guest_sdk::log::{debug, show_error};
use netshim_guest_sdk::rules::{add_rule, delete_rule, rule, rule_ids};
use netshim_guest_sdk::teardown::Teardown;
use netshim_guest_sdk::{addr, links, names, Error, IpPrefix, Ipv4Net};

use crate::nft;

pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";
pub const OPT_BRIDGE_NAME_SHORT: &str = "bridge.name";
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";
pub const OPT_MTU_SHORT: &str = "mtu";
/// IGMP/MLD snooping on the bridge, named as iproute2 names it. Off unless
/// asked for: while no querier is on a container bridge (its own is off),
/// a snooping bridge floods multicast anyway, and with it on every new
/// port costs the kernel a walk of all ports under its rtnl lock (README,
/// "A thousand endpoints").
pub const OPT_MCAST_SNOOPING: &str = "mcast_snooping";
/// Docker sends options under this prefix (e.g. `com.docker.network.enable_ipv6`);
/// they are accepted and ignored.
pub const DOCKER_PREFIX: &str = "com.docker.";

/// What the options of a network say about its bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    pub bridge: String,
    pub mtu: Option<u32>,
    pub mcast_snooping: bool,
}

impl BridgeConfig {
    /// Read the options of network `net_id`. With `strict`, options the
    /// driver does not know are an error (used when the network is created;
    /// later calls only need the bridge name and MTU back).
    pub fn from_options(
        net_id: &str,
        options: &[(String, String)],
        strict: bool,
    ) -> Result<BridgeConfig, Error> {
        let mut bridge = None;
        let mut mtu = None;
        let mut mcast_snooping = false;
        for (k, v) in options {
            match k.as_str() {
                OPT_BRIDGE_NAME | OPT_BRIDGE_NAME_SHORT => bridge = Some((k, v)),
                OPT_MTU | OPT_MTU_SHORT => mtu = Some(parse_mtu(k, v)?),
                OPT_MCAST_SNOOPING => mcast_snooping = parse_switch(k, v)?,
                _ if k.starts_with(DOCKER_PREFIX) => {}
                _ if strict => {
                    return Err(Error::Invalid(format!(
                        "unknown option {k:?} for a bridge network; valid options: \
                         {OPT_BRIDGE_NAME} (or {OPT_BRIDGE_NAME_SHORT}), \
                         {OPT_MTU} (or {OPT_MTU_SHORT}), {OPT_MCAST_SNOOPING}, \
                         and Docker's own com.docker.* options"
                    )))
                }
                _ => {}
            }
        }
        let bridge = match bridge {
            Some((k, v)) => {
                if !names::valid_ifname(v) {
                    return Err(Error::Invalid(format!(
                        "option {k}: {v:?} is not a valid interface name \
                         (1 to {} characters, no '/', ':' or spaces)",
                        names::IFNAMSIZ_MAX
                    )));
                }
                v.clone()
            }
            None => default_bridge_name(net_id)?,
        };
        Ok(BridgeConfig {
            bridge,
            mtu,
            mcast_snooping,
        })
    }
}

/// "br-" and the first 12 characters of the network id, like Docker.
pub fn default_bridge_name(net_id: &str) -> Result<String, Error> {
    let short: String = net_id.chars().take(12).collect();
    let name = format!("br-{short}");
    if short.is_empty() || !names::valid_ifname(&name) {
        return Err(Error::Invalid(format!(
            "cannot derive a bridge name from network id {net_id:?}; pass option {OPT_BRIDGE_NAME}"
        )));
    }
    Ok(name)
}

pub fn parse_mtu(key: &str, value: &str) -> Result<u32, Error> {
    match value.trim().parse::<u32>() {
        Ok(m) if (68..=65535).contains(&m) => Ok(m),
        _ => Err(Error::Invalid(format!(
            "option {key}: {value:?} is not a valid MTU (a number from 68 to 65535)"
        ))),
    }
}

/// An on/off option, in Docker's words (`true`) or iproute2's (`1`).
fn parse_switch(key: &str, value: &str) -> Result<bool, Error> {
    match value.trim() {
        "1" | "true" | "on" => Ok(true),
        "0" | "false" | "off" => Ok(false),
        _ => Err(Error::Invalid(format!(
            "option {key}: {value:?} is not on or off (true, false, on, off, 1 or 0)"
        ))),
    }
}

/// The pool and gateway of a bridge network: exactly one IPv4 pool with a
/// gateway, no IPv6.
pub fn subnet_of(net: &Network) -> Result<(Ipv4Net, IpPrefix), Error> {
    if !net.ipv6.is_empty() {
        return Err(Error::Unsupported(
            "the bridge driver does not support IPv6 yet: create the network without --ipv6 / IPv6 subnets".into(),
        ));
    }
    let [pd] = net.ipv4.as_slice() else {
        return Err(Error::Invalid(
            "bridge networks need one IPv4 subnet with a gateway".into(),
        ));
    };
    let Some(gw) = &pd.gateway else {
        return Err(Error::Invalid(
            "bridge networks need one IPv4 subnet with a gateway".into(),
        ));
    };
    let pool = addr::v4_prefix(&pd.pool, "pool")?.trunc();
    let gw4 = addr::v4_prefix(gw, "gateway")?;
    if !pool.contains(&gw4.addr()) {
        return Err(Error::Invalid(format!(
            "gateway {gw4} is outside the pool {pool}"
        )));
    }
    Ok((
        pool,
        IpPrefix {
            address: gw.address,
            prefix_len: pool.prefix_len(),
        },
    ))
}

pub fn masq_id(bridge: &str) -> String {
    format!("masq-{bridge}")
}
pub fn iso_id(bridge: &str) -> String {
    format!("iso-{bridge}")
}
pub fn int_out_id(bridge: &str) -> String {
    format!("int-out-{bridge}")
}
pub fn int_in_id(bridge: &str) -> String {
    format!("int-in-{bridge}")
}

/// The one netfilter batch that sets a network up.
pub fn setup_batch(bridge: &str, pool: Ipv4Net, internal: bool) -> Vec<Op> {
    let b = || bridge.to_string();
    let mut ops = nft::network_chains();
    ops.push(Op::AddElement(nft::bridge_element(bridge)));
    if !internal {
        ops.push(add_rule(
            nft::POSTROUTING,
            rule(
                masq_id(bridge),
                vec![Match::Saddr(addr::wit_prefix(pool)), Match::OifnameNot(b())],
                Action::Masquerade,
            ),
        ));
    }
    ops.push(add_rule(
        nft::FORWARD,
        rule(
            iso_id(bridge),
            vec![
                Match::Iifname(b()),
                Match::OifnameIn(nft::BRIDGES_SET.into()),
                Match::OifnameNot(b()),
            ],
            Action::Drop,
        ),
    ));
    if internal {
        ops.push(add_rule(
            nft::FORWARD,
            rule(
                int_out_id(bridge),
                vec![Match::Iifname(b()), Match::OifnameNot(b())],
                Action::Drop,
            ),
        ));
        ops.push(add_rule(
            nft::FORWARD,
            rule(
                int_in_id(bridge),
                vec![Match::Oifname(b()), Match::IifnameNot(b())],
                Action::Drop,
            ),
        ));
    }
    ops
}

/// Delete-rule ops for the rules of `bridge` that exist, given the rule ids
/// present in the postrouting and forward chains, and the network's
/// attachments.
pub fn teardown_rule_ops(bridge: &str, postrouting: &[String], forward: &[String]) -> Vec<Op> {
    let mut ops = nft::detach_network();
    let masq = masq_id(bridge);
    if postrouting.contains(&masq) {
        ops.push(delete_rule(nft::POSTROUTING, masq));
    }
    for id in [iso_id(bridge), int_out_id(bridge), int_in_id(bridge)] {
        if forward.contains(&id) {
            ops.push(delete_rule(nft::FORWARD, id));
        }
    }
    ops
}

/// Rule ids in the driver's chains.
#[derive(Clone, Debug, Default)]
pub struct Chains {
    pub postrouting: Vec<String>,
    pub forward: Vec<String>,
    /// Published ports, in the ports chain and the 0.1 build's chains.
    pub ports: Vec<String>,
}

fn nft_chains() -> Result<Chains, Error> {
    let mut ports = rule_ids(nft::PORTS)?;
    for c in nft::LEGACY_PORT_CHAINS {
        ports.extend(rule_ids(c)?);
    }
    Ok(Chains {
        postrouting: rule_ids(nft::POSTROUTING)?,
        forward: rule_ids(nft::FORWARD)?,
        ports,
    })
}

/// True when every rule left in the driver's chains belongs to `bridge`:
/// removing this network leaves the driver with nothing in netfilter.
pub fn is_last_network(bridge: &str, chains: &Chains) -> bool {
    let mine = [
        masq_id(bridge),
        iso_id(bridge),
        int_out_id(bridge),
        int_in_id(bridge),
    ];
    chains.ports.is_empty()
        && chains
            .postrouting
            .iter()
            .chain(&chains.forward)
            .all(|id| mine.contains(id))
}

pub fn create(net: &Network) -> Result<(), Error> {
    let cfg = BridgeConfig::from_options(&net.id, &net.options, true)?;
    let (pool, gateway) = subnet_of(net)?;
    debug(&format!(
        "create-network {} ({}): bridge {} pool {pool} gateway {} mtu {:?} internal {} mcast_snooping {}",
        net.name,
        net.id,
        cfg.bridge,
        addr::show_prefix(&gateway),
        cfg.mtu,
        net.internal,
        cfg.mcast_snooping
    ));
    let spec = BridgeSpec {
        name: cfg.bridge.clone(),
        mtu: cfg.mtu,
        mac: Some(names::bridge_mac(&net.id)),
    };
    links::bridge_up(&spec, Some(gateway), Some(cfg.mcast_snooping))?;
    if !net.internal {
        sysctl::enable_ipv4_forwarding()?;
    }
    netfilter::apply(&setup_batch(&cfg.bridge, pool, net.internal))
}

/// Best effort: remove the rules and the set element, then the bridge; keep
/// going past errors and report all of them.
pub fn delete(net: &Network) -> Result<(), Error> {
    let cfg = BridgeConfig::from_options(&net.id, &net.options, false)?;
    let bridge = cfg.bridge;
    debug(&format!(
        "delete-network {} ({}): bridge {bridge}",
        net.name, net.id
    ));
    let mut td = Teardown::new(format!("delete-network {}", net.name));

    if let Some(chains) = td.check(format!("listing the rules of {bridge}"), nft_chains()) {
        let mut ops = teardown_rule_ops(&bridge, &chains.postrouting, &chains.forward);
        let mut done = false;
        if is_last_network(&bridge, &chains) {
            // Nothing of any other network is left: remove the driver's
            // table, so no empty chains or set stay behind. Deleting the
            // set fails (and aborts the batch) if a rule of another
            // network still refers to it.
            let mut last = ops.clone();
            last.push(Op::DeleteSet(nft::BRIDGES_SET.into()));
            last.push(Op::DeleteTable);
            done = netfilter::apply(&last).is_ok();
        }
        if !done {
            let element = Op::DeleteElement(nft::bridge_element(&bridge));
            ops.push(element.clone());
            if let Err(e) = netfilter::apply(&ops) {
                // Most likely the set element is already gone: retry the
                // rules alone, then the element alone.
                ops.pop();
                if !ops.is_empty() {
                    td.check(
                        format!("deleting the rules of {bridge}"),
                        netfilter::apply(&ops),
                    );
                }
                match netfilter::apply(&[element]) {
                    Ok(()) | Err(Error::NotFound(_)) => {}
                    Err(e2) => td.note(format!(
                        "removing {bridge} from set {}: {} (first attempt: {})",
                        nft::BRIDGES_SET,
                        show_error(&e2),
                        show_error(&e)
                    )),
                }
            }
        }
    }

    links::delete_owned(&bridge, &format!("bridge {bridge}"), &mut td);
    td.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use netshim_guest_sdk::guest::driver::PoolData;

    fn opts(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn default_and_explicit_bridge_names() {
        let c = BridgeConfig::from_options(ID, &[], true).unwrap();
        assert_eq!(
            c,
            BridgeConfig {
                bridge: "br-0123456789ab".into(),
                mtu: None,
                mcast_snooping: false,
            }
        );
        let c =
            BridgeConfig::from_options(ID, &opts(&[(OPT_BRIDGE_NAME, "docker1")]), true).unwrap();
        assert_eq!(c.bridge, "docker1");
        let c =
            BridgeConfig::from_options(ID, &opts(&[("bridge.name", "b0"), ("mtu", "1400")]), true)
                .unwrap();
        assert_eq!(
            c,
            BridgeConfig {
                bridge: "b0".into(),
                mtu: Some(1400),
                mcast_snooping: false,
            }
        );
        assert!(BridgeConfig::from_options(
            ID,
            &opts(&[("bridge.name", "way-too-long-name0")]),
            true
        )
        .is_err());
        assert!(BridgeConfig::from_options("", &[], true).is_err());
    }

    #[test]
    fn mtu_validation_names_the_option() {
        for bad in ["67", "65536", "x", ""] {
            let e = BridgeConfig::from_options(ID, &opts(&[(OPT_MTU, bad)]), true).unwrap_err();
            assert!(
                matches!(&e, Error::Invalid(m) if m.contains(OPT_MTU)),
                "{e:?}"
            );
        }
        let c = BridgeConfig::from_options(ID, &opts(&[(OPT_MTU, "68")]), true).unwrap();
        assert_eq!(c.mtu, Some(68));
    }

    #[test]
    fn multicast_snooping_is_off_unless_asked_for() {
        for (v, on) in [
            ("1", true),
            ("true", true),
            ("on", true),
            ("off", false),
            ("0", false),
            ("false", false),
        ] {
            let c =
                BridgeConfig::from_options(ID, &opts(&[(OPT_MCAST_SNOOPING, v)]), true).unwrap();
            assert_eq!(c.mcast_snooping, on, "{v}");
        }
        for bad in ["yes", "2", ""] {
            let e = BridgeConfig::from_options(ID, &opts(&[(OPT_MCAST_SNOOPING, bad)]), true)
                .unwrap_err();
            assert!(
                matches!(&e, Error::Invalid(m) if m.contains(OPT_MCAST_SNOOPING)),
                "{e:?}"
            );
        }
    }

    #[test]
    fn unknown_options() {
        let e = BridgeConfig::from_options(ID, &opts(&[("colour", "blue")]), true).unwrap_err();
        assert!(
            matches!(&e, Error::Invalid(m) if m.contains("colour") && m.contains(OPT_BRIDGE_NAME))
        );
        // Docker's own options are ignored; non-strict parsing ignores the rest.
        BridgeConfig::from_options(
            ID,
            &opts(&[("com.docker.network.enable_ipv6", "false")]),
            true,
        )
        .unwrap();
        BridgeConfig::from_options(ID, &opts(&[("colour", "blue")]), false).unwrap();
    }

    fn p(s: &str) -> IpPrefix {
        addr::wit_prefix(s.parse().unwrap())
    }

    fn net(ipv4: Vec<PoolData>, ipv6: Vec<PoolData>) -> Network {
        Network {
            id: ID.into(),
            name: "n".into(),
            options: vec![],
            internal: false,
            ipv4,
            ipv6,
        }
    }

    #[test]
    fn subnet_validation() {
        let pd = |pool: &str, gw: Option<&str>| PoolData {
            pool: p(pool),
            gateway: gw.map(p),
            aux_addresses: vec![],
        };
        let (pool, gw) =
            subnet_of(&net(vec![pd("10.77.0.0/24", Some("10.77.0.1/24"))], vec![])).unwrap();
        assert_eq!(pool.to_string(), "10.77.0.0/24");
        assert_eq!(addr::show_prefix(&gw), "10.77.0.1/24");
        assert!(matches!(
            subnet_of(&net(vec![], vec![])),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            subnet_of(&net(vec![pd("10.77.0.0/24", None)], vec![])),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            subnet_of(&net(
                vec![pd("10.77.0.0/24", Some("10.77.0.1/24"))],
                vec![pd("10.78.0.0/24", None)]
            )),
            Err(Error::Unsupported(_))
        ));
        assert!(matches!(
            subnet_of(&net(vec![pd("10.77.0.0/24", Some("10.78.0.1/24"))], vec![])),
            Err(Error::Invalid(_))
        ));
    }

    fn rule_ids_of(ops: &[Op]) -> Vec<String> {
        ops.iter()
            .filter_map(|o| match o {
                Op::AddRule(r) => Some(r.rule.id.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn batches() {
        let pool: Ipv4Net = "10.77.0.0/24".parse().unwrap();
        let ops = setup_batch("br0", pool, false);
        assert_eq!(rule_ids_of(&ops), ["masq-br0", "iso-br0"]);
        assert!(ops
            .iter()
            .any(|o| matches!(o, Op::AddElement(e) if e.set == "bridges" && matches!(&e.element, netfilter::Element::Ifname(n) if n == "br0"))));
        let ops = setup_batch("br0", pool, true);
        assert_eq!(rule_ids_of(&ops), ["iso-br0", "int-out-br0", "int-in-br0"]);

        let post = vec!["masq-br1".to_string(), "masq-br0".to_string()];
        let fwd = vec!["iso-br0".to_string(), "iso-br1".to_string()];
        let del = teardown_rule_ops("br0", &post, &fwd);
        let ids: Vec<_> = del
            .iter()
            .filter_map(|o| match o {
                Op::DeleteRule(r) => Some(format!("{}:{}", r.chain, r.id)),
                Op::DetachChain(_) => None,
                _ => panic!(),
            })
            .collect();
        assert_eq!(
            del.iter()
                .filter(|o| matches!(o, Op::DetachChain(_)))
                .count(),
            3
        );
        assert_eq!(ids, ["postrouting:masq-br0", "forward:iso-br0"]);
    }

    #[test]
    fn last_network_detection() {
        let v = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut c = Chains {
            postrouting: v(&["masq-br0"]),
            forward: v(&["iso-br0"]),
            ..Chains::default()
        };
        assert!(is_last_network("br0", &c));
        assert!(is_last_network("br0", &Chains::default()));
        c.forward.push("iso-br1".into());
        assert!(!is_last_network("br0", &c));
        let c = Chains {
            forward: v(&["iso-int0", "int-out-int0", "int-in-int0"]),
            ..Chains::default()
        };
        assert!(is_last_network("int0", &c));
        let c = Chains {
            ports: v(&["pm-1234567-tcp-80"]),
            ..Chains::default()
        };
        assert!(!is_last_network("br0", &c));
    }
}
