//! A Rust client for the waitroom HTTP API, generated at build time by
//! [progenitor](https://crates.io/crates/progenitor) from the checked-in
//! `openapi/waitroom.json` (which a waitroom test keeps equal to the served document), so a
//! change of the API that breaks generated clients breaks this crate's build. The API needs
//! a bearer token when the server has one configured: pass a `reqwest::Client` with an
//! `Authorization` default header to `Client::new_with_client`.
//!
//! ```ignore
//! let client = waitroom_client::Client::new("http://127.0.0.1:5000");
//! let created = client
//!     .create_queue(None, None, None, &waitroom_client::types::CreateQueueRequest { .. })
//!     .await?;
//! ```

// build.rs writes the document progenitor reads: the checked-in one, less the 401 of the one
// operation whose errors progenitor could not type as one (see there).
progenitor::generate_api!(
    spec = { path = "waitroom.json", relative_to = OutDir },
    interface = Builder,
    tags = Merged,
);
