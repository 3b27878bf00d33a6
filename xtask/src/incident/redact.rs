//! Taking secrets out of text before it leaves the machine: the values of variables named like
//! PASSWORD, SECRET, TOKEN or KEY (from an environment file and this process's environment),
//! each word of such a value, `NAME=value` lines with such names, and credentials inside URLs.

use crate::util::env_file;

/// Redacts the secrets it was told about, and anything that looks like one.
pub struct Redactor {
    secrets: Vec<String>,
}

pub const REDACTED: &str = "[REDACTED]";

/// Whether a variable's name says it holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["PASSWORD", "PASSWD", "SECRET", "TOKEN", "KEY"]
        .iter()
        .any(|word| upper.contains(word))
}

impl Redactor {
    /// Learns the secret values in `env_file` (`NAME=value` lines) and in this process's
    /// environment.
    pub fn new(env_file: &str) -> Redactor {
        let mut secrets: Vec<String> = env_file::pairs(env_file)
            .into_iter()
            .filter(|(name, _)| is_secret_name(name))
            .map(|(_, value)| value)
            .chain(
                std::env::vars()
                    .filter(|(name, _)| is_secret_name(name))
                    .map(|(_, value)| value),
            )
            .filter(|value| value.len() >= 3)
            .collect();
        // A secret split on its spaces (a value that a shell ran word by word once left its
        // second half in a log): each longer word of it goes too.
        let words: Vec<String> = secrets
            .iter()
            .flat_map(|secret| secret.split_whitespace())
            .filter(|word| word.len() >= 4)
            .map(str::to_owned)
            .collect();
        secrets.extend(words);
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    /// Also redacts `secret` (one learnt while collecting, e.g. a repository passphrase).
    pub fn learn(&mut self, secret: &str) {
        if secret.len() >= 3 {
            self.secrets.push(secret.to_owned());
            self.secrets
                .sort_by_key(|secret| std::cmp::Reverse(secret.len()));
            self.secrets.dedup();
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), REDACTED);
        }
        let lines: Vec<String> = text.split('\n').map(redact_line).collect();
        lines.join("\n")
    }
}

/// `NAME=value` with a secret name, and `scheme://user:password@host` in one line.
fn redact_line(line: &str) -> String {
    let trimmed = line.trim_start();
    let bare = trimmed.strip_prefix("export ").unwrap_or(trimmed);
    if let Some((name, value)) = bare.split_once('=')
        && !name.contains(char::is_whitespace)
        && is_secret_name(name)
        && !value.trim().is_empty()
    {
        let prefix = &line[..line.len() - bare.len()];
        return format!("{prefix}{name}={REDACTED}");
    }
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at_sign) => {
                let user = authority[..at_sign].split(':').next().unwrap_or("");
                out.push_str(&format!("{user}:{REDACTED}{}", &authority[at_sign..]));
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_by_value_by_name_and_in_urls_are_redacted() {
        let redactor =
            Redactor::new("SAULPOS_DB_PASSWORD='p@ss:w/rd#%'\nSAULPOS_DB_USERNAME=saulpos\n");
        let text = "connecting with p@ss:w/rd#% now\nAPI_TOKEN=abc123\nurl postgres://u:hunter2@db:5432/x ok\nSAULPOS_DB_USERNAME=saulpos";
        let out = redactor.redact(text);
        assert!(!out.contains("p@ss:w/rd#%"), "{out}");
        assert!(!out.contains("abc123"), "{out}");
        assert!(!out.contains("hunter2"), "{out}");
        assert!(
            out.contains("postgres://u:[REDACTED]@db:5432/x ok"),
            "{out}"
        );
        assert!(out.contains("SAULPOS_DB_USERNAME=saulpos"), "{out}");
        assert!(out.contains("API_TOKEN=[REDACTED]"), "{out}");
    }

    #[test]
    fn each_word_of_a_secret_with_spaces_is_redacted_too() {
        let redactor = Redactor::new("SAULPOS_DB_PASSWORD='alpha bravo-7 charlie'\n");
        let log = "run.sh: line 1: bravo-7: command not found\nconnecting as alpha bravo-7 charlie";
        let out = redactor.redact(log);
        for word in ["alpha", "bravo-7", "charlie"] {
            assert!(!out.contains(word), "{out}");
        }
        assert!(out.contains("command not found"), "{out}");
    }
}
