//! A borrowing, bounds-checked HEPv3 decoder [HEP3 Network Protocol Specification rev. 37,
//! sipcapture/HEP `docs/`].
//!
//! Packet: `HEP3` (or `EEP3`), u16 total length including the 6-byte header, then chunks of
//! u16 vendor, u16 type, u16 length (including the 6-byte chunk header) and the payload; all
//! big-endian. Vendor chunks (vendor ≠ 0) and unknown types are skipped by length. Fixed-size
//! chunks must have their exact size. Written because the `hep` crate 0.1.2 panics on truncated
//! packets, zero-length chunks, short IPv4 chunks and vendor chunks (unchecked slicing).

use std::borrow::Cow;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Largest gunzipped payload accepted (chunk 0x10).
pub const MAX_INFLATED: usize = 65_535;

/// Why a HEP packet was not taken; the sending capture agent is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HepError {
    /// Not `HEP3`/`EEP3` (HEPv1/v2 start with a version byte).
    #[error("not a HEPv3 packet")]
    NotHep3,
    /// The total length field disagrees with the bytes present.
    #[error("bad total length")]
    BadLength,
    /// A chunk header or payload runs past the packet, or is shorter than its header.
    #[error("truncated chunk")]
    TruncatedChunk,
    /// A fixed-size chunk has the wrong size.
    #[error("chunk 0x{0:02x} has the wrong size")]
    BadChunkSize(u16),
    /// The gzip payload does not inflate, or inflates past the cap.
    #[error("bad compressed payload")]
    BadGzip,
    /// No payload chunk.
    #[error("no payload")]
    NoPayload,
}

impl HepError {
    /// A metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            HepError::NotHep3 => "not_hep3",
            HepError::BadLength => "bad_length",
            HepError::TruncatedChunk => "truncated_chunk",
            HepError::BadChunkSize(_) => "bad_chunk_size",
            HepError::BadGzip => "bad_gzip",
            HepError::NoPayload => "no_payload",
        }
    }
}

/// A decoded HEPv3 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Original source address and port (chunks 0x03/0x05 and 0x07).
    pub src: Option<SocketAddr>,
    /// Original destination address and port (chunks 0x04/0x06 and 0x08).
    pub dst: Option<SocketAddr>,
    /// IP protocol (17 UDP, 6 TCP, 132 SCTP; chunk 0x02).
    pub ip_proto: Option<u8>,
    /// Payload protocol type (1 = SIP; chunk 0x0b).
    pub proto_type: Option<u8>,
    /// Capture agent ID (chunk 0x0c).
    pub capture_id: Option<u32>,
    /// Capture time, seconds and microseconds (chunks 0x09, 0x0a).
    pub time: Option<(u32, u32)>,
    /// The authentication key (chunk 0x0e), plain text.
    pub auth_key: Option<&'a [u8]>,
    /// Correlation ID (chunk 0x11).
    pub correlation: Option<&'a [u8]>,
    /// The captured message (chunk 0x0f, or 0x10 inflated).
    pub payload: Cow<'a, [u8]>,
}

/// Length of the HEPv3 packet at the front of a stream buffer: `Ok(None)` if more bytes are
/// needed. Used to frame HEP over TCP.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, HepError> {
    if buf.len() < 6 {
        if !buf.is_empty()
            && !b"HEP3".starts_with(&buf[..buf.len().min(4)])
            && !b"EEP3".starts_with(&buf[..buf.len().min(4)])
        {
            return Err(HepError::NotHep3);
        }
        return Ok(None);
    }
    if &buf[..4] != b"HEP3" && &buf[..4] != b"EEP3" {
        return Err(HepError::NotHep3);
    }
    let total = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    if total < 6 {
        return Err(HepError::BadLength);
    }
    Ok((buf.len() >= total).then_some(total))
}

/// Decodes one packet. Bytes after the declared total length are ignored.
pub fn decode(buf: &[u8]) -> Result<Packet<'_>, HepError> {
    let total = frame_len(buf)?.ok_or(HepError::BadLength)?;
    let mut rest = &buf[6..total];
    let mut p = Packet {
        src: None,
        dst: None,
        ip_proto: None,
        proto_type: None,
        capture_id: None,
        time: None,
        auth_key: None,
        correlation: None,
        payload: Cow::Borrowed(&[]),
    };
    let mut src_ip: Option<IpAddr> = None;
    let mut dst_ip: Option<IpAddr> = None;
    let (mut src_port, mut dst_port) = (None, None);
    let (mut secs, mut micros) = (None, None);
    let mut payload: Option<Cow<'_, [u8]>> = None;
    while !rest.is_empty() {
        let header = rest.get(..6).ok_or(HepError::TruncatedChunk)?;
        let vendor = u16::from_be_bytes([header[0], header[1]]);
        let kind = u16::from_be_bytes([header[2], header[3]]);
        let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
        if len < 6 {
            return Err(HepError::TruncatedChunk);
        }
        let body = rest.get(6..len).ok_or(HepError::TruncatedChunk)?;
        rest = &rest[len..];
        if vendor != 0 {
            continue;
        }
        let exact = |n: usize| {
            if body.len() == n {
                Ok(body)
            } else {
                Err(HepError::BadChunkSize(kind))
            }
        };
        match kind {
            0x02 => p.ip_proto = Some(exact(1)?[0]),
            0x03 => src_ip = Some(IpAddr::V4(Ipv4Addr::from(array4(exact(4)?)))),
            0x04 => dst_ip = Some(IpAddr::V4(Ipv4Addr::from(array4(exact(4)?)))),
            0x05 => src_ip = Some(IpAddr::V6(Ipv6Addr::from(array16(exact(16)?)))),
            0x06 => dst_ip = Some(IpAddr::V6(Ipv6Addr::from(array16(exact(16)?)))),
            0x07 => src_port = Some(u16::from_be_bytes([exact(2)?[0], body[1]])),
            0x08 => dst_port = Some(u16::from_be_bytes([exact(2)?[0], body[1]])),
            0x09 => secs = Some(u32::from_be_bytes(array4(exact(4)?))),
            0x0a => micros = Some(u32::from_be_bytes(array4(exact(4)?))),
            0x0b => p.proto_type = Some(exact(1)?[0]),
            0x0c => p.capture_id = Some(u32::from_be_bytes(array4(exact(4)?))),
            0x0e => p.auth_key = Some(body),
            0x0f => payload = Some(Cow::Borrowed(body)),
            0x10 => payload = Some(Cow::Owned(inflate(body)?)),
            0x11 => p.correlation = Some(body),
            _ => {}
        }
    }
    p.src = src_ip
        .zip(src_port)
        .map(|(ip, port)| SocketAddr::new(ip, port));
    p.dst = dst_ip
        .zip(dst_port)
        .map(|(ip, port)| SocketAddr::new(ip, port));
    p.time = secs.map(|s| (s, micros.unwrap_or(0)));
    p.payload = payload
        .filter(|p| !p.is_empty())
        .ok_or(HepError::NoPayload)?;
    Ok(p)
}

fn array4(b: &[u8]) -> [u8; 4] {
    let mut a = [0; 4];
    a.copy_from_slice(&b[..4]);
    a
}

fn array16(b: &[u8]) -> [u8; 16] {
    let mut a = [0; 16];
    a.copy_from_slice(&b[..16]);
    a
}

fn inflate(body: &[u8]) -> Result<Vec<u8>, HepError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_INFLATED as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| HepError::BadGzip)?;
    if out.len() > MAX_INFLATED {
        return Err(HepError::BadGzip);
    }
    Ok(out)
}

/// Builds a HEPv3 packet carrying a SIP message: used by tests, the load generator and examples.
pub fn encode(
    src: SocketAddr,
    dst: SocketAddr,
    time: (u32, u32),
    capture_id: u32,
    auth_key: Option<&[u8]>,
    sip: &[u8],
) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&((body.len() + 6) as u16).to_be_bytes());
        out.extend_from_slice(body);
    }
    let mut out = b"HEP3\0\0".to_vec();
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            chunk(&mut out, 0x01, &[2]);
            chunk(&mut out, 0x03, &s.octets());
            chunk(&mut out, 0x04, &d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            chunk(&mut out, 0x01, &[10]);
            chunk(&mut out, 0x05, &v6(s));
            chunk(&mut out, 0x06, &v6(d));
        }
    }
    chunk(&mut out, 0x02, &[17]);
    chunk(&mut out, 0x07, &src.port().to_be_bytes());
    chunk(&mut out, 0x08, &dst.port().to_be_bytes());
    chunk(&mut out, 0x09, &time.0.to_be_bytes());
    chunk(&mut out, 0x0a, &time.1.to_be_bytes());
    chunk(&mut out, 0x0b, &[1]);
    chunk(&mut out, 0x0c, &capture_id.to_be_bytes());
    if let Some(key) = auth_key {
        chunk(&mut out, 0x0e, key);
    }
    chunk(&mut out, 0x0f, sip);
    let total = (out.len() as u16).to_be_bytes();
    out[4..6].copy_from_slice(&total);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        encode(
            "10.0.0.5:5060".parse().expect("addr"),
            "10.0.0.20:5062".parse().expect("addr"),
            (1_700_000_000, 42),
            101,
            Some(b"s3cret"),
            b"OPTIONS sip:a@b SIP/2.0\r\n\r\n",
        )
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let p = decode(&bytes).expect("valid");
        assert_eq!(p.src, Some("10.0.0.5:5060".parse().expect("addr")));
        assert_eq!(p.dst, Some("10.0.0.20:5062".parse().expect("addr")));
        assert_eq!(
            (p.capture_id, p.proto_type, p.ip_proto),
            (Some(101), Some(1), Some(17))
        );
        assert_eq!(p.auth_key, Some(&b"s3cret"[..]));
        assert_eq!(&*p.payload, b"OPTIONS sip:a@b SIP/2.0\r\n\r\n");
        assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())));
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            let mut short = bytes[..cut].to_vec();
            // Keep the declared total consistent with what is present to reach chunk parsing.
            if short.len() >= 6 {
                let n = (short.len() as u16).to_be_bytes();
                short[4..6].copy_from_slice(&n);
            }
            let _ = decode(&short);
        }
    }

    #[test]
    fn malformed_chunks() {
        let mut zero = b"HEP3\0\x0c\0\0\0\x0f\0\0".to_vec();
        assert_eq!(decode(&zero), Err(HepError::TruncatedChunk));
        zero[11] = 0x06;
        assert_eq!(decode(&zero), Err(HepError::NoPayload));
        let short_v4 = b"HEP3\0\x0f\0\0\0\x03\0\x08\x0a\0".to_vec();
        let mut short_v4 = short_v4;
        short_v4.push(1);
        assert_eq!(decode(&short_v4), Err(HepError::BadChunkSize(3)));
        let vendor = b"HEP3\0\x14\0\x01\0\x03\0\x07\xff\0\0\0\x0f\0\x07X";
        assert_eq!(
            &*decode(vendor).expect("vendor chunk skipped").payload,
            b"X"
        );
        assert_eq!(decode(b"\x03\x10"), Err(HepError::NotHep3));
        assert_eq!(decode(b"HEP3\0\x40\0\0"), Err(HepError::BadLength));
    }

    #[test]
    fn gzip_payload_and_bomb() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n")
            .expect("write");
        let body = gz.finish().expect("gzip");
        let mut pkt = b"HEP3\0\0".to_vec();
        pkt.extend_from_slice(&[0, 0, 0, 0x10]);
        pkt.extend_from_slice(&((body.len() + 6) as u16).to_be_bytes());
        pkt.extend_from_slice(&body);
        let total = (pkt.len() as u16).to_be_bytes();
        pkt[4..6].copy_from_slice(&total);
        assert_eq!(
            &*decode(&pkt).expect("gzip").payload,
            b"OPTIONS sip:a@b SIP/2.0\r\n\r\n"
        );

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![b'a'; MAX_INFLATED * 4]).expect("write");
        let bomb = gz.finish().expect("gzip");
        let mut pkt = b"HEP3\0\0".to_vec();
        pkt.extend_from_slice(&[0, 0, 0, 0x10]);
        pkt.extend_from_slice(&((bomb.len() + 6) as u16).to_be_bytes());
        pkt.extend_from_slice(&bomb);
        let total = (pkt.len() as u16).to_be_bytes();
        pkt[4..6].copy_from_slice(&total);
        assert_eq!(decode(&pkt), Err(HepError::BadGzip));
    }
}
