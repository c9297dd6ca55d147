//! Small edits to SDP text the server sends.

/// Caps the bitrate of every video section of `sdp` at `kbps`: `b=AS` (kbps) and `b=TIAS`
/// (bps) lines replace any bandwidth lines there, placed where RFC 4566 wants them (after the
/// section's `c=` line). A sender that honours them (browsers, OBS, GStreamer) encodes within
/// the cap.
pub fn cap_video_bitrate(sdp: &str, kbps: u32) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out = String::with_capacity(sdp.len() + 64);
    let mut in_video = false;
    let mut pending_cap = false;
    let caps = format!("b=AS:{kbps}{eol}b=TIAS:{}{eol}", u64::from(kbps) * 1000);
    for line in sdp.lines() {
        if line.starts_with("m=") {
            if pending_cap {
                out.push_str(&caps);
            }
            in_video = line.starts_with("m=video");
            pending_cap = in_video;
        } else if in_video && line.starts_with("b=") {
            continue;
        } else if pending_cap && !line.starts_with("i=") && !line.starts_with("c=") {
            out.push_str(&caps);
            pending_cap = false;
        }
        out.push_str(line);
        out.push_str(eol);
    }
    if pending_cap {
        out.push_str(&caps);
    }
    out
}

/// The id `sdp` gives header extension `uri` (`a=extmap:<id>[/<direction>] <uri>`), if it
/// names it with a one-byte id (1 to 14).
pub fn extension_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let rest = line.trim_end().strip_prefix("a=extmap:")?;
        let (id, named) = rest.split_once(' ')?;
        if named.split_whitespace().next()? != uri {
            return None;
        }
        let id: u8 = id.split('/').next()?.parse().ok()?;
        (1..=14).contains(&id).then_some(id)
    })
}

/// Whether `sdp` offers the codec `name` (e.g. `H265`) in an `a=rtpmap` line, any case.
pub fn offers_codec(sdp: &str, name: &str) -> bool {
    sdp.lines().any(|line| {
        line.trim_end()
            .strip_prefix("a=rtpmap:")
            .and_then(|rest| rest.split_once(' '))
            .and_then(|(_, codec)| codec.split('/').next())
            .is_some_and(|c| c.eq_ignore_ascii_case(name))
    })
}

/// Rewrites the address of every `a=candidate` line from one of `bound` to `public` (1:1 NAT:
/// the server binds a private address and is reached at a public one).
pub fn advertise_public_ip(sdp: &str, bound: &[std::net::IpAddr], public: std::net::IpAddr) -> String {
    rewrite_candidates(sdp, bound, Some(public), None, None)
}

/// Rewrites the `a=candidate` lines whose address is one of `bound`: the address to `public`
/// (1:1 NAT), for UDP candidates the port to `udp_port` (the shared port of the UDP mux,
/// where the connection's own socket was only a placeholder), and for passive TCP candidates
/// the port to `tcp_port` (the shared ICE-TCP port).
pub fn rewrite_candidates(
    sdp: &str,
    bound: &[std::net::IpAddr],
    public: Option<std::net::IpAddr>,
    udp_port: Option<u16>,
    tcp_port: Option<u16>,
) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let public_text = public.map(|ip| ip.to_string());
    let port_text = udp_port.map(|p| p.to_string());
    let tcp_text = tcp_port.map(|p| p.to_string());
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.lines() {
        if line.starts_with("a=candidate:") {
            // candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
            let mut fields: Vec<&str> = line.split(' ').collect();
            if fields.len() > 5
                && fields[4]
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| bound.contains(&ip))
            {
                if let Some(public) = &public_text {
                    fields[4] = public;
                }
                if let Some(port) = port_text.as_deref().filter(|_| fields[2].eq_ignore_ascii_case("udp")) {
                    fields[5] = port;
                }
                let passive_tcp =
                    fields[2].eq_ignore_ascii_case("tcp") && fields.windows(2).any(|w| w == ["tcptype", "passive"]);
                if let Some(port) = tcp_text.as_deref().filter(|_| passive_tcp) {
                    fields[5] = port;
                }
                out.push_str(&fields.join(" "));
                out.push_str(eol);
                continue;
            }
        }
        out.push_str(line);
        out.push_str(eol);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{cap_video_bitrate, extension_id, offers_codec};

    #[test]
    fn caps_only_video_sections_after_their_connection_line() {
        let sdp = "v=0\r\ns=-\r\nm=audio 9 UDP 111\r\nc=IN IP4 0.0.0.0\r\na=x\r\n\
                   m=video 9 UDP 96\r\nc=IN IP4 0.0.0.0\r\nb=AS:9000\r\na=y\r\n";
        let capped = cap_video_bitrate(sdp, 500);
        assert_eq!(
            capped,
            "v=0\r\ns=-\r\nm=audio 9 UDP 111\r\nc=IN IP4 0.0.0.0\r\na=x\r\n\
             m=video 9 UDP 96\r\nc=IN IP4 0.0.0.0\r\nb=AS:500\r\nb=TIAS:500000\r\na=y\r\n"
        );
        // A video section that ends the SDP right after its c= line still gets the cap.
        assert!(cap_video_bitrate("m=video 9 UDP 96\nc=IN IP4 0.0.0.0\n", 64).ends_with("b=AS:64\nb=TIAS:64000\n"));
    }

    #[test]
    fn public_ip_replaces_bound_candidate_addresses_only() {
        let sdp = "a=candidate:1 1 udp 2130706431 10.0.0.5 50000 typ host\r\n\
                   a=candidate:2 1 udp 2130706431 127.0.0.1 50001 typ host\r\na=ice-ufrag:x\r\n";
        let bound = ["10.0.0.5".parse().unwrap()];
        let out = super::advertise_public_ip(sdp, &bound, "203.0.113.7".parse().unwrap());
        assert_eq!(
            out,
            "a=candidate:1 1 udp 2130706431 203.0.113.7 50000 typ host\r\n\
             a=candidate:2 1 udp 2130706431 127.0.0.1 50001 typ host\r\na=ice-ufrag:x\r\n"
        );
    }

    #[test]
    fn mux_port_replaces_udp_candidate_ports_with_or_without_public_ip() {
        let sdp = "a=candidate:1 1 udp 2130706431 10.0.0.5 50000 typ host\n\
                   a=candidate:2 1 tcp 1671430143 10.0.0.5 9 typ host tcptype passive\n\
                   a=candidate:3 1 udp 1694498815 198.51.100.1 40000 typ srflx raddr 0.0.0.0 rport 0\n";
        let bound = ["10.0.0.5".parse().unwrap()];
        let out = super::rewrite_candidates(sdp, &bound, None, Some(7882), None);
        assert_eq!(
            out,
            "a=candidate:1 1 udp 2130706431 10.0.0.5 7882 typ host\n\
             a=candidate:2 1 tcp 1671430143 10.0.0.5 9 typ host tcptype passive\n\
             a=candidate:3 1 udp 1694498815 198.51.100.1 40000 typ srflx raddr 0.0.0.0 rport 0\n"
        );
        let out = super::rewrite_candidates(sdp, &bound, Some("203.0.113.7".parse().unwrap()), Some(7882), None);
        assert!(
            out.starts_with("a=candidate:1 1 udp 2130706431 203.0.113.7 7882 typ host\n"),
            "{out}"
        );
        // The shared ICE-TCP port: passive TCP candidates only (an active one's port is 9).
        let sdp = "a=candidate:2 1 tcp 1671430143 10.0.0.5 41234 typ host tcptype passive\n\
                   a=candidate:4 1 tcp 1671430143 10.0.0.5 9 typ host tcptype active\n";
        let out = super::rewrite_candidates(sdp, &bound, None, None, Some(7881));
        assert_eq!(
            out,
            "a=candidate:2 1 tcp 1671430143 10.0.0.5 7881 typ host tcptype passive\n\
             a=candidate:4 1 tcp 1671430143 10.0.0.5 9 typ host tcptype active\n"
        );
    }

    #[test]
    fn an_extension_id_is_read_from_its_extmap_line() {
        let sdp = "m=audio 9 UDP 111\r\na=extmap:3 urn:x:other\r\na=extmap:1/recvonly urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n";
        assert_eq!(
            extension_id(sdp, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
            Some(1)
        );
        assert_eq!(extension_id(sdp, "urn:x:other"), Some(3));
        assert_eq!(extension_id(sdp, "urn:x:none"), None);
        assert_eq!(extension_id("a=extmap:15 urn:x:two-byte\n", "urn:x:two-byte"), None);
        assert_eq!(extension_id("a=extmap:x urn:x:bad\n", "urn:x:bad"), None);
    }

    #[test]
    fn an_offer_names_its_codecs_in_rtpmap_lines() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 126\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:126 h265/90000\r\n";
        assert!(offers_codec(sdp, "H265"));
        assert!(offers_codec(sdp, "VP8"));
        assert!(!offers_codec(sdp, "H264"));
        assert!(!offers_codec("a=rtpmap:96", "H265"));
    }
}
