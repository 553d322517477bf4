//! nfnetlink messages as bytes, in safe Rust: a writer that appends
//! messages and (nested) attributes to a buffer with a hard size bound, and
//! readers for replies that check every length before they use it.
//!
//! Every length field the writer fills in is checked to fit (an attribute's
//! u16, a message's u32, the batch's cap), so no input — however many
//! matches, however long a name — can write out of bounds or wrap a length:
//! it gets [`TooLarge`] instead.

/// Size of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// Size of `struct nfgenmsg`, which follows the header of every nfnetlink message.
pub const NFGENMSG_LEN: usize = 4;
/// Where the attributes of an nfnetlink message start.
pub const ATTRS_AT: usize = NLMSG_HDRLEN + NFGENMSG_LEN;
/// NLA_F_NESTED: the attribute holds attributes.
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The buffer would outgrow its cap, or a length would not fit its field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    /// What overflowed: "attribute", "message" or "batch".
    pub what: &'static str,
    pub limit: usize,
}

pub type WResult<T> = Result<T, TooLarge>;

/// An open message or nested attribute: where its length field is.
#[must_use]
#[derive(Clone, Copy)]
pub struct Mark(usize);

/// Appends netlink messages to one buffer, never past `cap` bytes.
pub struct Writer {
    buf: Vec<u8>,
    cap: usize,
}

impl Writer {
    pub fn new(cap: usize) -> Writer {
        Writer {
            buf: Vec::with_capacity(cap.min(16 * 1024)),
            cap,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    fn reserve(&mut self, n: usize) -> WResult<()> {
        match self.buf.len().checked_add(n) {
            Some(end) if end <= self.cap => Ok(()),
            _ => Err(TooLarge {
                what: "batch",
                limit: self.cap,
            }),
        }
    }

    fn put(&mut self, data: &[u8]) -> WResult<()> {
        let padded = align4(data.len());
        self.reserve(padded)?;
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len() + (padded - data.len()), 0);
        Ok(())
    }

    /// Start a message: netlink header (length filled in by
    /// [`Writer::end_msg`]) and nfgenmsg.
    pub fn begin_msg(
        &mut self,
        ty: u16,
        flags: u16,
        seq: u32,
        family: u8,
        res_id: u16,
    ) -> WResult<Mark> {
        let start = self.buf.len();
        let mut h = [0u8; NLMSG_HDRLEN + NFGENMSG_LEN];
        h[4..6].copy_from_slice(&ty.to_ne_bytes());
        h[6..8].copy_from_slice(&flags.to_ne_bytes());
        h[8..12].copy_from_slice(&seq.to_ne_bytes());
        // nlmsg_pid 0: to the kernel.
        h[16] = family;
        h[17] = 0; // NFNETLINK_V0
        h[18..20].copy_from_slice(&res_id.to_be_bytes());
        self.put(&h)?;
        Ok(Mark(start))
    }

    pub fn end_msg(&mut self, m: Mark) -> WResult<()> {
        let len = self.buf.len() - m.0;
        let len = u32::try_from(len).map_err(|_| TooLarge {
            what: "message",
            limit: u32::MAX as usize,
        })?;
        self.buf[m.0..m.0 + 4].copy_from_slice(&len.to_ne_bytes());
        Ok(())
    }

    /// One attribute with a binary payload.
    pub fn attr(&mut self, ty: u16, data: &[u8]) -> WResult<()> {
        let len = u16::try_from(4 + data.len()).map_err(|_| TooLarge {
            what: "attribute",
            limit: u16::MAX as usize,
        })?;
        self.reserve(align4(4 + data.len()))?;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.put(data)
    }

    /// A string attribute, NUL-terminated as the kernel's NLA_STRING
    /// policies expect.
    pub fn attr_str(&mut self, ty: u16, s: &str) -> WResult<()> {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(ty, &v)
    }

    pub fn attr_be32(&mut self, ty: u16, v: u32) -> WResult<()> {
        self.attr(ty, &v.to_be_bytes())
    }

    pub fn attr_be64(&mut self, ty: u16, v: u64) -> WResult<()> {
        self.attr(ty, &v.to_be_bytes())
    }

    pub fn begin_nest(&mut self, ty: u16) -> WResult<Mark> {
        let start = self.buf.len();
        self.reserve(4)?;
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        Ok(Mark(start))
    }

    pub fn end_nest(&mut self, m: Mark) -> WResult<()> {
        let len = u16::try_from(self.buf.len() - m.0).map_err(|_| TooLarge {
            what: "attribute",
            limit: u16::MAX as usize,
        })?;
        self.buf[m.0..m.0 + 2].copy_from_slice(&len.to_ne_bytes());
        Ok(())
    }

    /// Set a flag in the header of the message that starts at `at`.
    pub fn set_flag(&mut self, at: usize, flag: u16) {
        if let Some(f) = self.buf.get_mut(at + 6..at + 8) {
            let v = u16::from_ne_bytes([f[0], f[1]]) | flag;
            f.copy_from_slice(&v.to_ne_bytes());
        }
    }
}

/// One netlink message header, read without assuming alignment.
#[derive(Clone, Copy, Debug)]
pub struct Hdr {
    pub len: usize,
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The messages of one datagram: (header, the whole message). Stops at the
/// first malformed length instead of reading past it.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = (Hdr, &[u8])> + '_ {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        let b = buf.get(off..)?;
        let h = Hdr {
            len: u32_at(b, 0)? as usize,
            ty: u16_at(b, 4)?,
            flags: u16_at(b, 6)?,
            seq: u32_at(b, 8)?,
            pid: u32_at(b, 12)?,
        };
        if h.len < NLMSG_HDRLEN || h.len > b.len() {
            return None;
        }
        off += align4(h.len);
        Some((h, &b[..h.len]))
    })
}

/// The attributes in `buf`: (type without flag bits, payload).
pub fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> + '_ {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        let b = buf.get(off..)?;
        let len = u16_at(b, 0)? as usize;
        let ty = u16_at(b, 2)? & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        off += align4(len);
        Some((ty, &b[4..len]))
    })
}

/// The attribute `ty` of an nfnetlink message, if present.
pub fn msg_attr(msg: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(msg.get(ATTRS_AT..)?)
        .find(|(t, _)| *t == ty)
        .map(|(_, v)| v)
}

/// A NUL-terminated string attribute's text.
pub fn attr_string(v: &[u8]) -> String {
    let v = v.split(|c| *c == 0).next().unwrap_or(&[]);
    String::from_utf8_lossy(v).into_owned()
}

pub fn attr_be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

pub fn attr_be64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// NLMSGERR_ATTR_MSG: the kernel's extended-ack text.
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;

/// The errno of an NLMSG_ERROR message (0 for an ACK) and the kernel's
/// extended-ack text, if any.
pub fn nlmsg_error(h: &Hdr, msg: &[u8]) -> (i32, Option<String>) {
    let Some(code) = msg.get(16..20) else {
        return (libc::EIO, None);
    };
    let errno = i32::from_ne_bytes(code.try_into().unwrap_or([0xff; 4])).wrapping_neg();
    let mut text = None;
    if h.flags & NLM_F_ACK_TLVS != 0 {
        // The echoed request: its header only when capped, else all of it.
        let inner = if h.flags & NLM_F_CAPPED != 0 {
            Some(NLMSG_HDRLEN)
        } else {
            u32_at(msg, 20)
                .and_then(|l| usize::try_from(l).ok()?.checked_add(3))
                .map(|l| l & !3)
        };
        let tlvs = inner
            .filter(|i| *i >= NLMSG_HDRLEN)
            .and_then(|i| i.checked_add(20))
            .and_then(|at| msg.get(at..));
        if let Some(tlvs) = tlvs {
            text = attrs(tlvs)
                .find(|(t, _)| *t == NLMSGERR_ATTR_MSG)
                .map(|(_, v)| attr_string(v));
        }
    }
    (errno, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_patched_and_aligned() {
        let mut w = Writer::new(1024);
        let m = w.begin_msg(0x0a00, 1, 7, 1, 0).unwrap();
        w.attr_str(1, "abc").unwrap();
        let n = w.begin_nest(4).unwrap();
        w.attr_be32(1, 5).unwrap();
        w.end_nest(n).unwrap();
        w.end_msg(m).unwrap();
        let (h, msg) = messages(w.bytes()).next().unwrap();
        assert_eq!(h.len, w.len());
        assert_eq!(h.seq, 7);
        assert_eq!(attr_string(msg_attr(msg, 1).unwrap()), "abc");
        let nest = msg_attr(msg, 4).unwrap();
        let (t, v) = attrs(nest).next().unwrap();
        assert_eq!((t, attr_be32(v)), (1, Some(5)));
    }

    #[test]
    fn oversize_is_an_error_not_a_wrap() {
        let mut w = Writer::new(1 << 20);
        assert_eq!(w.attr(1, &vec![0; 70_000]).unwrap_err().what, "attribute");
        let n = w.begin_nest(1).unwrap();
        for _ in 0..20 {
            w.attr(2, &[0; 4000]).unwrap();
        }
        assert_eq!(w.end_nest(n).unwrap_err().what, "attribute");
        let mut small = Writer::new(64);
        assert_eq!(small.attr(1, &[0; 100]).unwrap_err().what, "batch");
        assert_eq!(small.len(), 0);
    }

    #[test]
    fn readers_stop_at_bad_lengths() {
        // A message claiming more bytes than there are, and an attribute too.
        let mut b = vec![0u8; 40];
        b[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(messages(&b).count(), 0);
        let a = [200u8, 0, 1, 0, 1, 2];
        assert_eq!(attrs(&a).count(), 0);
        let h = Hdr {
            len: 10,
            ty: 2,
            flags: NLM_F_ACK_TLVS,
            seq: 0,
            pid: 0,
        };
        assert_eq!(nlmsg_error(&h, &[0; 10]).0, libc::EIO);
    }
}
