//! A payload's environment file (`saulpos.env`): its `NAME=value` pairs, read literally as every
//! shipped script reads them (templates/env_file.sh), and the database its `SAULPOS_DB_URL` names.

/// The `NAME=value` pairs, with `export ` and one level of quotes taken off; comments and other
/// lines are skipped.
pub fn pairs(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let line = line.strip_prefix("export ").unwrap_or(line);
            if line.starts_with('#') {
                return None;
            }
            let (name, value) = line.split_once('=')?;
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return None;
            }
            let value = value.trim();
            let value = ['"', '\'']
                .iter()
                .find_map(|quote| value.strip_prefix(*quote)?.strip_suffix(*quote))
                .unwrap_or(value);
            Some((name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// The value of `name`, the last one set winning as in a shell.
pub fn value(text: &str, name: &str) -> Option<String> {
    pairs(text)
        .into_iter()
        .filter(|(key, _)| key == name)
        .map(|(_, value)| value)
        .next_back()
}

/// Where `SAULPOS_DB_URL` points.
#[derive(Debug, PartialEq, Eq)]
pub struct Database {
    pub host: String,
    pub port: String,
    pub name: String,
}

/// The database of `SAULPOS_DB_URL` (`postgres://`, `postgresql://` or `jdbc:postgresql://`),
/// if the file sets one.
/// `http://127.0.0.1:<port>`, the port of SAULPOS_SERVER_PORT (else 8080): where the server
/// this file configures answers on its own host.
pub fn local_url(text: &str) -> String {
    let port = value(text, "SAULPOS_SERVER_PORT")
        .filter(|port| !port.is_empty())
        .unwrap_or_else(|| "8080".to_owned());
    format!("http://127.0.0.1:{port}")
}

pub fn database(text: &str) -> Option<Database> {
    let url = value(text, "SAULPOS_DB_URL")?;
    let rest = ["jdbc:postgresql://", "postgresql://", "postgres://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if authority.is_empty() {
        return None;
    }
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "5432"));
    Some(Database {
        host: host.to_owned(),
        port: port.to_owned(),
        name: path.split('?').next().unwrap_or_default().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_the_database_url_are_read_as_run_sh_would() {
        let text = "# comment\nexport SAULPOS_DB_URL=\"jdbc:postgresql://db.internal:6432/pos?ssl=true\"\nSAULPOS_DB_PASSWORD='a=b c'\nSAULPOS_DB_USERNAME=first\nSAULPOS_DB_USERNAME=second\n";
        assert_eq!(value(text, "SAULPOS_DB_PASSWORD").as_deref(), Some("a=b c"));
        assert_eq!(
            value(text, "SAULPOS_DB_USERNAME").as_deref(),
            Some("second")
        );
        assert_eq!(
            database(text),
            Some(Database {
                host: "db.internal".into(),
                port: "6432".into(),
                name: "pos".into()
            })
        );
        assert_eq!(
            database("SAULPOS_DB_URL=postgres://h/x").unwrap().port,
            "5432"
        );
        assert_eq!(database("SAULPOS_DB_USERNAME=u"), None);
    }
}
