//! The user directory: users the searcher shares a room with, or who are
//! joined to a public (or world-readable) room, matched by user id and
//! display name.

use super::{Backend, Db};
use crate::Result;

/// What separates words in user ids and display names, besides whitespace.
pub const WORD_SEPARATORS: [char; 8] = ['@', ':', '.', '_', '-', '=', '/', '+'];

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DirectoryUser {
    pub user_id: String,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

impl Db {
    /// Up to `limit` users visible to `searcher` in whose user id or display
    /// name every one of `words` starts a word; those whose name or localpart
    /// starts with the first word come first, then those with a display name.
    pub async fn search_user_directory(
        &self,
        searcher: &str,
        words: &[String],
        limit: i64,
    ) -> Result<Vec<DirectoryUser>> {
        let backend = self.backend();
        let haystack = format!(
            "' ' || {} || ' ' || {}",
            folded("c.user_id"),
            folded("COALESCE(u.displayname, '')")
        );
        let word_conditions: String = (0..words.len())
            .map(|i| format!(" AND {haystack} LIKE ${} ESCAPE '\\'", i + 2))
            .collect();
        let first = words.len() + 2;
        let sql = format!(
            "WITH visible_rooms AS ( \
                 SELECT room_id FROM memberships WHERE user_id = $1 AND membership = 'join' \
                 UNION {} UNION {} \
             ), candidates AS ( \
                 SELECT DISTINCT m.user_id FROM visible_rooms v CROSS JOIN memberships m \
                 WHERE m.room_id = v.room_id AND m.membership = 'join' \
             ) \
             SELECT c.user_id, u.displayname, u.avatar_url \
             FROM candidates c LEFT JOIN users u ON u.user_id = c.user_id \
             WHERE COALESCE(u.deactivated, 0) = 0{word_conditions} \
             ORDER BY CASE WHEN ' ' || {} LIKE ${first} ESCAPE '\\' OR {} LIKE ${first} ESCAPE '\\' THEN 0 ELSE 1 END, \
             u.displayname IS NULL, c.user_id LIMIT ${}",
            rooms_where(backend, "m.room.join_rules", "join_rule", "public"),
            rooms_where(
                backend,
                "m.room.history_visibility",
                "history_visibility",
                "world_readable"
            ),
            folded("COALESCE(u.displayname, '')"),
            folded("c.user_id"),
            first + 1,
        );
        let words: Vec<String> = words
            .iter()
            .map(|w| like_escape(&lower(backend, w)))
            .collect();
        let mut q = sqlx::query_as::<_, DirectoryUser>(&sql).bind(searcher);
        for word in &words {
            q = q.bind(format!("% {word}%"));
        }
        let first_word = words.first().map(String::as_str).unwrap_or_default();
        Ok(q.bind(format!(" {first_word}%"))
            .bind(limit)
            .fetch_all(self.pool())
            .await?)
    }
}

/// Rooms whose current `event_type` state has `content[field] = value`.
fn rooms_where(backend: Backend, event_type: &str, field: &str, value: &str) -> String {
    let content = match backend {
        Backend::Sqlite => format!("e.pdu ->> '$.content.{field}'"),
        // jsonb cannot hold U+0000, and a room must not break every search.
        Backend::Postgres => format!(
            "CASE WHEN strpos(e.pdu, E'\\\\u0000') = 0 THEN e.pdu::jsonb -> 'content' ->> '{field}' END"
        ),
    };
    format!(
        "SELECT c.room_id FROM rooms r CROSS JOIN current_state c CROSS JOIN events e \
         WHERE c.room_id = r.room_id AND c.event_type = '{event_type}' AND c.state_key = '' \
         AND e.event_id = c.event_id AND {content} = '{value}'"
    )
}

/// `expr` lower-cased, with every word separator turned into a space.
fn folded(expr: &str) -> String {
    WORD_SEPARATORS
        .iter()
        .fold(format!("lower({expr})"), |acc, c| {
            format!("replace({acc}, '{c}', ' ')")
        })
}

/// Lower-cased as the backend's `lower()` does it: SQLite folds ASCII only,
/// so a non-ASCII capital in the search term must stay as it is to match.
fn lower(backend: Backend, word: &str) -> String {
    match backend {
        Backend::Sqlite => word.to_ascii_lowercase(),
        Backend::Postgres => word.to_lowercase(),
    }
}

fn like_escape(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    for c in word.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(like_escape(r"50%_a\b"), r"50\%\_a\\b");
    }

    #[test]
    fn folding_replaces_every_separator() {
        let sql = folded("x");
        assert!(sql.contains("lower(x)"));
        for c in WORD_SEPARATORS {
            assert!(sql.contains(&format!("'{c}', ' '")), "{c} in {sql}");
        }
    }

    #[test]
    fn lower_case_follows_the_backend() {
        assert_eq!(lower(Backend::Sqlite, "ÉLodie"), "Élodie");
        assert_eq!(lower(Backend::Postgres, "ÉLodie"), "élodie");
    }
}
