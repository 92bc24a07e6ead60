//! The user directory: spec client-server API, "User Directory".
//!
//! Searched: the users the searcher shares a room with, and the users joined
//! to rooms that are public (join rule) or world-readable, the minimum the
//! spec asks for (Synapse's default, `search_all_users = false`).
//! Deactivated users are never found.

use ruma::{OwnedUserId, UserId};

use crate::{Result, Server, store::user_directory::WORD_SEPARATORS};

/// More than a client shows in a list.
const MAX_LIMIT: u64 = 100;
/// Words of a search term beyond these are ignored.
const MAX_WORDS: usize = 8;

pub struct Found {
    pub user_id: OwnedUserId,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

/// The users whose id or display name has a word starting with each word of
/// `term` (case-insensitively), at most `limit`, and whether more matched.
pub async fn search(
    server: &Server,
    searcher: &UserId,
    term: &str,
    limit: u64,
) -> Result<(Vec<Found>, bool)> {
    let words = words(term);
    if words.is_empty() {
        return Ok((Vec::new(), false));
    }
    let limit = limit.min(MAX_LIMIT) as usize;
    let rows = server
        .db
        .search_user_directory(searcher.as_str(), &words, limit as i64 + 1)
        .await?;
    let limited = rows.len() > limit;
    let found = rows
        .into_iter()
        .take(limit)
        .filter_map(|row| {
            Some(Found {
                // Member state keys were validated when their events were accepted.
                user_id: row.user_id.try_into().ok()?,
                displayname: row.displayname,
                avatar_url: row.avatar_url,
            })
        })
        .collect();
    Ok((found, limited))
}

/// The words of a search term, as user ids and display names are split.
fn words(term: &str) -> Vec<String> {
    term.split(|c: char| c.is_whitespace() || WORD_SEPARATORS.contains(&c))
        .filter(|w| !w.is_empty())
        .take(MAX_WORDS)
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_split_like_user_ids() {
        assert_eq!(
            words("@alice.smith:example.org"),
            ["alice", "smith", "example", "org"]
        );
        assert_eq!(words("  Bob  Jones "), ["Bob", "Jones"]);
        assert!(words(" @: ").is_empty());
    }
}
