//! InfluxDB 2: the body is the line protocol of [`super::influxdb`] (timestamps in seconds); what
//! differs is the request
//! (<https://docs.influxdata.com/influxdb/v2/api/#operation/PostWrite>):
//! ```text
//! POST /api/v2/write?org=acme&bucket=puypuy&precision=s HTTP/1.1
//! Authorization: Token s3cr3t
//! Content-Type: text/plain; charset=utf-8
//!
//! sys_load_1,host=web01,type=system value=0.5 1700000000
//! ```
//! The old agent's keys: `organization`, `bucket`, `token` (also `token_file`, `token_env`).

/// The write URL: `address` + `datapoints` (default `/api/v2/write`) with org, bucket and
/// `precision=s`, the names percent-encoded.
pub fn write_url(address: &str, datapoints: &str, organization: &str, bucket: &str) -> String {
    let mut url = format!("{address}{datapoints}");
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str("org=");
    url.push_str(&percent_encode(organization));
    url.push_str("&bucket=");
    url.push_str(&percent_encode(bucket));
    url.push_str("&precision=s");
    url
}

/// The `Authorization` header's value.
pub fn authorization(token: &str) -> String {
    format!("Token {token}")
}

/// RFC 3986 unreserved characters stay, every other byte becomes `%XX`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_carries_org_bucket_and_precision_percent_encoded() {
        assert_eq!(
            write_url("http://127.0.0.1:8086", "/api/v2/write", "my org", "b&1"),
            "http://127.0.0.1:8086/api/v2/write?org=my%20org&bucket=b%261&precision=s"
        );
        assert_eq!(write_url("http://h", "/w?x=1", "o", "b"), "http://h/w?x=1&org=o&bucket=b&precision=s");
        assert_eq!(authorization("t0k"), "Token t0k");
    }
}
