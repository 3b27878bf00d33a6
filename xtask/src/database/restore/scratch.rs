//! The scratch database a restore loads into: the databases looked up (and the scratch ones
//! killed restores left, named, never dropped), the scratch one created like the target, and
//! dropped on any failure (by its guard if this process is killed).

use anyhow::Context;

use crate::database::postgres::{self, Server};
use crate::database::restore_guard;

/// Whether `database` exists, and the scratch databases that restores of it left behind when
/// they were killed together with their guard (nobody was left to drop them), in one query.
/// Those are named, never dropped: another restore, maybe from another machine, could still be
/// filling one.
pub fn databases(server: &Server, database: &str) -> anyhow::Result<(bool, Vec<String>)> {
    let names = server.psql("postgres", DATABASES, &[("like", database)])?;
    Ok(leftovers_of(&names, database))
}

/// The target `:like` and every scratch database of a restore, one name a line.
const DATABASES: &str = include_str!("../sql/databases.sql");

/// Whether `database` is among `names`, and the scratch databases killed restores of it left.
fn leftovers_of(names: &str, database: &str) -> (bool, Vec<String>) {
    let exists = names.lines().any(|name| name == database);
    let leftovers = names
        .lines()
        .filter(|name| {
            name.rsplit_once("_restoring_").is_some_and(|(_, pid)| {
                !pid.is_empty()
                    && pid.bytes().all(|byte| byte.is_ascii_digit())
                    && *name
                        == postgres::identifier_with_suffix(database, &format!("_restoring_{pid}"))
            })
        })
        .map(str::to_owned)
        .collect();
    (exists, leftovers)
}

/// Creates the scratch database. Restoring over `like`, it takes that database's owner,
/// encoding, locale and tablespace, which cannot change once it exists: the swap must not hand
/// the schema `public` (owned by the database owner) to whoever ran the restore, nor sort text
/// another way. The columns are read through `to_jsonb` so that servers with and without locale
/// providers (PostgreSQL 15+) and with either name for the ICU locale (17 renamed it) all work.
pub fn create_scratch(server: &Server, name: &str, like: Option<&str>) -> anyhow::Result<()> {
    let Some(like) = like else {
        server.psql(
            "postgres",
            "CREATE DATABASE :\"name\" TEMPLATE template0",
            &[("name", name)],
        )?;
        return Ok(());
    };
    server
        .psql("postgres", CREATE_LIKE, &[("name", name), ("like", like)])
        .with_context(|| scratch_refused(like))?;
    Ok(())
}

/// `CREATE DATABASE :name` like `:like` (its owner, encoding, locale and tablespace).
const CREATE_LIKE: &str = include_str!("../sql/create_like.sql");

fn scratch_refused(like: &str) -> String {
    format!(
        "cannot create the scratch database with the owner, encoding, locale and tablespace of {like:?} (restore as a superuser, or as a member of its owner's role); nothing was restored"
    )
}

/// `databases` and `create_scratch` in one session: the target and the leftovers are listed
/// before the scratch database is created, like the target when it exists, plain otherwise.
pub fn databases_and_scratch(
    server: &Server,
    database: &str,
    scratch: &str,
) -> anyhow::Result<(bool, Vec<String>)> {
    let sql = format!(
        "{DATABASES};\n{CREATE_LIKE}\
         SELECT format('CREATE DATABASE %I TEMPLATE template0', :'name') \
         WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'like') \\gexec\n"
    );
    let names = server
        .psql("postgres", &sql, &[("name", scratch), ("like", database)])
        .with_context(|| scratch_refused(database))?;
    Ok(leftovers_of(&names, database))
}

/// The scratch database, dropped unless it was swapped in; where this process cannot drop it
/// (it is killed), its guard does.
pub struct Scratch {
    pub server: Server,
    pub name: String,
    pub keep: bool,
    pub guard: Option<std::process::Child>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            match self.server.drop_database(&self.name) {
                Ok(true) => eprintln!("dropped the scratch database {:?}", self.name),
                Ok(false) => {}
                Err(error) => eprintln!(
                    "could not drop the scratch database {:?}: {error:#}; drop it by hand",
                    self.name
                ),
            }
        }
        if let Some(guard) = self.guard.take() {
            restore_guard::finish(guard);
        }
    }
}
