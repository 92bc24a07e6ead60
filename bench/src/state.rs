//! Set-up kept apart from measurement. `--setup-only --state FILE` runs a
//! workload's set-up and writes what it made (users with their tokens,
//! rooms) to FILE; `--state FILE` alone then measures from it. The
//! side-by-side run sets a slow server up this way while Corvid builds.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    /// The workload and its arguments as given: measuring with others is refused.
    pub workload: String,
    pub args: String,
    pub url: String,
    /// The run's identity, so that users registered while measuring are
    /// named like those of the set-up.
    pub run_id: String,
    pub password: String,
    pub setup: Value,
}

impl State {
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        serde_json::from_slice(&text)
            .map_err(|e| format!("{}: not a state file: {e}", path.display()))
    }

    pub fn write(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_vec(self).expect("a state serializes");
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// The state was set up for this very workload, arguments and server.
    pub fn check(&self, workload: &str, args: &str, url: &str) -> Result<(), String> {
        if self.workload != workload || self.args != args || self.url != url {
            return Err(format!(
                "the state was set up for `{}` with {} against {}, not `{workload}` with {args} against {url}",
                self.workload, self.args, self.url
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            workload: "join".into(),
            args: "Join(Args { members: 500, trials: 5 })".into(),
            url: "http://127.0.0.1:8008".into(),
            run_id: "abcd1234".into(),
            password: "pw".into(),
            setup: serde_json::json!({"room": "!r:x"}),
        }
    }

    #[test]
    fn a_kept_state_reads_back_as_written() {
        let path = std::env::temp_dir().join(format!("corvid-bench-state-{}", std::process::id()));
        state().write(&path).unwrap();
        let back = State::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back.run_id, "abcd1234");
        assert_eq!(back.setup, serde_json::json!({"room": "!r:x"}));
        assert!(back.check("join", &state().args, &state().url).is_ok());
    }

    #[test]
    fn a_state_is_refused_for_another_workload_arguments_or_server() {
        let s = state();
        assert!(s.check("send", &s.args, &s.url).is_err());
        assert!(
            s.check("join", "Join(Args { members: 50, trials: 5 })", &s.url)
                .is_err()
        );
        assert!(s.check("join", &s.args, "http://127.0.0.1:8009").is_err());
    }

    #[test]
    fn a_missing_or_foreign_file_is_an_error_not_a_panic() {
        let missing = std::env::temp_dir().join("corvid-bench-no-such-state");
        assert!(State::read(&missing).unwrap_err().contains("reading"));
        let foreign =
            std::env::temp_dir().join(format!("corvid-bench-foreign-{}", std::process::id()));
        std::fs::write(&foreign, b"{\"rooms\": []}").unwrap();
        let err = State::read(&foreign).unwrap_err();
        std::fs::remove_file(&foreign).unwrap();
        assert!(err.contains("not a state file"), "{err}");
    }
}
