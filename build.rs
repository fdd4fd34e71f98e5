//! Rebuild when a migration changes: `refinery::embed_migrations!` reads `sql/` at compile time.
fn main() {
    println!("cargo:rerun-if-changed=sql");
}
