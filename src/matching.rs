//! Which worker platform can run which job: the one matching rule, shared by
//! the server (claims, "no worker can run this" warnings) and the worker.
//!
//! A requirement is `property -> pattern`; a pattern is an exact value in
//! which `*` matches any run of characters. A platform satisfies a job when
//! it has every required property with a matching value.

use crate::wire::Props;

/// Whether `value` matches `pattern`, where `*` matches any run of
/// characters (including none) and every other character itself.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    // Classic greedy matching with backtracking to the last star: linear
    // in practice, never exponential.
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, vi));
            pi += 1;
        } else if pi < p.len() && p[pi] == v[vi] {
            pi += 1;
            vi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether one platform satisfies every requirement.
pub fn platform_matches(requirements: &Props, platform: &Props) -> bool {
    requirements.iter().all(|(key, pattern)| {
        platform
            .get(key)
            .is_some_and(|value| glob_match(pattern, value))
    })
}

/// The first platform, in the worker's order, that satisfies the job.
pub fn first_match(requirements: &Props, platforms: &[Props]) -> Option<usize> {
    platforms
        .iter()
        .position(|p| platform_matches(requirements, p))
}

/// The first requirement a platform fails, for explaining why a job waits.
pub fn first_failed<'a>(requirements: &'a Props, platform: &Props) -> Option<(&'a str, &'a str)> {
    requirements
        .iter()
        .find(|(key, pattern)| !platform.get(*key).is_some_and(|v| glob_match(pattern, v)))
        .map(|(k, p)| (k.as_str(), p.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Props {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn globs() {
        assert!(glob_match("linux", "linux"));
        assert!(!glob_match("linux", "linux2"));
        assert!(glob_match("*", ""));
        assert!(glob_match("3.*", "3.12"));
        assert!(!glob_match("3.*", "2.7"));
        assert!(glob_match("*bian", "Debian"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("**", "abc"));
        assert!(!glob_match("", "a"));
    }

    #[test]
    fn every_requirement_must_match() {
        let linux = props(&[("os.family", "linux"), ("os.arch", "x86_64")]);
        assert!(platform_matches(&props(&[]), &linux));
        assert!(platform_matches(&props(&[("os.family", "lin*")]), &linux));
        assert!(!platform_matches(
            &props(&[("os.family", "linux"), ("os.arch", "aarch64")]),
            &linux
        ));
        assert!(!platform_matches(&props(&[("device", "*")]), &linux));
    }

    #[test]
    fn first_platform_in_order_wins() {
        let platforms = vec![
            props(&[("python.version", "3.11")]),
            props(&[("python.version", "3.12")]),
        ];
        assert_eq!(first_match(&props(&[]), &platforms), Some(0));
        assert_eq!(
            first_match(&props(&[("python.version", "3.12")]), &platforms),
            Some(1)
        );
        assert_eq!(
            first_match(&props(&[("python.version", "2.*")]), &platforms),
            None
        );
        assert_eq!(
            first_failed(&props(&[("python.version", "2.*")]), &platforms[0]),
            Some(("python.version", "2.*"))
        );
    }
}
