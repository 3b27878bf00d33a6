//! Rebuilds the server when a migration is added or changed: `sqlx::migrate!()` embeds the
//! `migrations/` folder, which cargo does not watch by itself on stable Rust.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
