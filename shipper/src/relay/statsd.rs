//! StatsD lines (<https://github.com/statsd/statsd/blob/master/docs/metric_types.md>) and the
//! DogStatsD tags (<https://docs.datadoghq.com/developers/dogstatsd/datagram_shell/>):
//!
//! ```text
//! api.requests:1|c|@0.1|#env:prod,region:eu
//! api.latency:320|ms
//! queue.depth:+3|g
//! users.online:alice|s
//! ```
//!
//! One line is `NAME:VALUE|TYPE[|@RATE][|#TAGS]`; several `VALUE|TYPE…` may follow one name,
//! separated by `:` (`a:1|c:5|ms`). Types: counter `c`, gauge `g` (`+N`/`-N` is a delta), timer
//! `ms`, histogram `h` and distribution `d` (both timers here), set `s`.
//!
//! The series key is built as the reference daemon (statsd 0.9, `stats.js`) builds it: each tag
//! has its first `;` turned into `_` and its first `:` into `=`, the tags follow the name after
//! `;`, and the whole key is then cleaned (whitespace runs become `_`, `/` becomes `-`, anything
//! outside `A-Z a-z 0-9 _ - . ; =` is removed). Values are read like JavaScript's `Number()`
//! (surrounding whitespace, `0x` hexadecimal). Where the reference would store a value no
//! backend accepts (an infinite value, a sample rate of 0) or a series without a name, the
//! sample is refused instead. Parsing is pure; [`super::statsd_aggregate`] adds samples up.
//!
//! Every received line goes through here, so the separators are found byte by byte (they are
//! ASCII; `str::split(':')` calls `memcmp` per match) and a line that needs no change is borrowed,
//! never copied.

use std::borrow::Cow;

/// What is wrong with a line or one of its values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsdError {
    #[error("no value (expected NAME:VALUE|TYPE)")]
    NoValue,
    #[error("empty metric name")]
    EmptyName,
    #[error("no type after {0:?} (expected VALUE|TYPE)")]
    NoType(String),
    #[error("unknown type {0:?} (expected c, g, ms, h, d or s)")]
    UnknownType(String),
    #[error("invalid value {0:?}")]
    InvalidValue(String),
    #[error("invalid sample rate {0:?} (expected @ and a number above 0)")]
    InvalidSampleRate(String),
}

/// One value of a line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample<'a> {
    /// Adds `value / sample_rate`.
    Counter { value: f64, sample_rate: f64 },
    /// Sets the gauge, or adds to it when `delta`.
    Gauge { value: f64, delta: bool },
    /// One duration (or histogram or distribution value); it counts as `1 / sample_rate` samples.
    Timer { value: f64, sample_rate: f64 },
    /// One member of a set.
    Set { member: &'a str },
}

/// A line whose name was read; its values are read by [`Line::samples`].
#[derive(Debug, Clone, PartialEq)]
pub struct Line<'a> {
    /// The reference daemon's key: `NAME` or `NAME;tag=value;…`.
    pub key: Cow<'a, str>,
    values: &'a str,
}

impl<'a> Line<'a> {
    /// The values of the line, each read on its own: a bad one does not spoil the others (as in
    /// the reference daemon).
    pub fn samples(&self) -> impl Iterator<Item = Result<Sample<'a>, StatsdError>> + 'a {
        fields(self.values, b':').map(parse_sample)
    }
}

/// `text` split at every `separator` as `str::split` splits it; the separator is an ASCII byte,
/// so every piece is whole characters.
fn fields(text: &str, separator: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let t = rest?;
        match t.bytes().position(|b| b == separator) {
            Some(at) => {
                rest = Some(&t[at + 1..]);
                Some(&t[..at])
            }
            None => {
                rest = None;
                Some(t)
            }
        }
    })
}

/// Where the first `|#` of `text` starts (a `#` is rare: `memchr` skips to each one).
fn find_tags(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    memchr::memchr_iter(b'#', bytes).find(|&i| i > 0 && bytes[i - 1] == b'|').map(|i| i - 1)
}

/// Reads the name and tags of one line (without its newline).
pub fn parse_line(line: &str) -> Result<Line<'_>, StatsdError> {
    let (body, tags) = match find_tags(line) {
        Some(at) => {
            let rest = &line[at + 2..];
            // Only what lies between the first `|#` and a second one is read, as in the reference.
            let tags = find_tags(rest).map_or(rest, |end| &rest[..end]);
            (&line[..at], tags)
        }
        None => (line, ""),
    };
    // One pass over the name finds its end and whether it needs cleaning.
    let mut kept_as_is = true;
    let end = body.bytes().position(|b| {
        let colon = b == b':';
        kept_as_is &= colon || KEY_BYTES[usize::from(b)];
        colon
    });
    let end = end.ok_or(StatsdError::NoValue)?;
    let (name, values) = (&body[..end], &body[end + 1..]);
    let key = if tags.is_empty() {
        if kept_as_is {
            Cow::Borrowed(name)
        } else {
            clean_key(name)
        }
    } else {
        let mut raw = String::with_capacity(name.len() + tags.len() + 1);
        raw.push_str(name);
        for tag in tags.split(',') {
            raw.push(';');
            let start = raw.len();
            raw.push_str(tag);
            replace_first(&mut raw, start, ';', '_');
            replace_first(&mut raw, start, ':', '=');
        }
        Cow::Owned(clean_key(&raw).into_owned())
    };
    if key.is_empty() || key.starts_with(';') {
        return Err(StatsdError::EmptyName);
    }
    Ok(Line { key, values })
}

/// The key split into the name and its `tag=value` pairs, for tag-aware backends. A tag without
/// `=` (DogStatsD's bare `production`) gets the value `true`; empty ones are left out.
pub fn split_key(key: &str) -> (&str, Vec<(String, String)>) {
    let mut parts = key.split(';');
    let name = parts.next().unwrap_or_default();
    let tags = parts
        .filter(|t| !t.is_empty())
        .map(|t| match t.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => (k.to_string(), v.to_string()),
            Some((k, _)) if !k.is_empty() => (k.to_string(), "true".to_string()),
            _ => (t.trim_matches('=').to_string(), "true".to_string()),
        })
        .filter(|(k, _)| !k.is_empty())
        .collect();
    (name, tags)
}

fn replace_first(s: &mut String, from: usize, what: char, with: char) {
    if let Some(at) = s[from..].find(what) {
        s.replace_range(from + at..from + at + 1, with.encode_utf8(&mut [0; 4]));
    }
}

/// The bytes a key keeps as they are: `A-Z a-z 0-9 _ - . ; =` (all ASCII).
static KEY_BYTES: [bool; 256] = {
    let mut allowed = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        allowed[b] = c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b';' | b'=');
        b += 1;
    }
    allowed
};

fn allowed_in_key(c: char) -> bool {
    c.is_ascii() && KEY_BYTES[c as usize]
}

/// The reference's `sanitizeKeyName`: whitespace runs to `_`, `/` to `-`, other disallowed
/// characters removed. Borrowed when nothing changes (the common case).
pub fn clean_key(raw: &str) -> Cow<'_, str> {
    if raw.bytes().all(|b| KEY_BYTES[usize::from(b)]) {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut in_space = false;
    for c in raw.chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push('_');
            }
            in_space = true;
            continue;
        }
        in_space = false;
        if c == '/' {
            out.push('-');
        } else if allowed_in_key(c) {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn parse_sample(text: &str) -> Result<Sample<'_>, StatsdError> {
    let mut fields = fields(text, b'|');
    let value = fields.next().unwrap_or_default();
    let kind = fields.next().ok_or_else(|| StatsdError::NoType(text.to_string()))?;
    let sample_rate = match fields.next() {
        None => 1.0,
        Some(rate) => parse_sample_rate(rate)?,
    };
    let number = || match js_number(value) {
        Some(v) if !value.is_empty() && v.is_finite() => Ok(v),
        _ => Err(StatsdError::InvalidValue(value.to_string())),
    };
    let kind = match kind {
        "c" | "g" | "ms" | "h" | "d" | "s" => kind,
        _ => kind.trim(),
    };
    match kind {
        "c" => Ok(Sample::Counter { value: number()?, sample_rate }),
        "g" => Ok(Sample::Gauge { value: number()?, delta: value.starts_with(['+', '-']) }),
        "ms" => match number()? {
            v if v >= 0.0 => Ok(Sample::Timer { value: v, sample_rate }),
            _ => Err(StatsdError::InvalidValue(value.to_string())),
        },
        "h" | "d" => Ok(Sample::Timer { value: number()?, sample_rate }),
        "s" => Ok(Sample::Set { member: if value.is_empty() { "0" } else { value } }),
        other => Err(StatsdError::UnknownType(other.to_string())),
    }
}

/// `@RATE`: the reference accepts `@` and a non-negative number, and then uses the digits and
/// dots at its start (`@0.5e1` is 0.5).
fn parse_sample_rate(field: &str) -> Result<f64, StatsdError> {
    let bad = || StatsdError::InvalidSampleRate(field.to_string());
    let number = field.strip_prefix('@').filter(|n| !n.is_empty()).ok_or_else(bad)?;
    let digits = number.find(|c: char| !(c.is_ascii_digit() || c == '.')).map_or(number, |end| &number[..end]);
    // A rate of digits and dots only (the rule) is read once.
    if digits.len() < number.len() && (number.starts_with('-') || js_number(number).is_none()) {
        return Err(bad());
    }
    match js_number(digits) {
        Some(rate) if !digits.is_empty() && rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(bad()),
    }
}

/// `[+-]DIGITS[.DIGITS]` (or `.DIGITS`) with at most 15 digits in all, read without the float
/// parser: most values are small integers or short fractions. The digits make an integer below
/// 2^53 and 10^k (k ≤ 15) is exact too, so their quotient is the correctly rounded value
/// (Clinger's fast path), the same bits as `str::parse::<f64>`.
fn short_decimal(t: &str) -> Option<f64> {
    let (negative, body) = match t.as_bytes().first()? {
        b'-' => (true, &t.as_bytes()[1..]),
        b'+' => (false, &t.as_bytes()[1..]),
        _ => (false, t.as_bytes()),
    };
    let (mut mantissa, mut digits, mut fraction_digits, mut dot) = (0u64, 0usize, 0usize, false);
    for &b in body {
        match b {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(b - b'0');
                digits += 1;
                fraction_digits += usize::from(dot);
            }
            b'.' if !dot => dot = true,
            _ => return None,
        }
        if digits > 15 {
            return None;
        }
    }
    if digits == 0 {
        return None;
    }
    const POWERS: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];
    let n = mantissa as f64 / POWERS[fraction_digits];
    Some(if negative { -n } else { n })
}

/// JavaScript's `Number(text)` for the forms StatsD clients send: decimal with optional sign,
/// fraction and exponent, `0x`/`0o`/`0b` integers, `Infinity`, surrounding whitespace; blank is 0.
/// `None` where JavaScript gives NaN.
pub fn js_number(text: &str) -> Option<f64> {
    let plain = |b: Option<&u8>| b.is_some_and(u8::is_ascii_graphic);
    let t = match plain(text.as_bytes().first()) && plain(text.as_bytes().last()) {
        true => text,
        false => text.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}'),
    };
    if t.is_empty() {
        return Some(0.0);
    }
    if let Some(v) = short_decimal(t) {
        return Some(v);
    }
    if let [b'0', kind, ..] = t.as_bytes() {
        let radix = match kind {
            b'x' | b'X' => 16,
            b'o' | b'O' => 8,
            b'b' | b'B' => 2,
            _ => 0,
        };
        if radix != 0 {
            let digits = &t[2..];
            if digits.is_empty() {
                return None;
            }
            return digits
                .chars()
                .try_fold(0.0f64, |acc, c| Some(acc * f64::from(radix) + f64::from(c.to_digit(radix)?)));
        }
    }
    match t {
        "Infinity" | "+Infinity" => return Some(f64::INFINITY),
        "-Infinity" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    // Rust also reads "inf", "NaN" and "1_0"-free forms JavaScript refuses; only plain digits get through.
    if !t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')) {
        return None;
    }
    t.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples(line: &str) -> (String, Vec<Result<Sample<'_>, StatsdError>>) {
        let l = parse_line(line).expect("line");
        (l.key.to_string(), l.samples().collect())
    }

    #[test]
    fn reads_each_type() {
        assert_eq!(samples("a.b:1|c").1, vec![Ok(Sample::Counter { value: 1.0, sample_rate: 1.0 })]);
        assert_eq!(samples("a:2.5|c|@0.1").1, vec![Ok(Sample::Counter { value: 2.5, sample_rate: 0.1 })]);
        assert_eq!(samples("a:-3|g").1, vec![Ok(Sample::Gauge { value: -3.0, delta: true })]);
        assert_eq!(samples("a:+3|g").1, vec![Ok(Sample::Gauge { value: 3.0, delta: true })]);
        assert_eq!(samples("a:3|g").1, vec![Ok(Sample::Gauge { value: 3.0, delta: false })]);
        assert_eq!(samples("a:320|ms|@0.5").1, vec![Ok(Sample::Timer { value: 320.0, sample_rate: 0.5 })]);
        assert_eq!(samples("a:-1.5|h").1, vec![Ok(Sample::Timer { value: -1.5, sample_rate: 1.0 })]);
        assert_eq!(samples("a:7|d").1, vec![Ok(Sample::Timer { value: 7.0, sample_rate: 1.0 })]);
        assert_eq!(samples("a:alice|s").1, vec![Ok(Sample::Set { member: "alice" })]);
        assert_eq!(samples("a:|s").1, vec![Ok(Sample::Set { member: "0" })]);
    }

    #[test]
    fn several_values_after_one_name_are_read_apart() {
        let (key, s) = samples("a:1|c:bad|c:5|ms");
        assert_eq!(key, "a");
        assert_eq!(s[0], Ok(Sample::Counter { value: 1.0, sample_rate: 1.0 }));
        assert_eq!(s[1], Err(StatsdError::InvalidValue("bad".into())));
        assert_eq!(s[2], Ok(Sample::Timer { value: 5.0, sample_rate: 1.0 }));
    }

    #[test]
    fn dogstatsd_tags_join_the_key_like_the_reference() {
        assert_eq!(samples("api.req:1|c|#env:prod,region:eu-1").0, "api.req;env=prod;region=eu-1");
        assert_eq!(samples("api.req:1|c|@0.5|#env:prod").1, vec![Ok(Sample::Counter { value: 1.0, sample_rate: 0.5 })]);
        // First `:` of a tag becomes `=`, later ones are removed by the cleaning; bare tags stay.
        assert_eq!(samples("x:1|c|#url:http://h/p,production").0, "x;url=http--h-p;production");
        assert_eq!(
            split_key("x;url=h;production;;a=b=c"),
            ("x", vec![("url".into(), "h".into()), ("production".into(), "true".into()), ("a".into(), "b=c".into())])
        );
    }

    #[test]
    fn keys_are_cleaned_like_the_reference() {
        assert_eq!(clean_key("my app/req  count!"), "my_app-req_count");
        // The name is checked while its end is looked for: only a name that needs it is cleaned.
        assert_eq!(samples("my app/req  count!:1|c").0, "my_app-req_count");
        assert!(matches!(parse_line("plain.name-1_x:1|c").map(|l| l.key), Ok(Cow::Borrowed("plain.name-1_x"))));
        assert!(matches!(clean_key("plain.name-1_x"), Cow::Borrowed(_)));
    }

    #[test]
    fn malformed_lines_and_values_are_refused() {
        assert_eq!(parse_line("no_value"), Err(StatsdError::NoValue));
        assert_eq!(parse_line(":1|c"), Err(StatsdError::EmptyName));
        assert_eq!(parse_line("!!:1|c"), Err(StatsdError::EmptyName));
        fn first(line: &str) -> Result<Sample<'_>, StatsdError> {
            samples(line).1.remove(0)
        }
        assert_eq!(first("a:1"), Err(StatsdError::NoType("1".into())));
        assert_eq!(first("a:1|x"), Err(StatsdError::UnknownType("x".into())));
        assert_eq!(first("a:abc|c"), Err(StatsdError::InvalidValue("abc".into())));
        assert_eq!(first("a:|c"), Err(StatsdError::InvalidValue("".into())));
        assert_eq!(first("a:-1|ms"), Err(StatsdError::InvalidValue("-1".into())));
        assert_eq!(first("a:Infinity|g"), Err(StatsdError::InvalidValue("Infinity".into())));
        assert_eq!(first("a:1|c|0.1"), Err(StatsdError::InvalidSampleRate("0.1".into())));
        assert_eq!(first("a:1|c|@-1"), Err(StatsdError::InvalidSampleRate("@-1".into())));
        assert_eq!(first("a:1|c|@0"), Err(StatsdError::InvalidSampleRate("@0".into())));
    }

    #[test]
    fn numbers_are_read_like_javascript() {
        assert_eq!(js_number(" 12 "), Some(12.0));
        assert_eq!(js_number("0x1f"), Some(31.0));
        assert_eq!(js_number("1e3"), Some(1000.0));
        assert_eq!(js_number(".5"), Some(0.5));
        assert_eq!(js_number("5."), Some(5.0));
        assert_eq!(js_number(""), Some(0.0));
        // Integers take a path of their own; it must agree with the float parser.
        assert_eq!(js_number("-12"), Some(-12.0));
        assert_eq!(js_number("+7"), Some(7.0));
        assert_eq!(js_number("007"), Some(7.0));
        assert!(js_number("-0").is_some_and(|z| z == 0.0 && z.is_sign_negative()));
        assert_eq!(js_number("999999999999999"), Some(999_999_999_999_999.0));
        assert_eq!(js_number("12345678901234567890"), Some(12_345_678_901_234_567_890.0));
        assert_eq!(js_number("-"), None);
        for nan in ["inf", "NaN", "1,5", "0x", "12abc", "1_000"] {
            assert_eq!(js_number(nan), None, "{nan}");
        }
        assert_eq!(parse_sample_rate("@0.5e1"), Ok(0.5), "the reference uses the leading digits only");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let text = String::from_utf8_lossy(&bytes);
            for line in text.split('\n') {
                if let Ok(l) = parse_line(line) {
                    let _ = l.samples().count();
                    let _ = split_key(&l.key);
                }
            }
        }

        #[test]
        fn statsd_shaped_text_never_panics(s in "[a-z.:|@#,;=+\\-0-9 ]{0,60}") {
            if let Ok(l) = parse_line(&s) {
                prop_assert!(!l.key.is_empty());
                let _ = l.samples().count();
            }
        }

        #[test]
        fn fields_split_like_str_split(s in "[a:|]{0,12}") {
            prop_assert_eq!(fields(&s, b':').collect::<Vec<_>>(), s.split(':').collect::<Vec<_>>());
        }

        #[test]
        fn short_decimals_read_like_the_float_parser(sign in "[+-]?", int in "[0-9]{0,9}", fraction in "(\\.[0-9]{0,9})?") {
            let text = format!("{sign}{int}{fraction}");
            prop_assert_eq!(
                short_decimal(&text).map(f64::to_bits),
                text.parse::<f64>().ok().filter(|_| int.len() + fraction.len().saturating_sub(1) <= 15).map(f64::to_bits)
            );
        }

        #[test]
        fn integers_read_like_the_float_parser(sign in "[+-]?", digits in "[0-9]{1,20}") {
            let text = format!("{sign}{digits}");
            prop_assert_eq!(js_number(&text).map(f64::to_bits), text.parse::<f64>().ok().map(f64::to_bits));
        }

        #[test]
        fn valid_counters_round_trip(name in "[a-z][a-z0-9_.]{0,20}", v in -1e9f64..1e9, rate in 0.01f64..1.0) {
            let line = format!("{name}:{v}|c|@{rate}");
            let (key, s) = samples(&line);
            prop_assert_eq!(key, name);
            prop_assert_eq!(s, vec![Ok(Sample::Counter { value: v, sample_rate: rate })]);
        }
    }
}
