// The migrations are embedded by `sqlx::migrate!`; without this a new migration file
// does not rebuild the crate, and a server built since runs without it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
