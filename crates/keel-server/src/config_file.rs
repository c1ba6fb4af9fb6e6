//! `--config-file`: etcd's YAML configuration file (keys are the flag names, e.g.
//! `name: infra0`, `initial-cluster: ...`), or the same keys in TOML for a `.toml` file.
//!
//! As in etcd, when a configuration file is given it is the whole configuration: the other
//! command-line flags are not combined with it. Each key becomes the flag of the same name,
//! so an unknown key or a bad value is refused with clap's message, naming it.

use std::path::Path;

/// A scalar value of a configuration key.
enum Scalar {
    Text(String),
    Flag(bool),
    Absent,
}

fn arg(key: &str, value: Scalar) -> Option<String> {
    match value {
        Scalar::Text(v) => Some(format!("--{key}={v}")),
        Scalar::Flag(true) => Some(format!("--{key}")),
        Scalar::Flag(false) | Scalar::Absent => None,
    }
}

fn yaml_args(text: &str) -> Result<Vec<String>, String> {
    use yaml_rust2::{Yaml, YamlLoader};
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    let Some(doc) = docs.first() else {
        return Ok(Vec::new());
    };
    let Yaml::Hash(map) = doc else {
        return Err("the file must be a mapping of flag names to values".into());
    };
    let mut args = Vec::new();
    for (k, v) in map {
        let Yaml::String(key) = k else {
            return Err(format!("key {k:?} is not a flag name"));
        };
        let value = match v {
            Yaml::String(s) | Yaml::Real(s) => Scalar::Text(s.clone()),
            Yaml::Integer(i) => Scalar::Text(i.to_string()),
            Yaml::Boolean(b) => Scalar::Flag(*b),
            Yaml::Null => Scalar::Absent,
            _ => return Err(format!("{key}: only single values are supported")),
        };
        args.extend(arg(key, value));
    }
    Ok(args)
}

fn toml_args(text: &str) -> Result<Vec<String>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut args = Vec::new();
    for (key, v) in &table {
        let value = match v {
            toml::Value::String(s) => Scalar::Text(s.clone()),
            toml::Value::Integer(i) => Scalar::Text(i.to_string()),
            toml::Value::Float(f) => Scalar::Text(f.to_string()),
            toml::Value::Boolean(b) => Scalar::Flag(*b),
            _ => return Err(format!("{key}: only single values are supported")),
        };
        args.extend(arg(key, value));
    }
    Ok(args)
}

/// The command line (program name first) that the file at `path` stands for.
///
/// # Errors
/// A message naming the file and what is wrong with it.
pub fn command_line(program: &str, path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let parsed = if path.extension().is_some_and(|e| e == "toml") {
        toml_args(&text)
    } else {
        yaml_args(&text)
    };
    let mut args = vec![program.to_owned()];
    args.extend(parsed.map_err(|e| format!("config file {}: {e}", path.display()))?);
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Flags;
    use clap::Parser;

    fn parse(name: &str, text: &str) -> Result<Flags, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let args = command_line("keel", &path)?;
        Flags::try_parse_from(args).map_err(|e| e.to_string())
    }

    #[test]
    fn etcd_yaml_and_toml_set_the_same_flags() {
        let yaml = parse(
            "keel.yaml",
            "name: infra1\ndata-dir: /var/lib/keel\nheartbeat-interval: 50\n\
             election-timeout: 500\ninitial-cluster-state: new\nenable-pprof: true\n\
             discovery-token: ~\n",
        )
        .unwrap();
        let toml = parse(
            "keel.toml",
            "name = \"infra1\"\ndata-dir = \"/var/lib/keel\"\nheartbeat-interval = 50\n\
             election-timeout = 500\ninitial-cluster-state = \"new\"\nenable-pprof = true\n",
        )
        .unwrap();
        for f in [&yaml, &toml] {
            assert_eq!(f.name, "infra1");
            assert_eq!(f.data_dir.as_deref(), Some(Path::new("/var/lib/keel")));
            assert_eq!(f.heartbeat_interval, 50);
            assert_eq!(f.election_timeout, 500);
            assert!(f.enable_pprof);
            assert!(f.discovery_token.is_none());
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let err = parse("a.yaml", "snapshot-countx: 5\n").unwrap_err();
        assert!(err.contains("snapshot-countx"), "{err}");
        let err = parse("a.yaml", "heartbeat-interval: fast\n").unwrap_err();
        assert!(err.contains("heartbeat-interval"), "{err}");
        let err = parse("a.yaml", "- just\n- a list\n").unwrap_err();
        assert!(err.contains("mapping"), "{err}");
        let err = parse("a.toml", "name = [1]\n").unwrap_err();
        assert!(err.contains("name"), "{err}");
        assert!(command_line("keel", Path::new("/nonexistent/keel.yaml")).is_err());
    }
}
