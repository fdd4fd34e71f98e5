//! A Rust client for the waitroom HTTP API, generated at build time by
//! [progenitor](https://crates.io/crates/progenitor) from the checked-in
//! `openapi/waitroom.json` (which a waitroom test keeps equal to the served document), so a
//! change of the API that breaks generated clients breaks this crate's build.
//!
//! ```ignore
//! let client = waitroom_client::Client::new("http://127.0.0.1:5000");
//! let created = client
//!     .create_queue(None, None, None, &waitroom_client::types::CreateQueueRequest { .. })
//!     .await?;
//! ```

progenitor::generate_api!(
    spec = "../../openapi/waitroom.json",
    interface = Builder,
    tags = Merged,
);
