//! Credentials of the HTTP input, checked as InfluxDB 1.x and OpenTSDB clients send them: Basic
//! auth (`Authorization: Basic base64(user:password)`), InfluxDB's `?u=USER&p=PASSWORD` and
//! `Authorization: Token USER:PASSWORD`, or a bearer token (`Authorization: Bearer TOKEN`, also
//! taken as `Token TOKEN` as InfluxDB 2 clients send it). Pure: the caller passes the header and
//! the URL, and answers 401 for anything but [`Verdict::Allowed`].
//!
//! Secrets are compared in time independent of where they differ, and nothing here logs.

use base64::Engine;
use puypuy_common::config::relay::HttpAuth;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No credentials, or none that parse: InfluxDB answers "unable to parse authentication credentials".
    Missing,
    /// Credentials that match no user or token: InfluxDB answers "authorization failed".
    Wrong,
}

/// Whether `given` equals the secret `expected`, in a time that depends on neither where they
/// differ nor whether their lengths do (only on the length of what was given): every given byte
/// is compared, with the secret read round and round when it is shorter. Every input that checks
/// a secret (HTTP users and tokens, the frames input's tokens, the Prometheus page's `apikey`)
/// uses it.
pub(crate) fn same_secret(expected: &[u8], given: &[u8]) -> bool {
    if expected.is_empty() {
        return given.is_empty();
    }
    let differ = given
        .iter()
        .enumerate()
        .fold(u8::from(expected.len() != given.len()), |acc, (i, b)| acc | (expected[i % expected.len()] ^ b));
    differ == 0
}

fn same(expected: &str, given: &str) -> bool {
    same_secret(expected.as_bytes(), given.as_bytes())
}

fn user_matches(auth: &HttpAuth, user: &str, pass: &str) -> bool {
    auth.users.iter().fold(false, |found, (u, p)| found | (same(u, user) & same(p, pass)))
}

fn token_matches(auth: &HttpAuth, token: &str) -> bool {
    auth.tokens.iter().fold(false, |found, t| found | same(t, token))
}

/// `%XX` and `+` decoded, as a query string carries a password.
fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(url: &str, key: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')).map(percent_decode)
}

/// Whether a request with this `Authorization` header (if any) and URL may write.
pub fn check(auth: &HttpAuth, authorization: Option<&str>, url: &str) -> Verdict {
    if auth.is_open() {
        return Verdict::Allowed;
    }
    if let Some(header) = authorization.map(str::trim) {
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let rest = rest.trim();
        return match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
                    return Verdict::Missing;
                };
                let text = String::from_utf8_lossy(&decoded);
                match text.split_once(':') {
                    Some((user, pass)) if user_matches(auth, user, pass) => Verdict::Allowed,
                    Some(_) => Verdict::Wrong,
                    None => Verdict::Missing,
                }
            }
            "bearer" if !rest.is_empty() => match token_matches(auth, rest) {
                true => Verdict::Allowed,
                false => Verdict::Wrong,
            },
            "token" if !rest.is_empty() => {
                let as_user = rest.split_once(':').is_some_and(|(u, p)| user_matches(auth, u, p));
                match as_user || token_matches(auth, rest) {
                    true => Verdict::Allowed,
                    false => Verdict::Wrong,
                }
            }
            _ => Verdict::Missing,
        };
    }
    match (query_param(url, "u"), query_param(url, "p")) {
        (Some(user), Some(pass)) if user_matches(auth, &user, &pass) => Verdict::Allowed,
        (Some(_), Some(_)) => Verdict::Wrong,
        _ => Verdict::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> HttpAuth {
        HttpAuth { users: vec![("alice".into(), "p@ss:word".into())], tokens: vec!["tok1".into(), "tok2".into()] }
    }

    fn basic(user_pass: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass))
    }

    #[test]
    fn open_when_no_user_or_token_is_configured() {
        assert_eq!(check(&HttpAuth::default(), None, "/write"), Verdict::Allowed);
    }

    #[test]
    fn basic_auth_bearer_and_influx_forms_are_accepted() {
        let a = auth();
        assert_eq!(check(&a, Some(&basic("alice:p@ss:word")), "/write?db=x"), Verdict::Allowed);
        assert_eq!(check(&a, Some("Bearer tok2"), "/api/put"), Verdict::Allowed);
        assert_eq!(check(&a, Some("Token tok1"), "/write"), Verdict::Allowed);
        assert_eq!(check(&a, Some("Token alice:p@ss:word"), "/write"), Verdict::Allowed);
        assert_eq!(check(&a, None, "/write?db=x&u=alice&p=p%40ss%3Aword"), Verdict::Allowed);
    }

    #[test]
    fn wrong_and_missing_credentials_are_told_apart() {
        let a = auth();
        assert_eq!(check(&a, None, "/write?db=x"), Verdict::Missing);
        assert_eq!(check(&a, Some("Basic !!notbase64"), "/write"), Verdict::Missing);
        assert_eq!(check(&a, Some("Digest x"), "/write"), Verdict::Missing);
        assert_eq!(check(&a, Some(&basic("alice:nope")), "/write"), Verdict::Wrong);
        assert_eq!(check(&a, Some(&basic("bob:p@ss:word")), "/write"), Verdict::Wrong);
        assert_eq!(check(&a, Some("Bearer tok3"), "/write"), Verdict::Wrong);
        // A token is not a password and a password is not a token.
        assert_eq!(check(&a, Some(&basic("alice:tok1")), "/write"), Verdict::Wrong);
        assert_eq!(check(&a, Some("Bearer p@ss:word"), "/write"), Verdict::Wrong);
        assert_eq!(check(&a, None, "/write?u=alice&p=x"), Verdict::Wrong);
    }

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decode("a%20b+c%zz%4"), "a b c%zz%4");
    }
}
