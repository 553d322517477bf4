//! nftables backend: netlink batches built with libnftnl (through
//! `nftnl::nftnl_sys`), sent on a NETLINK_NETFILTER socket opened in the
//! target namespace. No `nft` process is ever run.
//!
//! Everything lives in one `inet` table per caller. A call to [`Nft::apply`]
//! is one nftables transaction (BATCH_BEGIN .. BATCH_END): the kernel commits
//! all of it or none of it. Rule ids travel in the rules' userdata as a
//! comment TLV (what `nft` itself uses for `comment "..."`), so `nft list`
//! shows them and [`Nft::rules`] / `delete-rule` find rules again by id.
//!
//! Messages in a batch carry no NLM_F_ACK: the kernel answers only failing
//! messages, and since a batch is processed synchronously inside `sendmsg`,
//! every error is queued by the time `send` returns (the same approach as
//! `nft` itself). No reply means the whole batch was committed.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use nftnl::nftnl_sys as sys;

use crate::bindings::netshim::plugin::netfilter::{
    Action, BaseChain, ChainType, Hook, Match, Op as NftOp, Protocol, Rule, SetType,
};
use crate::bindings::netshim::plugin::types::{IpAddress, IpPrefix};
use crate::kernel::{KResult, KernelError};

/// Kernel ABI constants (include/uapi/linux/netfilter/nf_tables.h,
/// netlink.h, nftables' datatype.h). Defined here so the code does not
/// depend on which of them a given libc/nftnl-sys version exports.
mod k {
    pub const NFPROTO_INET: u16 = 1;
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

    pub const NLM_F_ACK: u16 = 0x4;
    pub const NLM_F_DUMP_INTR: u16 = 0x10;
    pub const NLM_F_DUMP: u16 = 0x300;
    pub const NLM_F_NONREC: u16 = 0x100;
    pub const NLM_F_CREATE: u16 = 0x400;
    pub const NLM_F_APPEND: u16 = 0x800;
    pub const NLM_F_CAPPED: u16 = 0x100;
    pub const NLM_F_ACK_TLVS: u16 = 0x200;
    pub const NLMSG_NOOP: u16 = 1;
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLMSG_DONE: u16 = 3;
    pub const NLMSGERR_ATTR_MSG: u16 = 1;

    pub const SOL_NETLINK: i32 = 270;
    pub const NETLINK_CAP_ACK: i32 = 10;
    pub const NETLINK_EXT_ACK: i32 = 11;

    pub const REG_VERDICT: u32 = 0;
    pub const REG_1: u32 = 1;
    pub const REG_2: u32 = 2;

    pub const META_IIFNAME: u32 = 6;
    pub const META_OIFNAME: u32 = 7;
    pub const META_NFPROTO: u32 = 15;
    pub const META_L4PROTO: u32 = 16;

    pub const CMP_EQ: u32 = 0;
    pub const CMP_NEQ: u32 = 1;

    pub const PAYLOAD_NETWORK: u32 = 1;
    pub const PAYLOAD_TRANSPORT: u32 = 2;

    pub const CT_STATE: u32 = 0;
    /// NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED)
    pub const CT_ESTABLISHED_RELATED: u32 = 0x2 | 0x4;

    pub const FIB_F_DADDR: u32 = 1 << 1;
    pub const FIB_RESULT_ADDRTYPE: u32 = 3;
    pub const RTN_LOCAL: u32 = 2;

    pub const NAT_SNAT: u32 = 0;
    pub const NAT_DNAT: u32 = 1;
    pub const NAT_RANGE_PROTO_SPECIFIED: u32 = 0x2;

    pub const NF_DROP: i32 = 0;
    pub const NF_ACCEPT: i32 = 1;
    pub const NFT_JUMP: i32 = -3;
    pub const NFT_RETURN: i32 = -5;

    pub const SET_INTERVAL: u32 = 0x4;
    pub const SET_ELEM_INTERVAL_END: u32 = 0x1;

    /// nftables datatype ids, as `nft` writes them into NFTA_SET_KEY_TYPE.
    pub const TYPE_IPADDR: u32 = 7;
    pub const TYPE_IP6ADDR: u32 = 8;
    pub const TYPE_IFNAME: u32 = 41;
    pub const BYTEORDER_HOST: u32 = 1;
    pub const BYTEORDER_BIG: u32 = 2;

    pub const IFNAMSIZ: usize = 16;
    pub const UDATA_RULE_COMMENT: u8 = 0;
    pub const UDATA_SET_KEYBYTEORDER: u8 = 0;
    /// NFTNL_UDATA_COMMENT_MAXLEN, including the terminating NUL.
    pub const COMMENT_MAXLEN: usize = 128;
}

/// Sequence numbers, unique per process so replies to an earlier request on
/// a cached socket can never be taken for replies to a later one.
static SEQ: AtomicU32 = AtomicU32::new(1);

fn next_seqs(n: u32) -> u32 {
    SEQ.fetch_add(n, Ordering::Relaxed)
}

/// The largest nf_tables message (a set element list) plus a page.
const MSG_MAX: usize = 65535 + 4096;
const RECV_BUF: usize = 128 * 1024;

// ---------------------------------------------------------------------------
// Netlink socket
// ---------------------------------------------------------------------------

/// A NETLINK_NETFILTER socket. It stays bound to the namespace it was
/// created in, whichever thread uses it later.
struct Sock {
    fd: OwnedFd,
    portid: u32,
}

impl Sock {
    fn open() -> io::Result<Sock> {
        unsafe {
            let raw = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            );
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(raw);
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            let salen = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            if libc::bind(raw, &sa as *const _ as *const libc::sockaddr, salen) < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut len = salen;
            if libc::getsockname(raw, &mut sa as *mut _ as *mut libc::sockaddr, &mut len) < 0 {
                return Err(io::Error::last_os_error());
            }
            // Errors carry only the failing message's header, not its whole
            // payload (a set element message can be 64 KiB), plus the
            // kernel's extended-ack text when there is one. Both optional.
            let one: c_int = 1;
            let optlen = std::mem::size_of::<c_int>() as libc::socklen_t;
            let onep = &one as *const c_int as *const c_void;
            libc::setsockopt(raw, k::SOL_NETLINK, k::NETLINK_CAP_ACK, onep, optlen);
            libc::setsockopt(raw, k::SOL_NETLINK, k::NETLINK_EXT_ACK, onep, optlen);
            // A dump never legitimately stalls; do not hang forever if one does.
            let tv = libc::timeval {
                tv_sec: 10,
                tv_usec: 0,
            };
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
            Ok(Sock {
                fd,
                portid: sa.nl_pid,
            })
        }
    }

    fn send(&self, data: &[u8]) -> io::Result<()> {
        let raw = self.fd.as_raw_fd();
        // netlink_sendmsg refuses messages larger than the send buffer, and
        // a batch must go in one sendmsg: grow the buffer for big batches.
        if data.len() > 128 * 1024 {
            let size: c_int = (data.len() + 64 * 1024).min(i32::MAX as usize) as c_int;
            let p = &size as *const c_int as *const c_void;
            let l = std::mem::size_of::<c_int>() as libc::socklen_t;
            unsafe {
                if libc::setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, p, l) < 0 {
                    libc::setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, p, l);
                }
            }
        }
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            let n = unsafe {
                libc::sendto(
                    raw,
                    data.as_ptr() as *const c_void,
                    data.len(),
                    0,
                    &sa as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n as usize != data.len() {
                return Err(io::Error::other("short netlink send"));
            }
            return Ok(());
        }
    }

    fn recv(&self, buf: &mut [u8], nonblock: bool) -> io::Result<usize> {
        let flags = if nonblock { libc::MSG_DONTWAIT } else { 0 };
        loop {
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut c_void,
                    buf.len(),
                    flags,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            return Ok(n as usize);
        }
    }
}

/// A buffer aligned for `nlmsghdr` (libnftnl's parsers take a pointer to one).
struct AlignedBuf(Vec<u64>);

impl AlignedBuf {
    fn new(bytes: usize) -> AlignedBuf {
        AlignedBuf(vec![0u64; bytes.div_ceil(8)])
    }
    fn as_mut_ptr(&mut self) -> *mut c_char {
        self.0.as_mut_ptr() as *mut c_char
    }
    fn bytes(&self) -> &[u8] {
        unsafe { std::slice::from_raw_parts(self.0.as_ptr() as *const u8, self.0.len() * 8) }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr() as *mut u8, self.0.len() * 8) }
    }
    /// The complete netlink message at the start of the buffer.
    fn message(&self) -> &[u8] {
        let len = u32::from_ne_bytes(self.bytes()[0..4].try_into().unwrap()) as usize;
        &self.bytes()[..(len + 3) & !3]
    }
}

/// One netlink message header, read without assuming alignment.
#[derive(Clone, Copy)]
struct Hdr {
    len: usize,
    ty: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

/// Iterate over the messages of one `recv`: (header, offset of the message).
fn messages(buf: &[u8]) -> impl Iterator<Item = (Hdr, usize)> + '_ {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        if off + 16 > buf.len() {
            return None;
        }
        let b = &buf[off..];
        let h = Hdr {
            len: u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize,
            ty: u16::from_ne_bytes(b[4..6].try_into().unwrap()),
            flags: u16::from_ne_bytes(b[6..8].try_into().unwrap()),
            seq: u32::from_ne_bytes(b[8..12].try_into().unwrap()),
            pid: u32::from_ne_bytes(b[12..16].try_into().unwrap()),
        };
        if h.len < 16 || off + h.len > buf.len() {
            return None;
        }
        let at = off;
        off += (h.len + 3) & !3;
        Some((h, at))
    })
}

/// The errno of an NLMSG_ERROR message (0 for an ACK) and the kernel's
/// extended-ack text, if any.
fn nlmsg_error(h: &Hdr, msg: &[u8]) -> (i32, Option<String>) {
    if msg.len() < 20 {
        return (libc::EIO, None);
    }
    let errno = -i32::from_ne_bytes(msg[16..20].try_into().unwrap());
    let mut text = None;
    if h.flags & k::NLM_F_ACK_TLVS != 0 && msg.len() >= 36 {
        let inner_len = u32::from_ne_bytes(msg[20..24].try_into().unwrap()) as usize;
        let mut off = 20
            + if h.flags & k::NLM_F_CAPPED != 0 {
                16
            } else {
                (inner_len + 3) & !3
            };
        while off + 4 <= msg.len() {
            let alen = u16::from_ne_bytes(msg[off..off + 2].try_into().unwrap()) as usize;
            let aty = u16::from_ne_bytes(msg[off + 2..off + 4].try_into().unwrap()) & 0x3fff;
            if alen < 4 || off + alen > msg.len() {
                break;
            }
            if aty == k::NLMSGERR_ATTR_MSG {
                let v = &msg[off + 4..off + alen];
                let v = v.split(|c| *c == 0).next().unwrap_or(&[]);
                text = Some(String::from_utf8_lossy(v).into_owned());
            }
            off += (alen + 3) & !3;
        }
    }
    (errno, text)
}

fn open_sock(ns: Option<BorrowedFd<'_>>) -> KResult<Sock> {
    let sock_err = |e: io::Error| {
        if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
            KernelError::Permission("nftables netlink socket".into())
        } else {
            KernelError::Other(format!("cannot open an nftables netlink socket: {e}"))
        }
    };
    match ns {
        None => Sock::open().map_err(sock_err),
        Some(fd) => std::thread::scope(|s| {
            // setns on a short-lived thread: the caller's thread never
            // changes namespace; the socket stays bound to the target one.
            s.spawn(move || -> KResult<Sock> {
                nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                    if e == nix::errno::Errno::EPERM {
                        KernelError::Permission("entering the network namespace".into())
                    } else {
                        KernelError::Other(format!("cannot enter the network namespace: {e}"))
                    }
                })?;
                Sock::open().map_err(sock_err)
            })
            .join()
            .unwrap_or_else(|_| Err(KernelError::Other("nftables socket thread panicked".into())))
        }),
    }
}

// ---------------------------------------------------------------------------
// libnftnl objects (owned, freed on drop)
// ---------------------------------------------------------------------------

macro_rules! owned {
    ($name:ident, $ty:ty, $alloc:path, $free:path) => {
        struct $name(*mut $ty);
        impl $name {
            fn new() -> $name {
                let p = unsafe { $alloc() };
                if p.is_null() {
                    // Allocation of a few bytes failed: do what std does.
                    std::process::abort();
                }
                $name(p)
            }
        }
        impl Drop for $name {
            fn drop(&mut self) {
                unsafe { $free(self.0) }
            }
        }
    };
}

owned!(
    TableObj,
    sys::nftnl_table,
    sys::nftnl_table_alloc,
    sys::nftnl_table_free
);
owned!(
    ChainObj,
    sys::nftnl_chain,
    sys::nftnl_chain_alloc,
    sys::nftnl_chain_free
);
owned!(
    RuleObj,
    sys::nftnl_rule,
    sys::nftnl_rule_alloc,
    sys::nftnl_rule_free
);
owned!(
    SetObj,
    sys::nftnl_set,
    sys::nftnl_set_alloc,
    sys::nftnl_set_free
);

impl TableObj {
    fn named(table: &CStr) -> TableObj {
        let t = TableObj::new();
        unsafe {
            sys::nftnl_table_set_u32(t.0, sys::NFTNL_TABLE_FAMILY as u16, k::NFPROTO_INET as u32);
            sys::nftnl_table_set_str(t.0, sys::NFTNL_TABLE_NAME as u16, table.as_ptr());
        }
        t
    }
}

impl ChainObj {
    fn named(table: &CStr, chain: Option<&CStr>) -> ChainObj {
        let c = ChainObj::new();
        unsafe {
            sys::nftnl_chain_set_u32(c.0, sys::NFTNL_CHAIN_FAMILY as u16, k::NFPROTO_INET as u32);
            sys::nftnl_chain_set_str(c.0, sys::NFTNL_CHAIN_TABLE as u16, table.as_ptr());
            if let Some(chain) = chain {
                sys::nftnl_chain_set_str(c.0, sys::NFTNL_CHAIN_NAME as u16, chain.as_ptr());
            }
        }
        c
    }
}

impl SetObj {
    fn named(table: &CStr, set: Option<&CStr>) -> SetObj {
        let s = SetObj::new();
        unsafe {
            sys::nftnl_set_set_u32(s.0, sys::NFTNL_SET_FAMILY as u16, k::NFPROTO_INET as u32);
            sys::nftnl_set_set_str(s.0, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
            if let Some(set) = set {
                sys::nftnl_set_set_str(s.0, sys::NFTNL_SET_NAME as u16, set.as_ptr());
            }
        }
        s
    }

    fn add_elem(&mut self, key: &[u8], flags: u32) {
        unsafe {
            let e = sys::nftnl_set_elem_alloc();
            if e.is_null() {
                std::process::abort();
            }
            sys::nftnl_set_elem_set(
                e,
                sys::NFTNL_SET_ELEM_KEY as u16,
                key.as_ptr() as *const c_void,
                key.len() as u32,
            );
            if flags != 0 {
                sys::nftnl_set_elem_set_u32(e, sys::NFTNL_SET_ELEM_FLAGS as u16, flags);
            }
            // The set owns the element from here on.
            sys::nftnl_set_elem_add(self.0, e);
        }
    }
}

impl RuleObj {
    fn in_chain(table: &CStr, chain: &CStr) -> RuleObj {
        let r = RuleObj::new();
        unsafe {
            sys::nftnl_rule_set_u32(r.0, sys::NFTNL_RULE_FAMILY as u16, k::NFPROTO_INET as u32);
            sys::nftnl_rule_set_str(r.0, sys::NFTNL_RULE_TABLE as u16, table.as_ptr());
            sys::nftnl_rule_set_str(r.0, sys::NFTNL_RULE_CHAIN as u16, chain.as_ptr());
        }
        r
    }

    /// Allocate an expression, let `f` set its attributes, append it to the
    /// rule (which then owns it).
    fn expr(&mut self, name: &CStr, f: impl FnOnce(*mut sys::nftnl_expr)) {
        unsafe {
            let e = sys::nftnl_expr_alloc(name.as_ptr());
            if e.is_null() {
                std::process::abort();
            }
            f(e);
            sys::nftnl_rule_add_expr(self.0, e);
        }
    }

    fn meta(&mut self, key: u32) {
        self.expr(c"meta", |e| unsafe {
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_META_KEY as u16, key);
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_META_DREG as u16, k::REG_1);
        });
    }

    fn cmp(&mut self, op: u32, data: &[u8]) {
        self.expr(c"cmp", |e| unsafe {
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_CMP_SREG as u16, k::REG_1);
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_CMP_OP as u16, op);
            sys::nftnl_expr_set(
                e,
                sys::NFTNL_EXPR_CMP_DATA as u16,
                data.as_ptr() as *const c_void,
                data.len() as u32,
            );
        });
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32) {
        self.expr(c"payload", |e| unsafe {
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_PAYLOAD_DREG as u16, k::REG_1);
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_PAYLOAD_BASE as u16, base);
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_PAYLOAD_OFFSET as u16, offset);
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_PAYLOAD_LEN as u16, len);
        });
    }

    fn bitwise(&mut self, mask: &[u8]) {
        let xor = vec![0u8; mask.len()];
        self.expr(c"bitwise", |e| unsafe {
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_BITWISE_SREG as u16, k::REG_1);
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_BITWISE_DREG as u16, k::REG_1);
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_BITWISE_LEN as u16, mask.len() as u32);
            sys::nftnl_expr_set(
                e,
                sys::NFTNL_EXPR_BITWISE_MASK as u16,
                mask.as_ptr() as *const c_void,
                mask.len() as u32,
            );
            sys::nftnl_expr_set(
                e,
                sys::NFTNL_EXPR_BITWISE_XOR as u16,
                xor.as_ptr() as *const c_void,
                xor.len() as u32,
            );
        });
    }

    fn lookup(&mut self, set: &CStr) {
        self.expr(c"lookup", |e| unsafe {
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_LOOKUP_SREG as u16, k::REG_1);
            sys::nftnl_expr_set_str(e, sys::NFTNL_EXPR_LOOKUP_SET as u16, set.as_ptr());
        });
    }

    fn ct(&mut self, key: u32) {
        self.expr(c"ct", |e| unsafe {
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_CT_KEY as u16, key);
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_CT_DREG as u16, k::REG_1);
        });
    }

    fn fib(&mut self, flags: u32, result: u32) {
        self.expr(c"fib", |e| unsafe {
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_FIB_DREG as u16, k::REG_1);
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_FIB_RESULT as u16, result);
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_FIB_FLAGS as u16, flags);
        });
    }

    fn counter(&mut self) {
        self.expr(c"counter", |_| {});
    }

    fn masquerade(&mut self) {
        self.expr(c"masq", |_| {});
    }

    fn immediate(&mut self, reg: u32, data: &[u8]) {
        self.expr(c"immediate", |e| unsafe {
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_IMM_DREG as u16, reg);
            sys::nftnl_expr_set(
                e,
                sys::NFTNL_EXPR_IMM_DATA as u16,
                data.as_ptr() as *const c_void,
                data.len() as u32,
            );
        });
    }

    fn verdict(&mut self, verdict: i32, chain: Option<&CStr>) {
        self.expr(c"immediate", |e| unsafe {
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_IMM_DREG as u16, k::REG_VERDICT);
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_IMM_VERDICT as u16, verdict as u32);
            if let Some(chain) = chain {
                sys::nftnl_expr_set_str(e, sys::NFTNL_EXPR_IMM_CHAIN as u16, chain.as_ptr());
            }
        });
    }

    fn nat(&mut self, ty: u32, family: u8, with_port: bool) {
        self.expr(c"nat", |e| unsafe {
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_NAT_TYPE as u16, ty);
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_NAT_FAMILY as u16, family as u32);
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_NAT_REG_ADDR_MIN as u16, k::REG_1);
            if with_port {
                sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_NAT_REG_PROTO_MIN as u16, k::REG_2);
                sys::nftnl_expr_set_u32(
                    e,
                    sys::NFTNL_EXPR_NAT_FLAGS as u16,
                    k::NAT_RANGE_PROTO_SPECIFIED,
                );
            }
        });
    }

    /// Rule id as a comment TLV in NFTA_RULE_USERDATA (`comment "id"` in nft).
    fn set_id(&mut self, id: &str) {
        if id.is_empty() {
            return;
        }
        let mut udata = Vec::with_capacity(id.len() + 3);
        udata.push(k::UDATA_RULE_COMMENT);
        udata.push((id.len() + 1) as u8);
        udata.extend_from_slice(id.as_bytes());
        udata.push(0);
        let rc = unsafe {
            sys::nftnl_rule_set_data(
                self.0,
                sys::NFTNL_RULE_USERDATA as u16,
                udata.as_ptr() as *const c_void,
                udata.len() as u32,
            )
        };
        if rc < 0 {
            std::process::abort();
        }
    }
}

/// The rule id in a rule's userdata: the comment TLV, "" when there is none.
fn rule_id(r: &RuleObj) -> String {
    unsafe {
        if !sys::nftnl_rule_is_set(r.0, sys::NFTNL_RULE_USERDATA as u16) {
            return String::new();
        }
        let mut len = 0u32;
        let p = sys::nftnl_rule_get_data(r.0, sys::NFTNL_RULE_USERDATA as u16, &mut len);
        if p.is_null() {
            return String::new();
        }
        let data = std::slice::from_raw_parts(p as *const u8, len as usize);
        let mut off = 0usize;
        while off + 2 <= data.len() {
            let (ty, l) = (data[off], data[off + 1] as usize);
            if off + 2 + l > data.len() {
                break;
            }
            if ty == k::UDATA_RULE_COMMENT {
                let v = &data[off + 2..off + 2 + l];
                let v = v.split(|c| *c == 0).next().unwrap_or(&[]);
                return String::from_utf8_lossy(v).into_owned();
            }
            off += 2 + l;
        }
        String::new()
    }
}

// ---------------------------------------------------------------------------
// Batches and error mapping
// ---------------------------------------------------------------------------

/// What a message in a batch was about, to name it in an error.
enum Ctx {
    Batch,
    Table,
    DelTable,
    AddChain(String),
    DelChain(String),
    FlushChain(String),
    AddRule { chain: String, id: String },
    DelRule { chain: String, id: String },
    AddSet(String),
    DelSet(String),
    AddElem { set: String, elem: String },
    DelElem { set: String, elem: String },
}

fn strerror(errno: i32) -> String {
    let s = io::Error::from_raw_os_error(errno).to_string();
    // "No such file or directory (os error 2)" -> without the suffix.
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn map_error(table: &str, ctx: &Ctx, errno: i32, text: Option<&str>) -> KernelError {
    let t = format!("table inet {table}");
    let obj = match ctx {
        Ctx::Batch => format!("nftables batch for {t}"),
        Ctx::Table | Ctx::DelTable => t.clone(),
        Ctx::AddChain(c) | Ctx::DelChain(c) | Ctx::FlushChain(c) => format!("chain {c} in {t}"),
        Ctx::AddRule { chain, id } | Ctx::DelRule { chain, id } => {
            format!("rule '{id}' in chain {chain} of {t}")
        }
        Ctx::AddSet(s) | Ctx::DelSet(s) => format!("set {s} in {t}"),
        Ctx::AddElem { set, elem } | Ctx::DelElem { set, elem } => {
            format!("element {elem} in set {set} of {t}")
        }
    };
    let detail = match text {
        Some(m) if !m.is_empty() => format!("{} ({m})", strerror(errno)),
        _ => strerror(errno),
    };
    match errno {
        libc::EPERM | libc::EACCES => KernelError::Permission(obj),
        libc::ENOENT => KernelError::NotFound(match ctx {
            Ctx::AddRule { chain, id } => {
                format!("chain {chain} (or a chain or set used by rule '{id}') in {t}")
            }
            Ctx::AddElem { set, .. } => format!("set {set} in {t}"),
            _ => obj,
        }),
        libc::EEXIST => KernelError::Exists(match ctx {
            Ctx::AddChain(c) => format!("chain {c} with another hook, type or priority in {t}"),
            Ctx::AddSet(s) => format!("set {s} with another type or flags in {t}"),
            Ctx::AddElem { set, elem } => {
                format!("element {elem} (or an interval overlapping it) in set {set} of {t}")
            }
            _ => obj,
        }),
        libc::ENOTEMPTY if matches!(ctx, Ctx::AddElem { .. }) => {
            KernelError::Invalid(format!("{obj} overlaps an existing interval"))
        }
        libc::EBUSY | libc::ENOTEMPTY => match ctx {
            Ctx::DelChain(_) => {
                KernelError::Other(format!("{obj} is not empty or is still the target of a jump"))
            }
            Ctx::DelSet(_) => KernelError::Other(format!("{obj} is still used by a rule")),
            Ctx::AddChain(_) => {
                KernelError::Invalid(format!("{obj} already exists with another type or hook: {detail}"))
            }
            _ => KernelError::Other(format!("{obj}: {detail}")),
        },
        libc::EOPNOTSUPP => KernelError::Invalid(match ctx {
            Ctx::AddRule { .. } => format!(
                "{obj}: {detail} (a statement is not allowed in this chain: NAT needs a nat chain on \
                 a matching hook, snat/masquerade postrouting, dnat prerouting/output)"
            ),
            Ctx::AddChain(_) => format!(
                "{obj}: {detail} (it exists with another hook, type or priority, or the kernel does \
                 not support this hook and type in an inet table)"
            ),
            _ => format!("{obj}: {detail}"),
        }),
        libc::ELOOP => KernelError::Invalid(format!("{obj}: jumps would form a loop ({detail})")),
        libc::EINVAL
        | libc::ERANGE
        | libc::E2BIG
        | libc::ENAMETOOLONG
        | libc::EMLINK
        | libc::EAFNOSUPPORT
        | libc::EPROTONOSUPPORT
        | libc::EOVERFLOW => KernelError::Invalid(format!("{obj}: {detail}")),
        _ => KernelError::Other(format!("{obj}: {detail}")),
    }
}

/// An nftables transaction under construction.
struct Batch {
    buf: Vec<u8>,
    scratch: AlignedBuf,
    first: u32,
    next: u32,
    ctx: HashMap<u32, Ctx>,
}

impl Batch {
    fn new() -> Batch {
        // Sequence numbers are reserved lazily; take a generous block.
        let first = next_seqs(1 << 16);
        let mut b = Batch {
            buf: Vec::with_capacity(4096),
            scratch: AlignedBuf::new(MSG_MAX),
            first,
            next: first,
            ctx: HashMap::new(),
        };
        b.push(Ctx::Batch, |buf, seq| unsafe {
            sys::nftnl_batch_begin(buf, seq);
        });
        b
    }

    fn push(&mut self, ctx: Ctx, build: impl FnOnce(*mut c_char, u32)) {
        let seq = self.next;
        self.next = self.next.wrapping_add(1);
        build(self.scratch.as_mut_ptr(), seq);
        self.buf.extend_from_slice(self.scratch.message());
        self.ctx.insert(seq, ctx);
    }

    /// A message whose payload comes from `payload(nlh)`.
    fn msg(&mut self, ctx: Ctx, ty: u16, flags: u16, payload: impl FnOnce(*mut libc::nlmsghdr)) {
        self.push(ctx, |buf, seq| unsafe {
            let nlh = sys::nftnl_nlmsg_build_hdr(buf, ty, k::NFPROTO_INET, flags, seq);
            payload(nlh);
        });
    }

    fn finish(mut self) -> Batch {
        self.push(Ctx::Batch, |buf, seq| unsafe {
            sys::nftnl_batch_end(buf, seq);
        });
        self
    }

    fn in_range(&self, seq: u32) -> bool {
        seq.wrapping_sub(self.first) < self.next.wrapping_sub(self.first)
    }
}

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

fn cstr(what: &str, s: &str) -> KResult<CString> {
    if s.is_empty() {
        return Err(KernelError::Invalid(format!("empty {what} name")));
    }
    CString::new(s)
        .map_err(|_| KernelError::Invalid(format!("{what} name {s:?} contains a NUL byte")))
}

fn addr_bytes(a: &IpAddress) -> (u8, Vec<u8>) {
    match a {
        IpAddress::Ipv4((a, b, c, d)) => (k::NFPROTO_IPV4, vec![*a, *b, *c, *d]),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => (
            k::NFPROTO_IPV6,
            [*a, *b, *c, *d, *e, *f, *g, *h]
                .iter()
                .flat_map(|x| x.to_be_bytes())
                .collect(),
        ),
    }
}

fn family_name(f: u8) -> &'static str {
    if f == k::NFPROTO_IPV4 {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// The address with host bits cleared.
fn masked(bytes: &[u8], plen: usize) -> Vec<u8> {
    bytes
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let bits = plen.saturating_sub(i * 8).min(8);
            if bits == 0 {
                0
            } else {
                b & (0xffu8 << (8 - bits))
            }
        })
        .collect()
}

/// The first address after the prefix, None when it would wrap around.
fn prefix_end(net: &[u8], plen: usize) -> Option<Vec<u8>> {
    let total = net.len() * 8;
    if plen == 0 {
        return None;
    }
    let mut out = net.to_vec();
    // Add 1 at bit position plen-1 (counting from the most significant bit).
    let bit = total - plen;
    let mut idx = out.len() - 1 - bit / 8;
    let mut carry = 1u16 << (bit % 8);
    loop {
        let v = out[idx] as u16 + carry;
        out[idx] = v as u8;
        carry = v >> 8;
        if carry == 0 {
            return Some(out);
        }
        if idx == 0 {
            return None;
        }
        idx -= 1;
    }
}

/// An interface name as `meta iifname` compares it: zero-padded to
/// IFNAMSIZ, or a prefix without padding for `name*`.
fn ifname_key(name: &str, wildcard_ok: bool) -> KResult<Vec<u8>> {
    let bad = |why: &str| KernelError::Invalid(format!("interface name {name:?}: {why}"));
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

/// A named set as the kernel describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SetKind {
    Addr { family: u8, interval: bool },
    Ifname,
    Other,
}

impl SetKind {
    fn from_type(t: SetType) -> SetKind {
        match t {
            SetType::Ipv4Addr => SetKind::Addr {
                family: k::NFPROTO_IPV4,
                interval: true,
            },
            SetType::Ipv6Addr => SetKind::Addr {
                family: k::NFPROTO_IPV6,
                interval: true,
            },
            SetType::Ifname => SetKind::Ifname,
        }
    }
}

/// Set element keys for the text form `elem`, each with its element flags.
fn element_keys(kind: SetKind, set: &str, elem: &str) -> KResult<Vec<(Vec<u8>, u32)>> {
    let invalid =
        |why: String| KernelError::Invalid(format!("element {elem:?} for set {set}: {why}"));
    match kind {
        SetKind::Ifname => Ok(vec![(
            ifname_key(elem, false).map_err(|e| invalid(e.to_string()))?,
            0,
        )]),
        SetKind::Addr { family, interval } => {
            let (addr, plen) = match elem.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (elem, None),
            };
            let bytes: Vec<u8> = if family == k::NFPROTO_IPV4 {
                addr.parse::<Ipv4Addr>()
                    .map_err(|_| invalid("not an IPv4 address or prefix".into()))?
                    .octets()
                    .to_vec()
            } else {
                addr.parse::<Ipv6Addr>()
                    .map_err(|_| invalid("not an IPv6 address or prefix".into()))?
                    .octets()
                    .to_vec()
            };
            let full = bytes.len() * 8;
            let plen = match plen {
                None => full,
                Some(p) => match p.parse::<usize>() {
                    Ok(p) if p <= full => p,
                    _ => return Err(invalid(format!("bad prefix length {p:?}"))),
                },
            };
            let net = masked(&bytes, plen);
            if !interval {
                if plen != full {
                    return Err(invalid(
                        "the set has no interval flag, prefixes need one".into(),
                    ));
                }
                return Ok(vec![(net, 0)]);
            }
            let mut keys = vec![(net.clone(), 0)];
            if let Some(end) = prefix_end(&net, plen) {
                keys.push((end, k::SET_ELEM_INTERVAL_END));
            }
            Ok(keys)
        }
        SetKind::Other => Err(invalid(
            "the set's key type is not one netshim manages".into(),
        )),
    }
}

// ---------------------------------------------------------------------------
// Rule expressions
// ---------------------------------------------------------------------------

struct RuleBuild<'a> {
    r: RuleObj,
    id: &'a str,
    chain: &'a str,
    /// Network family the rule is already restricted to (meta nfproto).
    family: Option<u8>,
    /// Transport protocol matched so far.
    l4: Option<Protocol>,
}

impl RuleBuild<'_> {
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
                self.r.meta(k::META_NFPROTO);
                self.r.cmp(k::CMP_EQ, &[family]);
                self.family = Some(family);
                Ok(())
            }
        }
    }

    fn ifname(&mut self, key: u32, name: &str, op: u32) -> KResult<()> {
        let data = ifname_key(name, true).map_err(|e| self.invalid(e))?;
        self.r.meta(key);
        self.r.cmp(op, &data);
        Ok(())
    }

    /// `ip saddr 10.0.0.0/24` and friends: nfproto, payload of the bytes
    /// the prefix covers, a mask for a partial last byte, compare.
    fn addr(&mut self, p: &IpPrefix, source: bool, op: u32) -> KResult<()> {
        let (family, bytes) = addr_bytes(&p.address);
        let full = bytes.len() * 8;
        let plen = p.prefix_len as usize;
        if plen > full {
            return Err(self.invalid(format!("prefix length {plen} is longer than {full}")));
        }
        self.nfproto(family)?;
        if plen == 0 {
            if op == k::CMP_NEQ {
                return Err(self.invalid("'not in /0' never matches"));
            }
            return Ok(());
        }
        let offset = match (family == k::NFPROTO_IPV4, source) {
            (true, true) => 12,
            (true, false) => 16,
            (false, true) => 8,
            (false, false) => 24,
        };
        // As nft encodes it (so `nft list` prints `ip saddr 10.2.0.0/15`):
        // a byte-aligned prefix loads just its bytes; any other loads the
        // whole address and masks it.
        let net = masked(&bytes, plen);
        if plen.is_multiple_of(8) {
            let nbytes = plen / 8;
            self.r.payload(k::PAYLOAD_NETWORK, offset, nbytes as u32);
            self.r.cmp(op, &net[..nbytes]);
        } else {
            self.r
                .payload(k::PAYLOAD_NETWORK, offset, bytes.len() as u32);
            self.r.bitwise(&masked(&vec![0xff; bytes.len()], plen));
            self.r.cmp(op, &net);
        }
        Ok(())
    }

    fn addr_in(
        &mut self,
        set: &str,
        kind: Option<SetKind>,
        source: bool,
        table: &str,
    ) -> KResult<()> {
        let family = match kind {
            None => {
                return Err(KernelError::NotFound(format!(
                    "set {set} in table inet {table}"
                )))
            }
            Some(SetKind::Addr { family, .. }) => family,
            Some(_) => return Err(self.invalid(format!("set {set} does not hold addresses"))),
        };
        let name = cstr("set", set)?;
        self.nfproto(family)?;
        let (offset, len) = match (family == k::NFPROTO_IPV4, source) {
            (true, true) => (12, 4),
            (true, false) => (16, 4),
            (false, true) => (8, 16),
            (false, false) => (24, 16),
        };
        self.r.payload(k::PAYLOAD_NETWORK, offset, len);
        self.r.lookup(&name);
        Ok(())
    }

    fn ifname_in(
        &mut self,
        key: u32,
        set: &str,
        kind: Option<SetKind>,
        table: &str,
    ) -> KResult<()> {
        match kind {
            None => {
                return Err(KernelError::NotFound(format!(
                    "set {set} in table inet {table}"
                )))
            }
            Some(SetKind::Ifname) => {}
            Some(_) => return Err(self.invalid(format!("set {set} does not hold interface names"))),
        }
        let name = cstr("set", set)?;
        self.r.meta(key);
        self.r.lookup(&name);
        Ok(())
    }

    fn has_ports(&self) -> bool {
        matches!(
            self.l4,
            Some(Protocol::Tcp) | Some(Protocol::Udp) | Some(Protocol::Sctp)
        )
    }
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
        Protocol::Icmp => 1,
    }
}

/// Build the NEWRULE object for `rule`. `set_kind` resolves the sets the
/// rule looks up (None: no such set).
fn build_rule(
    table: &str,
    tc: &CStr,
    chain: &str,
    rule: &Rule,
    mut set_kind: impl FnMut(&str) -> KResult<Option<SetKind>>,
) -> KResult<RuleObj> {
    let cc = cstr("chain", chain)?;
    if rule.id.len() >= k::COMMENT_MAXLEN || rule.id.contains('\0') {
        return Err(KernelError::Invalid(format!(
            "rule id {:?}: at most {} bytes and no NUL",
            rule.id,
            k::COMMENT_MAXLEN - 1
        )));
    }
    let mut b = RuleBuild {
        r: RuleObj::in_chain(tc, &cc),
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
            Match::SaddrIn(s) => {
                let kind = set_kind(s)?;
                b.addr_in(s, kind, true, table)?
            }
            Match::DaddrIn(s) => {
                let kind = set_kind(s)?;
                b.addr_in(s, kind, false, table)?
            }
            Match::IifnameIn(s) => {
                let kind = set_kind(s)?;
                b.ifname_in(k::META_IIFNAME, s, kind, table)?
            }
            Match::OifnameIn(s) => {
                let kind = set_kind(s)?;
                b.ifname_in(k::META_OIFNAME, s, kind, table)?
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
                b.r.meta(k::META_L4PROTO);
                b.r.cmp(k::CMP_EQ, &[proto_number(*p)]);
                b.l4 = Some(*p);
            }
            Match::Dport(port) => {
                if !b.has_ports() {
                    return Err(
                        b.invalid("dport needs a protocol match (tcp, udp or sctp) before it")
                    );
                }
                b.r.payload(k::PAYLOAD_TRANSPORT, 2, 2);
                b.r.cmp(k::CMP_EQ, &port.to_be_bytes());
            }
            Match::DaddrLocal => {
                b.r.fib(k::FIB_F_DADDR, k::FIB_RESULT_ADDRTYPE);
                b.r.cmp(k::CMP_EQ, &k::RTN_LOCAL.to_ne_bytes());
            }
            Match::CtEstablished => {
                b.r.ct(k::CT_STATE);
                b.r.bitwise(&k::CT_ESTABLISHED_RELATED.to_ne_bytes());
                b.r.cmp(k::CMP_NEQ, &0u32.to_ne_bytes());
            }
        }
    }
    if rule.counter {
        b.r.counter();
    }
    match &rule.action {
        Action::Accept => b.r.verdict(k::NF_ACCEPT, None),
        Action::Drop => b.r.verdict(k::NF_DROP, None),
        Action::ReturnChain => b.r.verdict(k::NFT_RETURN, None),
        Action::Jump(target) => {
            let t = cstr("chain", target)?;
            b.r.verdict(k::NFT_JUMP, Some(&t));
        }
        Action::Masquerade => b.r.masquerade(),
        Action::Snat(addr) => {
            let (family, bytes) = addr_bytes(addr);
            if let Some(f) = b.family {
                if f != family {
                    return Err(b.invalid(format!(
                        "snat to an {} address in an {} rule",
                        family_name(family),
                        family_name(f)
                    )));
                }
            }
            b.r.immediate(k::REG_1, &bytes);
            b.r.nat(k::NAT_SNAT, family, false);
        }
        Action::Dnat((addr, port)) => {
            let (family, bytes) = addr_bytes(addr);
            if let Some(f) = b.family {
                if f != family {
                    return Err(b.invalid(format!(
                        "dnat to an {} address in an {} rule",
                        family_name(family),
                        family_name(f)
                    )));
                }
            }
            if port.is_some() && !b.has_ports() {
                return Err(b.invalid("dnat to a port needs a protocol match (tcp, udp or sctp)"));
            }
            b.r.immediate(k::REG_1, &bytes);
            if let Some(port) = port {
                b.r.immediate(k::REG_2, &port.to_be_bytes());
            }
            b.r.nat(k::NAT_DNAT, family, port.is_some());
        }
    }
    b.r.set_id(&rule.id);
    Ok(b.r)
}

fn hook_number(h: Hook) -> u32 {
    match h {
        Hook::Prerouting => 0,
        Hook::Input => 1,
        Hook::Forward => 2,
        Hook::Output => 3,
        Hook::Postrouting => 4,
    }
}

fn chain_type_name(t: ChainType) -> &'static CStr {
    match t {
        ChainType::Filter => c"filter",
        ChainType::Nat => c"nat",
        ChainType::Route => c"route",
    }
}

// ---------------------------------------------------------------------------
// The backend
// ---------------------------------------------------------------------------

/// nftables over netlink. Keeps one socket for the process's own namespace;
/// sockets for other namespaces are opened per call (a cached socket would
/// keep a deleted namespace alive).
pub struct Nft {
    own: Mutex<Option<Sock>>,
}

impl Default for Nft {
    fn default() -> Self {
        Nft::new()
    }
}

enum ReqError {
    Kernel(i32, Option<String>),
    Io(io::Error),
}

impl Nft {
    pub fn new() -> Nft {
        Nft {
            own: Mutex::new(None),
        }
    }

    fn with_sock<R>(
        &self,
        ns: Option<BorrowedFd<'_>>,
        f: impl FnOnce(&Sock) -> KResult<R>,
    ) -> KResult<R> {
        match ns {
            None => {
                let mut guard = self.own.lock().unwrap_or_else(|e| e.into_inner());
                if guard.is_none() {
                    *guard = Some(open_sock(None)?);
                }
                let r = f(guard.as_ref().unwrap());
                if matches!(&r, Err(KernelError::Other(_))) {
                    // Do not keep a socket in an unknown state around.
                    *guard = None;
                }
                r
            }
            Some(fd) => f(&open_sock(Some(fd))?),
        }
    }

    /// One request (a GET, or a dump with `dump`), calling `each` for every
    /// object message of the reply. Retries dumps the kernel interrupted
    /// because the ruleset changed meanwhile.
    fn request(
        sock: &Sock,
        ty: u16,
        dump: bool,
        payload: &dyn Fn(*mut libc::nlmsghdr),
        each: &mut dyn FnMut(*const libc::nlmsghdr),
    ) -> Result<(), ReqError> {
        let mut scratch = AlignedBuf::new(MSG_MAX);
        let mut buf = AlignedBuf::new(RECV_BUF);
        let mut attempts = 0;
        'retry: loop {
            attempts += 1;
            let seq = next_seqs(1);
            let flags = if dump { k::NLM_F_DUMP } else { k::NLM_F_ACK };
            unsafe {
                let nlh = sys::nftnl_nlmsg_build_hdr(
                    scratch.as_mut_ptr(),
                    ty,
                    k::NFPROTO_INET,
                    flags,
                    seq,
                );
                payload(nlh);
            }
            sock.send(scratch.message()).map_err(ReqError::Io)?;
            let mut interrupted = false;
            let mut objects: Vec<Vec<u64>> = Vec::new();
            loop {
                let n = match sock.recv(buf.bytes_mut(), false) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Err(ReqError::Io(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no reply from nf_tables",
                        )))
                    }
                    Err(e) => return Err(ReqError::Io(e)),
                };
                let data = &buf.bytes()[..n];
                for (h, at) in messages(data) {
                    if h.seq != seq || (h.pid != sock.portid && h.pid != 0) {
                        continue; // a stale reply to an earlier request
                    }
                    if h.flags & k::NLM_F_DUMP_INTR != 0 {
                        interrupted = true;
                    }
                    let msg = &data[at..at + h.len];
                    match h.ty {
                        k::NLMSG_NOOP => {}
                        k::NLMSG_ERROR => {
                            let (errno, text) = nlmsg_error(&h, msg);
                            if errno == libc::EINTR && dump && attempts < 5 {
                                continue 'retry;
                            }
                            if errno != 0 {
                                return Err(ReqError::Kernel(errno, text));
                            }
                            // The ACK of a GET: everything has arrived.
                            for o in &objects {
                                each(o.as_ptr() as *const libc::nlmsghdr);
                            }
                            return Ok(());
                        }
                        k::NLMSG_DONE => {
                            if interrupted && attempts < 5 {
                                continue 'retry;
                            }
                            for o in &objects {
                                each(o.as_ptr() as *const libc::nlmsghdr);
                            }
                            return Ok(());
                        }
                        _ => {
                            // Keep an aligned copy; hand them out once the
                            // reply is complete (a retried dump starts over).
                            let mut copy = vec![0u64; msg.len().div_ceil(8)];
                            unsafe {
                                std::ptr::copy_nonoverlapping(
                                    msg.as_ptr(),
                                    copy.as_mut_ptr() as *mut u8,
                                    msg.len(),
                                );
                            }
                            objects.push(copy);
                        }
                    }
                }
            }
        }
    }

    fn req_err(table_obj: String, e: ReqError) -> KernelError {
        match e {
            ReqError::Kernel(libc::ENOENT, _) => KernelError::NotFound(table_obj),
            ReqError::Kernel(errno, _) if errno == libc::EPERM || errno == libc::EACCES => {
                KernelError::Permission(table_obj)
            }
            ReqError::Kernel(errno, text) => KernelError::Other(format!(
                "{table_obj}: {}{}",
                strerror(errno),
                text.map(|t| format!(" ({t})")).unwrap_or_default()
            )),
            ReqError::Io(e) => KernelError::Other(format!("{table_obj}: netlink: {e}")),
        }
    }

    /// The kind of set `name`, None when there is no such set (or table).
    fn query_set(sock: &Sock, table: &str, tc: &CStr, name: &str) -> KResult<Option<SetKind>> {
        let sc = cstr("set", name)?;
        let mut kind = None;
        let payload = |nlh: *mut libc::nlmsghdr| {
            let s = SetObj::named(tc, Some(&sc));
            unsafe { sys::nftnl_set_nlmsg_build_payload(nlh, s.0) };
        };
        let mut each = |nlh: *const libc::nlmsghdr| unsafe {
            let s = SetObj::new();
            if sys::nftnl_set_nlmsg_parse(nlh, s.0) < 0 {
                return;
            }
            let ktype = sys::nftnl_set_get_u32(s.0, sys::NFTNL_SET_KEY_TYPE as u16);
            let klen = sys::nftnl_set_get_u32(s.0, sys::NFTNL_SET_KEY_LEN as u16);
            let flags = if sys::nftnl_set_is_set(s.0, sys::NFTNL_SET_FLAGS as u16) {
                sys::nftnl_set_get_u32(s.0, sys::NFTNL_SET_FLAGS as u16)
            } else {
                0
            };
            let interval = flags & k::SET_INTERVAL != 0;
            kind = Some(match (ktype, klen) {
                (k::TYPE_IPADDR, 4) => SetKind::Addr {
                    family: k::NFPROTO_IPV4,
                    interval,
                },
                (k::TYPE_IP6ADDR, 16) => SetKind::Addr {
                    family: k::NFPROTO_IPV6,
                    interval,
                },
                (k::TYPE_IFNAME, 16) => SetKind::Ifname,
                _ => SetKind::Other,
            });
        };
        match Self::request(sock, k::MSG_GETSET, false, &payload, &mut each) {
            Ok(()) => Ok(kind),
            Err(ReqError::Kernel(libc::ENOENT, _)) => Ok(None),
            Err(e) => Err(Self::req_err(
                format!("set {name} in table inet {table}"),
                e,
            )),
        }
    }

    /// (handle, id) of the rules of a chain, in order. NotFound when the
    /// table or the chain does not exist.
    fn chain_rules(
        sock: &Sock,
        table: &str,
        tc: &CStr,
        chain: &str,
    ) -> KResult<Vec<(u64, String)>> {
        let cc = cstr("chain", chain)?;
        let what = || format!("chain {chain} in table inet {table}");
        // A rule dump of a missing chain is just empty: ask for the chain first.
        let payload = |nlh: *mut libc::nlmsghdr| {
            let c = ChainObj::named(tc, Some(&cc));
            unsafe { sys::nftnl_chain_nlmsg_build_payload(nlh, c.0) };
        };
        Self::request(sock, k::MSG_GETCHAIN, false, &payload, &mut |_| {})
            .map_err(|e| Self::req_err(what(), e))?;

        let payload = |nlh: *mut libc::nlmsghdr| {
            let r = RuleObj::in_chain(tc, &cc);
            unsafe { sys::nftnl_rule_nlmsg_build_payload(nlh, r.0) };
        };
        let mut out = Vec::new();
        let mut each = |nlh: *const libc::nlmsghdr| unsafe {
            let r = RuleObj::new();
            if sys::nftnl_rule_nlmsg_parse(nlh, r.0) < 0 {
                return;
            }
            let t = sys::nftnl_rule_get_str(r.0, sys::NFTNL_RULE_TABLE as u16);
            let c = sys::nftnl_rule_get_str(r.0, sys::NFTNL_RULE_CHAIN as u16);
            if t.is_null()
                || c.is_null()
                || CStr::from_ptr(t) != tc
                || CStr::from_ptr(c) != cc.as_c_str()
            {
                return;
            }
            let handle = sys::nftnl_rule_get_u64(r.0, sys::NFTNL_RULE_HANDLE as u16);
            out.push((handle, rule_id(&r)));
        };
        Self::request(sock, k::MSG_GETRULE, true, &payload, &mut each)
            .map_err(|e| Self::req_err(what(), e))?;
        Ok(out)
    }

    /// Apply `ops` to the `inet` table `table` in one atomic batch. The
    /// table is created first (idempotently) unless the batch starts by
    /// deleting it; ops after a `delete-table` recreate it, so
    /// `[delete-table, add-chain …]` replaces a whole table atomically.
    ///
    /// `delete-rule` resolves the id to a kernel handle before the batch is
    /// sent, so it finds rules that exist when `apply` is called (not rules
    /// added earlier in the same batch); the first rule with that id goes,
    /// and a second `delete-rule` of the same id takes the next one.
    pub fn apply(&self, ns: Option<BorrowedFd<'_>>, table: &str, ops: &[crate::model::nft::Op]) -> KResult<()> {
        let ops = &legacy::ops(ops)?;
        let tc = cstr("table", table)?;
        self.with_sock(ns, |sock| {
            let mut b = Batch::new();
            // Sets as this batch leaves them (None: deleted in the batch).
            let mut sets: HashMap<String, Option<SetKind>> = HashMap::new();
            // Rules (handle, id) per chain, looked up for delete-rule.
            let mut rules: HashMap<String, Vec<(u64, String)>> = HashMap::new();
            // The table was deleted earlier in this batch: the kernel's
            // current objects are gone as far as later ops are concerned.
            let mut fresh = false;
            let mut need_table = true;
            let mut set_id = 0u32;

            let new_table = |b: &mut Batch| {
                b.msg(Ctx::Table, k::MSG_NEWTABLE, k::NLM_F_CREATE, |nlh| {
                    let t = TableObj::named(&tc);
                    unsafe { sys::nftnl_table_nlmsg_build_payload(nlh, t.0) };
                });
            };

            let kind_of = |sets: &mut HashMap<String, Option<SetKind>>, fresh: bool, name: &str| -> KResult<Option<SetKind>> {
                if let Some(k) = sets.get(name) {
                    return Ok(*k);
                }
                if fresh {
                    return Ok(None);
                }
                let k = Self::query_set(sock, table, &tc, name)?;
                sets.insert(name.to_string(), k);
                Ok(k)
            };

            for op in ops {
                if matches!(op, NftOp::DeleteTable) {
                    b.msg(Ctx::DelTable, k::MSG_DELTABLE, 0, |nlh| {
                        let t = TableObj::named(&tc);
                        unsafe { sys::nftnl_table_nlmsg_build_payload(nlh, t.0) };
                    });
                    need_table = true;
                    fresh = true;
                    sets.clear();
                    rules.clear();
                    continue;
                }
                if need_table {
                    new_table(&mut b);
                    need_table = false;
                }
                match op {
                    NftOp::DeleteTable => unreachable!(),
                    NftOp::AddChain((name, base)) => {
                        let cc = cstr("chain", name)?;
                        let base: Option<BaseChain> = *base;
                        b.msg(Ctx::AddChain(name.clone()), k::MSG_NEWCHAIN, k::NLM_F_CREATE, |nlh| {
                            let c = ChainObj::named(&tc, Some(&cc));
                            if let Some(base) = base {
                                unsafe {
                                    sys::nftnl_chain_set_u32(c.0, sys::NFTNL_CHAIN_HOOKNUM as u16, hook_number(base.hook));
                                    sys::nftnl_chain_set_s32(c.0, sys::NFTNL_CHAIN_PRIO as u16, base.priority);
                                    sys::nftnl_chain_set_str(
                                        c.0,
                                        sys::NFTNL_CHAIN_TYPE as u16,
                                        chain_type_name(base.chain_type).as_ptr(),
                                    );
                                    let policy = if base.policy_drop { k::NF_DROP } else { k::NF_ACCEPT };
                                    sys::nftnl_chain_set_u32(c.0, sys::NFTNL_CHAIN_POLICY as u16, policy as u32);
                                }
                            }
                            unsafe { sys::nftnl_chain_nlmsg_build_payload(nlh, c.0) };
                        });
                    }
                    NftOp::DeleteChain(name) => {
                        let cc = cstr("chain", name)?;
                        // NONREC: like `nft delete chain`, refuse a chain that still has rules.
                        b.msg(Ctx::DelChain(name.clone()), k::MSG_DELCHAIN, k::NLM_F_NONREC, |nlh| {
                            let c = ChainObj::named(&tc, Some(&cc));
                            unsafe { sys::nftnl_chain_nlmsg_build_payload(nlh, c.0) };
                        });
                        rules.insert(name.clone(), Vec::new());
                    }
                    NftOp::FlushChain(name) => {
                        let cc = cstr("chain", name)?;
                        // DELRULE with a chain and no handle flushes the chain.
                        b.msg(Ctx::FlushChain(name.clone()), k::MSG_DELRULE, 0, |nlh| {
                            let r = RuleObj::in_chain(&tc, &cc);
                            unsafe { sys::nftnl_rule_nlmsg_build_payload(nlh, r.0) };
                        });
                        rules.insert(name.clone(), Vec::new());
                    }
                    NftOp::AddRule((chain, rule)) => {
                        let r = build_rule(table, &tc, chain, rule, |s| kind_of(&mut sets, fresh, s))?;
                        let ctx = Ctx::AddRule { chain: chain.clone(), id: rule.id.clone() };
                        b.msg(ctx, k::MSG_NEWRULE, k::NLM_F_CREATE | k::NLM_F_APPEND, |nlh| unsafe {
                            sys::nftnl_rule_nlmsg_build_payload(nlh, r.0);
                        });
                    }
                    NftOp::DeleteRule((chain, id)) => {
                        if id.is_empty() {
                            return Err(KernelError::Invalid(format!(
                                "delete-rule in chain {chain}: rules are deleted by id, and the id is empty"
                            )));
                        }
                        let not_found =
                            || KernelError::NotFound(format!("rule '{id}' in chain {chain} of table inet {table}"));
                        if !rules.contains_key(chain) {
                            let list = if fresh {
                                Vec::new()
                            } else {
                                match Self::chain_rules(sock, table, &tc, chain) {
                                    Ok(l) => l,
                                    Err(KernelError::NotFound(_)) => return Err(not_found()),
                                    Err(e) => return Err(e),
                                }
                            };
                            rules.insert(chain.clone(), list);
                        }
                        let list = rules.get_mut(chain).unwrap();
                        // The first rule with that id; a second delete-rule of
                        // the same id in this batch takes the next one.
                        let pos = list.iter().position(|(_, rid)| rid == id).ok_or_else(not_found)?;
                        let (handle, _) = list.remove(pos);
                        let cc = cstr("chain", chain)?;
                        let ctx = Ctx::DelRule { chain: chain.clone(), id: id.clone() };
                        b.msg(ctx, k::MSG_DELRULE, 0, |nlh| {
                            let r = RuleObj::in_chain(&tc, &cc);
                            unsafe {
                                sys::nftnl_rule_set_u64(r.0, sys::NFTNL_RULE_HANDLE as u16, handle);
                                sys::nftnl_rule_nlmsg_build_payload(nlh, r.0);
                            }
                        });
                    }
                    NftOp::AddSet((name, ty)) => {
                        let sc = cstr("set", name)?;
                        let kind = SetKind::from_type(*ty);
                        set_id += 1;
                        let id = set_id;
                        b.msg(Ctx::AddSet(name.clone()), k::MSG_NEWSET, k::NLM_F_CREATE, |nlh| {
                            let s = SetObj::named(&tc, Some(&sc));
                            let (ktype, klen, flags, order) = match kind {
                                SetKind::Addr { family, .. } if family == k::NFPROTO_IPV4 => {
                                    (k::TYPE_IPADDR, 4, k::SET_INTERVAL, k::BYTEORDER_BIG)
                                }
                                SetKind::Addr { .. } => (k::TYPE_IP6ADDR, 16, k::SET_INTERVAL, k::BYTEORDER_BIG),
                                _ => (k::TYPE_IFNAME, k::IFNAMSIZ as u32, 0, k::BYTEORDER_HOST),
                            };
                            // What nft records about the key, so `nft list` prints it right.
                            let mut udata = vec![k::UDATA_SET_KEYBYTEORDER, 4];
                            udata.extend_from_slice(&order.to_ne_bytes());
                            unsafe {
                                sys::nftnl_set_set_u32(s.0, sys::NFTNL_SET_ID as u16, id);
                                sys::nftnl_set_set_u32(s.0, sys::NFTNL_SET_KEY_TYPE as u16, ktype);
                                sys::nftnl_set_set_u32(s.0, sys::NFTNL_SET_KEY_LEN as u16, klen);
                                if flags != 0 {
                                    sys::nftnl_set_set_u32(s.0, sys::NFTNL_SET_FLAGS as u16, flags);
                                }
                                sys::nftnl_set_set_data(
                                    s.0,
                                    sys::NFTNL_SET_USERDATA as u16,
                                    udata.as_ptr() as *const c_void,
                                    udata.len() as u32,
                                );
                                sys::nftnl_set_nlmsg_build_payload(nlh, s.0);
                            }
                        });
                        // If the set already exists with another type the
                        // kernel refuses this message and the batch fails.
                        sets.insert(name.clone(), Some(kind));
                    }
                    NftOp::DeleteSet(name) => {
                        let sc = cstr("set", name)?;
                        b.msg(Ctx::DelSet(name.clone()), k::MSG_DELSET, 0, |nlh| {
                            let s = SetObj::named(&tc, Some(&sc));
                            unsafe { sys::nftnl_set_nlmsg_build_payload(nlh, s.0) };
                        });
                        sets.insert(name.clone(), None);
                    }
                    NftOp::AddElement((set, elem)) | NftOp::DeleteElement((set, elem)) => {
                        let add = matches!(op, NftOp::AddElement(_));
                        let sc = cstr("set", set)?;
                        let kind = kind_of(&mut sets, fresh, set)?
                            .ok_or_else(|| KernelError::NotFound(format!("set {set} in table inet {table}")))?;
                        let keys = element_keys(kind, set, elem)?;
                        let (ctx, ty, flags) = if add {
                            // No EXCL: adding an element that is there is a no-op.
                            (Ctx::AddElem { set: set.clone(), elem: elem.clone() }, k::MSG_NEWSETELEM, k::NLM_F_CREATE)
                        } else {
                            (Ctx::DelElem { set: set.clone(), elem: elem.clone() }, k::MSG_DELSETELEM, 0)
                        };
                        b.msg(ctx, ty, flags, |nlh| {
                            let mut s = SetObj::named(&tc, Some(&sc));
                            for (key, flags) in &keys {
                                s.add_elem(key, *flags);
                            }
                            unsafe { sys::nftnl_set_elems_nlmsg_build_payload(nlh, s.0) };
                        });
                    }
                }
            }
            if ops.is_empty() {
                new_table(&mut b);
            }
            let b = b.finish();
            Self::commit(sock, table, &b)
        })
    }

    /// Send a finished batch and collect the kernel's verdict on it.
    fn commit(sock: &Sock, table: &str, b: &Batch) -> KResult<()> {
        if let Err(e) = sock.send(&b.buf) {
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    KernelError::Permission(format!("nftables table inet {table}"))
                }
                _ => KernelError::Other(format!(
                    "sending the nftables batch for table inet {table}: {e}"
                )),
            });
        }
        // The batch ran inside sendmsg: every error is queued already.
        let mut buf = AlignedBuf::new(RECV_BUF);
        let mut errors: Vec<(u32, i32, Option<String>)> = Vec::new();
        let mut lost = false;
        loop {
            let n = match sock.recv(buf.bytes_mut(), true) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    lost = true;
                    continue;
                }
                Err(e) => {
                    return Err(KernelError::Other(format!(
                        "nftables batch for table inet {table}: {e}"
                    )))
                }
            };
            let data = &buf.bytes()[..n];
            for (h, at) in messages(data) {
                if h.ty != k::NLMSG_ERROR || !b.in_range(h.seq) {
                    continue;
                }
                let (errno, text) = nlmsg_error(&h, &data[at..at + h.len]);
                if errno != 0 {
                    errors.push((h.seq, errno, text));
                }
            }
        }
        if let Some((seq, errno, text)) =
            errors.iter().min_by_key(|(s, ..)| s.wrapping_sub(b.first))
        {
            let ctx = b.ctx.get(seq).unwrap_or(&Ctx::Batch);
            return Err(map_error(table, ctx, *errno, text.as_deref()));
        }
        if lost {
            return Err(KernelError::Other(format!(
                "nftables batch for table inet {table} failed (the kernel's error replies overflowed the socket)"
            )));
        }
        Ok(())
    }

    /// Ids of the rules of `chain`, in order ("" for a rule without one).
    pub fn rules(
        &self,
        ns: Option<BorrowedFd<'_>>,
        table: &str,
        chain: &str,
    ) -> KResult<Vec<String>> {
        let tc = cstr("table", table)?;
        self.with_sock(ns, |sock| {
            Ok(Self::chain_rules(sock, table, &tc, chain)?
                .into_iter()
                .map(|(_, id)| id)
                .collect())
        })
    }

    /// Names of the chains of `table`; empty when the table does not exist.
    pub fn chains(&self, ns: Option<BorrowedFd<'_>>, table: &str) -> KResult<Vec<String>> {
        let tc = cstr("table", table)?;
        self.with_sock(ns, |sock| {
            let payload = |nlh: *mut libc::nlmsghdr| {
                let c = ChainObj::named(&tc, None);
                unsafe { sys::nftnl_chain_nlmsg_build_payload(nlh, c.0) };
            };
            let mut out = Vec::new();
            let mut each = |nlh: *const libc::nlmsghdr| unsafe {
                let c = ChainObj::new();
                if sys::nftnl_chain_nlmsg_parse(nlh, c.0) < 0 {
                    return;
                }
                let t = sys::nftnl_chain_get_str(c.0, sys::NFTNL_CHAIN_TABLE as u16);
                let n = sys::nftnl_chain_get_str(c.0, sys::NFTNL_CHAIN_NAME as u16);
                if t.is_null() || n.is_null() || CStr::from_ptr(t) != tc.as_c_str() {
                    return;
                }
                out.push(CStr::from_ptr(n).to_string_lossy().into_owned());
            };
            match Self::request(sock, k::MSG_GETCHAIN, true, &payload, &mut each) {
                Ok(()) => Ok(out),
                Err(ReqError::Kernel(libc::ENOENT, _)) => Ok(Vec::new()),
                Err(e) => Err(Self::req_err(format!("chains of table inet {table}"), e)),
            }
        })
    }

    /// Names of the `inet` tables.
    pub fn tables(&self, ns: Option<BorrowedFd<'_>>) -> KResult<Vec<String>> {
        self.with_sock(ns, |sock| {
            let payload = |_: *mut libc::nlmsghdr| {};
            let mut out = Vec::new();
            let mut each = |nlh: *const libc::nlmsghdr| unsafe {
                let t = TableObj::new();
                if sys::nftnl_table_nlmsg_parse(nlh, t.0) < 0 {
                    return;
                }
                let fam = sys::nftnl_table_get_u32(t.0, sys::NFTNL_TABLE_FAMILY as u16);
                let n = sys::nftnl_table_get_str(t.0, sys::NFTNL_TABLE_NAME as u16);
                if fam != k::NFPROTO_INET as u32 || n.is_null() {
                    return;
                }
                out.push(CStr::from_ptr(n).to_string_lossy().into_owned());
            };
            Self::request(sock, k::MSG_GETTABLE, true, &payload, &mut each)
                .map_err(|e| Self::req_err("nftables tables".into(), e))?;
            Ok(out)
        })
    }
}

/// Until the encoder speaks the model: model ops as the libnftnl builder's.
mod legacy {
    use super::*;
    use crate::host::{from_ip, from_prefix};
    use crate::model::nft as m;

    pub fn ops(ops: &[m::Op]) -> KResult<Vec<NftOp>> {
        ops.iter().map(op).collect()
    }

    fn unsupported(what: &str) -> KernelError {
        KernelError::Unsupported(format!("{what} is not supported by this nftables backend yet"))
    }

    fn op(o: &m::Op) -> KResult<NftOp> {
        Ok(match o {
            m::Op::AddChain { name, base } => NftOp::AddChain((
                name.clone(),
                base.map(|b| BaseChain {
                    hook: match b.hook {
                        m::Hook::Prerouting => Hook::Prerouting,
                        m::Hook::Input => Hook::Input,
                        m::Hook::Forward => Hook::Forward,
                        m::Hook::Output => Hook::Output,
                        m::Hook::Postrouting => Hook::Postrouting,
                    },
                    chain_type: match b.chain_type {
                        m::ChainType::Filter => ChainType::Filter,
                        m::ChainType::Nat => ChainType::Nat,
                    },
                    priority: b.priority,
                    policy_drop: b.policy_drop,
                }),
            )),
            m::Op::DeleteChain(c) => NftOp::DeleteChain(c.clone()),
            m::Op::FlushChain(c) => NftOp::FlushChain(c.clone()),
            m::Op::AddRule { chain, rule } => NftOp::AddRule((chain.clone(), self::rule(rule)?)),
            m::Op::DeleteRule { chain, id } => NftOp::DeleteRule((chain.clone(), id.clone())),
            m::Op::AddSet { name, ty } => NftOp::AddSet((
                name.clone(),
                match ty {
                    m::SetType::Ipv4Addr => SetType::Ipv4Addr,
                    m::SetType::Ipv6Addr => SetType::Ipv6Addr,
                    m::SetType::Ifname => SetType::Ifname,
                    _ => return Err(unsupported("this set type")),
                },
            )),
            m::Op::DeleteSet(s) => NftOp::DeleteSet(s.clone()),
            m::Op::AddElement { set, elem } => NftOp::AddElement((set.clone(), elem.to_string())),
            m::Op::DeleteElement { set, elem } => NftOp::DeleteElement((set.clone(), elem.to_string())),
            m::Op::DeleteTable => NftOp::DeleteTable,
        })
    }

    fn rule(r: &m::Rule) -> KResult<Rule> {
        let mut matches = Vec::new();
        for x in &r.matches {
            matches.push(match x {
                m::Match::Iifname(n) => Match::Iifname(n.clone()),
                m::Match::IifnameNot(n) => Match::IifnameNot(n.clone()),
                m::Match::Oifname(n) => Match::Oifname(n.clone()),
                m::Match::OifnameNot(n) => Match::OifnameNot(n.clone()),
                m::Match::Saddr(p) => Match::Saddr(from_prefix(*p)),
                m::Match::SaddrNot(p) => Match::SaddrNot(from_prefix(*p)),
                m::Match::Daddr(p) => Match::Daddr(from_prefix(*p)),
                m::Match::DaddrNot(p) => Match::DaddrNot(from_prefix(*p)),
                m::Match::SaddrIn(s) => Match::SaddrIn(s.clone()),
                m::Match::DaddrIn(s) => Match::DaddrIn(s.clone()),
                m::Match::IifnameIn(s) => Match::IifnameIn(s.clone()),
                m::Match::OifnameIn(s) => Match::OifnameIn(s.clone()),
                m::Match::Protocol(p) => Match::Protocol(match p {
                    m::Protocol::Tcp => Protocol::Tcp,
                    m::Protocol::Udp => Protocol::Udp,
                    m::Protocol::Sctp => Protocol::Sctp,
                    m::Protocol::Icmp => Protocol::Icmp,
                }),
                m::Match::Dport(p) => Match::Dport(*p),
                m::Match::DaddrLocal => Match::DaddrLocal,
                m::Match::CtEstablished => Match::CtEstablished,
                _ => return Err(unsupported("this match")),
            });
        }
        Ok(Rule {
            id: r.id.clone(),
            matches,
            counter: r.counter,
            action: match &r.action {
                m::Action::Accept => Action::Accept,
                m::Action::Drop => Action::Drop,
                m::Action::Return => Action::ReturnChain,
                m::Action::Jump(c) => Action::Jump(c.clone()),
                m::Action::Masquerade => Action::Masquerade,
                m::Action::Snat(a) => Action::Snat(from_ip(*a)),
                m::Action::Dnat(a, p) => Action::Dnat((from_ip(*a), *p)),
            },
        })
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<Nft>();
}

// Off while the encoder moves to the typed model; the rewrite brings them back.
#[cfg(any())]
mod tests {
    //! Root-only tests, each in a throwaway namespace it creates and always
    //! deletes. `nft list` is run only to check results.

    use super::*;
    use crate::bindings::netshim::plugin::netfilter::{BaseChain, ChainType, Hook};
    use std::fs::File;
    use std::os::fd::AsFd;
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
            if unsafe { libc::geteuid() } != 0 {
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

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddress {
        IpAddress::Ipv4((a, b, c, d))
    }

    fn p4(a: u8, b: u8, c: u8, d: u8, len: u8) -> IpPrefix {
        IpPrefix {
            address: v4(a, b, c, d),
            prefix_len: len,
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

    fn setup_ops() -> Vec<NftOp> {
        vec![
            NftOp::AddSet(("bridges".into(), SetType::Ifname)),
            NftOp::AddElement(("bridges".into(), "br-test0".into())),
            NftOp::AddSet(("nets".into(), SetType::Ipv4Addr)),
            NftOp::AddElement(("nets".into(), "10.88.0.0/16".into())),
            NftOp::AddElement(("nets".into(), "10.99.0.5".into())),
            NftOp::AddChain((
                "postrouting".into(),
                base(Hook::Postrouting, ChainType::Nat, 100),
            )),
            NftOp::AddChain(("forward".into(), base(Hook::Forward, ChainType::Filter, 0))),
            NftOp::AddChain((
                "prerouting".into(),
                base(Hook::Prerouting, ChainType::Nat, -100),
            )),
            NftOp::AddChain(("sub".into(), None)),
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
            NftOp::AddRule((
                "postrouting".into(),
                Rule {
                    id: "masq".into(),
                    matches: vec![
                        Match::Saddr(p4(10, 0, 0, 0, 24)),
                        Match::OifnameNot("br0".into()),
                    ],
                    counter: true,
                    action: Action::Masquerade,
                },
            )),
            NftOp::AddRule((
                "postrouting".into(),
                rule(
                    "snat",
                    vec![Match::Saddr(p4(10, 2, 3, 4, 15))],
                    Action::Snat(v4(198, 51, 100, 1)),
                ),
            )),
            NftOp::AddRule((
                "forward".into(),
                rule(
                    "isolate",
                    vec![
                        Match::Iifname("br0".into()),
                        Match::OifnameIn("bridges".into()),
                    ],
                    Action::Drop,
                ),
            )),
            NftOp::AddRule((
                "forward".into(),
                rule("est", vec![Match::CtEstablished], Action::Accept),
            )),
            NftOp::AddRule((
                "forward".into(),
                rule(
                    "nets",
                    vec![Match::SaddrIn("nets".into()), Match::Iifname("br-*".into())],
                    Action::Jump("sub".into()),
                ),
            )),
            NftOp::AddRule((
                "forward".into(),
                rule(
                    "ifset",
                    vec![
                        Match::IifnameIn("bridges".into()),
                        Match::DaddrIn("nets".into()),
                    ],
                    Action::Accept,
                ),
            )),
            NftOp::AddRule((
                "sub".into(),
                rule(
                    "ret",
                    vec![Match::DaddrNot(p4(10, 1, 0, 0, 16))],
                    Action::ReturnChain,
                ),
            )),
            NftOp::AddRule((
                "prerouting".into(),
                rule(
                    "dnat",
                    vec![
                        Match::Protocol(Protocol::Tcp),
                        Match::Dport(8080),
                        Match::DaddrLocal,
                    ],
                    Action::Dnat((v4(10, 0, 0, 2), Some(80))),
                ),
            )),
            NftOp::AddRule((
                "prerouting".into(),
                rule(
                    "dnat-noport",
                    vec![
                        Match::Protocol(Protocol::Udp),
                        Match::Daddr(p4(203, 0, 113, 7, 32)),
                    ],
                    Action::Dnat((v4(10, 0, 0, 3), None)),
                ),
            )),
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
                NftOp::DeleteRule(("forward".into(), "est".into())),
                NftOp::DeleteElement(("nets".into(), "10.99.0.5".into())),
                NftOp::DeleteElement(("bridges".into(), "br-test0".into())),
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
        match nft.apply(
            ns.fd(),
            t,
            &[NftOp::DeleteRule(("forward".into(), "est".into()))],
        ) {
            Err(KernelError::NotFound(m)) => assert!(m.contains("est"), "{m}"),
            other => panic!("expected NotFound, got {other:?}"),
        }
        match nft.apply(
            ns.fd(),
            t,
            &[NftOp::DeleteElement(("nets".into(), "10.99.0.5".into()))],
        ) {
            Err(KernelError::NotFound(m)) => assert!(m.contains("10.99.0.5"), "{m}"),
            other => panic!("expected NotFound, got {other:?}"),
        }
        match nft.rules(ns.fd(), t, "nope") {
            Err(KernelError::NotFound(m)) => assert!(m.contains("nope"), "{m}"),
            other => panic!("expected NotFound, got {other:?}"),
        }
        // A chain with rules is not deleted implicitly.
        assert!(matches!(
            nft.apply(ns.fd(), t, &[NftOp::DeleteChain("sub".into())]),
            Err(KernelError::Other(_))
        ));
        // Flush then delete (the jump into it goes first).
        nft.apply(
            ns.fd(),
            t,
            &[
                NftOp::DeleteRule(("forward".into(), "nets".into())),
                NftOp::FlushChain("sub".into()),
                NftOp::DeleteChain("sub".into()),
            ],
        )
        .expect("flush and delete chain");
        assert!(!nft.chains(ns.fd(), t).unwrap().contains(&"sub".to_string()));

        // The whole table.
        nft.apply(ns.fd(), t, &[NftOp::DeleteTable])
            .expect("delete table");
        assert_eq!(nft.tables(ns.fd()).unwrap(), Vec::<String>::new());
        assert_eq!(nft.chains(ns.fd(), t).unwrap(), Vec::<String>::new());
        match nft.apply(ns.fd(), t, &[NftOp::DeleteTable]) {
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
            NftOp::AddChain(("forward".into(), base(Hook::Forward, ChainType::Filter, 0))),
            NftOp::AddSet(("s".into(), SetType::Ipv4Addr)),
            NftOp::AddElement(("s".into(), "10.0.0.0/8".into())),
            NftOp::AddRule(("forward".into(), rule("ok", vec![], Action::Accept))),
            NftOp::AddRule(("missing".into(), rule("bad", vec![], Action::Accept))),
        ];
        match nft.apply(ns.fd(), t, &bad) {
            Err(KernelError::NotFound(m)) => assert!(m.contains("missing"), "{m}"),
            other => panic!("expected NotFound, got {other:?}"),
        }
        // Not even the table is left.
        assert_eq!(nft.tables(ns.fd()).unwrap(), Vec::<String>::new());

        // On an existing table: nothing of the failed batch remains.
        nft.apply(ns.fd(), t, &[NftOp::AddChain(("a".into(), None))])
            .unwrap();
        let bad = vec![
            NftOp::AddChain(("b".into(), None)),
            NftOp::AddRule(("a".into(), rule("r1", vec![], Action::Accept))),
            NftOp::AddRule((
                "a".into(),
                rule("r2", vec![], Action::Jump("nowhere".into())),
            )),
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
            rule("q", vec![Match::Saddr(p4(10, 0, 0, 0, 33))], Action::Accept),
            rule(
                "r",
                vec![Match::Iifname("a-very-long-interface-name".into())],
                Action::Accept,
            ),
            rule(
                "s",
                vec![Match::Protocol(Protocol::Icmp)],
                Action::Dnat((v4(10, 0, 0, 1), Some(80))),
            ),
        ];
        for r in invalid {
            let res = nft.apply(ns.fd(), t, &[NftOp::AddRule(("a".into(), r.clone()))]);
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
            &[NftOp::AddRule((
                "a".into(),
                rule("u", vec![Match::SaddrIn("nope".into())], Action::Drop),
            ))],
        ) {
            Err(KernelError::NotFound(m)) => assert!(m.contains("set nope"), "{m}"),
            other => panic!("expected NotFound, got {other:?}"),
        }
        // The kernel refuses NAT in a filter chain.
        nft.apply(
            ns.fd(),
            t,
            &[NftOp::AddChain((
                "f".into(),
                base(Hook::Forward, ChainType::Filter, 0),
            ))],
        )
        .unwrap();
        let res = nft.apply(
            ns.fd(),
            t,
            &[NftOp::AddRule((
                "f".into(),
                rule("m", vec![], Action::Masquerade),
            ))],
        );
        assert!(matches!(res, Err(KernelError::Invalid(_))), "{res:?}");
        assert_eq!(nft.rules(ns.fd(), t, "f").unwrap(), Vec::<String>::new());

        // Re-creating objects with another shape is refused, not merged.
        let res = nft.apply(
            ns.fd(),
            t,
            &[NftOp::AddChain((
                "f".into(),
                base(Hook::Prerouting, ChainType::Nat, -100),
            ))],
        );
        assert!(
            matches!(
                res,
                Err(KernelError::Exists(_)) | Err(KernelError::Invalid(_))
            ),
            "{res:?}"
        );
        nft.apply(
            ns.fd(),
            t,
            &[NftOp::AddSet(("s4".into(), SetType::Ipv4Addr))],
        )
        .unwrap();
        let res = nft.apply(ns.fd(), t, &[NftOp::AddSet(("s4".into(), SetType::Ifname))]);
        assert!(matches!(res, Err(KernelError::Exists(_))), "{res:?}");
        let res = nft.apply(
            ns.fd(),
            t,
            &[NftOp::AddElement(("s4".into(), "eth0".into()))],
        );
        assert!(matches!(res, Err(KernelError::Invalid(_))), "{res:?}");
        // Overlapping intervals.
        nft.apply(
            ns.fd(),
            t,
            &[NftOp::AddElement(("s4".into(), "10.0.0.0/24".into()))],
        )
        .unwrap();
        nft.apply(
            ns.fd(),
            t,
            &[NftOp::AddElement(("s4".into(), "10.0.0.0/24".into()))],
        )
        .expect("same element twice");
        let res = nft.apply(
            ns.fd(),
            t,
            &[NftOp::AddElement(("s4".into(), "10.0.0.0/16".into()))],
        );
        assert!(
            matches!(
                res,
                Err(KernelError::Exists(_)) | Err(KernelError::Invalid(_))
            ),
            "{res:?}"
        );
        let res = nft.apply(ns.fd(), t, &[NftOp::DeleteSet("nope".into())]);
        assert!(matches!(res, Err(KernelError::NotFound(_))), "{res:?}");

        // Atomic replace: delete the table and rebuild it in one batch.
        nft.apply(
            ns.fd(),
            t,
            &[
                NftOp::DeleteTable,
                NftOp::AddChain(("c".into(), None)),
                NftOp::AddRule(("c".into(), rule("x", vec![], Action::Accept))),
            ],
        )
        .unwrap();
        assert_eq!(nft.chains(ns.fd(), t).unwrap(), ["c"]);
        assert_eq!(nft.rules(ns.fd(), t, "c").unwrap(), ["x"]);
        nft.apply(ns.fd(), t, &[NftOp::DeleteTable]).unwrap();
    }

    #[test]
    fn nft_large_batch() {
        let Some(ns) = TestNs::new() else { return };
        let nft = Nft::new();
        let t = "nsh-large";
        let mut ops = vec![
            NftOp::AddSet(("big".into(), SetType::Ipv4Addr)),
            NftOp::AddChain(("c".into(), None)),
        ];
        for i in 0..4000u32 {
            ops.push(NftOp::AddElement((
                "big".into(),
                format!("10.{}.{}.0/24", i / 256, i % 256),
            )));
        }
        for i in 0..500 {
            ops.push(NftOp::AddRule((
                "c".into(),
                rule(
                    &format!("r{i}"),
                    vec![Match::Iifname(format!("veth{i}"))],
                    Action::Accept,
                ),
            )));
        }
        nft.apply(ns.fd(), t, &ops).expect("large batch");
        assert_eq!(nft.rules(ns.fd(), t, "c").unwrap().len(), 500);
        let text = ns.list(t);
        assert!(text.contains("10.15.159.0/24"), "last element missing");
        // A large failing batch still reports the failing op.
        ops.push(NftOp::DeleteElement(("big".into(), "192.0.2.0/24".into())));
        match nft.apply(ns.fd(), t, &ops) {
            Err(KernelError::NotFound(m)) => assert!(m.contains("192.0.2.0/24"), "{m}"),
            other => panic!("expected NotFound, got {other:?}"),
        }
        assert_eq!(nft.rules(ns.fd(), t, "c").unwrap().len(), 500);
        nft.apply(ns.fd(), t, &[NftOp::DeleteTable]).unwrap();
    }

    #[test]
    fn nft_ipv6_and_traffic() {
        let Some(ns) = TestNs::new() else { return };
        let (ok, text) = ns.exec(&["ip", "link", "set", "lo", "up"]);
        assert!(ok, "{text}");
        let nft = Nft::new();
        let t = "nsh-traffic";
        let v6 = |s: &str, len: u8| {
            let a: Ipv6Addr = s.parse().unwrap();
            let g = a.segments();
            IpPrefix {
                address: IpAddress::Ipv6((g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7])),
                prefix_len: len,
            }
        };
        nft.apply(
            ns.fd(),
            t,
            &[
                NftOp::AddSet(("v6nets".into(), SetType::Ipv6Addr)),
                NftOp::AddElement(("v6nets".into(), "fd00:1::/48".into())),
                NftOp::AddChain(("output".into(), base(Hook::Output, ChainType::Filter, 0))),
                NftOp::AddRule((
                    "output".into(),
                    Rule {
                        id: "block".into(),
                        matches: vec![Match::Daddr(p4(127, 0, 0, 2, 32))],
                        counter: true,
                        action: Action::Drop,
                    },
                )),
                NftOp::AddRule((
                    "output".into(),
                    rule(
                        "v6",
                        vec![Match::SaddrNot(v6("fd00::", 64))],
                        Action::Accept,
                    ),
                )),
                NftOp::AddRule((
                    "output".into(),
                    rule("v6set", vec![Match::DaddrIn("v6nets".into())], Action::Drop),
                )),
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

        nft.apply(
            ns.fd(),
            t,
            &[NftOp::DeleteRule(("output".into(), "block".into()))],
        )
        .unwrap();
        let (ok, _) = ns.exec(&["ping", "-c1", "-W1", "127.0.0.2"]);
        assert!(ok, "127.0.0.2 should answer once the rule is gone");
        nft.apply(ns.fd(), t, &[NftOp::DeleteTable]).unwrap();
        assert_eq!(nft.tables(ns.fd()).unwrap(), Vec::<String>::new());
    }
}
