//! Builders of 0.2 netfilter ops, so a batch reads as a list of intents
//! (`attach(FORWARD, ForwardFromNetwork)`, `add_rule(FORWARD, rule(…))`)
//! rather than nested records. Nothing here talks to the host except
//! [`rule_ids`]; a batch is applied with `host::netfilter::apply`.

use crate::host::netfilter::{
    self, Action, AttachPoint, Attachment, Element, Match, Op, Rule, RuleInChain, RuleRef,
    SetElement, SetSpec, SetType,
};
use crate::Error;

/// A rule without a counter. Its `id` is how it is found and deleted
/// later (kept as the nft comment), so derive it from what the rule is for.
pub fn rule(id: impl Into<String>, matches: Vec<Match>, action: Action) -> Rule {
    Rule {
        id: id.into(),
        matches,
        counter: false,
        action,
    }
}

/// Create a regular chain (idempotent).
pub fn add_chain(chain: &str) -> Op {
    Op::AddChain(chain.into())
}

/// Have the host run `chain` at `point` for the calling network (idempotent).
pub fn attach(chain: &str, point: AttachPoint) -> Op {
    Op::AttachChain(Attachment {
        chain: chain.into(),
        point,
    })
}

/// Stop running `chain` at `point` for the calling network.
pub fn detach(chain: &str, point: AttachPoint) -> Op {
    Op::DetachChain(Attachment {
        chain: chain.into(),
        point,
    })
}

pub fn add_rule(chain: &str, rule: Rule) -> Op {
    Op::AddRule(RuleInChain {
        chain: chain.into(),
        rule,
    })
}

pub fn delete_rule(chain: &str, id: impl Into<String>) -> Op {
    Op::DeleteRule(RuleRef {
        chain: chain.into(),
        id: id.into(),
    })
}

/// Create a named set (idempotent when it exists with this type).
pub fn add_set(name: &str, set_type: SetType) -> Op {
    Op::AddSet(SetSpec {
        name: name.into(),
        set_type,
    })
}

/// An interface name in an `ifname` set.
pub fn ifname_element(set: &str, ifname: &str) -> SetElement {
    SetElement {
        set: set.into(),
        element: Element::Ifname(ifname.into()),
    }
}

/// Delete-rule ops for the rules among `ids` (the rules of `chain`) whose
/// ids start with `prefix`: how rules named after one object (an endpoint,
/// a network) are removed without the driver remembering them.
pub fn delete_rules_with_prefix(chain: &str, ids: &[String], prefix: &str) -> Vec<Op> {
    ids.iter()
        .filter(|id| id.starts_with(prefix))
        .map(|id| delete_rule(chain, id.clone()))
        .collect()
}

/// Ids of the rules in `chain`; a chain that does not exist yet has none.
pub fn rule_ids(chain: &str) -> Result<Vec<String>, Error> {
    match netfilter::list_rules(chain) {
        Ok(ids) => Ok(ids),
        Err(Error::NotFound(_)) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_carry_their_arguments() {
        assert!(matches!(add_chain("c"), Op::AddChain(c) if c == "c"));
        assert!(matches!(
            attach("c", AttachPoint::NatToNode),
            Op::AttachChain(Attachment { chain, point: AttachPoint::NatToNode }) if chain == "c"
        ));
        assert!(matches!(
            detach("c", AttachPoint::ForwardToNetwork),
            Op::DetachChain(Attachment { chain, point: AttachPoint::ForwardToNetwork }) if chain == "c"
        ));
        let r = rule("r1", vec![Match::FromNetwork], Action::Accept);
        assert!(!r.counter);
        assert!(
            matches!(add_rule("c", r), Op::AddRule(RuleInChain { chain, rule }) if chain == "c" && rule.id == "r1")
        );
        assert!(
            matches!(delete_rule("c", "r1"), Op::DeleteRule(RuleRef { chain, id }) if chain == "c" && id == "r1")
        );
        assert!(
            matches!(add_set("s", SetType::Ifname), Op::AddSet(SetSpec { name, set_type: SetType::Ifname }) if name == "s")
        );
        assert!(
            matches!(ifname_element("s", "br0"), SetElement { set, element: Element::Ifname(n) } if set == "s" && n == "br0")
        );
    }

    #[test]
    fn delete_by_prefix_touches_only_matching_ids() {
        let ids: Vec<String> = ["pm-a-tcp-80", "pm-b-tcp-80", "pm-a-udp-53"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let ops = delete_rules_with_prefix("ports", &ids, "pm-a-");
        let got: Vec<String> = ops
            .iter()
            .map(|o| match o {
                Op::DeleteRule(r) => format!("{}:{}", r.chain, r.id),
                _ => panic!("{o:?}"),
            })
            .collect();
        assert_eq!(got, ["ports:pm-a-tcp-80", "ports:pm-a-udp-53"]);
    }
}
