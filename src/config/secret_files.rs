//! Secrets read from files, such as a mounted Kubernetes Secret: `server.hmac_key_file` is read
//! once, at load, into `server.hmac_key`, so that everything after loading sees one key and
//! `check-config` proves the file is readable. (`redis.password_file` is read where the pool
//! connects, see `redis::settings`.)

use std::path::Path;

use super::{Config, ConfigError, Secret, invalid};

impl Config {
    /// Fills `server.hmac_key` from `server.hmac_key_file`; setting both is refused.
    pub(super) fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        let Some(path) = &self.server.hmac_key_file else {
            return Ok(());
        };
        if self.server.hmac_key.is_some() {
            return Err(invalid(
                "server.hmac_key_file",
                "set server.hmac_key or server.hmac_key_file, not both",
            ));
        }
        self.server.hmac_key = Some(read_secret("server.hmac_key_file", path)?);
        Ok(())
    }
}

/// The file's content without the trailing newline that editors and `echo` add.
fn read_secret(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    let content = std::fs::read_to_string(path)
        .map_err(|error| invalid(key, format!("cannot read {}: {error}", path.display())))?;
    Ok(Secret::new(content.trim_end_matches(['\r', '\n'])))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn load_with_key_file(extra: &str, key_file: &Path) -> Result<Config, ConfigError> {
        let toml = format!(
            "[server]\nhmac_key_file = {:?}\n{extra}",
            key_file.display()
        );
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        file.write_all(toml.as_bytes()).unwrap();
        Config::load(Some(file.path()))
    }

    fn key_file(content: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(content.as_bytes()).unwrap();
        file
    }

    #[test]
    fn the_hmac_key_comes_from_its_file_without_the_final_newline() {
        let key = "k".repeat(40);
        let file = key_file(&format!("{key}\n"));
        let config = load_with_key_file("", file.path()).unwrap();
        assert_eq!(config.server.hmac_key.unwrap().expose(), key);
    }

    #[test]
    fn a_short_key_in_the_file_is_refused_like_an_inline_one() {
        let file = key_file("short\n");
        let error = load_with_key_file("", file.path()).unwrap_err();
        assert!(error.to_string().contains("server.hmac_key"), "{error}");
    }

    #[test]
    fn key_and_key_file_together_are_refused() {
        let file = key_file(&"k".repeat(40));
        let inline = format!("hmac_key = \"{}\"", "j".repeat(40));
        let error = load_with_key_file(&inline, file.path()).unwrap_err();
        assert!(error.to_string().contains("not both"), "{error}");
    }

    #[test]
    fn an_unreadable_key_file_names_the_key_and_the_path() {
        let error = load_with_key_file("", Path::new("/nonexistent/hmac-key")).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("server.hmac_key_file"), "{text}");
        assert!(text.contains("/nonexistent/hmac-key"), "{text}");
    }
}
