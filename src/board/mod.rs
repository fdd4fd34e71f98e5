//! The live waiting-room board: `GET /` (a queue picker) and `GET /board/{queueId}` (one
//! queue for the wall screen), served by the API process with their assets embedded in the
//! binary. Pages read the read model through `/live/queues…` (names masked here, on the
//! server, when `BOARD_NAMES=initials`) and learn of changes from `/live/events`, a
//! Server-Sent Events stream fed by the projector's commits through [`Feed`]: one LISTEN
//! connection per process, whatever the number of open pages. The staff line's aggregate
//! figures come from `/live/staff`, which needs no API token.
//!
//! These routes are HTML and the pages' own plumbing, not the public API: they are not in
//! the OpenAPI document.

pub mod feed;
mod pages;
mod staff;

use std::sync::Arc;

use deadpool_postgres::Pool;
use poem::{EndpointExt, Route, get};
use tokio_util::sync::CancellationToken;

pub use feed::{Change, Feed};

use crate::config::BoardNames;

/// What the board's handlers share.
#[derive(Clone)]
pub struct Board {
    pub pool: Pool,
    pub feed: Arc<Feed>,
    pub names: BoardNames,
    /// Ends the pages' event streams, so a graceful shutdown need not wait for them.
    pub shutdown: CancellationToken,
}

/// Adds the board's routes to `route`.
pub fn mount(route: Route, board: Board) -> Route {
    route
        .at("/", get(pages::index).data(board.clone()))
        .at(
            "/board/:queue_id",
            get(pages::board_page).data(board.clone()),
        )
        .at("/assets/board.css", get(pages::css))
        .at("/assets/board.js", get(pages::js))
        .at("/assets/index.js", get(pages::index_js))
        .at("/live/queues", get(pages::queues).data(board.clone()))
        .at(
            "/live/queues/:queue_id",
            get(pages::snapshot).data(board.clone()),
        )
        .at("/live/staff", get(staff::staff).data(board.clone()))
        .at("/live/events", get(pages::events).data(board))
}

/// A name as the board shows it: as checked in, or its initials (`Maria José García` →
/// `M. J. G.`; at most four).
pub fn display_name(name: &str, mode: BoardNames) -> String {
    match mode {
        BoardNames::Full => name.to_owned(),
        BoardNames::Initials => {
            let initials: Vec<String> = name
                .split_whitespace()
                .filter_map(|word| word.chars().find(|c| c.is_alphanumeric()))
                .take(4)
                .map(|c| format!("{}.", c.to_uppercase()))
                .collect();
            if initials.is_empty() {
                "?".to_owned()
            } else {
                initials.join(" ")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initials_hide_the_name() {
        let initials = |n| display_name(n, BoardNames::Initials);
        assert_eq!(initials("Maria José García"), "M. J. G.");
        assert_eq!(initials("  ana   lima "), "A. L.");
        assert_eq!(initials("Élodie"), "É.");
        assert_eq!(initials("(Bob) O'Neil"), "B. O.");
        assert_eq!(initials("a b c d e f"), "A. B. C. D.");
        assert_eq!(initials("--- ..."), "?");
        assert_eq!(
            display_name("Maria José García", BoardNames::Full),
            "Maria José García"
        );
    }
}
