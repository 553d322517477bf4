//! BIRD 2 configuration, rendered from a checked [`BgpSpeaker`] record and
//! nothing else: every value written is an address, a number or a prefix
//! the host parsed, and the only text is the host's own. What the file
//! enforces (wit/README.md, `bgp`):
//!
//! - routes enter the kernel only if BGP learned them and they lie in the
//!   speaker's accept ranges, in the main table at metric 32 (`proto
//!   bird`), so a node's own routes to its endpoints (metric 0) win;
//! - peers are accepted only inside the accept ranges, so 0.0.0.0/0 or
//!   any other prefix a peer announces is dropped at the door;
//! - the node announces its own prefixes (static blackholes, never
//!   written into the kernel) and passes on learned routes only inside
//!   the accept ranges, where BGP's own rules allow it;
//! - sessions are single-hop (`direct`), with `gateway direct`.
//!
//! Timers are set for convergence in about a second on a LAN: first
//! connect 1 s after a peer appears, retries every 1 s, hold time 9 s
//! (keepalives every 3 s), error backoff 1 to 10 s.

use std::fmt::Write as _;
use std::path::Path;

use netshim_host_api::host::bgp::{BgpSpeaker, Kind};

use super::BirdError;

/// Routes one peer may have accepted at a time; more are held back
/// (`import limit … action block`), so a peer cannot fill the node's
/// table with the /32s of a whole pool.
pub const MAX_LEARNED: usize = 4096;

/// The file paths BIRD is told about.
pub struct Paths<'a> {
    pub log: &'a Path,
    pub log_backup: &'a Path,
}

/// BIRD's string syntax has no escapes we want to rely on: a path with a
/// quote, a backslash or a control character is refused.
pub(super) fn quoted(p: &Path) -> Result<String, BirdError> {
    let s = p
        .to_str()
        .ok_or_else(|| BirdError::Path(p.display().to_string()))?;
    if s.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        return Err(BirdError::Path(s.to_string()));
    }
    Ok(format!("\"{s}\""))
}

pub fn render(sp: &BgpSpeaker, paths: &Paths) -> Result<String, BirdError> {
    let mut c = String::with_capacity(2048 + 64 * (sp.peers.len() + sp.export.len()));
    let _ = writeln!(
        c,
        "# Rendered by netshim from network {}'s BGP speaker; the node agent\n\
         # rewrites it whenever the speaker changes.",
        sp.network
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
    );
    let _ = writeln!(c, "router id {};", sp.router_id);
    let _ = writeln!(
        c,
        "log {} 1000000 {} {{ info, warning, error, fatal }};",
        quoted(paths.log)?,
        quoted(paths.log_backup)?
    );
    c.push_str("timeformat protocol iso long;\n");
    c.push_str("protocol device { scan time 10; }\n\n");

    let accept: Vec<String> = sp
        .import
        .iter()
        .map(|(n, lo, hi)| format!("{n}{{{lo},{hi}}}"))
        .collect();
    let announce: Vec<String> = sp.export.iter().map(|n| n.to_string()).collect();
    // BIRD has no empty set literal: an empty list is a condition that
    // never holds.
    let accepted = if accept.is_empty() {
        "false".to_string()
    } else {
        let _ = writeln!(c, "define NETSHIM_ACCEPT = [ {} ];", accept.join(", "));
        "net ~ NETSHIM_ACCEPT".to_string()
    };
    let announced = if announce.is_empty() {
        "false".to_string()
    } else {
        let _ = writeln!(c, "define NETSHIM_ANNOUNCE = [ {} ];", announce.join(", "));
        "net ~ NETSHIM_ANNOUNCE".to_string()
    };
    // A learned route's next hop must be on the underlay.
    let hop = if sp.next_hops.is_empty() {
        "false".to_string()
    } else {
        // BIRD matches an address against a prefix, not a prefix set.
        let nets: Vec<String> = sp
            .next_hops
            .iter()
            .map(|n| format!("bgp_next_hop ~ {n}"))
            .collect();
        format!("({})", nets.join(" || "))
    };
    let _ = writeln!(
        c,
        "\nfilter netshim_accept {{ if {accepted} && {hop} then accept; reject; }}\n\
         filter netshim_announce {{\n\
         \x20 if proto = \"netshim_blocks\" && {announced} then accept;\n\
         \x20 if source = RTS_BGP && {accepted} then accept;\n\
         \x20 reject;\n\
         }}\n\
         filter netshim_to_kernel {{ if source = RTS_BGP && {accepted} then accept; reject; }}\n"
    );
    c.push_str(
        "protocol kernel netshim_kernel {\n\
         \x20 ipv4 { import none; export filter netshim_to_kernel; };\n\
         \x20 metric 32;\n\
         \x20 scan time 10;\n\
         }\n\n",
    );
    c.push_str("protocol static netshim_blocks {\n  ipv4 { import all; export none; };\n");
    for n in &sp.export {
        let _ = writeln!(c, "  route {n} blackhole;");
    }
    c.push_str("}\n\n");
    let _ = writeln!(
        c,
        "template bgp netshim_peer {{\n\
         \x20 local {} as {};\n\
         \x20 direct;\n\
         \x20 connect delay time 1;\n\
         \x20 connect retry time 1;\n\
         \x20 error wait time 1, 10;\n\
         \x20 hold time 9;\n\
         \x20 keepalive time 3;\n\
         \x20 ipv4 {{ import filter netshim_accept; export filter netshim_announce; gateway direct; import limit {MAX_LEARNED} action block; }};\n\
         }}\n",
        sp.router_id, sp.as_number
    );
    for p in &sp.peers {
        let _ = write!(
            c,
            "protocol bgp {} from netshim_peer {{ neighbor {} as {};",
            p.protocol(),
            p.address,
            p.as_number
        );
        if let (Kind::ReflectorClient, Some(id)) = (p.kind, sp.rr_cluster_id) {
            let _ = write!(c, " rr client; rr cluster id {id};");
        }
        c.push_str(" }\n");
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netshim_host_api::host::bgp::Peer;
    use std::path::PathBuf;

    pub fn speaker() -> BgpSpeaker {
        BgpSpeaker {
            network: "n1".into(),
            router_id: "192.0.2.11".parse().unwrap(),
            as_number: 64512,
            rr_cluster_id: Some("244.0.0.1".parse().unwrap()),
            peers: vec![
                Peer {
                    address: "192.0.2.12".parse().unwrap(),
                    as_number: 64512,
                    kind: Kind::Mesh,
                },
                Peer {
                    address: "192.0.2.13".parse().unwrap(),
                    as_number: 64512,
                    kind: Kind::ReflectorClient,
                },
                Peer {
                    address: "192.0.2.99".parse().unwrap(),
                    as_number: 64513,
                    kind: Kind::Global,
                },
            ],
            export: vec!["192.168.1.0/26".parse().unwrap()],
            import: vec![
                ("192.168.0.0/16".parse().unwrap(), 26, 26),
                ("192.168.0.0/16".parse().unwrap(), 32, 32),
            ],
            next_hops: vec!["192.0.2.0/24".parse().unwrap()],
        }
    }

    fn paths() -> (PathBuf, PathBuf) {
        (
            PathBuf::from("/run/n/bird.log"),
            PathBuf::from("/run/n/bird.log.1"),
        )
    }

    #[test]
    fn only_the_speakers_prefixes_enter_the_kernel_or_leave_the_node() {
        let (log, backup) = paths();
        let c = render(
            &speaker(),
            &Paths {
                log: &log,
                log_backup: &backup,
            },
        )
        .unwrap();
        assert!(c.contains("router id 192.0.2.11;"), "{c}");
        assert!(
            c.contains("define NETSHIM_ACCEPT = [ 192.168.0.0/16{26,26}, 192.168.0.0/16{32,32} ];")
        );
        assert!(c.contains("route 192.168.1.0/26 blackhole;"));
        assert!(c.contains("(bgp_next_hop ~ 192.0.2.0/24)"));
        assert!(c.contains("import limit 4096 action block"));
        assert!(c.contains("export filter netshim_to_kernel"));
        assert!(c.contains(
            "protocol bgp Mesh_192_0_2_12 from netshim_peer { neighbor 192.0.2.12 as 64512; }"
        ));
        assert!(c.contains(
            "protocol bgp Node_192_0_2_13 from netshim_peer { neighbor 192.0.2.13 as 64512; rr client; rr cluster id 244.0.0.1; }"
        ));
        assert!(c.contains(
            "protocol bgp Global_192_0_2_99 from netshim_peer { neighbor 192.0.2.99 as 64513; }"
        ));
        // Nothing goes anywhere unfiltered: no channel exports all, and the
        // only one importing all is the static protocol's own blackholes
        // (into BIRD's table, never the kernel's).
        assert!(!c.contains("export all"));
        assert_eq!(c.matches("import all").count(), 1);
        assert!(
            c.contains("protocol static netshim_blocks {\n  ipv4 { import all; export none; };")
        );
        assert!(c.contains(
            "filter netshim_to_kernel { if source = RTS_BGP && net ~ NETSHIM_ACCEPT then accept; reject; }"
        ));
        assert!(c.contains("if proto = \"netshim_blocks\" && net ~ NETSHIM_ANNOUNCE then accept;"));
    }

    #[test]
    fn empty_lists_render_filters_that_accept_nothing() {
        let (log, backup) = paths();
        let mut sp = speaker();
        sp.export.clear();
        sp.import.clear();
        let c = render(
            &sp,
            &Paths {
                log: &log,
                log_backup: &backup,
            },
        )
        .unwrap();
        assert!(!c.contains("NETSHIM_ACCEPT") && !c.contains("NETSHIM_ANNOUNCE"));
        assert!(c.contains(
            "filter netshim_accept { if false && (bgp_next_hop ~ 192.0.2.0/24) then accept; reject; }"
        ));
        assert!(c.contains("if proto = \"netshim_blocks\" && false then accept;"));
        assert!(c.contains("  if source = RTS_BGP && false then accept;"));
        assert!(c.contains(
            "filter netshim_to_kernel { if source = RTS_BGP && false then accept; reject; }"
        ));
    }

    #[test]
    fn a_path_that_would_break_the_syntax_is_refused() {
        let log = PathBuf::from("/run/x\"; protocol bgp evil {");
        let backup = PathBuf::from("/run/ok");
        assert!(render(
            &speaker(),
            &Paths {
                log: &log,
                log_backup: &backup,
            }
        )
        .is_err());
    }

    /// BIRD itself parses what is rendered (`bird -p`), where it is installed.
    #[test]
    fn bird_parses_the_rendering() {
        let Some(bird) = super::super::binary() else {
            eprintln!("SKIPPED: no bird binary on this machine");
            return;
        };
        let dir = std::env::temp_dir().join(format!("netshim-bird-parse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("bird.log");
        let backup = dir.join("bird.log.1");
        for sp in [speaker(), {
            let mut s = speaker();
            s.export.clear();
            s.import.clear();
            s.peers.clear();
            s
        }] {
            let c = render(
                &sp,
                &Paths {
                    log: &log,
                    log_backup: &backup,
                },
            )
            .unwrap();
            let f = dir.join("bird.conf");
            std::fs::write(&f, &c).unwrap();
            let out = std::process::Command::new(&bird)
                .arg("-p")
                .arg("-c")
                .arg(&f)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "bird -p: {}\n{c}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
