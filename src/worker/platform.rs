//! The properties a worker detects about its machine. The config's
//! `[platform]` and `[[platforms]]` add to and override them.

use crate::wire::Props;

/// `os.name`, `os.version`, `os.family`, `os.arch` and `hostname`.
pub fn detect() -> Props {
    let info = os_info::get();
    let mut p = Props::new();
    p.insert("os.name".into(), info.os_type().to_string());
    p.insert("os.version".into(), info.version().to_string());
    p.insert("os.family".into(), std::env::consts::OS.to_string());
    p.insert("os.arch".into(), std::env::consts::ARCH.to_string());
    p.insert("hostname".into(), hostname());
    p
}

/// The machine's host name (uname's node name), or `localhost` when it
/// has none.
pub fn hostname() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().trim().to_string();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn detects_the_documented_properties() {
        let p = super::detect();
        for key in ["os.name", "os.version", "os.family", "os.arch", "hostname"] {
            assert!(p.get(key).is_some_and(|v| !v.is_empty()), "{key} missing");
        }
        assert_eq!(p["os.family"], std::env::consts::OS);
    }
}
