//! Every bound the host holds a guest to, in one place so the README's
//! table and the code cannot drift apart. Going over one is an `invalid`
//! (size) or `denied` (quota) error that names the limit.

/// Operations in one `netfilter.apply` batch.
pub const NFT_BATCH_OPS: usize = 1024;
/// Matches in one rule.
pub const NFT_RULE_MATCHES: usize = 32;
/// Bytes of a chain, set or rule id name.
pub const NFT_NAME_BYTES: usize = 64;
/// Rules in a driver's table, all chains together.
pub const NFT_TABLE_RULES: usize = 4096;
/// Links one call may create: a network holds at most this many per
/// endpoint plus this many of its own, without a count of the node's links
/// on every attach.
pub const LINKS_PER_CALL: usize = 16;
/// Log lines one guest call may write; the rest are counted and dropped.
pub const LOG_LINES_PER_CALL: usize = 200;
/// Bytes of one log line (longer lines are cut).
pub const LOG_LINE_BYTES: usize = 4096;
/// Bytes of an error message a guest returns (longer ones are cut).
pub const ERROR_MESSAGE_BYTES: usize = 1024;
/// Bytes one guest call may write to the store.
pub const STORE_BYTES_PER_CALL: usize = 4 << 20;
/// Bytes a driver may keep in the store, all its keys together.
pub const STORE_BYTES_PER_DRIVER: usize = 16 << 20;

/// Cut `s` to at most `max` bytes on a character boundary, saying so.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes cut)", &s[..end], s.len() - end)
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(super::truncate("abc", 3), "abc");
        let t = super::truncate("ééé", 3);
        assert!(t.starts_with("é…"), "{t}");
        assert!(t.ends_with("(4 bytes cut)"), "{t}");
    }
}
