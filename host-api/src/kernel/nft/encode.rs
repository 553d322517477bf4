//! The model's nftables objects as nf_tables netlink messages: tables,
//! chains, rules (as `nft` itself encodes each match, so `nft list` prints
//! them back the same way), sets and elements. Pure: no socket, no lookups
//! beyond the set kinds the caller resolves, so every input can be thrown
//! at it in tests.

use std::net::IpAddr;

use ipnet::IpNet;

use super::wire::{Mark, TooLarge, Writer};
use crate::kernel::{KResult, KernelError};
use crate::model::nft::{
    Action, BaseChain, ChainType, CtStates, Element, Hook, Match, Protocol, Rule, SetType,
};

/// Kernel ABI numbers (include/uapi/linux/netfilter/nf_tables.h,
/// nfnetlink.h, netlink.h; datatype ids from nftables' datatype.h).
pub mod k {
    pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
    pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
    pub const NFNL_MSG_BATCH_END: u16 = 0x11;

    pub const NFPROTO_UNSPEC: u8 = 0;
    pub const NFPROTO_INET: u8 = 1;
    pub const NFPROTO_IPV4: u8 = 2;
    pub const NFPROTO_IPV6: u8 = 10;

    pub const MSG_NEWTABLE: u16 = 0;
    pub const MSG_GETTABLE: u16 = 1;
    pub const MSG_DELTABLE: u16 = 2;
    pub const MSG_NEWCHAIN: u16 = 3;
    pub const MSG_GETCHAIN: u16 = 4;
    pub const MSG_DELCHAIN: u16 = 5;
    pub const MSG_NEWRULE: u16 = 6;
    pub const MSG_GETRULE: u16 = 7;
    pub const MSG_DELRULE: u16 = 8;
    pub const MSG_NEWSET: u16 = 9;
    pub const MSG_GETSET: u16 = 10;
    pub const MSG_DELSET: u16 = 11;
    pub const MSG_NEWSETELEM: u16 = 12;
    pub const MSG_DELSETELEM: u16 = 14;

    pub const NLM_F_REQUEST: u16 = 0x1;
    pub const NLM_F_ACK: u16 = 0x4;
    pub const NLM_F_DUMP_INTR: u16 = 0x10;
    pub const NLM_F_DUMP: u16 = 0x300;
    pub const NLM_F_NONREC: u16 = 0x100;
    pub const NLM_F_CREATE: u16 = 0x400;
    pub const NLM_F_APPEND: u16 = 0x800;
    pub const NLMSG_NOOP: u16 = 1;
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLMSG_DONE: u16 = 3;

    pub const TABLE_NAME: u16 = 1;
    pub const CHAIN_TABLE: u16 = 1;
    pub const CHAIN_NAME: u16 = 3;
    pub const CHAIN_HOOK: u16 = 4;
    pub const CHAIN_POLICY: u16 = 5;
    pub const CHAIN_TYPE: u16 = 7;
    pub const HOOK_HOOKNUM: u16 = 1;
    pub const HOOK_PRIORITY: u16 = 2;
    pub const RULE_TABLE: u16 = 1;
    pub const RULE_CHAIN: u16 = 2;
    pub const RULE_HANDLE: u16 = 3;
    pub const RULE_EXPRESSIONS: u16 = 4;
    pub const RULE_USERDATA: u16 = 7;
    pub const LIST_ELEM: u16 = 1;
    pub const EXPR_NAME: u16 = 1;
    pub const EXPR_DATA: u16 = 2;
    pub const DATA_VALUE: u16 = 1;
    pub const DATA_VERDICT: u16 = 2;
    pub const VERDICT_CODE: u16 = 1;
    pub const VERDICT_CHAIN: u16 = 2;
    pub const SET_TABLE: u16 = 1;
    pub const SET_NAME: u16 = 2;
    pub const SET_FLAGS: u16 = 3;
    pub const SET_KEY_TYPE: u16 = 4;
    pub const SET_KEY_LEN: u16 = 5;
    pub const SET_DATA_TYPE: u16 = 6;
    pub const SET_ID: u16 = 10;
    pub const SET_USERDATA: u16 = 13;
    pub const SET_ELEM_LIST_TABLE: u16 = 1;
    pub const SET_ELEM_LIST_SET: u16 = 2;
    pub const SET_ELEM_LIST_ELEMENTS: u16 = 3;
    pub const SET_ELEM_KEY: u16 = 1;
    pub const SET_ELEM_FLAGS: u16 = 3;

    pub const REG_VERDICT: u32 = 0;
    pub const REG_1: u32 = 1;
    pub const REG_2: u32 = 2;

    pub const META_IIF: u32 = 4;
    pub const META_OIF: u32 = 5;
    pub const META_IIFNAME: u32 = 6;
    pub const META_OIFNAME: u32 = 7;
    pub const META_NFPROTO: u32 = 15;
    pub const META_L4PROTO: u32 = 16;

    pub const CMP_EQ: u32 = 0;
    pub const CMP_NEQ: u32 = 1;

    pub const PAYLOAD_NETWORK: u32 = 1;
    pub const PAYLOAD_TRANSPORT: u32 = 2;

    pub const LOOKUP_F_INV: u32 = 1;
    pub const RANGE_EQ: u32 = 0;
    pub const REJECT_ICMPX_UNREACH: u32 = 2;
    pub const REJECT_ICMPX_PORT_UNREACH: u8 = 1;

    pub const CT_STATE: u32 = 0;

    pub const FIB_F_DADDR: u32 = 1 << 1;
    pub const FIB_RESULT_ADDRTYPE: u32 = 3;
    pub const RTN_LOCAL: u32 = 2;

    pub const NAT_SNAT: u32 = 0;
    pub const NAT_DNAT: u32 = 1;
    pub const NAT_RANGE_PROTO_SPECIFIED: u32 = 0x2;

    pub const NF_DROP: u32 = 0;
    pub const NF_ACCEPT: u32 = 1;
    pub const NFT_JUMP: u32 = (-3i32) as u32;
    pub const NFT_RETURN: u32 = (-5i32) as u32;

    pub const SET_INTERVAL: u32 = 0x4;
    pub const SET_ELEM_INTERVAL_END: u32 = 0x1;

    pub const TYPE_IPADDR: u32 = 7;
    pub const TYPE_IP6ADDR: u32 = 8;
    pub const TYPE_INET_SERVICE: u32 = 13;
    pub const TYPE_IFINDEX: u32 = 20;
    pub const TYPE_IFNAME: u32 = 41;
    pub const BYTEORDER_HOST: u32 = 1;
    pub const BYTEORDER_BIG: u32 = 2;

    pub const IFNAMSIZ: usize = 16;
    pub const UDATA_RULE_COMMENT: u8 = 0;
    pub const UDATA_SET_KEYBYTEORDER: u8 = 0;
    /// NFTNL_UDATA_COMMENT_MAXLEN, including the terminating NUL.
    pub const COMMENT_MAXLEN: usize = 128;
    /// NFT_NAME_MAXLEN, including the terminating NUL.
    pub const NAME_MAXLEN: usize = 256;
}

/// nfnetlink message type of an nf_tables message.
pub fn nft_type(msg: u16) -> u16 {
    (k::NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// A named set as the kernel describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetKind {
    Typed(SetType),
    /// A set netshim did not make (some other key type).
    Other,
}

impl SetKind {
    /// (datatype, key length, flags, key byte order) as `nft` declares them.
    fn declaration(t: SetType) -> (u32, u32, u32, u32) {
        match t {
            SetType::Ipv4Addr => (k::TYPE_IPADDR, 4, k::SET_INTERVAL, k::BYTEORDER_BIG),
            SetType::Ipv6Addr => (k::TYPE_IP6ADDR, 16, k::SET_INTERVAL, k::BYTEORDER_BIG),
            SetType::Ifname => (k::TYPE_IFNAME, k::IFNAMSIZ as u32, 0, k::BYTEORDER_HOST),
            SetType::Ifindex => (k::TYPE_IFINDEX, 4, 0, k::BYTEORDER_HOST),
            SetType::InetService => (k::TYPE_INET_SERVICE, 2, 0, k::BYTEORDER_BIG),
        }
    }

    /// The kind of a set the kernel reports: one of netshim's only when
    /// its key type, key length and flags are exactly what netshim
    /// declares and it maps to nothing (a map or a timeout set with the
    /// same key is something else).
    pub fn from_kernel(key_type: u32, key_len: u32, flags: u32, is_map: bool) -> SetKind {
        if is_map {
            return SetKind::Other;
        }
        [
            SetType::Ipv4Addr,
            SetType::Ipv6Addr,
            SetType::Ifname,
            SetType::Ifindex,
            SetType::InetService,
        ]
        .into_iter()
        .find(|t| {
            let (ty, len, f, _) = Self::declaration(*t);
            ty == key_type && len == key_len && f == flags
        })
        .map_or(SetKind::Other, SetKind::Typed)
    }
}

/// A name the kernel takes: non-empty, no NUL, under NFT_NAME_MAXLEN.
pub fn check_name(what: &str, s: &str) -> KResult<()> {
    if s.is_empty() {
        return Err(KernelError::Invalid(format!("empty {what} name")));
    }
    if s.contains('\0') || s.len() >= k::NAME_MAXLEN {
        return Err(KernelError::Invalid(format!(
            "{what} name {:?}: at most {} bytes and no NUL",
            crate::guard::limits::truncate(s, 80),
            k::NAME_MAXLEN - 1
        )));
    }
    Ok(())
}

pub fn too_large(e: TooLarge) -> KernelError {
    KernelError::Invalid(format!(
        "the nftables {} would be larger than {} bytes",
        e.what, e.limit
    ))
}

fn family_of(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        k::NFPROTO_IPV4
    } else {
        k::NFPROTO_IPV6
    }
}

fn ip_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn family_name(f: u8) -> &'static str {
    if f == k::NFPROTO_IPV4 {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// The first address after the prefix (where an interval set's element
/// ends), None when it would wrap around.
fn first_after(net: IpNet) -> Option<IpAddr> {
    match net.broadcast() {
        IpAddr::V4(b) => u32::from(b)
            .checked_add(1)
            .map(|a| IpAddr::from(a.to_be_bytes())),
        IpAddr::V6(b) => u128::from(b)
            .checked_add(1)
            .map(|a| IpAddr::from(a.to_be_bytes())),
    }
}

/// An interface name as `meta iifname` compares it: zero-padded to
/// IFNAMSIZ, or a prefix without padding for `name*`.
fn ifname_key(name: &str, wildcard_ok: bool) -> KResult<Vec<u8>> {
    let bad = |why: &str| {
        KernelError::Invalid(format!(
            "interface name {:?}: {why}",
            crate::guard::limits::truncate(name, 40)
        ))
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if let Some(prefix) = name.strip_suffix('*') {
        if !wildcard_ok {
            return Err(bad("wildcards are not allowed here"));
        }
        if prefix.is_empty() {
            return Err(bad("a wildcard needs a prefix before the '*'"));
        }
        if prefix.len() >= k::IFNAMSIZ {
            return Err(bad("longer than 15 bytes"));
        }
        return Ok(prefix.as_bytes().to_vec());
    }
    if name.len() >= k::IFNAMSIZ {
        return Err(bad("longer than 15 bytes"));
    }
    let mut key = name.as_bytes().to_vec();
    key.resize(k::IFNAMSIZ, 0);
    Ok(key)
}

/// The keys an element takes in a set of `kind`, each with its element
/// flags (an interval is a start key and an end key).
pub fn element_keys(kind: SetKind, set: &str, elem: &Element) -> KResult<Vec<(Vec<u8>, u32)>> {
    let invalid = |why: &str| KernelError::Invalid(format!("element {elem} for set {set}: {why}"));
    let SetKind::Typed(ty) = kind else {
        return Err(invalid("the set's key type is not one netshim manages"));
    };
    if !elem.fits(ty) {
        return Err(invalid("it does not fit the set's key type"));
    }
    Ok(match elem {
        Element::Ifname(n) => vec![(
            ifname_key(n, false).map_err(|e| invalid(&e.to_string()))?,
            0,
        )],
        Element::Ifindex(i) => vec![(i.to_ne_bytes().to_vec(), 0)],
        Element::Port(p) => vec![(p.to_be_bytes().to_vec(), 0)],
        Element::Addr(net) => {
            let mut keys = vec![(ip_bytes(net.network()), 0)];
            if let Some(end) = first_after(*net) {
                keys.push((ip_bytes(end), k::SET_ELEM_INTERVAL_END));
            }
            keys
        }
    })
}

fn nest_end(w: &mut Writer, m: Mark) -> KResult<()> {
    w.end_nest(m).map_err(too_large)
}

/// Expressions of one rule, appended inside NFTA_RULE_EXPRESSIONS.
struct Exprs<'w> {
    w: &'w mut Writer,
}

impl Exprs<'_> {
    fn expr(
        &mut self,
        name: &str,
        data: impl FnOnce(&mut Writer) -> Result<(), TooLarge>,
    ) -> KResult<()> {
        let e = self.w.begin_nest(k::LIST_ELEM).map_err(too_large)?;
        self.w.attr_str(k::EXPR_NAME, name).map_err(too_large)?;
        let d = self.w.begin_nest(k::EXPR_DATA).map_err(too_large)?;
        data(self.w).map_err(too_large)?;
        nest_end(self.w, d)?;
        nest_end(self.w, e)
    }

    fn meta(&mut self, key: u32) -> KResult<()> {
        self.expr("meta", |w| {
            w.attr_be32(1, k::REG_1)?; // NFTA_META_DREG
            w.attr_be32(2, key) // NFTA_META_KEY
        })
    }

    fn cmp(&mut self, op: u32, data: &[u8]) -> KResult<()> {
        self.expr("cmp", |w| {
            w.attr_be32(1, k::REG_1)?; // NFTA_CMP_SREG
            w.attr_be32(2, op)?; // NFTA_CMP_OP
            let n = w.begin_nest(3)?; // NFTA_CMP_DATA
            w.attr(k::DATA_VALUE, data)?;
            w.end_nest(n)
        })
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32) -> KResult<()> {
        self.expr("payload", |w| {
            w.attr_be32(1, k::REG_1)?; // DREG
            w.attr_be32(2, base)?;
            w.attr_be32(3, offset)?;
            w.attr_be32(4, len)
        })
    }

    fn bitwise(&mut self, mask: &[u8]) -> KResult<()> {
        self.expr("bitwise", |w| {
            w.attr_be32(1, k::REG_1)?; // SREG
            w.attr_be32(2, k::REG_1)?; // DREG
            w.attr_be32(3, mask.len() as u32)?; // LEN
            let m = w.begin_nest(4)?; // MASK
            w.attr(k::DATA_VALUE, mask)?;
            w.end_nest(m)?;
            let x = w.begin_nest(5)?; // XOR
            w.attr(k::DATA_VALUE, &vec![0; mask.len()])?;
            w.end_nest(x)
        })
    }

    fn lookup(&mut self, set: &str, invert: bool) -> KResult<()> {
        self.expr("lookup", |w| {
            w.attr_str(1, set)?; // NFTA_LOOKUP_SET
            w.attr_be32(2, k::REG_1)?; // SREG
            if invert {
                w.attr_be32(5, k::LOOKUP_F_INV)?; // FLAGS
            }
            Ok(())
        })
    }

    fn ct(&mut self, key: u32) -> KResult<()> {
        self.expr("ct", |w| {
            w.attr_be32(1, k::REG_1)?; // DREG
            w.attr_be32(2, key)
        })
    }

    fn fib(&mut self, flags: u32, result: u32) -> KResult<()> {
        self.expr("fib", |w| {
            w.attr_be32(1, k::REG_1)?; // DREG
            w.attr_be32(2, result)?;
            w.attr_be32(3, flags)
        })
    }

    /// `first <= reg <= last`, both in network byte order.
    fn range(&mut self, first: &[u8], last: &[u8]) -> KResult<()> {
        self.expr("range", |w| {
            w.attr_be32(1, k::REG_1)?; // NFTA_RANGE_SREG
            w.attr_be32(2, k::RANGE_EQ)?; // NFTA_RANGE_OP
            let f = w.begin_nest(3)?; // FROM_DATA
            w.attr(k::DATA_VALUE, first)?;
            w.end_nest(f)?;
            let t = w.begin_nest(4)?; // TO_DATA
            w.attr(k::DATA_VALUE, last)?;
            w.end_nest(t)
        })
    }

    /// `reject` as nft writes it in an inet table: ICMPX unreachable
    /// (port unreachable), the kernel picking ICMP or ICMPv6.
    fn reject(&mut self) -> KResult<()> {
        self.expr("reject", |w| {
            w.attr_be32(1, k::REJECT_ICMPX_UNREACH)?; // NFTA_REJECT_TYPE
            w.attr(2, &[k::REJECT_ICMPX_PORT_UNREACH]) // NFTA_REJECT_ICMP_CODE (u8)
        })
    }

    fn counter(&mut self) -> KResult<()> {
        self.expr("counter", |_| Ok(()))
    }

    fn masquerade(&mut self) -> KResult<()> {
        self.expr("masq", |_| Ok(()))
    }

    fn immediate(&mut self, reg: u32, data: &[u8]) -> KResult<()> {
        self.expr("immediate", |w| {
            w.attr_be32(1, reg)?; // DREG
            let d = w.begin_nest(2)?; // DATA
            w.attr(k::DATA_VALUE, data)?;
            w.end_nest(d)
        })
    }

    fn verdict(&mut self, code: u32, chain: Option<&str>) -> KResult<()> {
        self.expr("immediate", |w| {
            w.attr_be32(1, k::REG_VERDICT)?;
            let d = w.begin_nest(2)?; // DATA
            let v = w.begin_nest(k::DATA_VERDICT)?;
            w.attr_be32(k::VERDICT_CODE, code)?;
            if let Some(c) = chain {
                w.attr_str(k::VERDICT_CHAIN, c)?;
            }
            w.end_nest(v)?;
            w.end_nest(d)
        })
    }

    fn nat(&mut self, ty: u32, family: u8, with_port: bool) -> KResult<()> {
        self.expr("nat", |w| {
            w.attr_be32(1, ty)?; // TYPE
            w.attr_be32(2, family as u32)?; // FAMILY
            w.attr_be32(3, k::REG_1)?; // REG_ADDR_MIN
            if with_port {
                w.attr_be32(5, k::REG_2)?; // REG_PROTO_MIN
                w.attr_be32(7, k::NAT_RANGE_PROTO_SPECIFIED)?; // FLAGS
            }
            Ok(())
        })
    }
}

/// Rule state while its matches are encoded.
struct RuleBuild<'a, 'w> {
    e: Exprs<'w>,
    id: &'a str,
    chain: &'a str,
    /// Network family the rule is already restricted to (meta nfproto).
    family: Option<u8>,
    /// Transport protocol matched so far.
    l4: Option<Protocol>,
}

impl RuleBuild<'_, '_> {
    fn invalid(&self, why: impl std::fmt::Display) -> KernelError {
        KernelError::Invalid(format!("rule '{}' in chain {}: {why}", self.id, self.chain))
    }

    fn nfproto(&mut self, family: u8) -> KResult<()> {
        match self.family {
            Some(f) if f == family => Ok(()),
            Some(f) => Err(self.invalid(format!(
                "mixes {} and {} matches, it could never match",
                family_name(f),
                family_name(family)
            ))),
            None => {
                self.e.meta(k::META_NFPROTO)?;
                self.e.cmp(k::CMP_EQ, &[family])?;
                self.family = Some(family);
                Ok(())
            }
        }
    }

    fn ifname(&mut self, key: u32, name: &str, op: u32) -> KResult<()> {
        let data = ifname_key(name, true).map_err(|e| self.invalid(e))?;
        self.e.meta(key)?;
        self.e.cmp(op, &data)
    }

    /// `ip saddr 10.0.0.0/24` and friends, as nft encodes them (so `nft
    /// list` prints them back): a byte-aligned prefix loads just its bytes;
    /// any other loads the whole address and masks it.
    fn addr(&mut self, p: &IpNet, source: bool, op: u32) -> KResult<()> {
        let family = family_of(p.addr());
        let bytes = ip_bytes(p.addr());
        let plen = p.prefix_len() as usize;
        self.nfproto(family)?;
        if plen == 0 {
            if op == k::CMP_NEQ {
                return Err(self.invalid("'not in /0' never matches"));
            }
            return Ok(());
        }
        let offset = addr_offset(family, source);
        let net = ip_bytes(p.network());
        if plen.is_multiple_of(8) {
            let nbytes = plen / 8;
            self.e.payload(k::PAYLOAD_NETWORK, offset, nbytes as u32)?;
            self.e.cmp(op, &net[..nbytes])
        } else {
            self.e
                .payload(k::PAYLOAD_NETWORK, offset, bytes.len() as u32)?;
            self.e.bitwise(&ip_bytes(p.netmask()))?;
            self.e.cmp(op, &net)
        }
    }

    fn expect(
        &self,
        set: &str,
        kind: Option<SetKind>,
        want: &[SetType],
        what: &str,
    ) -> KResult<SetType> {
        match kind {
            None => Err(KernelError::NotFound(format!("set {set}"))),
            Some(SetKind::Typed(t)) if want.contains(&t) => Ok(t),
            Some(_) => Err(self.invalid(format!("set {set} does not hold {what}"))),
        }
    }

    fn has_ports(&self) -> bool {
        self.l4.is_some_and(Protocol::has_ports)
    }
}

fn addr_offset(family: u8, source: bool) -> u32 {
    match (family == k::NFPROTO_IPV4, source) {
        (true, true) => 12,
        (true, false) => 16,
        (false, true) => 8,
        (false, false) => 24,
    }
}

/// NFTA_RULE_EXPRESSIONS and NFTA_RULE_USERDATA of `rule`. `set_kind`
/// resolves the sets the rule looks up (None: no such set).
pub fn rule_body(
    w: &mut Writer,
    chain: &str,
    rule: &Rule,
    mut set_kind: impl FnMut(&str) -> KResult<Option<SetKind>>,
) -> KResult<()> {
    if rule.id.len() >= k::COMMENT_MAXLEN || rule.id.contains('\0') {
        return Err(KernelError::Invalid(format!(
            "rule id {:?}: at most {} bytes and no NUL",
            crate::guard::limits::truncate(&rule.id, 80),
            k::COMMENT_MAXLEN - 1
        )));
    }
    let list = w.begin_nest(k::RULE_EXPRESSIONS).map_err(too_large)?;
    let mut b = RuleBuild {
        e: Exprs { w },
        id: &rule.id,
        chain,
        family: None,
        l4: None,
    };
    for m in &rule.matches {
        match m {
            Match::Iifname(n) => b.ifname(k::META_IIFNAME, n, k::CMP_EQ)?,
            Match::IifnameNot(n) => b.ifname(k::META_IIFNAME, n, k::CMP_NEQ)?,
            Match::Oifname(n) => b.ifname(k::META_OIFNAME, n, k::CMP_EQ)?,
            Match::OifnameNot(n) => b.ifname(k::META_OIFNAME, n, k::CMP_NEQ)?,
            Match::Saddr(p) => b.addr(p, true, k::CMP_EQ)?,
            Match::SaddrNot(p) => b.addr(p, true, k::CMP_NEQ)?,
            Match::Daddr(p) => b.addr(p, false, k::CMP_EQ)?,
            Match::DaddrNot(p) => b.addr(p, false, k::CMP_NEQ)?,
            Match::SaddrIn(s) | Match::DaddrIn(s) => {
                let kind = set_kind(s)?;
                let t = b.expect(
                    s,
                    kind,
                    &[SetType::Ipv4Addr, SetType::Ipv6Addr],
                    "addresses",
                )?;
                let family = if t == SetType::Ipv4Addr {
                    k::NFPROTO_IPV4
                } else {
                    k::NFPROTO_IPV6
                };
                b.nfproto(family)?;
                let len = if family == k::NFPROTO_IPV4 { 4 } else { 16 };
                let source = matches!(m, Match::SaddrIn(_));
                b.e.payload(k::PAYLOAD_NETWORK, addr_offset(family, source), len)?;
                b.e.lookup(s, false)?;
            }
            Match::IifnameIn(s) | Match::OifnameIn(s) => {
                let kind = set_kind(s)?;
                b.expect(s, kind, &[SetType::Ifname], "interface names")?;
                let key = if matches!(m, Match::IifnameIn(_)) {
                    k::META_IIFNAME
                } else {
                    k::META_OIFNAME
                };
                b.e.meta(key)?;
                b.e.lookup(s, false)?;
            }
            Match::IifIn(s) | Match::IifNotIn(s) | Match::OifIn(s) | Match::OifNotIn(s) => {
                let kind = set_kind(s)?;
                b.expect(s, kind, &[SetType::Ifindex], "interface indexes")?;
                let key = if matches!(m, Match::IifIn(_) | Match::IifNotIn(_)) {
                    k::META_IIF
                } else {
                    k::META_OIF
                };
                b.e.meta(key)?;
                b.e.lookup(s, matches!(m, Match::IifNotIn(_) | Match::OifNotIn(_)))?;
            }
            Match::Protocol(p) => {
                if let Some(prev) = b.l4 {
                    if prev != *p {
                        return Err(
                            b.invalid("matches two different protocols, it could never match")
                        );
                    }
                    continue;
                }
                b.e.meta(k::META_L4PROTO)?;
                b.e.cmp(k::CMP_EQ, &[p.number()])?;
                b.l4 = Some(*p);
            }
            Match::Dport(port) => {
                if !b.has_ports() {
                    return Err(
                        b.invalid("dport needs a protocol match (tcp, udp or sctp) before it")
                    );
                }
                b.e.payload(k::PAYLOAD_TRANSPORT, 2, 2)?;
                b.e.cmp(k::CMP_EQ, &port.to_be_bytes())?;
            }
            Match::DportIn(s) => {
                if !b.has_ports() {
                    return Err(
                        b.invalid("dport needs a protocol match (tcp, udp or sctp) before it")
                    );
                }
                let kind = set_kind(s)?;
                b.expect(s, kind, &[SetType::InetService], "ports")?;
                b.e.payload(k::PAYLOAD_TRANSPORT, 2, 2)?;
                b.e.lookup(s, false)?;
            }
            Match::DaddrLocal => {
                b.e.fib(k::FIB_F_DADDR, k::FIB_RESULT_ADDRTYPE)?;
                b.e.cmp(k::CMP_EQ, &k::RTN_LOCAL.to_ne_bytes())?;
            }
            Match::CtState(states) => {
                let mask = states.0 & CtStates::ALL;
                if mask == 0 {
                    return Err(b.invalid("a ct state match with no state never matches"));
                }
                b.e.ct(k::CT_STATE)?;
                b.e.bitwise(&mask.to_ne_bytes())?;
                b.e.cmp(k::CMP_NEQ, &0u32.to_ne_bytes())?;
            }
            Match::DportRange(first, last) => {
                if !b.has_ports() {
                    return Err(
                        b.invalid("dport needs a protocol match (tcp, udp or sctp) before it")
                    );
                }
                if first > last {
                    return Err(b.invalid(format!("port range {first}-{last} is empty")));
                }
                b.e.payload(k::PAYLOAD_TRANSPORT, 2, 2)?;
                b.e.range(&first.to_be_bytes(), &last.to_be_bytes())?;
            }
            Match::IcmpType(t) => {
                if b.l4 != Some(Protocol::Icmp) {
                    return Err(b.invalid("an ICMP type needs the icmp protocol match before it"));
                }
                b.e.payload(k::PAYLOAD_TRANSPORT, 0, 1)?;
                b.e.cmp(k::CMP_EQ, &[*t])?;
            }
            Match::FromNetwork | Match::ToNetwork => {
                return Err(b.invalid("a network-relative match reached the kernel unscoped"));
            }
        }
    }
    if rule.counter {
        b.e.counter()?;
    }
    match &rule.action {
        Action::Accept => b.e.verdict(k::NF_ACCEPT, None)?,
        Action::Drop => b.e.verdict(k::NF_DROP, None)?,
        Action::Return => b.e.verdict(k::NFT_RETURN, None)?,
        Action::Reject => b.e.reject()?,
        Action::Jump(target) => {
            check_name("chain", target)?;
            b.e.verdict(k::NFT_JUMP, Some(target))?
        }
        Action::Masquerade => b.e.masquerade()?,
        Action::Snat(addr) | Action::Dnat(addr, _) => {
            let family = family_of(*addr);
            let (ty, port, what) = match &rule.action {
                Action::Dnat(_, port) => (k::NAT_DNAT, *port, "dnat"),
                _ => (k::NAT_SNAT, None, "snat"),
            };
            if let Some(f) = b.family {
                if f != family {
                    return Err(b.invalid(format!(
                        "{what} to an {} address in an {} rule",
                        family_name(family),
                        family_name(f)
                    )));
                }
            }
            if port.is_some() && !b.has_ports() {
                return Err(b.invalid("dnat to a port needs a protocol match (tcp, udp or sctp)"));
            }
            b.e.immediate(k::REG_1, &ip_bytes(*addr))?;
            if let Some(port) = port {
                b.e.immediate(k::REG_2, &port.to_be_bytes())?;
            }
            b.e.nat(ty, family, port.is_some())?;
        }
    }
    nest_end(w, list)?;
    // The id as the comment TLV `nft` uses for `comment "..."`.
    let mut udata = vec![k::UDATA_RULE_COMMENT, (rule.id.len() + 1) as u8];
    udata.extend_from_slice(rule.id.as_bytes());
    udata.push(0);
    w.attr(k::RULE_USERDATA, &udata).map_err(too_large)
}

/// The rule id in a rule's userdata: the comment TLV, "" when there is none.
pub fn rule_id(udata: &[u8]) -> String {
    let mut off = 0usize;
    while let Some(&[ty, len]) = udata.get(off..off + 2) {
        let Some(v) = udata.get(off + 2..off + 2 + len as usize) else {
            break;
        };
        if ty == k::UDATA_RULE_COMMENT {
            return super::wire::attr_string(v);
        }
        off += 2 + len as usize;
    }
    String::new()
}

pub fn hook_number(h: Hook) -> u32 {
    match h {
        Hook::Prerouting => 0,
        Hook::Input => 1,
        Hook::Forward => 2,
        Hook::Output => 3,
        Hook::Postrouting => 4,
    }
}

/// The attributes of a chain: table, name and, for a base chain, hook,
/// priority, type and policy.
pub fn chain_body(w: &mut Writer, table: &str, name: &str, base: Option<BaseChain>) -> KResult<()> {
    w.attr_str(k::CHAIN_TABLE, table).map_err(too_large)?;
    w.attr_str(k::CHAIN_NAME, name).map_err(too_large)?;
    if let Some(b) = base {
        let h = w.begin_nest(k::CHAIN_HOOK).map_err(too_large)?;
        w.attr_be32(k::HOOK_HOOKNUM, hook_number(b.hook))
            .map_err(too_large)?;
        w.attr_be32(k::HOOK_PRIORITY, b.priority as u32)
            .map_err(too_large)?;
        nest_end(w, h)?;
        let policy = if b.policy_drop {
            k::NF_DROP
        } else {
            k::NF_ACCEPT
        };
        w.attr_be32(k::CHAIN_POLICY, policy).map_err(too_large)?;
        let ty = match b.chain_type {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
        };
        w.attr_str(k::CHAIN_TYPE, ty).map_err(too_large)?;
    }
    Ok(())
}

/// The attributes of a new set of type `ty`.
pub fn set_body(w: &mut Writer, table: &str, name: &str, ty: SetType, id: u32) -> KResult<()> {
    let (ktype, klen, flags, order) = SetKind::declaration(ty);
    w.attr_str(k::SET_TABLE, table).map_err(too_large)?;
    w.attr_str(k::SET_NAME, name).map_err(too_large)?;
    if flags != 0 {
        w.attr_be32(k::SET_FLAGS, flags).map_err(too_large)?;
    }
    w.attr_be32(k::SET_KEY_TYPE, ktype).map_err(too_large)?;
    w.attr_be32(k::SET_KEY_LEN, klen).map_err(too_large)?;
    w.attr_be32(k::SET_ID, id).map_err(too_large)?;
    // What nft records about the key, so `nft list` prints it right.
    let mut udata = vec![k::UDATA_SET_KEYBYTEORDER, 4];
    udata.extend_from_slice(&order.to_ne_bytes());
    w.attr(k::SET_USERDATA, &udata).map_err(too_large)
}

/// The attributes of an element list message for `keys` of set `set`.
pub fn elements_body(
    w: &mut Writer,
    table: &str,
    set: &str,
    keys: &[(Vec<u8>, u32)],
) -> KResult<()> {
    w.attr_str(k::SET_ELEM_LIST_TABLE, table)
        .map_err(too_large)?;
    w.attr_str(k::SET_ELEM_LIST_SET, set).map_err(too_large)?;
    let list = w.begin_nest(k::SET_ELEM_LIST_ELEMENTS).map_err(too_large)?;
    for (key, flags) in keys {
        let e = w.begin_nest(k::LIST_ELEM).map_err(too_large)?;
        let kn = w.begin_nest(k::SET_ELEM_KEY).map_err(too_large)?;
        w.attr(k::DATA_VALUE, key).map_err(too_large)?;
        nest_end(w, kn)?;
        if *flags != 0 {
            w.attr_be32(k::SET_ELEM_FLAGS, *flags).map_err(too_large)?;
        }
        nest_end(w, e)?;
    }
    nest_end(w, list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        let end = |n: &str| first_after(n.parse().unwrap()).map(|a| a.to_string());
        assert_eq!(end("10.1.0.0/16").as_deref(), Some("10.2.0.0"));
        assert_eq!(end("10.1.255.0/24").as_deref(), Some("10.2.0.0"));
        assert_eq!(end("10.0.0.5/32").as_deref(), Some("10.0.0.6"));
        assert_eq!(end("10.0.0.128/25").as_deref(), Some("10.0.1.0"));
        assert_eq!(end("255.255.255.255/32"), None);
        assert_eq!(end("0.0.0.0/0"), None);
        assert_eq!(end("128.0.0.0/1"), None);
        assert_eq!(end("0.0.0.0/1").as_deref(), Some("128.0.0.0"));
        assert_eq!(end("fd00::/64").as_deref(), Some("fd00:0:0:1::"));
    }

    #[test]
    fn rule_ids_round_trip() {
        let mut w = Writer::new(4096);
        let r = Rule {
            id: "masq-n1".into(),
            matches: vec![],
            counter: false,
            action: Action::Accept,
        };
        rule_body(&mut w, "c", &r, |_| Ok(None)).unwrap();
        let body = w.bytes();
        let (_, udata) = super::super::wire::attrs(body)
            .find(|(t, _)| *t == k::RULE_USERDATA)
            .unwrap();
        assert_eq!(rule_id(udata), "masq-n1");
        assert_eq!(rule_id(&[0, 200, 1]), "");
    }

    /// However small the writer's cap, a rule is written within it or
    /// refused: never past it.
    #[test]
    fn a_rule_never_outgrows_the_writers_cap() {
        let rule = Rule {
            id: "r".repeat(100),
            matches: vec![
                Match::Iifname("br-*".into()),
                Match::Saddr("10.2.0.0/15".parse().unwrap()),
                Match::DaddrIn("s".into()),
                Match::Protocol(Protocol::Tcp),
                Match::DportRange(1000, 2000),
                Match::CtState(CtStates(CtStates::NEW)),
            ],
            counter: true,
            action: Action::Dnat("10.0.0.2".parse().unwrap(), Some(80)),
        };
        let kinds = |_: &str| Ok(Some(SetKind::Typed(SetType::Ipv4Addr)));
        let mut full = Writer::new(1 << 20);
        rule_body(&mut full, "c", &rule, kinds).unwrap();
        for cap in 0..=full.len() {
            let mut w = Writer::new(cap);
            let r = rule_body(&mut w, "c", &rule, kinds);
            assert!(w.len() <= cap, "cap {cap}: wrote {}", w.len());
            assert_eq!(r.is_ok(), cap == full.len(), "cap {cap}");
        }
    }
}
