//! The `corvid` binary as an admin uses it: a config file, `migrate`,
//! `user create`, `registration-token create`, `serve`, and SIGTERM.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

fn corvid(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_corvid"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run corvid")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_until_up(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if reqwest::get(format!("{base}/_matrix/client/versions"))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not start");
}

async fn register(base: &str, body: Value) -> (reqwest::StatusCode, Value) {
    let res = reqwest::Client::new()
        .post(format!("{base}/_matrix/client/v3/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (res.status(), res.json().await.unwrap())
}

#[tokio::test]
async fn admin_commands_and_token_registration() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("corvid.toml");
    std::fs::write(
        &config,
        format!(
            "server_name = \"cli.test\"\ndata_dir = \"{}\"\nregistration = \"token\"\n[listen]\nclient = \"127.0.0.1:{port}\"\n[rate_limit]\nenabled = false\n",
            dir.path().display()
        ),
    )
    .unwrap();

    let out = corvid(&config, &["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = corvid(
        &config,
        &["user", "create", "admin", "--password", "pw", "--admin"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("@admin:cli.test"));
    let out = corvid(&config, &["user", "create", "admin", "--password", "pw"]);
    assert!(!out.status.success(), "a taken name is refused");
    let out = corvid(
        &config,
        &["registration-token", "create", "letmein", "--uses", "1"],
    );
    assert!(out.status.success());
    assert!(
        dir.path().join("cli.test.signing.key").exists(),
        "the signing key is kept in data_dir"
    );

    let base = format!("http://127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_corvid"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Serving(child);
    wait_until_up(&base).await;

    let (status, challenge) = register(&base, json!({"username": "bob", "password": "pw"})).await;
    assert_eq!(status, 401);
    assert_eq!(
        challenge["flows"][0]["stages"][0],
        "m.login.registration_token"
    );
    let session = challenge["session"].as_str().unwrap();
    let (status, bad) = register(
        &base,
        json!({"username": "bob", "password": "pw", "auth": {"type": "m.login.registration_token", "token": "wrong", "session": session}}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), bad["errcode"].as_str()),
        (401, Some("M_FORBIDDEN"))
    );
    let (status, ok) = register(
        &base,
        json!({"username": "bob", "password": "pw", "auth": {"type": "m.login.registration_token", "token": "letmein", "session": session}}),
    )
    .await;
    assert_eq!(status, 200, "{ok}");
    let (status, _) = register(
        &base,
        json!({"username": "carol", "password": "pw", "auth": {"type": "m.login.registration_token", "token": "letmein"}}),
    )
    .await;
    assert_eq!(status, 401, "the token allowed one use");
    let (status, dummy) = register(
        &base,
        json!({"username": "dave", "password": "pw", "auth": {"type": "m.login.dummy"}}),
    )
    .await;
    assert_eq!(
        status, 401,
        "m.login.dummy is not a stage of token registration: {dummy}"
    );
    assert!(
        dummy["errcode"].is_string() && dummy["flows"].is_array(),
        "{dummy}"
    );

    // SIGTERM: a clean, successful exit.
    let pid = server.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
}

#[test]
fn bad_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corvid.toml");
    std::fs::write(
        &config,
        "server_name = \"x.test\"\nregistraton = \"open\"\n",
    )
    .unwrap();
    let out = corvid(&config, &["migrate"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("registraton"), "{stderr}");
}
