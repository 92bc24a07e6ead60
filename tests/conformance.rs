//! Real third-party clients against a real Corvid binary (see `conformance/`).
//! They need Node and npm; outside CI a machine without them skips with a
//! message, in CI (`CI` set) their absence fails the test.

use std::{path::Path, process::Command};

fn tool_available(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn require_tools(tools: &[&str]) -> bool {
    let missing: Vec<&&str> = tools.iter().filter(|t| !tool_available(t)).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must provide {missing:?} for the conformance scenarios"
    );
    eprintln!("skipping conformance scenario: {missing:?} not installed");
    false
}

/// Runs `conformance/js/run.sh <corvid> <scenario>` and returns its stdout;
/// panics with both outputs when it fails.
fn run_js_scenario(scenario: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/js/run.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_corvid"))
        .arg(scenario)
        .env_remove("RUST_LOG")
        .output()
        .expect("run conformance/js/run.sh");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "js-sdk {scenario} scenario failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stdout
}

/// matrix-js-sdk (with Node 22 from npm): a DM, 200 messages each way, a
/// server restart in the middle, exactly-once delivery and full history.
#[test]
fn matrix_js_sdk_dm_scenario() {
    if !require_tools(&["npm", "node"]) {
        return;
    }
    let stdout = run_js_scenario("dm");
    assert!(stdout.contains("0 lost, 0 duplicated"), "{stdout}");
    println!("{stdout}");
}

/// matrix-js-sdk: what a messenger shows, seen through the SDK's model:
/// typing, delivered then read receipts, an edit, a reaction, a thread,
/// search with context, unread counts, and the latency of typing and
/// receipts (printed).
#[test]
fn matrix_js_sdk_messenger_scenario() {
    if !require_tools(&["npm", "node"]) {
        return;
    }
    let stdout = run_js_scenario("messenger");
    assert!(stdout.contains("8 passed, 0 failed"), "{stdout}");
    assert!(stdout.contains("ephemeral latency typing p50="), "{stdout}");
    println!("{stdout}");
}

/// matrix-js-sdk: alice uploads a photo and sends it as `m.image`; bob's
/// client downloads it and two thumbnails through the authenticated media
/// endpoints (URLs from the SDK's `mxcUrlToHttp`).
#[test]
fn matrix_js_sdk_media_scenario() {
    if !require_tools(&["npm", "node"]) {
        return;
    }
    let stdout = run_js_scenario("media");
    assert!(stdout.contains("1 passed, 0 failed"), "{stdout}");
    assert!(stdout.contains("identical to the upload"), "{stdout}");
    println!("{stdout}");
}

/// matrix-js-sdk with its Rust crypto: cross-signing for alice and bob, an
/// encrypted DM decrypted both ways, bob's second device restoring old keys
/// from the key backup and verified by cross-signing, and no plaintext in
/// the database.
#[test]
fn matrix_js_sdk_e2ee_scenario() {
    if !require_tools(&["npm", "node"]) {
        return;
    }
    let stdout = run_js_scenario("e2ee");
    assert!(stdout.contains("1 passed, 0 failed"), "{stdout}");
    assert!(stdout.contains("keys from backup version"), "{stdout}");
    println!("{stdout}");
}
