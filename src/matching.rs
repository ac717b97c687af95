//! Which worker platform can run which job: the one matching rule, shared by
//! the server (claims, explanations) and the CLI.
//!
//! A job's requirements map a property to a condition. On the command line
//! a requirement is one expression (`-p EXPR`); in JSON the key is the
//! property and the value the condition:
//!
//! | expression          | JSON value   | matches when the property         |
//! |---------------------|--------------|-----------------------------------|
//! | `KEY=PATTERN`       | `PATTERN`    | matches; `*` is any run of chars  |
//! | `KEY=A\|B`          | `A\|B`       | matches one of the patterns       |
//! | `KEY>=V` (`>` `<=` `<`) | `>=V`    | compares so                       |
//! | `KEY!=V`            | `!=V`        | is absent or not V                |
//! | `KEY`               | `*`          | is present                        |
//! | `KEY!`              | `!`          | is absent                         |
//!
//! A JSON value that starts with `=` is a plain pattern (`=>x` matches the
//! text `>x`). Values that look like versions (`3.10`, `1.2.9`) compare as
//! versions, other numbers as numbers, the rest as text.

use std::cmp::Ordering;

use crate::wire::Props;

/// One parsed condition on a property.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// One of these patterns (`*` wildcards).
    OneOf(Vec<String>),
    Compare(Op, String),
    /// Absent, or not equal to this.
    NotEqual(String),
    Absent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// A requirement that could not be parsed: what, and where (0-based
/// character position in the text given).
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub text: String,
    pub position: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid requirement {:?}: {} at character {}\n  {}\n  {}^",
            self.text,
            self.message,
            self.position + 1,
            self.text,
            " ".repeat(self.position)
        )
    }
}

impl std::error::Error for ParseError {}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Parses a command-line requirement (`python.version>=3.10`) into the
/// property and its JSON condition value.
pub fn parse_expression(text: &str) -> Result<(String, String), ParseError> {
    let err = |position: usize, message: &str| ParseError {
        text: text.to_string(),
        position,
        message: message.to_string(),
    };
    let chars: Vec<char> = text.chars().collect();
    let key_len = chars.iter().take_while(|c| is_key_char(**c)).count();
    if key_len == 0 {
        return Err(err(
            0,
            "expected a property name (letters, digits, '.', '_', '-')",
        ));
    }
    let key: String = chars[..key_len].iter().collect();
    let rest: String = chars[key_len..].iter().collect();
    let value_at = |op_len: usize| key_len + op_len;
    let (op, value) = if rest.is_empty() {
        return Ok((key, "*".into()));
    } else if let Some(v) = rest.strip_prefix(">=") {
        (">=", v)
    } else if let Some(v) = rest.strip_prefix("<=") {
        ("<=", v)
    } else if let Some(v) = rest.strip_prefix("!=") {
        ("!=", v)
    } else if let Some(v) = rest.strip_prefix('>') {
        (">", v)
    } else if let Some(v) = rest.strip_prefix('<') {
        ("<", v)
    } else if let Some(v) = rest.strip_prefix('=') {
        ("=", v)
    } else if let Some(v) = rest.strip_prefix('!') {
        if !v.is_empty() {
            return Err(err(
                key_len + 1,
                "nothing may follow '!' (KEY! means: KEY is absent)",
            ));
        }
        return Ok((key, "!".into()));
    } else {
        return Err(err(
            key_len,
            "expected an operator (=, !=, <, <=, >, >=, or ! for absent)",
        ));
    };
    if value.is_empty() {
        return Err(err(
            value_at(op.len()),
            &format!("expected a value after '{op}'"),
        ));
    }
    if value.starts_with(['>', '<', '=', '!']) {
        return Err(err(
            value_at(op.len()),
            "a value may not begin with an operator character (one operator too many?)",
        ));
    }
    let json = match op {
        "=" => {
            check_alternatives(value)
                .map_err(|p| err(value_at(1) + p, "empty alternative in A|B"))?;
            // Keep operator-looking patterns literal.
            if value.starts_with(['>', '<', '=']) || value.starts_with("!") {
                format!("={value}")
            } else {
                value.to_string()
            }
        }
        _ => {
            if value.contains('|') {
                let at = value.find('|').unwrap();
                return Err(err(value_at(op.len()) + at, "'|' works only with '='"));
            }
            format!("{op}{value}")
        }
    };
    Ok((key, json))
}

/// A requirement as a user writes it: `python.version>=3.10`,
/// `os.family=linux`, `gpu` (present), `gpu!` (absent).
pub fn display_requirement(key: &str, value: &str) -> String {
    match value {
        "*" => key.to_string(),
        "!" => format!("{key}!"),
        v if v.starts_with(['>', '<', '!']) => format!("{key}{v}"),
        v => format!("{key}={}", v.strip_prefix('=').unwrap_or(v)),
    }
}

/// Position (in chars) of an empty alternative, if any.
fn check_alternatives(value: &str) -> Result<(), usize> {
    let mut pos = 0;
    for alt in value.split('|') {
        if alt.is_empty() {
            return Err(pos);
        }
        pos += alt.chars().count() + 1;
    }
    Ok(())
}

/// Reads a JSON condition value (see the module docs).
pub fn parse_condition(value: &str) -> Result<Condition, String> {
    let nonempty = |v: &str, op: &str| {
        if v.is_empty() {
            Err(format!("expected a value after '{op}' in {value:?}"))
        } else {
            Ok(v.to_string())
        }
    };
    if value == "!" {
        return Ok(Condition::Absent);
    }
    if let Some(v) = value.strip_prefix("!=") {
        return Ok(Condition::NotEqual(nonempty(v, "!=")?));
    }
    for (prefix, op) in [(">=", Op::Ge), ("<=", Op::Le), (">", Op::Gt), ("<", Op::Lt)] {
        if let Some(v) = value.strip_prefix(prefix) {
            return Ok(Condition::Compare(op, nonempty(v, prefix)?));
        }
    }
    let pattern = value.strip_prefix('=').unwrap_or(value);
    if check_alternatives(pattern).is_err() {
        return Err(format!("empty alternative in {value:?}"));
    }
    Ok(Condition::OneOf(
        pattern.split('|').map(str::to_string).collect(),
    ))
}

/// Checks every condition of a requirement map, naming the first bad one.
pub fn validate(requirements: &Props) -> Result<(), String> {
    for (key, value) in requirements {
        if key.is_empty() || !key.chars().all(is_key_char) {
            return Err(format!(
                "platform requirement key {key:?} must be letters, digits, '.', '_' or '-'"
            ));
        }
        parse_condition(value).map_err(|e| format!("platform requirement {key}: {e}"))?;
    }
    Ok(())
}

impl Condition {
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (Condition::Absent, v) => v.is_none(),
            (Condition::NotEqual(x), v) => v != Some(x.as_str()),
            (_, None) => false,
            (Condition::OneOf(patterns), Some(v)) => patterns.iter().any(|p| glob_match(p, v)),
            (Condition::Compare(op, target), Some(v)) => {
                let ord = compare_values(v, target);
                match op {
                    Op::Lt => ord == Ordering::Less,
                    Op::Le => ord != Ordering::Greater,
                    Op::Gt => ord == Ordering::Greater,
                    Op::Ge => ord != Ordering::Less,
                }
            }
        }
    }

    /// The condition as a user would write it after the key.
    pub fn describe(&self) -> String {
        match self {
            Condition::OneOf(p) => format!("={}", p.join("|")),
            Condition::Compare(op, v) => format!("{}{v}", op.text()),
            Condition::NotEqual(v) => format!("!={v}"),
            Condition::Absent => "!".into(),
        }
    }
}

/// Compares two property values: as versions when both look like one
/// (`3.10` > `3.9`), else as numbers when both are, else as text.
pub fn compare_values(a: &str, b: &str) -> Ordering {
    fn version(s: &str) -> Option<Vec<u64>> {
        s.split('.').map(|p| p.parse::<u64>().ok()).collect()
    }
    if let (Some(x), Some(y)) = (version(a), version(b)) {
        let n = x.len().max(y.len());
        for i in 0..n {
            let (p, q) = (
                x.get(i).copied().unwrap_or(0),
                y.get(i).copied().unwrap_or(0),
            );
            match p.cmp(&q) {
                Ordering::Equal => continue,
                other => return other,
            }
        }
        return Ordering::Equal;
    }
    if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
        if let Some(o) = x.partial_cmp(&y) {
            return o;
        }
    }
    a.cmp(b)
}

/// Whether `value` matches `pattern`, where `*` matches any run of
/// characters (including none) and every other character itself.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    // Greedy matching with backtracking to the last star: linear in
    // practice, never exponential.
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

/// Whether one requirement holds on a platform. A condition that does not
/// parse holds nowhere (the server refuses such jobs at submit).
pub fn requirement_matches(key: &str, value: &str, platform: &Props) -> bool {
    parse_condition(value).is_ok_and(|c| c.matches(platform.get(key).map(String::as_str)))
}

/// Whether one platform satisfies every requirement.
pub fn platform_matches(requirements: &Props, platform: &Props) -> bool {
    requirements
        .iter()
        .all(|(k, v)| requirement_matches(k, v, platform))
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
        .find(|(k, v)| !requirement_matches(k, v, platform))
        .map(|(k, p)| (k.as_str(), p.as_str()))
}

/// How many requirements a platform fails: the "nearest" workers fail fewest.
pub fn failed_count(requirements: &Props, platform: &Props) -> usize {
    requirements
        .iter()
        .filter(|(k, v)| !requirement_matches(k, v, platform))
        .count()
}

/// Whether a job asks for what a worker's `accept` rules reserve it for:
/// for each rule `KEY=VALUE`, the job must require KEY with a condition
/// that VALUE satisfies.
pub fn job_accepted(requirements: &Props, accept: &[(String, String)]) -> bool {
    accept.iter().all(|(key, value)| {
        requirements.get(key).is_some_and(|cond| {
            parse_condition(cond).is_ok_and(|c| c.matches(Some(value.as_str())))
        })
    })
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

    fn req(exprs: &[&str]) -> Props {
        exprs.iter().map(|e| parse_expression(e).unwrap()).collect()
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

    #[test]
    fn versions_numbers_and_text_compare_as_such() {
        assert_eq!(compare_values("3.10", "3.9"), Ordering::Greater);
        assert_eq!(compare_values("1.2.10", "1.2.9"), Ordering::Greater);
        assert_eq!(compare_values("3.10", "3.10.0"), Ordering::Equal);
        assert_eq!(compare_values("10", "9"), Ordering::Greater);
        assert_eq!(compare_values("2.5e3", "900"), Ordering::Greater);
        assert_eq!(compare_values("-1", "0"), Ordering::Less);
        assert_eq!(compare_values("beta", "alpha"), Ordering::Greater);
    }

    #[test]
    fn expressions_against_property_sets() {
        let py310 = props(&[
            ("python.version", "3.10"),
            ("os.family", "linux"),
            ("mem", "16"),
        ]);
        let py39 = props(&[
            ("python.version", "3.9"),
            ("os.family", "macos"),
            ("gpu", "a100"),
        ]);
        let case = |e: &[&str]| {
            (
                platform_matches(&req(e), &py310),
                platform_matches(&req(e), &py39),
            )
        };
        assert_eq!(case(&["python.version>=3.10"]), (true, false));
        assert_eq!(case(&["python.version>3.9"]), (true, false));
        assert_eq!(case(&["python.version<3.10"]), (false, true));
        assert_eq!(case(&["python.version<=3.10"]), (true, true));
        assert_eq!(case(&["os.family!=linux"]), (false, true));
        assert_eq!(case(&["gpu"]), (false, true));
        assert_eq!(case(&["gpu!"]), (true, false));
        assert_eq!(case(&["os.family=linux|macos"]), (true, true));
        assert_eq!(case(&["os.family=lin*|win*"]), (true, false));
        assert_eq!(case(&["mem>=8", "os.family=linux"]), (true, false));
        assert_eq!(case(&["mem>8"]), (true, false));
        // Comparing an absent property never matches; != does.
        assert_eq!(case(&["mem>=1"]), (true, false));
        assert_eq!(case(&["gpu!=a100"]), (true, false));
    }

    #[test]
    fn a_value_that_begins_with_an_operator_is_refused_and_requirements_print_as_written() {
        for (text, at) in [("py>=>3", 4), ("py==3", 3), ("py=!x", 3), ("py<<2", 3)] {
            let e = parse_expression(text).unwrap_err();
            assert_eq!(e.position, at, "{text}: {e:?}");
            assert!(e.message.contains("operator"), "{text}: {e:?}");
        }
        for text in [
            "python.version>=3.10",
            "os.family=linux",
            "gpu",
            "gpu!",
            "a!=b",
            "n<4",
        ] {
            let (k, v) = parse_expression(text).unwrap();
            assert_eq!(display_requirement(&k, &v), text);
        }
    }

    #[test]
    fn parse_errors_point_at_the_offending_character() {
        let e = parse_expression("python.version>=").unwrap_err();
        assert_eq!(e.position, 16);
        assert!(e.message.contains("value after '>='"), "{e}");
        assert!(e.to_string().contains("                ^"), "{e}");
        let e = parse_expression("=linux").unwrap_err();
        assert_eq!(e.position, 0);
        let e = parse_expression("os family=linux").unwrap_err();
        assert_eq!(e.position, 2);
        assert!(e.message.contains("operator"));
        let e = parse_expression("gpu!x").unwrap_err();
        assert_eq!(e.position, 4);
        let e = parse_expression("os=linux||mac").unwrap_err();
        assert_eq!(e.position, 9);
        let e = parse_expression("v>=1|2").unwrap_err();
        assert_eq!(e.position, 4);
    }

    #[test]
    fn operator_looking_patterns_stay_literal() {
        // On the command line `arrow=>x` is most likely a typo, and refused;
        // in the API's JSON a leading '=' keeps such a value literal.
        assert!(parse_expression("arrow=>x").is_err());
        let v = "=>x".to_string();
        // Unescaped, ">x" would mean "greater than x".
        assert!(!requirement_matches(
            "arrow",
            ">x",
            &props(&[("arrow", ">x")])
        ));
        assert!(requirement_matches("arrow", &v, &props(&[("arrow", ">x")])));
    }

    #[test]
    fn accept_rules_need_the_job_to_ask() {
        let accept = vec![("pool".to_string(), "release".to_string())];
        assert!(job_accepted(&req(&["pool=release"]), &accept));
        assert!(job_accepted(
            &req(&["pool=rel*", "os.family=linux"]),
            &accept
        ));
        assert!(!job_accepted(&req(&["os.family=linux"]), &accept));
        assert!(!job_accepted(&req(&["pool=nightly"]), &accept));
        assert!(job_accepted(&req(&[]), &[]));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parsing_never_panics(text in "\\PC{0,40}") {
                let _ = parse_expression(&text);
                let _ = parse_condition(&text);
            }

            #[test]
            fn well_formed_expressions_parse_and_validate(
                key in "[a-z][a-z0-9._-]{0,12}",
                op in prop::sample::select(vec!["=", "!=", ">", ">=", "<", "<="]),
                value in "[a-zA-Z0-9.]{1,12}",
            ) {
                let (k, v) = parse_expression(&format!("{key}{op}{value}")).unwrap();
                prop_assert_eq!(&k, &key);
                let mut reqs = Props::new();
                reqs.insert(k, v);
                prop_assert!(validate(&reqs).is_ok());
            }

            #[test]
            fn a_value_meets_its_own_equality_and_bounds(value in "[a-zA-Z0-9.]{1,12}") {
                let p: Props = [("k".to_string(), value.clone())].into_iter().collect();
                for op in ["=", ">=", "<="] {
                    let (k, v) = parse_expression(&format!("k{op}{value}")).unwrap();
                    prop_assert!(requirement_matches(&k, &v, &p), "k{}{}", op, value);
                }
                for op in ["!=", ">", "<"] {
                    let (k, v) = parse_expression(&format!("k{op}{value}")).unwrap();
                    prop_assert!(!requirement_matches(&k, &v, &p), "k{}{}", op, value);
                }
            }

            #[test]
            fn version_order_is_antisymmetric(
                a in prop::collection::vec(0u64..30, 1..4),
                b in prop::collection::vec(0u64..30, 1..4),
            ) {
                let a = a.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
                let b = b.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
                prop_assert_eq!(compare_values(&a, &b), compare_values(&b, &a).reverse());
            }

            #[test]
            fn a_star_free_pattern_matches_exactly_itself(s in "[a-z0-9.]{0,10}", t in "[a-z0-9.]{0,10}") {
                prop_assert!(glob_match(&s, &s));
                prop_assert_eq!(glob_match(&s, &t), s == t);
            }
        }
    }
}
