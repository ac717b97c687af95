//! The worker's TOML config: parsed strictly, so a typo is an error that
//! names the file, the line and the key instead of a setting silently
//! ignored. Nothing here talks to a server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::platform;
use crate::wire::{parse_duration, Props};

/// The original testbot's heartbeat interval.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(60);
/// A job's timeout when neither the job nor its jobtype sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Time between SIGTERM and SIGKILL when a job is stopped.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

/// Free space a worker wants in its work_dir before it claims a job: a
/// job's output that the disk cannot keep fails the job, so claim nothing
/// on a nearly full disk. `min_free_disk = "0"` turns the check off.
pub const DEFAULT_MIN_FREE_DISK: u64 = 256 << 20;

/// A config that was read and checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub server: Option<String>,
    pub name: String,
    pub heartbeat_interval: Duration,
    pub slots: u32,
    pub work_dir: PathBuf,
    pub token: Option<String>,
    pub info: serde_json::Map<String, serde_json::Value>,
    pub jobtypes: BTreeMap<String, Jobtype>,
    /// In config order: the first that fits a job wins.
    pub platforms: Vec<Platform>,
    pub kill_grace: Duration,
    pub keep_job_dirs: bool,
    /// `KEY=VALUE` rules: this machine takes only jobs that ask for them.
    pub accept: Vec<(String, String)>,
    /// Claim nothing while `work_dir` has less free space than this.
    pub min_free_disk: Option<u64>,
    /// Trust only the CA certificates in this PEM file for an https server.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Jobtype {
    pub command: String,
    pub timeout: Option<Duration>,
    pub junit: Option<String>,
    /// Glob patterns, relative to the job directory, of files to keep.
    pub artifacts: Vec<String>,
    /// Keep this jobtype's artifacts no longer than this.
    pub keep_artifacts: Option<Duration>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Platform {
    pub properties: Props,
    pub env: BTreeMap<String, String>,
}

/// A config error: which file, where, which key, and what is wrong.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config error in {}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ", key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// `server = "URL"`, or `server = ["URL", "URL"]` for servers sharing one
/// database (the next is used when one does not answer).
enum Servers {
    One(String),
    Several(Vec<String>),
}

impl<'de> Deserialize<'de> for Servers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Servers, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Servers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a server URL, or a list of them (servers sharing one database)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Servers, E> {
                Ok(Servers::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Servers, A::Error> {
                let mut all = Vec::new();
                while let Some(url) = seq.next_element::<String>()? {
                    all.push(url);
                }
                Ok(Servers::Several(all))
            }
        }
        d.deserialize_any(Visit)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: Option<Servers>,
    name: Option<String>,
    heartbeat_interval: Option<DurationValue>,
    slots: Option<u32>,
    work_dir: Option<PathBuf>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    #[serde(default)]
    info: toml::Table,
    #[serde(default)]
    platform: BTreeMap<String, PropValue>,
    #[serde(default)]
    jobtypes: BTreeMap<String, RawJobtype>,
    #[serde(default)]
    platforms: Vec<RawPlatform>,
    kill_grace: Option<DurationValue>,
    keep_job_dirs: Option<bool>,
    #[serde(default)]
    accept: Vec<String>,
    min_free_disk: Option<SizeValue>,
    ca_file: Option<PathBuf>,
}

/// A size written as `"1GiB"`, `"500MB"` or a number of bytes.
struct SizeValue(u64);

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::Integer(i) if i >= 0 => Ok(SizeValue(i as u64)),
            toml::Value::String(s) => crate::wire::parse_size(&s)
                .map(SizeValue)
                .map_err(serde::de::Error::custom),
            _ => Err(serde::de::Error::custom(
                "expected a size like \"1GiB\" or \"500MB\"",
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJobtype {
    command: String,
    timeout: Option<DurationValue>,
    junit: Option<String>,
    #[serde(default)]
    artifacts: Vec<String>,
    keep_artifacts: Option<DurationValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlatform {
    #[serde(default)]
    properties: BTreeMap<String, PropValue>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// A duration written as `"90s"`, `"1h30m"` or a number of seconds.
struct DurationValue(Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        let d = match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a duration like \"90s\", \"10m\" or \"1h30m\"")
        })? {
            Raw::Secs(s) => Duration::from_secs(s),
            Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom)?,
        };
        if d.is_zero() {
            return Err(serde::de::Error::custom("a duration must be positive"));
        }
        Ok(DurationValue(d))
    }
}

/// A property value: a string, or a number or boolean taken as text.
struct PropValue(String);

impl<'de> Deserialize<'de> for PropValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(PropValue(s)),
            toml::Value::Integer(i) => Ok(PropValue(i.to_string())),
            toml::Value::Float(f) => Ok(PropValue(f.to_string())),
            toml::Value::Boolean(b) => Ok(PropValue(b.to_string())),
            toml::Value::Table(_) => Err(serde::de::Error::custom(
                "a platform property must be a string, not a table: in TOML an unquoted \
                 dotted key makes a table, so quote it, like \"os.family\" = \"linux\"",
            )),
            other => Err(serde::de::Error::custom(format!(
                "a platform property must be a string, not a {}",
                other.type_str()
            ))),
        }
    }
}

fn props(raw: BTreeMap<String, PropValue>) -> Props {
    raw.into_iter().map(|(k, v)| (k, v.0)).collect()
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: None,
            key: None,
            message: format!("cannot read it: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Parses config text; `path` is for messages and relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let err = |line: Option<usize>, key: Option<&str>, message: String| ConfigError {
            path: path.to_path_buf(),
            line,
            key: key.map(str::to_string),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            let message = e.message().trim().to_string();
            // "unknown field `x`" names the key; "invalid type: integer `5`"
            // names the value, and the key is the one on its line.
            let value_named =
                message.starts_with("invalid type") || message.starts_with("invalid value");
            let on_line = || line.and_then(|l| key_on_line(text, l));
            let key = if value_named {
                on_line().or_else(|| backticked(&message))
            } else {
                backticked(&message).or_else(on_line)
            };
            err(line, key.as_deref(), message)
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let detected = platform::detect();
        let name = raw
            .name
            .unwrap_or_else(|| detected.get("hostname").cloned().unwrap_or_default());
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(err(
                find_line(text, "name"),
                Some("name"),
                format!("worker name {name:?} must be letters, digits, '.', '_' or '-'"),
            ));
        }
        if raw.jobtypes.is_empty() {
            return Err(err(
                None,
                Some("jobtypes"),
                "no jobtypes: add a [jobtypes.NAME] table with a command".into(),
            ));
        }
        let mut jobtypes = BTreeMap::new();
        for (jt, raw_jt) in raw.jobtypes {
            let header = format!("jobtypes.{jt}");
            if jt.is_empty()
                || !jt
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(err(
                    find_line(text, &header),
                    Some(&header),
                    "a jobtype name must be letters, digits, '.', '_' or '-'".into(),
                ));
            }
            if raw_jt.command.trim().is_empty() {
                return Err(err(
                    find_line(text, &header),
                    Some(&format!("{header}.command")),
                    "the command is empty".into(),
                ));
            }
            for pattern in &raw_jt.artifacts {
                let p = Path::new(pattern);
                let why = if pattern.trim().is_empty() {
                    Some("is empty".to_string())
                } else if p.is_absolute()
                    || p.components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    Some("must be relative to the job directory, without '..'".to_string())
                } else {
                    glob::Pattern::new(pattern)
                        .err()
                        .map(|e| format!("is not a valid pattern: {e}"))
                };
                if let Some(why) = why {
                    return Err(err(
                        find_line(text, "artifacts"),
                        Some(&format!("{header}.artifacts")),
                        format!("artifacts pattern {pattern:?} {why}"),
                    ));
                }
            }
            // The longest the server keeps an artifact: 100 years.
            const KEEP_MAX: Duration = Duration::from_secs(100 * 365 * 86_400);
            if raw_jt
                .keep_artifacts
                .as_ref()
                .is_some_and(|d| d.0 > KEEP_MAX)
            {
                return Err(err(
                    find_line(text, "keep_artifacts"),
                    Some(&format!("{header}.keep_artifacts")),
                    "keep_artifacts is over the 100 years (36500d) a server keeps artifacts".into(),
                ));
            }
            jobtypes.insert(
                jt,
                Jobtype {
                    command: raw_jt.command,
                    timeout: raw_jt.timeout.map(|d| d.0),
                    junit: raw_jt.junit,
                    artifacts: raw_jt.artifacts,
                    keep_artifacts: raw_jt.keep_artifacts.map(|d| d.0),
                },
            );
        }
        let slots = raw.slots.unwrap_or(1);
        // The ranges the server accepts at registration.
        use crate::server::checks::limits;
        if !(1..=limits::SLOTS).contains(&slots) {
            return Err(err(
                find_line(text, "slots"),
                Some("slots"),
                format!("slots must be 1 to {}, not {slots}", limits::SLOTS),
            ));
        }
        if let Some(d) = &raw.heartbeat_interval {
            let ms = d.0.as_millis();
            if !(limits::MIN_HEARTBEAT_MS as u128..=limits::MAX_HEARTBEAT_MS as u128).contains(&ms)
            {
                return Err(err(
                    find_line(text, "heartbeat_interval"),
                    Some("heartbeat_interval"),
                    "heartbeat_interval must be 100ms to 1 day".into(),
                ));
            }
        }
        let token = match (raw.token, raw.token_file) {
            (Some(t), _) => {
                warn_if_readable(path, "it holds a token");
                Some(t)
            }
            (None, Some(f)) => {
                let f = base.join(f);
                warn_if_readable(&f, "it is the worker's token file");
                let t = std::fs::read_to_string(&f).map_err(|e| {
                    err(
                        find_line(text, "token_file"),
                        Some("token_file"),
                        format!("cannot read {}: {e}", f.display()),
                    )
                })?;
                Some(t.trim().to_string())
            }
            (None, None) => None,
        };
        let mut base_props = detected;
        base_props.extend(props(raw.platform));
        let platforms = if raw.platforms.is_empty() {
            vec![Platform {
                properties: base_props,
                env: BTreeMap::new(),
            }]
        } else {
            raw.platforms
                .into_iter()
                .map(|p| {
                    let mut properties = base_props.clone();
                    properties.extend(props(p.properties));
                    Platform {
                        properties,
                        env: p.env,
                    }
                })
                .collect()
        };
        let info = serde_json::to_value(raw.info)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        let mut accept = Vec::new();
        for rule in &raw.accept {
            match rule.split_once('=') {
                Some((k, v))
                    if !k.is_empty()
                        && !v.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) =>
                {
                    accept.push((k.to_string(), v.to_string()))
                }
                _ => {
                    return Err(err(
                        find_line(text, "accept"),
                        Some("accept"),
                        format!("accept rule {rule:?} must be KEY=VALUE, like \"pool=release\""),
                    ))
                }
            }
        }
        let default_work_dir = default_work_dir(&name);
        let server = match raw.server {
            Some(s) => {
                let given = match s {
                    Servers::One(s) => s,
                    Servers::Several(list) => list.join(","),
                };
                Some(
                    crate::client::server_urls(&given)
                        .map_err(|e| err(find_line(text, "server"), Some("server"), e))?
                        .join(","),
                )
            }
            None => None,
        };
        Ok(Config {
            path: path.to_path_buf(),
            server,
            name,
            heartbeat_interval: raw
                .heartbeat_interval
                .map(|d| d.0)
                .unwrap_or(DEFAULT_HEARTBEAT),
            slots,
            work_dir: raw
                .work_dir
                .map(|d| base.join(d))
                .unwrap_or(default_work_dir),
            token,
            info,
            jobtypes,
            platforms,
            kill_grace: raw.kill_grace.map(|d| d.0).unwrap_or(DEFAULT_KILL_GRACE),
            keep_job_dirs: raw.keep_job_dirs.unwrap_or(false),
            accept,
            min_free_disk: Some(raw.min_free_disk.map_or(DEFAULT_MIN_FREE_DISK, |s| s.0))
                .filter(|&n| n > 0),
            ca_file: raw.ca_file.map(|f| base.join(f)),
        })
    }

    /// What `--check` prints: the capabilities the worker would register.
    pub fn capabilities_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "server": self.server,
            "jobtypes": self.jobtypes.keys().collect::<Vec<_>>(),
            // What each jobtype runs, as the worker read it.
            "commands": self
                .jobtypes
                .iter()
                .map(|(name, j)| {
                    let timeout = j.timeout.unwrap_or(DEFAULT_TIMEOUT);
                    (
                        name.clone(),
                        serde_json::json!({
                            "command": j.command,
                            "timeout": crate::wire::format_duration(timeout),
                            "junit": j.junit,
                            "artifacts": j.artifacts,
                            "keep_artifacts": j.keep_artifacts.map(crate::wire::format_duration),
                        }),
                    )
                })
                .collect::<serde_json::Map<_, _>>(),
            "platforms": self.platforms,
            "slots": self.slots,
            "accept": self.accept.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "heartbeat_interval": crate::wire::format_duration(self.heartbeat_interval),
            "work_dir": self.work_dir,
            "info": self.info,
        })
    }
}

/// A token readable by other users of the machine is a token anyone there
/// can use: say so (the worker still starts).
/// Where a worker works when its config does not say: a directory of the
/// user's own (`$XDG_STATE_HOME/testbot/NAME`, else
/// `~/.local/state/testbot/NAME`), or `/var/lib/testbot/NAME` for root (a
/// system service); never a predictable path in the shared temporary
/// directory that another local user could create first.
pub fn default_work_dir(name: &str) -> PathBuf {
    let state = if rustix::process::geteuid().is_root() {
        None
    } else {
        std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .filter(|p| p.is_absolute())
                    .map(|h| h.join(".local/state"))
            })
    };
    state
        .map(|s| s.join("testbot"))
        .unwrap_or_else(|| PathBuf::from("/var/lib/testbot"))
        .join(name)
}

fn warn_if_readable(path: &Path, why: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "{} is readable by group or others (mode {:o}) and {why}; chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The first name in backticks in a message (toml names unknown and
/// missing fields that way).
fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// The key assigned on a line (`key = value`), or the table it opens.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let l = text.lines().nth(line - 1)?.trim();
    if let Some(header) = l.strip_prefix('[') {
        return Some(
            header
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string(),
        );
    }
    let key = l.split('=').next()?.trim();
    (!key.is_empty()).then(|| key.trim_matches('"').to_string())
}

/// The line where `key` is set or the table `[key]` opens.
fn find_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim();
            l.trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .eq(key)
                || l.split('=').next().map(str::trim) == Some(key)
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("w.toml"), text)
    }

    #[test]
    fn a_full_config() {
        let c = parse(
            r#"
server = "http://127.0.0.1:1"
name = "box-1"
heartbeat_interval = "2s"
slots = 2
[info]
rack = "3"
[platform]
device = "N900"
[jobtypes.unit]
command = "make check"
timeout = "30m"
[[platforms]]
properties = { "python.version" = "3.11" }
env = { PYTHON = "python3.11" }
[[platforms]]
properties = { "python.version" = 3.12 }
"#,
        )
        .unwrap();
        assert_eq!(c.name, "box-1");
        assert_eq!(c.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(c.jobtypes["unit"].timeout, Some(Duration::from_secs(1800)));
        assert_eq!(c.platforms.len(), 2);
        assert_eq!(c.platforms[0].properties["device"], "N900");
        assert_eq!(c.platforms[1].properties["python.version"], "3.12");
        assert!(c.platforms[0].properties.contains_key("os.family"));
        assert_eq!(c.platforms[0].env["PYTHON"], "python3.11");
        assert_eq!(c.info["rack"], "3");
    }

    #[test]
    fn artifact_settings_the_worker_or_server_would_refuse_are_config_errors() {
        for (line, why) in [
            ("artifacts = [\"\"]", "is empty"),
            ("artifacts = [\"../x\"]", "without '..'"),
            ("artifacts = [\"/abs/*\"]", "without '..'"),
            ("artifacts = [\"[unclosed\"]", "not a valid pattern"),
            ("keep_artifacts = \"200y\"", "100 years"),
        ] {
            let e = parse(&format!("[jobtypes.u]\ncommand = \"true\"\n{line}\n")).unwrap_err();
            assert_eq!(e.line, Some(3), "{line}: {e}");
            assert!(e.key.as_deref().unwrap().starts_with("jobtypes.u."), "{e}");
            assert!(e.message.contains(why), "{line}: {e}");
        }
        let ok = "[jobtypes.u]\ncommand = \"true\"\nartifacts = [\"r/**\", \"*.png\"]\nkeep_artifacts = \"30d\"\n";
        assert!(parse(ok).is_ok());
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = parse("name = \"a\"\nbogus = 1\n[jobtypes.u]\ncommand = \"true\"\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert_eq!(e.key.as_deref(), Some("bogus"));
        assert!(e.to_string().contains("w.toml"), "{e}");
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key_not_the_value() {
        let e = parse("server = 5\n[jobtypes.u]\ncommand = \"true\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(1), Some("server")), "{e}");
        assert!(e.message.contains("a list of them"), "{e}");
        let e = parse("server = []\n[jobtypes.u]\ncommand = \"true\"\n").unwrap_err();
        assert!(e.message.contains("names no server URL"), "{e}");
        let c =
            parse("server = [\"ci-a:1\", \"ci-b:2\"]\n[jobtypes.u]\ncommand = \"true\"\n").unwrap();
        assert_eq!(c.server.as_deref(), Some("http://ci-a:1,http://ci-b:2"));
    }

    #[test]
    fn bad_duration_names_line_and_key() {
        let e =
            parse("[jobtypes.u]\ncommand = \"true\"\ntimeout = \"3 fortnights\"\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("timeout"));
        assert!(e.message.contains("duration"), "{e}");
    }

    #[test]
    fn numbers_outside_what_the_server_takes_name_line_and_key() {
        let e = parse("slots = 5000\n[jobtypes.u]\ncommand = \"true\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(1), Some("slots")));
        let e = parse("heartbeat_interval = \"2days\"\n[jobtypes.u]\ncommand = \"true\"\n")
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("heartbeat_interval"));
        assert!(e.message.contains("1 day"), "{e}");
    }

    #[test]
    fn the_default_work_dir_is_the_users_own() {
        let d = default_work_dir("box-1");
        assert!(d.ends_with("testbot/box-1"), "{}", d.display());
        assert!(!d.starts_with(std::env::temp_dir()), "{}", d.display());
        if rustix::process::geteuid().is_root() {
            assert_eq!(d, PathBuf::from("/var/lib/testbot/box-1"));
        }
    }

    #[test]
    fn an_unquoted_dotted_platform_key_gets_the_hint() {
        let e =
            parse("[platform]\nos.family = \"x\"\n[jobtypes.u]\ncommand = \"true\"\n").unwrap_err();
        assert!(e.message.contains("quote it"), "{e}");
    }

    #[test]
    fn jobtype_without_command() {
        let e = parse("[jobtypes.unit]\ntimeout = \"1m\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("command"));
        assert!(e.line.is_some(), "{e}");
    }

    #[test]
    fn bad_toml() {
        let e = parse("[jobtypes.unit\ncommand = 1\n").unwrap_err();
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn no_jobtypes() {
        assert!(parse("name = \"a\"\n")
            .unwrap_err()
            .message
            .contains("no jobtypes"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_text_is_an_error_or_a_config_never_a_panic(text in "\\PC{0,200}") {
                let _ = parse(&text);
            }

            #[test]
            fn toml_shaped_noise_never_panics(
                lines in prop::collection::vec(
                    prop_oneof![
                        "[a-z_.]{1,12} = \"[ -~]{0,12}\"",
                        "[a-z_.]{1,12} = [0-9]{1,6}",
                        "\\[jobtypes\\.[a-z]{1,6}\\]",
                        "\\[\\[platforms\\]\\]",
                        "command = \"[ -~]{0,20}\"",
                        "timeout = \"[0-9a-z ]{0,8}\"",
                    ],
                    0..12,
                )
            ) {
                let text = lines.join("\n");
                if let Err(e) = parse(&text) {
                    // Every error says which file it is about.
                    prop_assert!(e.to_string().contains("w.toml"));
                }
            }

            #[test]
            fn generated_configs_parse_back(
                name in "[a-z][a-z0-9-]{0,10}",
                slots in 1u32..16,
                secs in 1u64..10_000,
                jobtypes in prop::collection::btree_map("[a-z][a-z0-9_-]{0,8}", "[!-&(-~][ -&(-~]{0,19}", 1..5),
            ) {
                let mut text = format!("name = \"{name}\"\nslots = {slots}\nheartbeat_interval = \"{secs}s\"\n");
                for (jt, cmd) in &jobtypes {
                    text.push_str(&format!("[jobtypes.{jt}]\ncommand = '{cmd}'\n"));
                }
                let c = parse(&text).unwrap();
                prop_assert_eq!(c.name, name);
                prop_assert_eq!(c.slots, slots);
                prop_assert_eq!(c.heartbeat_interval, Duration::from_secs(secs));
                prop_assert_eq!(c.jobtypes.len(), jobtypes.len());
                for (jt, cmd) in &jobtypes {
                    prop_assert_eq!(&c.jobtypes[jt].command, cmd);
                }
            }
        }
    }
}
