//! The host name as the old agent sent it: the FQDN (Python's `socket.getfqdn()`: the canonical
//! name the resolver gives for `gethostname()`), or the short name with `shorthostname: yes`.

use std::ffi::{CStr, CString};

/// The FQDN, falling back to `gethostname()` when the resolver knows no canonical name.
pub fn fqdn() -> String {
    let short =
        nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into());
    canonical_name(&short).unwrap_or(short)
}

pub fn host_name(short: bool) -> String {
    let name = fqdn();
    if short {
        name.split('.').next().unwrap_or(&name).to_string()
    } else {
        name
    }
}

fn canonical_name(host: &str) -> Option<String> {
    let c_host = CString::new(host).ok()?;
    // SAFETY: hints is zero-initialised as getaddrinfo requires; the result list is freed once.
    unsafe {
        let mut hints: libc::addrinfo = std::mem::zeroed();
        hints.ai_flags = libc::AI_CANONNAME;
        hints.ai_socktype = libc::SOCK_STREAM;
        let mut res: *mut libc::addrinfo = std::ptr::null_mut();
        if libc::getaddrinfo(c_host.as_ptr(), std::ptr::null(), &hints, &mut res) != 0 || res.is_null() {
            return None;
        }
        let name = if (*res).ai_canonname.is_null() {
            None
        } else {
            CStr::from_ptr((*res).ai_canonname).to_str().ok().map(str::to_string)
        };
        libc::freeaddrinfo(res);
        name.filter(|n| !n.is_empty())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_name_has_no_dot() {
        assert!(!super::host_name(true).contains('.'));
        assert!(!super::host_name(false).is_empty());
    }
}
