//! The driver's nftables layout (chains and set shared by all its networks)
//! and small builders over the 0.2 `netfilter` import. The host runs each
//! chain only at the attach points a network attached it to, for that
//! network's traffic.

use crate::netshim::plugin0_1_0::types::Error;
use crate::netshim::plugin0_2_0::netfilter::{
    self, AttachPoint, Attachment, Element, Op, Rule, RuleInChain, RuleRef, SetElement, SetSpec,
    SetType,
};

/// Masquerade of each non-internal network (attached where its packets leave it).
pub const POSTROUTING: &str = "postrouting";
/// Isolation between bridges, internal networks (attached from and to each network).
pub const FORWARD: &str = "forward";
/// DNAT of published ports (attached for traffic to the node's addresses).
pub const PORTS: &str = "ports";
/// Chains of the 0.1 build of this driver, where its port rules lived;
/// still read so a network made by it is torn down completely.
pub const LEGACY_PORT_CHAINS: [&str; 2] = ["prerouting", "output"];
/// Set of the bridge names of every network of this driver.
pub const BRIDGES_SET: &str = "bridges";

fn attach(chain: &str, point: AttachPoint) -> Attachment {
    Attachment {
        chain: chain.into(),
        point,
    }
}

/// The network's chains, attached for it (idempotent).
pub fn network_chains() -> Vec<Op> {
    vec![
        Op::AddChain(POSTROUTING.into()),
        Op::AttachChain(attach(POSTROUTING, AttachPoint::NatLeavingNetwork)),
        Op::AddChain(FORWARD.into()),
        Op::AttachChain(attach(FORWARD, AttachPoint::ForwardFromNetwork)),
        Op::AttachChain(attach(FORWARD, AttachPoint::ForwardToNetwork)),
        Op::AddSet(SetSpec {
            name: BRIDGES_SET.into(),
            set_type: SetType::Ifname,
        }),
    ]
}

/// What undoes the attachments of [`network_chains`] for one network.
pub fn detach_network() -> Vec<Op> {
    vec![
        Op::DetachChain(attach(POSTROUTING, AttachPoint::NatLeavingNetwork)),
        Op::DetachChain(attach(FORWARD, AttachPoint::ForwardFromNetwork)),
        Op::DetachChain(attach(FORWARD, AttachPoint::ForwardToNetwork)),
    ]
}

/// The ports chain, attached for traffic to the node (idempotent).
pub fn ports_chain() -> Vec<Op> {
    vec![
        Op::AddChain(PORTS.into()),
        Op::AttachChain(attach(PORTS, AttachPoint::NatToNode)),
    ]
}

pub fn add_rule(chain: &str, rule: Rule) -> Op {
    Op::AddRule(RuleInChain {
        chain: chain.into(),
        rule,
    })
}

pub fn delete_rule(chain: &str, id: String) -> Op {
    Op::DeleteRule(RuleRef {
        chain: chain.into(),
        id,
    })
}

pub fn bridge_element(bridge: &str) -> SetElement {
    SetElement {
        set: BRIDGES_SET.into(),
        element: Element::Ifname(bridge.into()),
    }
}

/// Ids of the rules in `chain`; a chain that does not exist yet has none.
pub fn rule_ids(chain: &str) -> Result<Vec<String>, Error> {
    match netfilter::list_rules(chain) {
        Ok(ids) => Ok(ids),
        Err(Error::NotFound(_)) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}
