//! What a request must be before it is forwarded, checked on the request as hyper
//! parsed it: one unambiguous host, a body framing that hyper fully undid, and no
//! header an upstream could take for one the gateway controls.
//!
//! HTTP/1.1 reaches the upstream re-serialised by hyper's client, so the upstream sees
//! one framing and CRLF line ends whatever the client sent; these checks cover what
//! survives that rewrite: header names and values, and the host the request names.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Version};

/// The request's host: `:authority` / absolute-form first (it is what HTTP routes on),
/// else the Host header. `name` is lowercase without port or trailing dot; `value` is
/// as sent.
pub(super) struct Host {
    pub name: String,
    pub value: HeaderValue,
}

/// The one host a request names, or why it names none (the 400 message).
///
/// RFC 9112 3.2: a request with no Host, more than one Host line, or a Host that is not
/// `host[:port]` is a 400; an absolute-form target overrides Host. RFC 9113 8.3.1: an
/// HTTP/2 Host naming another host than `:authority` is malformed (two routing keys
/// for one request are how a downgrade to HTTP/1.1 gets confused).
pub(super) fn request_host<B>(req: &Request<B>) -> Result<Host, &'static str> {
    const MISSING: &str = "400 Bad Request: the request names no host\n";
    const SEVERAL: &str = "400 Bad Request: more than one Host header\n";
    const INVALID: &str = "400 Bad Request: the host is not a valid host[:port]\n";
    const CONFLICT: &str = "400 Bad Request: Host and :authority name different hosts\n";
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(SEVERAL);
    }
    let header = header.map(|v| parse_host(v).ok_or(INVALID)).transpose()?;
    let Some(authority) = req.uri().authority() else {
        return header.ok_or(MISSING);
    };
    let value = HeaderValue::from_str(authority.as_str()).map_err(|_| INVALID)?;
    let host = parse_host(&value).ok_or(INVALID)?;
    if req.version() == Version::HTTP_2 && header.is_some_and(|h| h.name != host.name) {
        return Err(CONFLICT);
    }
    Ok(host)
}

fn parse_host(value: &HeaderValue) -> Option<Host> {
    let authority: http::uri::Authority = value.to_str().ok()?.parse().ok()?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    let name = authority.host().trim_end_matches('.').to_ascii_lowercase();
    Some(Host { name, value: value.clone() })
}

/// No Transfer-Encoding, or exactly the one coding `chunked`. hyper refuses a request
/// whose last coding is not `chunked` and undoes `chunked` only; with `gzip, chunked`
/// the body would reach the upstream still compressed, under no Transfer-Encoding.
pub(super) fn transfer_coding_is_chunked_only(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    match codings.next() {
        None => true,
        Some(first) => first.eq_ignore_ascii_case(b"chunked") && codings.next().is_none(),
    }
}

/// Remove headers that only an `_` tells apart from one in `controlled`: CGI, WSGI,
/// PHP and many frameworks read `X_Forwarded_For` and `X-Forwarded-For` alike (both
/// become `HTTP_X_FORWARDED_FOR`), so `X_Forwarded_For: 10.0.0.1` would pose as the
/// client, and `Transfer_Encoding: chunked` beside a Content-Length would give such an
/// upstream two framings. Other names with `_` pass.
pub(super) fn strip_lookalikes(headers: &mut HeaderMap, controlled: &[&[HeaderName]]) {
    if !headers.keys().any(|k| k.as_str().contains('_')) {
        return;
    }
    let lookalikes: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .filter(|k| {
            let dashed = k.as_str().replace('_', "-");
            controlled.iter().flat_map(|set| set.iter()).any(|c| c.as_str() == dashed)
        })
        .cloned()
        .collect();
    for h in lookalikes {
        headers.remove(h);
    }
}

/// True when forwarding failed because the client's own request body failed (a bad
/// chunk size, a connection cut mid-body): hyper's client reports a user error whose
/// cause is the body's `hyper::Error`.
pub(super) fn client_body_failed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_user() && std::error::Error::source(h).is_some_and(|c| c.is::<hyper::Error>()) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).expect("request")
    }

    fn host(version: Version, uri: &str, hosts: &[&str]) -> Result<String, &'static str> {
        request_host(&req(version, uri, hosts)).map(|h| h.name)
    }

    #[test]
    fn one_host_per_request() {
        const H1: Version = Version::HTTP_11;
        const H2: Version = Version::HTTP_2;
        assert_eq!(host(H1, "/", &["Admin.Test.:8443"]), Ok("admin.test".into()));
        // Absolute-form wins over Host (RFC 9112 3.2.2).
        assert_eq!(host(H1, "http://evil.example/", &["admin.test"]), Ok("evil.example".into()));
        assert!(host(H1, "/", &[]).unwrap_err().contains("no host"));
        assert!(host(H1, "/", &["admin.test", "evil.example"]).unwrap_err().contains("more than one"));
        assert!(host(H1, "/", &["admin.test", "admin.test"]).unwrap_err().contains("more than one"));
        assert!(host(H1, "/", &["evil@admin.test"]).unwrap_err().contains("not a valid"));
        assert!(host(H1, "/", &[":443"]).unwrap_err().contains("not a valid"));
        assert!(host(H1, "http://admin.test@evil.example/", &[]).unwrap_err().contains("not a valid"));
        assert_eq!(host(H2, "https://admin.test/", &[]), Ok("admin.test".into()));
        assert_eq!(host(H2, "https://admin.test/", &["ADMIN.test:443"]), Ok("admin.test".into()));
        assert!(host(H2, "https://admin.test/", &["evil.example"]).unwrap_err().contains("different hosts"));
    }

    #[test]
    fn only_the_chunked_coding() {
        let te = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::TRANSFER_ENCODING, HeaderValue::from_str(v).expect("value"));
            }
            transfer_coding_is_chunked_only(&h)
        };
        assert!(te(&[]));
        assert!(te(&["chunked"]));
        assert!(te(&[" CHUNKED "]));
        assert!(!te(&["gzip, chunked"]));
        assert!(!te(&["identity, chunked"]));
        assert!(!te(&["gzip", "chunked"]));
        assert!(!te(&["chunked, chunked"]));
    }

    #[test]
    fn underscore_lookalikes_of_controlled_headers_are_dropped() {
        let mut h = HeaderMap::new();
        for name in [
            "x_forwarded_for",
            "x-forwarded_for",
            "transfer_encoding",
            "content_length",
            "x_session_id",
            "x-forwarded-for",
        ] {
            h.insert(HeaderName::from_bytes(name.as_bytes()).expect("name"), HeaderValue::from_static("1"));
        }
        let forwarding = [HeaderName::from_static("x-forwarded-for")];
        strip_lookalikes(&mut h, &[&forwarding, &[header::TRANSFER_ENCODING, header::CONTENT_LENGTH]]);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["x-forwarded-for", "x_session_id"]);
    }
}
