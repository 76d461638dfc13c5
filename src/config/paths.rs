//! Paths in the configuration: a stdio upstream's relative `command` (one naming a path, such
//! as `bin/server`, not a bare program name looked up in `PATH`) and relative `cwd` are taken
//! from the configuration file's folder, so a gateway started from any folder runs the same
//! programs; and a `command` that names nothing runnable is found before the upstream is.

use std::path::Path;

use super::{Config, ConfigError, TransportKind, UpstreamConfig, invalid};

impl Config {
    /// Makes stdio upstreams' relative `command` paths and `cwd` relative to `folder`.
    pub(super) fn resolve_paths_from(&mut self, folder: &Path) {
        for upstream in &mut self.upstreams {
            if upstream.transport != TransportKind::Stdio {
                continue;
            }
            if let Some(command) = &upstream.command
                && command.contains('/')
                && Path::new(command).is_relative()
            {
                upstream.command = Some(folder.join(command).to_string_lossy().into_owned());
            }
            if let Some(cwd) = &upstream.cwd
                && cwd.is_relative()
            {
                upstream.cwd = Some(folder.join(cwd));
            }
        }
    }

    /// The stdio upstreams whose `command` this machine cannot run: a path that is no file, or
    /// a program name not found in `PATH`. `check-config` refuses them; `serve` logs them and
    /// starts, with those upstreams down.
    pub fn unrunnable_commands(&self) -> Vec<ConfigError> {
        self.upstreams
            .iter()
            .enumerate()
            .filter_map(|(index, upstream)| unrunnable(index, upstream))
            .collect()
    }
}

fn unrunnable(index: usize, upstream: &UpstreamConfig) -> Option<ConfigError> {
    let command = upstream.command.as_deref()?;
    let key = format!("upstreams[{index}].command");
    let reason = if command.contains('/') {
        (!Path::new(command).is_file()).then(|| {
            format!("{command:?} is not a file (a relative path is taken from the configuration file's folder)")
        })
    } else {
        which::which(command)
            .is_err()
            .then(|| format!("no program {command:?} in PATH"))
    }?;
    Some(invalid(key, reason))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn stdio(command: &str, cwd: Option<&str>) -> Config {
        let mut config: Config = toml::from_str(&format!(
            "[[upstreams]]\nname = \"u\"\ntransport = \"stdio\"\ncommand = {command:?}"
        ))
        .expect("a config");
        config.upstreams[0].cwd = cwd.map(PathBuf::from);
        config
    }

    #[test]
    fn relative_paths_are_taken_from_the_configuration_folder() {
        let mut config = stdio("bin/server", Some("data"));
        config.resolve_paths_from(Path::new("/etc/mcpgate"));
        let upstream = &config.upstreams[0];
        assert_eq!(upstream.command.as_deref(), Some("/etc/mcpgate/bin/server"));
        assert_eq!(
            upstream.cwd.as_deref(),
            Some(Path::new("/etc/mcpgate/data"))
        );
        for unchanged in ["node", "/usr/bin/node"] {
            let mut config = stdio(unchanged, None);
            config.resolve_paths_from(Path::new("/etc/mcpgate"));
            assert_eq!(config.upstreams[0].command.as_deref(), Some(unchanged));
        }
    }

    #[test]
    fn commands_that_cannot_run_are_named_by_key() {
        assert!(stdio("sh", None).unrunnable_commands().is_empty());
        for missing in ["/nowhere/server", "no-such-program-anywhere"] {
            let problems = stdio(missing, None).unrunnable_commands();
            let text = problems.first().expect("a problem").to_string();
            assert!(text.contains("upstreams[0].command"), "{text}");
        }
    }
}
