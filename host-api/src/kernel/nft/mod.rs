//! nftables backend: nf_tables netlink batches encoded in safe Rust
//! ([`encode`] over the bounded [`wire`] writer), sent on a
//! NETLINK_NETFILTER socket opened in the target namespace. No `nft`
//! process, no C library.
//!
//! Everything lives in one `inet` table per caller. A call to [`Nft::apply`]
//! is one nftables transaction (BATCH_BEGIN .. BATCH_END): the kernel commits
//! all of it or none of it. Rule ids travel in the rules' userdata as a
//! comment TLV (what `nft` itself uses for `comment "..."`), so `nft list`
//! shows them and [`Nft::rules`] / `delete-rule` find rules again by id.
//!
//! Only the last object message of a batch carries NLM_F_ACK: the kernel
//! answers failing messages and that one, and since a batch is processed
//! synchronously inside `sendmsg`, every answer is queued by the time
//! `send` returns. The batch counts as committed only with that ACK and no
//! error; silence is never taken for a commit.

mod encode;
mod wire;

use std::collections::HashMap;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{Socket, SocketAddr};

use self::encode::{k, nft_type, too_large, SetKind};
use self::wire::Writer;
use crate::kernel::{KResult, KernelError};
use crate::model::nft::{Element, Op};

/// The largest batch netshim sends. The guard keeps a driver's batches far
/// below it (1,024 ops of bounded size); this is the encoder's own bound.
const BATCH_MAX: usize = 16 << 20;
/// The largest single request (a GET or a dump request).
const REQUEST_MAX: usize = 64 << 10;
const RECV_BUF: usize = 128 * 1024;
/// A dump or a GET never legitimately stalls; do not hang if one does.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// Sequence numbers, unique per process so replies to an earlier request on
/// a cached socket can never be taken for replies to a later one.
static SEQ: AtomicU32 = AtomicU32::new(1);

fn next_seqs(n: u32) -> u32 {
    SEQ.fetch_add(n, Ordering::Relaxed)
}

/// A NETLINK_NETFILTER socket. It stays bound to the namespace it was
/// created in, whichever thread uses it later.
struct Sock {
    socket: Socket,
    portid: u32,
    buf: Vec<u8>,
}

impl Sock {
    fn open() -> io::Result<Sock> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        let addr = socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Errors carry only the failing message's header, not its whole
        // payload (an element list can be 64 KiB), plus the kernel's
        // extended-ack text. Both optional.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_ext_ack(true);
        let timeout = nix::sys::time::TimeVal::new(RECV_TIMEOUT.as_secs() as _, 0);
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(io::Error::from)?;
        Ok(Sock {
            socket,
            portid: addr.port_number(),
            buf: vec![0; RECV_BUF],
        })
    }

    fn send(&self, data: &[u8]) -> io::Result<()> {
        // netlink_sendmsg refuses messages larger than the send buffer, and
        // a batch must go in one sendmsg: grow the buffer for big batches.
        if data.len() > 128 * 1024 {
            let size = (data.len() + 64 * 1024).min(i32::MAX as usize);
            use nix::sys::socket::{setsockopt, sockopt};
            if setsockopt(&self.socket, sockopt::SndBufForce, &size).is_err() {
                setsockopt(&self.socket, sockopt::SndBuf, &size).map_err(io::Error::from)?;
            }
        }
        loop {
            match self.socket.send(data, 0) {
                Ok(n) if n == data.len() => return Ok(()),
                Ok(_) => return Err(io::Error::other("short netlink send")),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// One datagram into the socket's buffer; its length. A datagram the
    /// buffer cannot hold is an error, never a silently shortened reply.
    fn recv(&mut self, nonblock: bool) -> io::Result<usize> {
        let flags = libc::MSG_TRUNC | if nonblock { libc::MSG_DONTWAIT } else { 0 };
        loop {
            let mut view: &mut [u8] = &mut self.buf[..];
            match self.socket.recv(&mut view, flags) {
                Ok(n) if n > self.buf.len() => {
                    return Err(io::Error::other(format!(
                        "a reply of {n} bytes does not fit the {}-byte buffer",
                        self.buf.len()
                    )))
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
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
        Some(fd) => {
            crate::kernel::netns::in_namespace(fd, Sock::open).map_err(|e| match e.raw_os_error() {
                Some(libc::EPERM) => {
                    KernelError::Permission("entering the network namespace".into())
                }
                _ => sock_err(e),
            })
        }
    }
}

/// What a message in a batch was about, to name it in an error. Borrows
/// from the ops being planned.
enum Ctx<'a> {
    Batch,
    Table,
    AddChain(&'a str),
    DelChain(&'a str),
    FlushChain(&'a str),
    AddRule { chain: &'a str, id: &'a str },
    DelRule { chain: &'a str, id: &'a str },
    AddSet(&'a str),
    DelSet(&'a str),
    AddElem { set: &'a str, elem: &'a Element },
    DelElem { set: &'a str, elem: &'a Element },
}

fn strerror(errno: i32) -> String {
    let s = io::Error::from_raw_os_error(errno).to_string();
    // "No such file or directory (os error 2)" -> without the suffix.
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn map_error(table: &str, ctx: &Ctx<'_>, errno: i32, text: Option<&str>) -> KernelError {
    let t = format!("table inet {table}");
    let obj = match ctx {
        Ctx::Batch => format!("nftables batch for {t}"),
        Ctx::Table => t.clone(),
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

/// An nftables transaction under construction: whole messages only.
struct Batch<'a> {
    w: Writer,
    /// Sequence number of the first message; message i has first + i.
    first: u32,
    ctx: Vec<Ctx<'a>>,
    /// Offset and sequence number of the last object message: it asks for
    /// an ACK, the proof that the kernel processed the batch to its end.
    last_obj: Option<(usize, u32)>,
}

/// Sequence numbers one batch reserves (messages in a batch at most).
const SEQ_BLOCK: u32 = 1 << 16;

impl<'a> Batch<'a> {
    fn new() -> KResult<Batch<'a>> {
        let first = next_seqs(SEQ_BLOCK);
        let mut b = Batch {
            w: Writer::new(BATCH_MAX),
            first,
            ctx: Vec::new(),
            last_obj: None,
        };
        b.marker(k::NFNL_MSG_BATCH_BEGIN)?;
        Ok(b)
    }

    fn marker(&mut self, ty: u16) -> KResult<()> {
        self.msg(
            Ctx::Batch,
            ty,
            0,
            k::NFPROTO_UNSPEC,
            k::NFNL_SUBSYS_NFTABLES,
            |_| Ok(()),
        )
    }

    fn next_seq(&self) -> u32 {
        self.first.wrapping_add(self.ctx.len() as u32)
    }

    /// One message whose attributes `body` writes.
    fn msg(
        &mut self,
        ctx: Ctx<'a>,
        ty: u16,
        flags: u16,
        family: u8,
        res_id: u16,
        body: impl FnOnce(&mut Writer) -> KResult<()>,
    ) -> KResult<()> {
        if self.ctx.len() >= SEQ_BLOCK as usize {
            return Err(KernelError::Invalid(format!(
                "an nftables batch may hold at most {SEQ_BLOCK} messages"
            )));
        }
        let m = self
            .w
            .begin_msg(
                ty,
                k::NLM_F_REQUEST | flags,
                self.next_seq(),
                family,
                res_id,
            )
            .map_err(too_large)?;
        body(&mut self.w)?;
        self.w.end_msg(m).map_err(too_large)?;
        self.ctx.push(ctx);
        Ok(())
    }

    fn obj(
        &mut self,
        ctx: Ctx<'a>,
        msg: u16,
        flags: u16,
        body: impl FnOnce(&mut Writer) -> KResult<()>,
    ) -> KResult<()> {
        let (at, seq) = (self.w.len(), self.next_seq());
        self.msg(ctx, nft_type(msg), flags, k::NFPROTO_INET, 0, body)?;
        self.last_obj = Some((at, seq));
        Ok(())
    }

    fn finish(mut self) -> KResult<Batch<'a>> {
        if let Some((at, _)) = self.last_obj {
            self.w.set_flag(at, k::NLM_F_ACK);
        }
        self.marker(k::NFNL_MSG_BATCH_END)?;
        Ok(self)
    }

    fn ctx_of(&self, seq: u32) -> Option<&Ctx<'a>> {
        self.ctx.get(seq.wrapping_sub(self.first) as usize)
    }
}

enum ReqError {
    Kernel(i32, Option<String>),
    Io(io::Error),
}

/// nftables over netlink for one namespace. The socket is opened inside
/// that namespace on first use and kept: an `Nft` lives as long as the
/// backend's handle on the namespace, so it keeps nothing alive that the
/// handle does not.
pub struct Nft {
    sock: Mutex<Option<Sock>>,
}

impl Default for Nft {
    fn default() -> Self {
        Nft::new()
    }
}

impl Nft {
    pub fn new() -> Nft {
        Nft {
            sock: Mutex::new(None),
        }
    }

    /// Run `f` on the namespace's socket (`ns`: None for the process's own
    /// namespace), opening it on first use.
    fn with_sock<R>(
        &self,
        ns: Option<BorrowedFd<'_>>,
        f: impl FnOnce(&mut Sock) -> KResult<R>,
    ) -> KResult<R> {
        let mut guard = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        let sock = match guard.as_mut() {
            Some(s) => s,
            None => guard.insert(open_sock(ns)?),
        };
        let r = f(sock);
        if matches!(&r, Err(KernelError::Other(_))) {
            // Do not keep a socket in an unknown state around.
            *guard = None;
        }
        r
    }

    /// One request (a GET, or a dump with `dump`), calling `each` with
    /// every object message of the reply once the reply is complete.
    /// Retries dumps the kernel interrupted because the ruleset changed.
    fn request(
        sock: &mut Sock,
        msg: u16,
        dump: bool,
        body: &dyn Fn(&mut Writer) -> KResult<()>,
        each: &mut dyn FnMut(&[u8]),
    ) -> Result<(), ReqError> {
        let mut attempts = 0;
        'retry: loop {
            attempts += 1;
            let seq = next_seqs(1);
            let flags = k::NLM_F_REQUEST | if dump { k::NLM_F_DUMP } else { k::NLM_F_ACK };
            let mut w = Writer::new(REQUEST_MAX);
            let m = w
                .begin_msg(nft_type(msg), flags, seq, k::NFPROTO_INET, 0)
                .map_err(|e| ReqError::Io(io::Error::other(too_large(e).to_string())))?;
            body(&mut w).map_err(|e| ReqError::Io(io::Error::other(e.to_string())))?;
            w.end_msg(m)
                .map_err(|e| ReqError::Io(io::Error::other(too_large(e).to_string())))?;
            sock.send(w.bytes()).map_err(ReqError::Io)?;
            let mut interrupted = false;
            let mut objects: Vec<Vec<u8>> = Vec::new();
            loop {
                let n = match sock.recv(false) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Err(ReqError::Io(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no reply from nf_tables",
                        )))
                    }
                    Err(e) => return Err(ReqError::Io(e)),
                };
                let portid = sock.portid;
                for (h, msg) in wire::messages(&sock.buf[..n]) {
                    if h.seq != seq || (h.pid != portid && h.pid != 0) {
                        continue; // a stale reply to an earlier request
                    }
                    if h.flags & k::NLM_F_DUMP_INTR != 0 {
                        interrupted = true;
                    }
                    match h.ty {
                        k::NLMSG_NOOP => {}
                        k::NLMSG_ERROR => {
                            let (errno, text) = wire::nlmsg_error(&h, msg);
                            if errno == libc::EINTR && dump && attempts < 5 {
                                continue 'retry;
                            }
                            if errno != 0 {
                                return Err(ReqError::Kernel(errno, text));
                            }
                            // The ACK of a GET: everything has arrived.
                            objects.iter().for_each(|o| each(o));
                            return Ok(());
                        }
                        k::NLMSG_DONE => {
                            if interrupted && attempts < 5 {
                                continue 'retry;
                            }
                            objects.iter().for_each(|o| each(o));
                            return Ok(());
                        }
                        // Hand them out once the reply is complete (a
                        // retried dump starts over).
                        ty if ty >> 8 == k::NFNL_SUBSYS_NFTABLES && msg.len() >= wire::ATTRS_AT => {
                            objects.push(msg.to_vec())
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn req_err(what: String, e: ReqError) -> KernelError {
        match e {
            ReqError::Kernel(libc::ENOENT, _) => KernelError::NotFound(what),
            ReqError::Kernel(errno, _) if errno == libc::EPERM || errno == libc::EACCES => {
                KernelError::Permission(what)
            }
            ReqError::Kernel(errno, text) => KernelError::Other(format!(
                "{what}: {}{}",
                strerror(errno),
                text.map(|t| format!(" ({t})")).unwrap_or_default()
            )),
            ReqError::Io(e) => KernelError::Other(format!("{what}: netlink: {e}")),
        }
    }

    /// The kind of set `name`, None when there is no such set (or table).
    fn query_set(sock: &mut Sock, table: &str, name: &str) -> KResult<Option<SetKind>> {
        encode::check_name("set", name)?;
        let mut kind = None;
        let body = |w: &mut Writer| -> KResult<()> {
            w.attr_str(k::SET_TABLE, table).map_err(too_large)?;
            w.attr_str(k::SET_NAME, name).map_err(too_large)
        };
        let mut each = |msg: &[u8]| {
            let ktype = wire::msg_attr(msg, k::SET_KEY_TYPE).and_then(wire::attr_be32);
            let klen = wire::msg_attr(msg, k::SET_KEY_LEN).and_then(wire::attr_be32);
            let flags = wire::msg_attr(msg, k::SET_FLAGS)
                .and_then(wire::attr_be32)
                .unwrap_or(0);
            let is_map = wire::msg_attr(msg, k::SET_DATA_TYPE).is_some();
            kind = Some(match (ktype, klen) {
                (Some(t), Some(l)) => SetKind::from_kernel(t, l, flags, is_map),
                _ => SetKind::Other,
            });
        };
        match Self::request(sock, k::MSG_GETSET, false, &body, &mut each) {
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
    fn chain_rules(sock: &mut Sock, table: &str, chain: &str) -> KResult<Vec<(u64, String)>> {
        encode::check_name("chain", chain)?;
        let what = || format!("chain {chain} in table inet {table}");
        // A rule dump of a missing chain is just empty: ask for the chain first.
        let body = |w: &mut Writer| -> KResult<()> {
            w.attr_str(k::CHAIN_TABLE, table).map_err(too_large)?;
            w.attr_str(k::CHAIN_NAME, chain).map_err(too_large)
        };
        Self::request(sock, k::MSG_GETCHAIN, false, &body, &mut |_| {})
            .map_err(|e| Self::req_err(what(), e))?;

        let body = |w: &mut Writer| -> KResult<()> {
            w.attr_str(k::RULE_TABLE, table).map_err(too_large)?;
            w.attr_str(k::RULE_CHAIN, chain).map_err(too_large)
        };
        let mut out = Vec::new();
        let mut each = |msg: &[u8]| {
            let t = wire::msg_attr(msg, k::RULE_TABLE).map(wire::attr_string);
            let c = wire::msg_attr(msg, k::RULE_CHAIN).map(wire::attr_string);
            if t.as_deref() != Some(table) || c.as_deref() != Some(chain) {
                return;
            }
            let Some(handle) = wire::msg_attr(msg, k::RULE_HANDLE).and_then(wire::attr_be64) else {
                return;
            };
            let id = wire::msg_attr(msg, k::RULE_USERDATA)
                .map(encode::rule_id)
                .unwrap_or_default();
            out.push((handle, id));
        };
        Self::request(sock, k::MSG_GETRULE, true, &body, &mut each)
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
    pub fn apply(&self, ns: Option<BorrowedFd<'_>>, table: &str, ops: &[Op]) -> KResult<()> {
        encode::check_name("table", table)?;
        self.with_sock(ns, |sock| {
            let b = Self::plan(sock, table, ops)?;
            Self::commit(sock, table, &b)
        })
    }

    /// The batch for `ops`, reading from the kernel what the encoding
    /// depends on (set kinds, rule handles).
    fn plan<'a, L: Lookup>(sock: &mut L, table: &str, ops: &'a [Op]) -> KResult<Batch<'a>> {
        let mut b = Batch::new()?;
        // Sets as this batch leaves them (None: deleted in the batch).
        let mut sets: HashMap<String, Option<SetKind>> = HashMap::new();
        // Rules (handle, id) per chain, looked up for delete-rule.
        let mut rules: HashMap<String, Vec<(u64, String)>> = HashMap::new();
        // The table was deleted earlier in this batch: the kernel's current
        // objects are gone as far as later ops are concerned.
        let mut fresh = false;
        let mut need_table = true;
        let mut set_id = 0u32;
        let new_table = |b: &mut Batch| {
            b.obj(Ctx::Table, k::MSG_NEWTABLE, k::NLM_F_CREATE, |w| {
                w.attr_str(k::TABLE_NAME, table).map_err(too_large)
            })
        };
        let kind_of =
            |sock: &mut L, sets: &mut HashMap<String, Option<SetKind>>, fresh: bool, name: &str| {
                if let Some(k) = sets.get(name) {
                    return Ok(*k);
                }
                if fresh {
                    return Ok(None);
                }
                let k = sock.set_kind(table, name)?;
                sets.insert(name.to_string(), k);
                Ok::<_, KernelError>(k)
            };

        for op in ops {
            if matches!(op, Op::DeleteTable) {
                b.obj(Ctx::Table, k::MSG_DELTABLE, 0, |w| {
                    w.attr_str(k::TABLE_NAME, table).map_err(too_large)
                })?;
                need_table = true;
                fresh = true;
                sets.clear();
                rules.clear();
                continue;
            }
            if need_table {
                new_table(&mut b)?;
                need_table = false;
            }
            match op {
                Op::DeleteTable => {}
                Op::AttachChain { name, .. } | Op::DetachChain { name, .. } => {
                    return Err(KernelError::Invalid(format!(
                        "attaching chain {name} is the guard's to resolve; it reached the kernel unscoped"
                    )))
                }
                Op::AddChain { name, base } => {
                    encode::check_name("chain", name)?;
                    b.obj(Ctx::AddChain(name), k::MSG_NEWCHAIN, k::NLM_F_CREATE, |w| {
                        encode::chain_body(w, table, name, *base)
                    })?;
                }
                Op::DeleteChain(name) => {
                    encode::check_name("chain", name)?;
                    // NONREC: like `nft delete chain`, refuse a chain that still has rules.
                    b.obj(Ctx::DelChain(name), k::MSG_DELCHAIN, k::NLM_F_NONREC, |w| {
                        encode::chain_body(w, table, name, None)
                    })?;
                    rules.insert(name.clone(), Vec::new());
                }
                Op::FlushChain(name) => {
                    encode::check_name("chain", name)?;
                    // DELRULE with a chain and no handle flushes the chain.
                    b.obj(Ctx::FlushChain(name), k::MSG_DELRULE, 0, |w| {
                        w.attr_str(k::RULE_TABLE, table).map_err(too_large)?;
                        w.attr_str(k::RULE_CHAIN, name).map_err(too_large)
                    })?;
                    rules.insert(name.clone(), Vec::new());
                }
                Op::AddRule { chain, rule } => {
                    encode::check_name("chain", chain)?;
                    let ctx = Ctx::AddRule { chain, id: &rule.id };
                    // Resolve the sets first: the writer is busy once the message is open.
                    let mut kinds = HashMap::new();
                    for s in rule.matches.iter().filter_map(|m| m.set()) {
                        encode::check_name("set", s)?;
                        let kind = kind_of(sock, &mut sets, fresh, s)?;
                        kinds.insert(s.to_string(), kind);
                    }
                    let not_found = |s: &str| format!("set {s} in table inet {table}");
                    b.obj(ctx, k::MSG_NEWRULE, k::NLM_F_CREATE | k::NLM_F_APPEND, |w| {
                        w.attr_str(k::RULE_TABLE, table).map_err(too_large)?;
                        w.attr_str(k::RULE_CHAIN, chain).map_err(too_large)?;
                        encode::rule_body(w, chain, rule, |s| Ok(kinds.get(s).copied().flatten())).map_err(|e| match e {
                            KernelError::NotFound(s) => KernelError::NotFound(not_found(s.strip_prefix("set ").unwrap_or(&s))),
                            e => e,
                        })
                    })?;
                }
                Op::DeleteRule { chain, id } => {
                    if id.is_empty() {
                        return Err(KernelError::Invalid(format!(
                            "delete-rule in chain {chain}: rules are deleted by id, and the id is empty"
                        )));
                    }
                    let not_found = || KernelError::NotFound(format!("rule '{id}' in chain {chain} of table inet {table}"));
                    if !rules.contains_key(chain) {
                        let list = if fresh {
                            Vec::new()
                        } else {
                            match sock.chain_rules(table, chain) {
                                Ok(l) => l,
                                Err(KernelError::NotFound(_)) => return Err(not_found()),
                                Err(e) => return Err(e),
                            }
                        };
                        rules.insert(chain.clone(), list);
                    }
                    let list = rules.entry(chain.clone()).or_default();
                    // The first rule with that id; a second delete-rule of
                    // the same id in this batch takes the next one.
                    let pos = list.iter().position(|(_, rid)| rid == id).ok_or_else(not_found)?;
                    let (handle, _) = list.remove(pos);
                    let ctx = Ctx::DelRule { chain, id };
                    b.obj(ctx, k::MSG_DELRULE, 0, |w| {
                        w.attr_str(k::RULE_TABLE, table).map_err(too_large)?;
                        w.attr_str(k::RULE_CHAIN, chain).map_err(too_large)?;
                        w.attr_be64(k::RULE_HANDLE, handle).map_err(too_large)
                    })?;
                }
                Op::AddSet { name, ty } => {
                    encode::check_name("set", name)?;
                    set_id += 1;
                    let id = set_id;
                    // If the set already exists with another type the kernel
                    // refuses this message and the batch fails.
                    b.obj(Ctx::AddSet(name), k::MSG_NEWSET, k::NLM_F_CREATE, |w| {
                        encode::set_body(w, table, name, *ty, id)
                    })?;
                    sets.insert(name.clone(), Some(SetKind::Typed(*ty)));
                }
                Op::DeleteSet(name) => {
                    encode::check_name("set", name)?;
                    b.obj(Ctx::DelSet(name), k::MSG_DELSET, 0, |w| {
                        w.attr_str(k::SET_TABLE, table).map_err(too_large)?;
                        w.attr_str(k::SET_NAME, name).map_err(too_large)
                    })?;
                    sets.insert(name.clone(), None);
                }
                Op::AddElement { set, elem } | Op::DeleteElement { set, elem } => {
                    encode::check_name("set", set)?;
                    let add = matches!(op, Op::AddElement { .. });
                    let kind = kind_of(sock, &mut sets, fresh, set)?
                        .ok_or_else(|| KernelError::NotFound(format!("set {set} in table inet {table}")))?;
                    let keys = encode::element_keys(kind, set, elem)?;
                    let (ctx, msg, flags) = if add {
                        // No EXCL: adding an element that is there is a no-op.
                        (Ctx::AddElem { set, elem }, k::MSG_NEWSETELEM, k::NLM_F_CREATE)
                    } else {
                        (Ctx::DelElem { set, elem }, k::MSG_DELSETELEM, 0)
                    };
                    b.obj(ctx, msg, flags, |w| encode::elements_body(w, table, set, &keys))?;
                }
            }
        }
        if need_table && !fresh {
            new_table(&mut b)?;
        }
        b.finish()
    }

    /// Send a finished batch and collect the kernel's verdict on it.
    fn commit(sock: &mut Sock, table: &str, b: &Batch) -> KResult<()> {
        if let Err(e) = sock.send(b.w.bytes()) {
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    KernelError::Permission(format!("nftables table inet {table}"))
                }
                _ => KernelError::Other(format!(
                    "sending the nftables batch for table inet {table}: {e}"
                )),
            });
        }
        // The batch ran inside sendmsg: every error, and the ACK of its last
        // object message, is queued already.
        let mut errors: Vec<(u32, i32, Option<String>)> = Vec::new();
        let mut lost = false;
        let mut acked = b.last_obj.is_none();
        loop {
            let n = match sock.recv(true) {
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
            for (h, msg) in wire::messages(&sock.buf[..n]) {
                if h.ty != k::NLMSG_ERROR || b.ctx_of(h.seq).is_none() {
                    continue;
                }
                let (errno, text) = wire::nlmsg_error(&h, msg);
                if errno != 0 {
                    errors.push((h.seq, errno, text));
                } else if b.last_obj.is_some_and(|(_, seq)| seq == h.seq) {
                    acked = true;
                }
            }
        }
        if let Some((seq, errno, text)) =
            errors.iter().min_by_key(|(s, ..)| s.wrapping_sub(b.first))
        {
            let ctx = b.ctx_of(*seq).unwrap_or(&Ctx::Batch);
            return Err(map_error(table, ctx, *errno, text.as_deref()));
        }
        if lost {
            return Err(KernelError::Other(format!(
                "nftables batch for table inet {table} failed (the kernel's error replies overflowed the socket)"
            )));
        }
        if !acked {
            // No error and no ACK: the kernel dropped the batch without a
            // word. Never take silence for a commit.
            return Err(KernelError::Other(format!(
                "nftables batch for table inet {table}: the kernel did not confirm it"
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
        encode::check_name("table", table)?;
        self.with_sock(ns, |sock| {
            Ok(Self::chain_rules(sock, table, chain)?
                .into_iter()
                .map(|(_, id)| id)
                .collect())
        })
    }

    /// Names of the chains of `table`; empty when the table does not exist.
    pub fn chains(&self, ns: Option<BorrowedFd<'_>>, table: &str) -> KResult<Vec<String>> {
        encode::check_name("table", table)?;
        self.with_sock(ns, |sock| {
            let body = |w: &mut Writer| -> KResult<()> {
                w.attr_str(k::CHAIN_TABLE, table).map_err(too_large)
            };
            let mut out = Vec::new();
            let mut each = |msg: &[u8]| {
                let t = wire::msg_attr(msg, k::CHAIN_TABLE).map(wire::attr_string);
                let n = wire::msg_attr(msg, k::CHAIN_NAME).map(wire::attr_string);
                if let (Some(t), Some(n)) = (t, n) {
                    if t == table {
                        out.push(n);
                    }
                }
            };
            match Self::request(sock, k::MSG_GETCHAIN, true, &body, &mut each) {
                Ok(()) => Ok(out),
                Err(ReqError::Kernel(libc::ENOENT, _)) => Ok(Vec::new()),
                Err(e) => Err(Self::req_err(format!("chains of table inet {table}"), e)),
            }
        })
    }

    /// Names of the `inet` tables.
    pub fn tables(&self, ns: Option<BorrowedFd<'_>>) -> KResult<Vec<String>> {
        self.with_sock(ns, |sock| {
            let mut out = Vec::new();
            let mut each = |msg: &[u8]| {
                // nfgenmsg's family: the dump asks for inet, but check.
                if msg.get(wire::NLMSG_HDRLEN) != Some(&k::NFPROTO_INET) {
                    return;
                }
                if let Some(n) = wire::msg_attr(msg, k::TABLE_NAME) {
                    out.push(wire::attr_string(n));
                }
            };
            Self::request(sock, k::MSG_GETTABLE, true, &|_| Ok(()), &mut each)
                .map_err(|e| Self::req_err("nftables tables".into(), e))?;
            Ok(out)
        })
    }
}

/// What planning a batch reads from the kernel: the kinds of the sets
/// its rules and elements use, and the handles of rules it deletes.
trait Lookup {
    fn set_kind(&mut self, table: &str, name: &str) -> KResult<Option<SetKind>>;
    fn chain_rules(&mut self, table: &str, chain: &str) -> KResult<Vec<(u64, String)>>;
}

impl Lookup for Sock {
    fn set_kind(&mut self, table: &str, name: &str) -> KResult<Option<SetKind>> {
        Nft::query_set(self, table, name)
    }
    fn chain_rules(&mut self, table: &str, chain: &str) -> KResult<Vec<(u64, String)>> {
        Nft::chain_rules(self, table, chain)
    }
}

/// An empty table: no sets, no rules.
struct Offline;

impl Lookup for Offline {
    fn set_kind(&mut self, _: &str, _: &str) -> KResult<Option<SetKind>> {
        Ok(None)
    }
    fn chain_rules(&mut self, _: &str, _: &str) -> KResult<Vec<(u64, String)>> {
        Ok(Vec::new())
    }
}

/// The bytes `apply` would send for `ops` on an empty table, without a
/// socket: for fuzzing and measuring the encoder.
pub fn encode_offline(table: &str, ops: &[Op]) -> KResult<Vec<u8>> {
    encode::check_name("table", table)?;
    Ok(Nft::plan(&mut Offline, table, ops)?.w.bytes().to_vec())
}

#[cfg(test)]
mod tests;
