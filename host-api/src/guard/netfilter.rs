//! Scoping of a driver's netfilter rules: a driver's rules see only its own
//! networks' traffic.
//!
//! The host owns every base chain (hook, priority, policy). A chain a
//! driver asks to hook becomes a regular chain of its table, and the host
//! adds a base chain of its own (`netshim-<type>-<hook>`) whose dispatch
//! rules jump into it only for packets of the driver's networks: in or out
//! through one of their interfaces (the host-maintained ifindex set
//! `netshim-ifs`), or, for NAT at prerouting and output, to a node-local
//! address — where only DNAT of ports published on the network's endpoints
//! may stand. This is Calico's dispatch-chain shape: the driver writes
//! policy; where it applies is the host's decision.
//!
//! The rules themselves are checked too: masquerade only with a source
//! match inside the network's pools, no SNAT, DNAT only to the endpoint and
//! port being published in this very call, and every name and size bounded
//! (see [`super::limits`]).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use super::limits;
use crate::model::nft::{
    Action, AttachPoint, BaseChain, ChainType, Element, Hook, Match, Op, Protocol, Rule, SetType,
};

/// Names the host keeps for itself in a driver's table.
pub const RESERVED_PREFIX: &str = "netshim-";
/// The ifindexes of every node-side link of the driver's networks.
pub const IFS_SET: &str = "netshim-ifs";

/// The ifindexes of one network's node-side links: what WIT 0.2's attach
/// points and `from-network` / `to-network` resolve to.
pub fn network_set(network_id: &str) -> String {
    format!("{RESERVED_PREFIX}{}", network_tag(network_id))
}

/// What names a network in the host's set and jump ids: `net-<id[:12]>`.
fn network_tag(network_id: &str) -> String {
    let short: String = network_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    format!("net-{short}")
}

/// The dispatch sets a node-side link of `network` belongs to: the
/// driver-wide one (0.1's hooked chains) and, for a call that acts for a
/// network, that network's own.
pub fn dispatch_sets(network: Option<&str>) -> Vec<String> {
    let mut sets = vec![IFS_SET.to_string()];
    sets.extend(network.map(network_set));
    sets
}

/// True for the id of a jump the host added for `network_id`'s attachments.
pub fn is_network_jump(id: &str, network_id: &str) -> bool {
    id.contains(&format!(":{}>", network_tag(network_id)))
}

/// Refuse an oversized batch before anything else looks at it.
pub fn check_batch_len(n: usize) -> Checked<()> {
    if n > limits::NFT_BATCH_OPS {
        return Err(invalid(format!(
            "a netfilter batch of {n} operations is more than the {} allowed",
            limits::NFT_BATCH_OPS
        )));
    }
    Ok(())
}

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Outside what the driver may do.
    #[error("{0}")]
    Denied(String),
    /// Malformed or over a size limit.
    #[error("{0}")]
    Invalid(String),
}

type Checked<T> = Result<T, Refusal>;

fn denied(s: impl Into<String>) -> Refusal {
    Refusal::Denied(s.into())
}
fn invalid(s: impl Into<String>) -> Refusal {
    Refusal::Invalid(s.into())
}

/// A port published on an endpoint of the network, in the call that
/// publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub protocol: Protocol,
    pub host_port: u16,
    pub target: IpAddr,
    pub container_port: u16,
}

/// What the call acting on the table is entitled to.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub pools: &'a [IpNet],
    pub published: &'a [Published],
    /// The network the call acts for (None: an IPAM call).
    pub network: Option<&'a str>,
}

/// The driver's table as the kernel has it before the batch.
#[derive(Debug, Clone, Default)]
pub struct TableView {
    pub exists: bool,
    pub chains: Vec<String>,
    /// Rule ids of the host's base chains, by chain.
    pub dispatch: HashMap<String, Vec<String>>,
    /// Rules in the whole table.
    pub rules: usize,
}

/// The host's base chain for a hook.
pub fn host_chain(t: ChainType, h: Hook) -> String {
    format!("{RESERVED_PREFIX}{}-{}", t.name(), h.name())
}

fn parse_host_chain(name: &str) -> Option<(ChainType, Hook)> {
    let rest = name.strip_prefix(RESERVED_PREFIX)?;
    let (t, h) = rest.split_once('-')?;
    let t = [ChainType::Filter, ChainType::Nat]
        .into_iter()
        .find(|x| x.name() == t)?;
    let h = Hook::ALL.into_iter().find(|x| x.name() == h)?;
    Some((t, h))
}

/// Where the host hooks its base chains: the kernel's usual places, so a
/// driver's rules run where iptables users expect them.
fn host_priority(t: ChainType, h: Hook) -> i32 {
    match (t, h) {
        (ChainType::Nat, Hook::Prerouting | Hook::Output) => -100,
        (ChainType::Nat, _) => 100,
        (ChainType::Filter, _) => 0,
    }
}

/// The dispatch rules (id, matches) that send a packet of the driver's
/// networks from the host's base chain into the driver's chain.
fn dispatch(t: ChainType, h: Hook, chain: &str) -> Checked<Vec<(String, Vec<Match>)>> {
    let ifs = || IFS_SET.to_string();
    let d = |scope: &str, m: Vec<Match>| (format!("{scope}>{chain}"), m);
    Ok(match (t, h) {
        (ChainType::Filter, Hook::Prerouting | Hook::Input) => {
            vec![d("iif", vec![Match::IifIn(ifs())])]
        }
        (ChainType::Filter, Hook::Forward) => vec![
            d("iif", vec![Match::IifIn(ifs())]),
            d("oif", vec![Match::IifNotIn(ifs()), Match::OifIn(ifs())]),
        ],
        (ChainType::Filter, Hook::Output | Hook::Postrouting) => {
            vec![d("oif", vec![Match::OifIn(ifs())])]
        }
        (ChainType::Nat, Hook::Prerouting | Hook::Output) => {
            vec![d("local", vec![Match::DaddrLocal])]
        }
        (ChainType::Nat, Hook::Postrouting) => {
            vec![d(
                "leaving",
                vec![Match::IifIn(ifs()), Match::OifNotIn(ifs())],
            )]
        }
        (ChainType::Nat, Hook::Input | Hook::Forward) => {
            return Err(denied(format!(
                "chain {chain}: NAT at the {} hook is not available to drivers",
                h.name()
            )))
        }
    })
}

/// Where an attach point runs and the dispatch rules (id, matches) that
/// send the network's packets there; `net` is the network's set.
fn attach_dispatch(
    point: AttachPoint,
    net: &str,
    chain: &str,
) -> Vec<(ChainType, Hook, String, Vec<Match>)> {
    let set = || net.to_string();
    let tag = net.strip_prefix(RESERVED_PREFIX).unwrap_or(net);
    // `is_network_jump` finds these again by ":<tag>>".
    let id = |scope: &str| format!("{scope}:{tag}>{chain}");
    match point {
        AttachPoint::ForwardFromNetwork => {
            vec![(
                ChainType::Filter,
                Hook::Forward,
                id("from"),
                vec![Match::IifIn(set())],
            )]
        }
        AttachPoint::ForwardToNetwork => vec![(
            ChainType::Filter,
            Hook::Forward,
            id("to"),
            vec![Match::IifNotIn(set()), Match::OifIn(set())],
        )],
        AttachPoint::InputFromNetwork => {
            vec![(
                ChainType::Filter,
                Hook::Input,
                id("from"),
                vec![Match::IifIn(set())],
            )]
        }
        AttachPoint::NatLeavingNetwork => vec![(
            ChainType::Nat,
            Hook::Postrouting,
            id("leaving"),
            vec![Match::IifIn(set()), Match::OifNotIn(set())],
        )],
        // Traffic to the node is no network's: one jump for the driver's
        // chain whichever network attached it (what may stand there is
        // checked rule by rule: DNAT of this call's published ports).
        AttachPoint::NatToNode => [Hook::Prerouting, Hook::Output]
            .into_iter()
            .map(|h| {
                (
                    ChainType::Nat,
                    h,
                    format!("local>{chain}"),
                    vec![Match::DaddrLocal],
                )
            })
            .collect(),
    }
}

/// `from-network` / `to-network` as lookups in the network's set.
fn resolve_network_matches(rule: &mut Rule, chain: &str, net: Option<&str>) -> Checked<()> {
    let relative = |m: &Match| matches!(m, Match::FromNetwork | Match::ToNetwork);
    if !rule.matches.iter().any(relative) {
        return Ok(());
    }
    let Some(net) = net else {
        return Err(denied(format!(
            "{}: from-network / to-network need a call that acts for a network",
            rule_where(chain, rule)
        )));
    };
    for m in &mut rule.matches {
        match m {
            Match::FromNetwork => *m = Match::IifIn(net.to_string()),
            Match::ToNetwork => *m = Match::OifIn(net.to_string()),
            _ => {}
        }
    }
    Ok(())
}

fn check_name(kind: &str, name: &str) -> Checked<()> {
    if name.is_empty() || name.len() > limits::NFT_NAME_BYTES || name.chars().any(char::is_control)
    {
        return Err(invalid(format!(
            "{kind} name {:?} must be 1 to {} bytes of printable characters",
            limits::truncate(name, 80),
            limits::NFT_NAME_BYTES
        )));
    }
    Ok(())
}

/// A name the guest writes to: its own, never the host's.
fn check_own(kind: &str, name: &str) -> Checked<()> {
    check_name(kind, name)?;
    if name.starts_with(RESERVED_PREFIX) {
        return Err(denied(format!(
            "{kind} {name}: names starting with {RESERVED_PREFIX:?} belong to the host"
        )));
    }
    Ok(())
}

/// The roles (host base chains dispatching into it) of each driver chain.
struct Roles(HashMap<String, BTreeSet<(u8, u8)>>);

fn key(t: ChainType, h: Hook) -> (u8, u8) {
    (t as u8, h as u8)
}

impl Roles {
    fn of(view: &TableView) -> Roles {
        let mut m: HashMap<String, BTreeSet<(u8, u8)>> = HashMap::new();
        for (hc, ids) in &view.dispatch {
            let Some((t, h)) = parse_host_chain(hc) else {
                continue;
            };
            for id in ids {
                if let Some((_, c)) = id.split_once('>') {
                    m.entry(c.to_string()).or_default().insert(key(t, h));
                }
            }
        }
        Roles(m)
    }

    fn has(&self, chain: &str, t: ChainType, h: Hook) -> bool {
        self.0.get(chain).is_some_and(|s| s.contains(&key(t, h)))
    }

    /// Dispatched for traffic to node-local addresses: DNAT only.
    fn local_nat(&self, chain: &str) -> bool {
        self.has(chain, ChainType::Nat, Hook::Prerouting)
            || self.has(chain, ChainType::Nat, Hook::Output)
    }
}

fn rule_where(chain: &str, r: &Rule) -> String {
    format!("rule '{}' in chain {chain}", r.id)
}

fn check_rule(chain: &str, r: &Rule, roles: &Roles, scope: &Scope) -> Checked<()> {
    check_own("chain", chain)?;
    check_name("rule id", &r.id)?;
    let at = || rule_where(chain, r);
    if r.matches.len() > limits::NFT_RULE_MATCHES {
        return Err(invalid(format!(
            "{}: {} matches, more than the {} a rule may have",
            at(),
            r.matches.len(),
            limits::NFT_RULE_MATCHES
        )));
    }
    for m in &r.matches {
        if let Some(s) = m.set() {
            check_name("set", s)?;
        }
        if let Match::Iifname(n) | Match::IifnameNot(n) | Match::Oifname(n) | Match::OifnameNot(n) =
            m
        {
            check_name("interface", n)?;
        }
    }
    let local = roles.local_nat(chain);
    match &r.action {
        Action::Jump(t) => {
            check_own("chain", t)?;
            if local {
                return Err(denied(format!(
                    "{}: chain {chain} sees traffic to the node's own addresses; only DNAT of published ports may stand there",
                    at()
                )));
            }
        }
        Action::Masquerade => {
            let inside = r.matches.iter().any(|m| match m {
                Match::Saddr(p) => scope.pools.iter().any(|pool| pool.contains(p)),
                _ => false,
            });
            if !inside {
                return Err(denied(format!(
                    "{}: masquerade needs a source match inside the network's pools [{}]",
                    at(),
                    list(scope.pools)
                )));
            }
        }
        Action::Snat(a) => {
            return Err(denied(format!(
                "{}: SNAT to {a} is not available to drivers; masquerade the network's pools instead",
                at()
            )))
        }
        Action::Dnat(addr, port) => check_dnat(chain, r, *addr, *port, roles, scope)?,
        Action::Accept | Action::Drop | Action::Reject | Action::Return if local => {
            return Err(denied(format!(
                "{}: chain {chain} sees traffic to the node's own addresses; only DNAT of published ports may stand there",
                at()
            )))
        }
        Action::Accept | Action::Drop | Action::Reject | Action::Return => {}
    }
    Ok(())
}

fn check_dnat(
    chain: &str,
    r: &Rule,
    addr: IpAddr,
    port: Option<u16>,
    roles: &Roles,
    scope: &Scope,
) -> Checked<()> {
    let at = rule_where(chain, r);
    if !roles.local_nat(chain) {
        return Err(denied(format!(
            "{at}: DNAT may only stand in a chain hooked at nat prerouting or output"
        )));
    }
    if addr.is_loopback() || addr.is_unspecified() || addr.is_multicast() {
        return Err(denied(format!("{at}: DNAT to {addr} is not allowed")));
    }
    let proto = r.matches.iter().find_map(|m| match m {
        Match::Protocol(p) => Some(*p),
        _ => None,
    });
    let dport = r.matches.iter().find_map(|m| match m {
        Match::Dport(p) => Some(*p),
        _ => None,
    });
    let (Some(proto), Some(dport)) = (proto, dport) else {
        return Err(denied(format!(
            "{at}: DNAT needs a protocol and a destination port match (a published port)"
        )));
    };
    let ok = scope.published.iter().any(|p| {
        p.protocol == proto
            && p.host_port == dport
            && p.target == addr
            && port.unwrap_or(dport) == p.container_port
    });
    if !ok {
        let published: Vec<String> = scope
            .published
            .iter()
            .map(|p| {
                format!(
                    "{}/{:?} -> {}:{}",
                    p.host_port, p.protocol, p.target, p.container_port
                )
            })
            .collect();
        return Err(denied(format!(
            "{at}: DNAT of port {dport}/{proto:?} to {addr}{} is not a port this call publishes [{}]",
            port.map(|p| format!(":{p}")).unwrap_or_default(),
            published.join(", ")
        )));
    }
    Ok(())
}

fn list(p: &[IpNet]) -> String {
    p.iter()
        .map(IpNet::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Check a driver's batch and turn it into the one the kernel gets: the
/// driver's hook chains made regular and dispatched from the host's base
/// chains, the host's set ensured. Refused whole if any op is.
pub fn scope_batch(batch: Vec<Op>, view: &TableView, scope: &Scope) -> Checked<Vec<Op>> {
    check_batch_len(batch.len())?;
    let mut roles = Roles::of(view);
    let mut host_chains: BTreeSet<String> = view
        .chains
        .iter()
        .filter(|c| parse_host_chain(c).is_some())
        .cloned()
        .collect();
    let mut rules = view.rules;
    // The host's jumps (base chain, rule id) as this batch leaves them.
    let mut jumps: BTreeSet<(String, String)> = view
        .dispatch
        .iter()
        .flat_map(|(hc, ids)| ids.iter().map(move |id| (hc.clone(), id.clone())))
        .collect();
    let net_set = scope.network.map(network_set);
    let host_sets = || {
        dispatch_sets(scope.network)
            .into_iter()
            .map(|name| Op::AddSet {
                name,
                ty: SetType::Ifindex,
            })
            .collect::<Vec<_>>()
    };
    let mut out = host_sets();
    for op in batch {
        match op {
            Op::AttachChain { name, point } => {
                check_own("chain", &name)?;
                let Some(net) = &net_set else {
                    return Err(denied(format!(
                        "chain {name}: attaching a chain needs a call that acts for a network"
                    )));
                };
                let mut d = Dispatch {
                    roles: &mut roles,
                    host_chains: &mut host_chains,
                    jumps: &mut jumps,
                    rules: &mut rules,
                    out: &mut out,
                };
                for (t, h, id, matches) in attach_dispatch(point, net, &name) {
                    d.jump(&name, t, h, id, matches);
                }
            }
            Op::DetachChain { name, point } => {
                check_own("chain", &name)?;
                let Some(net) = &net_set else {
                    return Err(denied(format!(
                        "chain {name}: detaching a chain needs a call that acts for a network"
                    )));
                };
                if point == AttachPoint::NatToNode {
                    // Shared by the driver's networks; it goes with the chain.
                    continue;
                }
                for (t, h, id, _) in attach_dispatch(point, net, &name) {
                    let jump = (host_chain(t, h), id);
                    if jumps.remove(&jump) {
                        rules = rules.saturating_sub(1);
                        out.push(Op::DeleteRule {
                            chain: jump.0,
                            id: jump.1,
                        });
                    }
                }
            }
            Op::AddChain { name, base: None } => {
                check_own("chain", &name)?;
                out.push(Op::AddChain { name, base: None });
            }
            Op::AddChain {
                name,
                base: Some(b),
            } => {
                check_own("chain", &name)?;
                let mut d = Dispatch {
                    roles: &mut roles,
                    host_chains: &mut host_chains,
                    jumps: &mut jumps,
                    rules: &mut rules,
                    out: &mut out,
                };
                hook_chain(&name, b, &mut d)?;
            }
            Op::DeleteChain(name) => {
                check_own("chain", &name)?;
                // The host's jumps into it go first, or the kernel refuses.
                let into: Vec<(String, String)> = jumps
                    .iter()
                    .filter(|(_, id)| id.split_once('>').is_some_and(|(_, c)| c == name))
                    .cloned()
                    .collect();
                for (chain, id) in into {
                    jumps.remove(&(chain.clone(), id.clone()));
                    rules = rules.saturating_sub(1);
                    out.push(Op::DeleteRule { chain, id });
                }
                roles.0.remove(&name);
                out.push(Op::DeleteChain(name));
            }
            Op::FlushChain(name) => {
                check_own("chain", &name)?;
                out.push(Op::FlushChain(name));
            }
            Op::AddRule { chain, mut rule } => {
                resolve_network_matches(&mut rule, &chain, net_set.as_deref())?;
                check_rule(&chain, &rule, &roles, scope)?;
                rules += 1;
                out.push(Op::AddRule { chain, rule });
            }
            Op::DeleteRule { chain, id } => {
                check_own("chain", &chain)?;
                check_name("rule id", &id)?;
                rules = rules.saturating_sub(1);
                out.push(Op::DeleteRule { chain, id });
            }
            Op::AddSet { name, ty } => {
                check_own("set", &name)?;
                out.push(Op::AddSet { name, ty });
            }
            Op::DeleteSet(name) => {
                check_own("set", &name)?;
                out.push(Op::DeleteSet(name));
            }
            Op::AddElement { set, elem } => {
                check_own("set", &set)?;
                check_element(&set, &elem)?;
                out.push(Op::AddElement { set, elem });
            }
            Op::DeleteElement { set, elem } => {
                check_own("set", &set)?;
                check_element(&set, &elem)?;
                out.push(Op::DeleteElement { set, elem });
            }
            Op::DeleteTable => {
                // The table is the driver's; the host's part comes back
                // with the next batch or link.
                roles = Roles(HashMap::new());
                host_chains.clear();
                jumps.clear();
                rules = 0;
                out.push(Op::DeleteTable);
                out.extend(host_sets());
            }
        }
        if rules > limits::NFT_TABLE_RULES {
            return Err(denied(format!(
                "the driver's table would hold more than {} rules (quota)",
                limits::NFT_TABLE_RULES
            )));
        }
    }
    Ok(out)
}

fn check_element(set: &str, e: &Element) -> Checked<()> {
    if let Element::Ifname(n) = e {
        check_name(&format!("element of set {set}: interface"), n)?;
    }
    Ok(())
}

/// A chain the driver asked to hook: regular, plus the host's base chain and
/// dispatch rules into it.
fn hook_chain(name: &str, b: BaseChain, d: &mut Dispatch) -> Checked<()> {
    if b.policy_drop {
        return Err(denied(format!(
            "chain {name}: a drop policy on a {} {} hook would drop the node's traffic; base chains and their policies are the host's (drop the network's packets with rules instead)",
            b.chain_type.name(),
            b.hook.name()
        )));
    }
    let rules_in = dispatch(b.chain_type, b.hook, name)?;
    d.out.push(Op::AddChain {
        name: name.to_string(),
        base: None,
    });
    for (id, matches) in rules_in {
        d.jump(name, b.chain_type, b.hook, id, matches);
    }
    Ok(())
}

/// What a batch has decided so far about the host's dispatch.
struct Dispatch<'a> {
    roles: &'a mut Roles,
    host_chains: &'a mut BTreeSet<String>,
    jumps: &'a mut BTreeSet<(String, String)>,
    rules: &'a mut usize,
    out: &'a mut Vec<Op>,
}

impl Dispatch<'_> {
    /// A jump from the host's base chain for (`t`, `h`) into `chain`, rule
    /// `id` with `matches`; the base chain is made when missing, and a jump
    /// already there (in the table or earlier in the batch) is not doubled.
    fn jump(&mut self, chain: &str, t: ChainType, h: Hook, id: String, matches: Vec<Match>) {
        let hc = host_chain(t, h);
        if self.host_chains.insert(hc.clone()) {
            self.out.push(Op::AddChain {
                name: hc.clone(),
                base: Some(BaseChain {
                    hook: h,
                    chain_type: t,
                    priority: host_priority(t, h),
                    policy_drop: false,
                }),
            });
        }
        self.roles
            .0
            .entry(chain.to_string())
            .or_default()
            .insert(key(t, h));
        if !self.jumps.insert((hc.clone(), id.clone())) {
            return;
        }
        *self.rules += 1;
        self.out.push(Op::AddRule {
            chain: hc,
            rule: Rule {
                id,
                matches,
                counter: false,
                action: Action::Jump(chain.to_string()),
            },
        });
    }
}

/// Ops that put a node-side link of `network` in the driver-wide and the
/// network's dispatch sets.
pub fn admit_link(index: u32, network: &str) -> Vec<Op> {
    dispatch_sets(Some(network))
        .into_iter()
        .flat_map(|set| {
            [
                Op::AddSet {
                    name: set.clone(),
                    ty: SetType::Ifindex,
                },
                Op::AddElement {
                    set,
                    elem: Element::Ifindex(index),
                },
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(hook: Hook, chain_type: ChainType, policy_drop: bool) -> Option<BaseChain> {
        Some(BaseChain {
            hook,
            chain_type,
            priority: -300,
            policy_drop,
        })
    }

    fn rule(id: &str, matches: Vec<Match>, action: Action) -> Rule {
        Rule {
            id: id.into(),
            matches,
            counter: false,
            action,
        }
    }

    fn pools() -> Vec<IpNet> {
        vec!["10.77.0.0/24".parse().unwrap()]
    }

    fn run(batch: Vec<Op>, view: &TableView, published: &[Published]) -> Checked<Vec<Op>> {
        let p = pools();
        scope_batch(
            batch,
            view,
            &Scope {
                pools: &p,
                published,
                network: Some("n1"),
            },
        )
    }

    /// The view the kernel would show after `ops`.
    fn view_after(ops: &[Op]) -> TableView {
        let mut v = TableView {
            exists: true,
            ..Default::default()
        };
        for op in ops {
            match op {
                Op::AddChain { name, .. } => v.chains.push(name.clone()),
                Op::AddRule { chain, rule } if chain.starts_with(RESERVED_PREFIX) => v
                    .dispatch
                    .entry(chain.clone())
                    .or_default()
                    .push(rule.id.clone()),
                _ => {}
            }
        }
        v
    }

    #[test]
    fn a_drop_policy_is_refused() {
        let e = run(
            vec![Op::AddChain {
                name: "in".into(),
                base: base(Hook::Input, ChainType::Filter, true),
            }],
            &TableView::default(),
            &[],
        )
        .unwrap_err();
        assert!(
            matches!(&e, Refusal::Denied(m) if m.contains("drop policy")),
            "{e}"
        );
    }

    #[test]
    fn a_hook_chain_becomes_regular_and_is_dispatched_by_interface() {
        let out = run(
            vec![Op::AddChain {
                name: "forward".into(),
                base: base(Hook::Forward, ChainType::Filter, false),
            }],
            &TableView::default(),
            &[],
        )
        .unwrap();
        assert!(out.contains(&Op::AddChain {
            name: "forward".into(),
            base: None
        }));
        let hc = host_chain(ChainType::Filter, Hook::Forward);
        let host_base = out.iter().find_map(|o| match o {
            Op::AddChain {
                name,
                base: Some(b),
            } if *name == hc => Some(*b),
            _ => None,
        });
        assert_eq!(
            host_base.map(|b| (b.priority, b.policy_drop)),
            Some((0, false))
        );
        let jumps: Vec<&Rule> = out
            .iter()
            .filter_map(|o| match o {
                Op::AddRule { chain, rule } if *chain == hc => Some(rule),
                _ => None,
            })
            .collect();
        assert_eq!(jumps.len(), 2);
        for j in &jumps {
            assert_eq!(j.action, Action::Jump("forward".into()));
            assert!(j
                .matches
                .iter()
                .any(|m| matches!(m, Match::IifIn(_) | Match::OifIn(_))));
        }
        // Again with the chain in place: no second dispatch.
        let again = run(
            vec![Op::AddChain {
                name: "forward".into(),
                base: base(Hook::Forward, ChainType::Filter, false),
            }],
            &view_after(&out),
            &[],
        )
        .unwrap();
        assert!(
            !again.iter().any(|o| matches!(o, Op::AddRule { .. })),
            "{again:?}"
        );
    }

    #[test]
    fn host_names_are_not_the_drivers() {
        for op in [
            Op::FlushChain(host_chain(ChainType::Filter, Hook::Input)),
            Op::DeleteSet(IFS_SET.into()),
            Op::AddElement {
                set: IFS_SET.into(),
                elem: Element::Ifindex(1),
            },
            Op::AddRule {
                chain: "c".into(),
                rule: rule(
                    "j",
                    vec![],
                    Action::Jump(host_chain(ChainType::Nat, Hook::Postrouting)),
                ),
            },
        ] {
            let e = run(vec![op.clone()], &TableView::default(), &[]).unwrap_err();
            assert!(matches!(e, Refusal::Denied(_)), "{op:?}: {e}");
        }
    }

    #[test]
    fn masquerade_needs_the_networks_pool() {
        let setup = vec![Op::AddChain {
            name: "post".into(),
            base: base(Hook::Postrouting, ChainType::Nat, false),
        }];
        let view = view_after(&run(setup, &TableView::default(), &[]).unwrap());
        let bare = Op::AddRule {
            chain: "post".into(),
            rule: rule("m", vec![], Action::Masquerade),
        };
        assert!(matches!(
            run(vec![bare], &view, &[]),
            Err(Refusal::Denied(_))
        ));
        let other = Op::AddRule {
            chain: "post".into(),
            rule: rule(
                "m",
                vec![Match::Saddr("0.0.0.0/0".parse().unwrap())],
                Action::Masquerade,
            ),
        };
        assert!(matches!(
            run(vec![other], &view, &[]),
            Err(Refusal::Denied(_))
        ));
        let ok = Op::AddRule {
            chain: "post".into(),
            rule: rule(
                "m",
                vec![Match::Saddr("10.77.0.0/24".parse().unwrap())],
                Action::Masquerade,
            ),
        };
        run(vec![ok], &view, &[]).unwrap();
        let snat = Op::AddRule {
            chain: "post".into(),
            rule: rule(
                "s",
                vec![Match::Saddr("10.77.0.0/24".parse().unwrap())],
                Action::Snat("192.0.2.1".parse().unwrap()),
            ),
        };
        assert!(matches!(
            run(vec![snat], &view, &[]),
            Err(Refusal::Denied(_))
        ));
    }

    #[test]
    fn dnat_only_for_what_this_call_publishes() {
        let setup = vec![Op::AddChain {
            name: "pre".into(),
            base: base(Hook::Prerouting, ChainType::Nat, false),
        }];
        let view = view_after(&run(setup, &TableView::default(), &[]).unwrap());
        let published = [Published {
            protocol: Protocol::Tcp,
            host_port: 8080,
            target: "10.77.0.5".parse().unwrap(),
            container_port: 80,
        }];
        let dnat = |port: u16, to: &str, to_port: u16| Op::AddRule {
            chain: "pre".into(),
            rule: rule(
                "d",
                vec![
                    Match::Protocol(Protocol::Tcp),
                    Match::Dport(port),
                    Match::DaddrLocal,
                ],
                Action::Dnat(to.parse().unwrap(), Some(to_port)),
            ),
        };
        run(vec![dnat(8080, "10.77.0.5", 80)], &view, &published).unwrap();
        for bad in [
            dnat(22, "10.77.0.5", 80),
            dnat(8080, "203.0.113.1", 80),
            dnat(8080, "127.0.0.1", 80),
        ] {
            assert!(
                matches!(
                    run(vec![bad.clone()], &view, &published),
                    Err(Refusal::Denied(_))
                ),
                "{bad:?}"
            );
        }
        // Outside a publishing call there is nothing to DNAT to.
        assert!(run(vec![dnat(8080, "10.77.0.5", 80)], &view, &[]).is_err());
        // And nothing but DNAT sees the node's local traffic.
        let drop = Op::AddRule {
            chain: "pre".into(),
            rule: rule("x", vec![], Action::Drop),
        };
        assert!(matches!(
            run(vec![drop], &view, &published),
            Err(Refusal::Denied(_))
        ));
    }

    #[test]
    fn sizes_are_bounded() {
        let many = vec![Op::FlushChain("c".into()); limits::NFT_BATCH_OPS + 1];
        assert!(matches!(
            run(many, &TableView::default(), &[]),
            Err(Refusal::Invalid(_))
        ));
        let wide = Op::AddRule {
            chain: "c".into(),
            rule: rule(
                "w",
                vec![Match::IifnameNot("x".into()); 5000],
                Action::Accept,
            ),
        };
        let e = run(vec![wide], &TableView::default(), &[]).unwrap_err();
        assert!(e.to_string().contains("5000 matches"), "{e}");
        let long = Op::AddChain {
            name: "c".repeat(300),
            base: None,
        };
        assert!(matches!(
            run(vec![long], &TableView::default(), &[]),
            Err(Refusal::Invalid(_))
        ));
    }

    fn jumps_into<'a>(out: &'a [Op], host: &str) -> Vec<&'a Rule> {
        out.iter()
            .filter_map(|o| match o {
                Op::AddRule { chain, rule } if chain == host => Some(rule),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn attach_points_dispatch_only_the_networks_traffic() {
        let attach = |point| Op::AttachChain {
            name: "fwd".into(),
            point,
        };
        let out = run(
            vec![
                Op::AddChain {
                    name: "fwd".into(),
                    base: None,
                },
                attach(AttachPoint::ForwardFromNetwork),
                attach(AttachPoint::ForwardToNetwork),
            ],
            &TableView::default(),
            &[],
        )
        .unwrap();
        let set = network_set("n1");
        assert!(out.contains(&Op::AddSet {
            name: set.clone(),
            ty: SetType::Ifindex
        }));
        let hc = host_chain(ChainType::Filter, Hook::Forward);
        let jumps = jumps_into(&out, &hc);
        assert_eq!(jumps.len(), 2, "{out:?}");
        assert_eq!(jumps[0].matches, vec![Match::IifIn(set.clone())]);
        assert_eq!(
            jumps[1].matches,
            vec![Match::IifNotIn(set.clone()), Match::OifIn(set.clone())]
        );
        // Attached again: nothing new. Detached: its jumps go.
        let view = view_after(&out);
        let again = run(vec![attach(AttachPoint::ForwardFromNetwork)], &view, &[]).unwrap();
        assert!(jumps_into(&again, &hc).is_empty(), "{again:?}");
        let gone = run(
            vec![Op::DetachChain {
                name: "fwd".into(),
                point: AttachPoint::ForwardFromNetwork,
            }],
            &view,
            &[],
        )
        .unwrap();
        assert!(gone.iter().any(
            |o| matches!(o, Op::DeleteRule { chain, id } if *chain == hc && id == &jumps[0].id)
        ));
        // No network, no attachment.
        let p = pools();
        let e = scope_batch(
            vec![attach(AttachPoint::InputFromNetwork)],
            &TableView::default(),
            &Scope {
                pools: &p,
                published: &[],
                network: None,
            },
        )
        .unwrap_err();
        assert!(matches!(e, Refusal::Denied(_)), "{e}");
    }

    #[test]
    fn network_relative_matches_become_the_networks_set() {
        let out = run(
            vec![
                Op::AddChain {
                    name: "fwd".into(),
                    base: None,
                },
                Op::AddRule {
                    chain: "fwd".into(),
                    rule: rule(
                        "r",
                        vec![Match::FromNetwork, Match::ToNetwork],
                        Action::Reject,
                    ),
                },
            ],
            &TableView::default(),
            &[],
        )
        .unwrap();
        let set = network_set("n1");
        assert!(out.iter().any(|o| matches!(o, Op::AddRule { rule, .. }
            if rule.matches == vec![Match::IifIn(set.clone()), Match::OifIn(set.clone())])));
    }

    #[test]
    fn the_nat_to_node_point_takes_only_published_dnat() {
        let out = run(
            vec![
                Op::AddChain {
                    name: "ports".into(),
                    base: None,
                },
                Op::AttachChain {
                    name: "ports".into(),
                    point: AttachPoint::NatToNode,
                },
            ],
            &TableView::default(),
            &[],
        )
        .unwrap();
        let view = view_after(&out);
        for action in [Action::Accept, Action::Reject, Action::Jump("x".into())] {
            let e = run(
                vec![Op::AddRule {
                    chain: "ports".into(),
                    rule: rule("r", vec![], action.clone()),
                }],
                &view,
                &[],
            )
            .unwrap_err();
            assert!(matches!(e, Refusal::Denied(_)), "{action:?}: {e}");
        }
        let published = [Published {
            protocol: Protocol::Tcp,
            host_port: 8080,
            target: "10.77.0.2".parse().unwrap(),
            container_port: 80,
        }];
        let dnat = rule(
            "pm",
            vec![Match::Protocol(Protocol::Tcp), Match::Dport(8080)],
            Action::Dnat("10.77.0.2".parse().unwrap(), Some(80)),
        );
        run(
            vec![Op::AddRule {
                chain: "ports".into(),
                rule: dnat,
            }],
            &view,
            &published,
        )
        .unwrap();
    }
}
