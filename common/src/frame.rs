//! The frame format spoken on the shipper's Unix stream socket.
//!
//! A producer writes frames; the shipper answers each with an ack once it has taken responsibility
//! for the frame's points (they were accepted by the backend, or — once the spool exists — written and
//! fsynced to it). Producers keep every frame until its ack arrives and resend the unacknowledged
//! ones after a reconnect, so a shipper killed with -9 loses nothing.
//!
//! # Wire layout
//! Every message, in both directions, is a 4-byte **big-endian** length `N` followed by `N` bytes of
//! payload; `N` is at most [`MAX_FRAME_BYTES`] (16 MiB). Payloads are bincode 2 with *fixed-width
//! little-endian integers* (`config::standard().with_fixed_int_encoding()`), which a program in any
//! language can write by hand:
//!
//! | type | encoding |
//! |---|---|
//! | `u8` `u16` `u32` `u64` `i64` | 1, 2, 4, 8, 8 bytes little-endian |
//! | `f64` | 8 bytes, IEEE 754 little-endian |
//! | string | `u64` byte length, then UTF-8 bytes |
//! | list | `u64` element count, then the elements |
//! | enum | `u32` variant index, then the variant's fields |
//!
//! Producer → shipper payload (`Frame`), fields in this order:
//! `version: u16` (= [`PROTOCOL_VERSION`], always the first two bytes), `sender: string`,
//! `seq: u64` (chosen by the producer, echoed in the ack), `points: list of Point`, where a Point is
//! `name: string, timestamp: u64 (unix s), value: enum {0: Int(i64), 1: Float(f64)},
//! check_type: string, style: enum {0: Stack, 1: Rate}, tags: list of (key: string, value: string)`.
//!
//! Shipper → producer payload (`Ack`): `version: u16, seq: u64, status: u8` where status 0 means
//! delivered (or safely stored), 1 rejected by the backend as invalid (retrying cannot help),
//! 2 dropped by the shipper because its bounded queue was full. In all three cases the producer
//! forgets the frame.
//!
//! Example: frame version 1 from sender `"c"`, seq 7, one point `x` at 1700000000, `Int(5)`, type
//! `"s"`, stack, no tags (payload 77 bytes):
//! ```text
//! 00 00 00 4d  01 00  01 00 00 00 00 00 00 00 63  07 00 00 00 00 00 00 00
//! 01 00 00 00 00 00 00 00  01 00 00 00 00 00 00 00 78  00 f1 53 65 00 00 00 00
//! 00 00 00 00 05 00 00 00 00 00 00 00  01 00 00 00 00 00 00 00 73  00 00 00 00
//! 00 00 00 00 00 00 00 00
//! ```
//! and its ack: `00 00 00 0b  01 00  07 00 00 00 00 00 00 00  00`.
//!
//! A frame longer than 16 MiB, of another version, or whose payload does not decode exactly is a
//! protocol error: the shipper logs the peer and closes that connection only.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::point::Point;

pub const PROTOCOL_VERSION: u16 = 1;
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Decoding never allocates more than this for what a payload claims (a list claiming 2^60
/// elements fails instead of exhausting memory).
const DECODE_LIMIT: usize = 4 * MAX_FRAME_BYTES;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub version: u16,
    pub sender: String,
    pub seq: u64,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub version: u16,
    pub seq: u64,
    pub status: u8,
}

pub const ACK_DELIVERED: u8 = 0;
pub const ACK_REJECTED: u8 = 1;
pub const ACK_DROPPED: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("unsupported protocol version {0} (this shipper speaks {PROTOCOL_VERSION})")]
    Version(u16),
    #[error("payload does not decode: {0}")]
    Decode(String),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_fixed_int_encoding().with_little_endian().with_limit::<DECODE_LIMIT>()
}

fn encode_message<T: Serialize>(message: &T, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    // Serializing plain structs into a Vec cannot fail: no I/O, no size limit on encode.
    if let Err(e) = bincode::serde::encode_into_std_write(message, out, bincode_config()) {
        unreachable!("bincode encoding into a Vec failed: {e}");
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

impl Frame {
    pub fn new(sender: &str, seq: u64, points: Vec<Point>) -> Frame {
        Frame { version: PROTOCOL_VERSION, sender: sender.to_string(), seq, points }
    }

    /// Appends the length-prefixed frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_message(self, out)
    }

    /// Appends the length-prefixed frame of `points` to `out`, the bytes [`Frame::encode`] gives,
    /// from borrowed points (a relay forwarding a batch as it is).
    pub fn encode_borrowed(sender: &str, seq: u64, points: &[Point], out: &mut Vec<u8>) {
        #[derive(Serialize)]
        struct Borrowed<'a> {
            version: u16,
            sender: &'a str,
            seq: u64,
            points: &'a [Point],
        }
        encode_message(&Borrowed { version: PROTOCOL_VERSION, sender, seq, points }, out)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes one payload (without its length prefix).
    pub fn decode(payload: &[u8]) -> Result<Frame, FrameError> {
        let mut points = Vec::new();
        let head = Frame::decode_reusing(payload, &mut points, &mut Vec::new())?;
        Ok(Frame { version: PROTOCOL_VERSION, sender: head.sender.to_owned(), seq: head.seq, points })
    }

    /// Decodes one payload's points onto the end of `out`, as [`Frame::decode`] would, but into
    /// points taken from the end of `spare` when it has some: their strings and tag lists are
    /// written over, so a shipper that hands its sent points back here allocates nothing per
    /// point. On an error `out` may hold some of the payload's points, which the caller drops.
    pub fn decode_reusing<'a>(
        payload: &'a [u8],
        out: &mut Vec<Point>,
        spare: &mut Vec<Point>,
    ) -> Result<FrameHead<'a>, FrameError> {
        check_version(payload)?;
        Cursor::new(payload).frame(Some((out, spare)))
    }
}

/// What [`Frame::check`] learns of a payload without decoding its points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead<'a> {
    pub sender: &'a str,
    pub seq: u64,
    pub points: usize,
}

impl Frame {
    /// Checks that `payload` decodes exactly (as [`Frame::decode`] would) without allocating
    /// anything. The shipper's connection threads check frames and leave the decoding to one
    /// thread, so that every point is allocated by the thread whose allocator takes it back.
    pub fn check(payload: &[u8]) -> Result<FrameHead<'_>, FrameError> {
        check_version(payload)?;
        Cursor::new(payload).frame(None)
    }
}

impl Ack {
    pub fn new(seq: u64, status: u8) -> Ack {
        Ack { version: PROTOCOL_VERSION, seq, status }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_message(self, out)
    }

    pub fn decode(payload: &[u8]) -> Result<Ack, FrameError> {
        check_version(payload)?;
        decode_exact(payload)
    }
}

fn check_version(payload: &[u8]) -> Result<(), FrameError> {
    let Some(bytes) = payload.get(..2) else {
        return Err(FrameError::Decode("payload shorter than its version field".into()));
    };
    let version = u16::from_le_bytes([bytes[0], bytes[1]]);
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version(version));
    }
    Ok(())
}

fn decode_exact<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (value, used) =
        bincode::serde::decode_from_slice(payload, bincode_config()).map_err(|e| FrameError::Decode(e.to_string()))?;
    if used != payload.len() {
        return Err(FrameError::Decode(format!("{} trailing bytes", payload.len() - used)));
    }
    Ok(value)
}

/// Encodes a list of points in the frame encoding (no length prefix), for the shipper's spool.
pub fn encode_points(points: &[Point], out: &mut Vec<u8>) {
    if let Err(e) = bincode::serde::encode_into_std_write(points, out, bincode_config()) {
        unreachable!("bincode encoding into a Vec failed: {e}");
    }
}

pub fn decode_points(bytes: &[u8]) -> Result<Vec<Point>, FrameError> {
    let mut c = Cursor::new(bytes);
    let mut points = Vec::new();
    match c.points(Some((&mut points, &mut Vec::new()))).and_then(|_| c.end()) {
        Some(()) => Ok(points),
        None => Err(c.error()),
    }
}

/// The smallest encoded point: empty name and type, no tags (8 + 8 + 4 + 8 + 8 + 4 + 8 bytes).
const MIN_POINT_BYTES: usize = 48;

/// Where a walk puts the points it decodes, and the points whose allocations it may reuse.
type Build<'b> = Option<(&'b mut Vec<Point>, &'b mut Vec<Point>)>;

/// Why a walk stopped, kept in the cursor: the walk's own steps return `Option`s that fit in
/// registers (a `Result` carrying a [`FrameError`] was written through memory at every string,
/// a good part of a connection thread's time), and the message is made once, at the end.
#[derive(Debug)]
enum Stop {
    Short { need: usize, left: usize },
    Length { n: u64, left: usize },
    Utf8(std::str::Utf8Error),
    Variant { what: &'static str, found: u32 },
    Trailing(usize),
}

impl From<Stop> for FrameError {
    fn from(stop: Stop) -> FrameError {
        FrameError::Decode(match stop {
            Stop::Short { need, left } => format!("needs {need} more bytes, {left} left"),
            Stop::Length { n, left } => format!("a length of {n} does not fit in the {left} bytes left"),
            Stop::Utf8(e) => format!("string is not UTF-8: {e}"),
            Stop::Variant { what, found } => format!(
                "{what} variant {found} ({})",
                match what {
                    "value" => "expected 0 Int or 1 Float",
                    _ => "expected 0 Stack or 1 Rate",
                }
            ),
            Stop::Trailing(n) => format!("{n} trailing bytes"),
        })
    }
}

/// Decodes the layout above by hand, for the hot path: the shipper checks every frame on its
/// connection thread and decodes it on the batcher, and going through serde's visitors cost more
/// than the rest of the decode. The property tests below check it against bincode on arbitrary
/// frames and arbitrary bytes.
struct Cursor<'a> {
    rest: &'a [u8],
    stop: Option<Stop>,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { rest: bytes, stop: None }
    }

    /// `None`, with the reason kept for [`Cursor::error`].
    #[cold]
    fn stop<T>(&mut self, stop: Stop) -> Option<T> {
        self.stop = Some(stop);
        None
    }

    fn error(&mut self) -> FrameError {
        self.stop.take().map(FrameError::from).unwrap_or_else(|| FrameError::Decode("does not decode".into()))
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return self.stop(Stop::Short { need: n, left: self.rest.len() });
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(head)
    }

    #[inline(always)]
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        match self.rest.split_first_chunk::<N>() {
            Some((head, rest)) => {
                self.rest = rest;
                Some(*head)
            }
            None => self.stop(Stop::Short { need: N, left: self.rest.len() }),
        }
    }

    #[inline(always)]
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.array()?))
    }

    #[inline(always)]
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }

    #[inline(always)]
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }

    /// A length that must fit in what is left (each element takes at least `MIN` bytes).
    #[inline(always)]
    fn len<const MIN: usize>(&mut self) -> Option<usize> {
        let n = self.u64()?;
        if n > (self.rest.len() / MIN) as u64 {
            return self.stop(Stop::Length { n, left: self.rest.len() });
        }
        Some(n as usize)
    }

    #[inline(always)]
    fn str(&mut self) -> Option<&'a str> {
        let n = self.len::<1>()?;
        let bytes = self.take(n)?;
        if bytes.is_ascii() {
            // SAFETY: ASCII bytes are valid UTF-8. Names and tags are nearly always ASCII, and
            // checking that inline costs a fraction of a call to the general validation.
            return Some(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        match std::str::from_utf8(bytes) {
            Ok(s) => Some(s),
            Err(e) => self.stop(Stop::Utf8(e)),
        }
    }

    /// The whole payload after its version: one walk for [`Frame::decode`] (`build`: the points
    /// go onto its first vector, reusing those of the second) and [`Frame::check`] (`None`:
    /// nothing allocated), so that the two accept exactly the same bytes.
    fn frame(&mut self, build: Build<'_>) -> Result<FrameHead<'a>, FrameError> {
        let walked = (|| {
            self.u16()?;
            let sender = self.str()?;
            let seq = self.u64()?;
            let n = self.points(build)?;
            self.end()?;
            Some(FrameHead { sender, seq, points: n })
        })();
        walked.ok_or_else(|| self.error())
    }

    /// The count of points and, with `build`, the points.
    fn points(&mut self, mut build: Build<'_>) -> Option<usize> {
        let n = self.len::<MIN_POINT_BYTES>()?;
        match &mut build {
            Some((out, spare)) => {
                out.reserve(n);
                for _ in 0..n {
                    let mut p = spare.pop().unwrap_or_else(|| Point::int(String::new(), 0, 0, ""));
                    self.point(Some(&mut p))?;
                    out.push(p);
                }
            }
            None => {
                for _ in 0..n {
                    self.point(None)?;
                }
            }
        }
        Some(n)
    }

    /// One point, written over `into` (its strings and tag list keep their allocations) when given.
    #[inline(always)]
    fn point(&mut self, into: Option<&mut Point>) -> Option<()> {
        let name = self.str()?;
        let timestamp = self.u64()?;
        let value = match self.u32()? {
            0 => crate::point::Value::Int(i64::from_le_bytes(self.array()?)),
            1 => crate::point::Value::Float(f64::from_le_bytes(self.array()?)),
            found => return self.stop(Stop::Variant { what: "value", found }),
        };
        let check_type = self.str()?;
        let style = match self.u32()? {
            0 => crate::point::Style::Stack,
            1 => crate::point::Style::Rate,
            found => return self.stop(Stop::Variant { what: "style", found }),
        };
        let n = self.len::<16>()?;
        let Some(p) = into else {
            for _ in 0..n {
                self.str()?;
                self.str()?;
            }
            return Some(());
        };
        fn set(to: &mut String, from: &str) {
            to.clear();
            to.push_str(from);
        }
        set(&mut p.name, name);
        p.timestamp = timestamp;
        p.value = value;
        // Kept when it is the same type (every point of a producer's frame but the first).
        if p.check_type != check_type {
            match &mut p.check_type {
                std::borrow::Cow::Owned(s) => set(s, check_type),
                borrowed => *borrowed = std::borrow::Cow::Owned(check_type.to_string()),
            }
        }
        p.style = style;
        p.tags.truncate(n);
        for i in 0..n {
            let (k, v) = (self.str()?, self.str()?);
            match p.tags.get_mut(i) {
                Some((key, value)) => {
                    set(key, k);
                    set(value, v);
                }
                None => p.tags.push((k.to_owned(), v.to_owned())),
            }
        }
        Some(())
    }

    fn end(&mut self) -> Option<()> {
        if self.rest.is_empty() {
            Some(())
        } else {
            self.stop(Stop::Trailing(self.rest.len()))
        }
    }
}

/// Reads one length-prefixed payload into `buf`. `Ok(false)` is a clean end of stream at a frame
/// boundary.
pub fn read_payload(reader: &mut impl Read, buf: &mut Vec<u8>) -> Result<bool, FrameError> {
    let mut len_bytes = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match reader.read(&mut len_bytes[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    // Not cleared first: `read_exact` writes every byte, and zeroing a reused buffer whole cost
    // a tenth of a connection thread's time (its previous length is kept, only growth is zeroed).
    buf.resize(len, 0);
    reader.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    Ok(true)
}

pub fn write_ack(writer: &mut impl Write, ack: Ack) -> io::Result<()> {
    let mut out = Vec::with_capacity(15);
    ack.encode(&mut out);
    writer.write_all(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::point::{Style, Value};
    use proptest::prelude::*;

    #[test]
    fn frame_bytes_match_the_documented_example() {
        let frame = Frame::new("c", 7, vec![Point::int("x", 1700000000, 5, "s")]);
        let bytes = frame.to_bytes();
        let expected: Vec<u8> = [
            &[0, 0, 0, 0x4d][..],
            &[1, 0],
            &[1, 0, 0, 0, 0, 0, 0, 0, b'c'],
            &[7, 0, 0, 0, 0, 0, 0, 0],
            &[1, 0, 0, 0, 0, 0, 0, 0],
            &[1, 0, 0, 0, 0, 0, 0, 0, b'x'],
            &[0x00, 0xf1, 0x53, 0x65, 0, 0, 0, 0],
            &[0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0],
            &[1, 0, 0, 0, 0, 0, 0, 0, b's'],
            &[0, 0, 0, 0],
            &[0, 0, 0, 0, 0, 0, 0, 0],
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(Frame::decode(&bytes[4..]).unwrap(), frame);
    }

    #[test]
    fn ack_bytes_match_the_documented_example() {
        let mut out = Vec::new();
        Ack::new(7, ACK_DELIVERED).encode(&mut out);
        assert_eq!(out, [0, 0, 0, 0x0b, 1, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn unknown_version_is_refused_before_decoding() {
        let mut bytes = Frame::new("c", 1, vec![]).to_bytes();
        bytes[4] = 9;
        assert!(matches!(Frame::decode(&bytes[4..]), Err(FrameError::Version(9))));
    }

    #[test]
    fn oversized_length_is_refused_without_reading_it() {
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let mut buf = Vec::new();
        assert!(matches!(read_payload(&mut input, &mut buf), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn truncated_frame_is_an_error_and_clean_eof_is_not() {
        let bytes = Frame::new("c", 1, vec![]).to_bytes();
        let mut buf = Vec::new();
        let mut cut: &[u8] = &bytes[..bytes.len() - 1];
        assert!(matches!(read_payload(&mut cut, &mut buf), Err(FrameError::Truncated)));
        let mut empty: &[u8] = &[];
        assert!(!read_payload(&mut empty, &mut buf).unwrap());
    }

    #[test]
    fn huge_claimed_list_fails_without_allocating() {
        // version 1, sender "" , seq 0, points: count 2^60
        let mut payload = vec![1, 0];
        payload.extend_from_slice(&0u64.to_le_bytes());
        payload.extend_from_slice(&0u64.to_le_bytes());
        payload.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(matches!(Frame::decode(&payload), Err(FrameError::Decode(_))));
    }

    fn arb_point() -> impl Strategy<Value = Point> {
        (
            ".{0,20}",
            any::<u64>(),
            prop_oneof![any::<i64>().prop_map(Value::Int), any::<f64>().prop_map(Value::Float)],
            ".{0,10}",
            any::<bool>(),
            proptest::collection::vec((".{0,8}", ".{0,8}"), 0..4),
        )
            .prop_map(|(name, timestamp, value, check_type, rate, tags)| Point {
                name,
                timestamp,
                value,
                check_type: check_type.into(),
                style: if rate { Style::Rate } else { Style::Stack },
                tags,
            })
    }

    proptest! {
        #[test]
        fn frames_round_trip(sender in ".{0,16}", seq in any::<u64>(), points in proptest::collection::vec(arb_point(), 0..8)) {
            let frame = Frame::new(&sender, seq, points);
            let bytes = frame.to_bytes();
            let mut reader: &[u8] = &bytes;
            let mut buf = Vec::new();
            prop_assert!(read_payload(&mut reader, &mut buf).unwrap());
            let back = Frame::decode(&buf).unwrap();
            // NaN != NaN: compare the encodings instead
            prop_assert_eq!(back.to_bytes(), bytes);
        }

        /// The hand decoder accepts exactly what bincode accepts, with the same result, on valid
        /// frames and on frames with a byte changed or cut short.
        #[test]
        fn hand_decoder_agrees_with_bincode(
            points in proptest::collection::vec(arb_point(), 0..6),
            at in any::<usize>(),
            xor in any::<u8>(),
            cut in any::<usize>(),
            mode in 0u8..3,
        ) {
            let mut payload = Frame::new("sender", 42, points).to_bytes().split_off(4);
            match mode {
                1 => { let i = at % payload.len(); payload[i] ^= xor; }
                2 => { payload.truncate(cut % (payload.len() + 1)); }
                _ => {}
            }
            let by_hand = Frame::decode(&payload).map(|f| f.to_bytes());
            let checked = Frame::check(&payload);
            prop_assert_eq!(checked.is_ok(), by_hand.is_ok());
            if let (Ok(head), Ok(frame)) = (checked, Frame::decode(&payload)) {
                prop_assert_eq!((head.sender, head.seq, head.points), (frame.sender.as_str(), frame.seq, frame.points.len()));
            }
            let by_bincode = check_version(&payload).and_then(|()| decode_exact::<Frame>(&payload)).map(|f| f.to_bytes());
            prop_assert_eq!(by_hand.is_ok(), by_bincode.is_ok(), "{:?} vs {:?}", by_hand.as_ref().err(), by_bincode.as_ref().err());
            if let (Ok(a), Ok(b)) = (by_hand, by_bincode) {
                prop_assert_eq!(a, b);
            }
            let list = {
                let mut out = Vec::new();
                encode_points(&[Point::int("x", 1, 2, "t").with_tag("k", "v")], &mut out);
                out
            };
            prop_assert_eq!(decode_points(&list).map(|p| p.len()).ok(), Some(1));
        }

        /// Points decoded over reused ones (longer or shorter strings, more or fewer tags) are the
        /// points a fresh decode gives, appended after what `out` held.
        #[test]
        fn decoding_over_spare_points_gives_what_a_fresh_decode_gives(
            points in proptest::collection::vec(arb_point(), 0..6),
            mut spare in proptest::collection::vec(arb_point(), 0..6),
        ) {
            let payload = Frame::new("s", 3, points).to_bytes().split_off(4);
            let mut out = vec![Point::int("before", 1, 1, "t")];
            let head = Frame::decode_reusing(&payload, &mut out, &mut spare).unwrap();
            prop_assert_eq!(out.remove(0), Point::int("before", 1, 1, "t"));
            prop_assert_eq!(Frame::new(head.sender, head.seq, out).to_bytes(), Frame::decode(&payload).unwrap().to_bytes());
        }

        #[test]
        fn arbitrary_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Frame::decode(&payload);
            let _ = Ack::decode(&payload);
        }
    }
}
