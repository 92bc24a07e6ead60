//! The `corvid` binary: `serve`, `migrate`, and admin subcommands.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use corvid::{
    Config, Server,
    service::{accounts, media},
    store::Db,
};
use corvid_federation::ServerSigningKey;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "corvid", version, about = "A Matrix homeserver")]
struct Cli {
    /// TOML config file; without one, a development server with open registration.
    #[arg(long, global = true, env = "CORVID_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage registration tokens.
    RegistrationToken {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage the media repository.
    Media {
        #[command(subcommand)]
        command: MediaCommand,
    },
}

#[derive(Subcommand)]
enum MediaCommand {
    /// Delete cached remote media (and with --local, local uploads too)
    /// stored before a date, files included.
    Purge {
        /// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SSZ` (UTC) or milliseconds since the epoch.
        #[arg(long, value_parser = parse_cutoff)]
        before: i64,
        #[arg(long)]
        local: bool,
    },
    /// Stop serving a media id (`mxc://server/id`); --undo serves it again.
    Quarantine {
        uri: String,
        #[arg(long)]
        undo: bool,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account.
    Create {
        localpart: String,
        #[arg(long, env = "CORVID_NEW_USER_PASSWORD")]
        password: String,
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a registration token (random when none is given).
    Create {
        token: Option<String>,
        /// How many registrations it allows (unlimited when absent).
        #[arg(long)]
        uses: Option<i64>,
    },
}

fn main() -> ExitCode {
    return_large_blocks_to_the_system();
    tokio::runtime::Runtime::new()
        .expect("tokio runtime")
        .block_on(run_cli())
}

/// glibc raises its mmap threshold after a large block is freed, so later
/// large blocks (argon2's megabytes per password hash) come from per-thread
/// arenas and stay resident: hundreds of MiB after a burst of logins. A fixed
/// threshold keeps large blocks mmapped, and returned when freed. One arena
/// for all threads: each arena more holds its own free space (measured:
/// the benchmark's peak 2-3 MiB lower with one than with two, send
/// throughput within ~5 %).
fn return_large_blocks_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

async fn run_cli() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,ruma_state_res=warn")),
        )
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corvid: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load(cli.config.as_deref())?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create data_dir {}: {e}", config.data_dir.display()))?;
    let db = Db::connect(&config.database_url).await?;
    let applied = db.migrate().await?;
    if !applied.is_empty() {
        tracing::info!(?applied, "migrations applied");
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config, db).await,
        Command::Migrate => {
            println!(
                "database is up to date ({} migrations applied now)",
                applied.len()
            );
            Ok(())
        }
        Command::User {
            command:
                UserCommand::Create {
                    localpart,
                    password,
                    admin,
                },
        } => {
            let server = Server::new(
                config.clone(),
                db,
                ServerSigningKey::load_or_generate(&config.signing_key_path())?,
            )?;
            let user_id = accounts::validate_localpart(&server, &localpart)?;
            accounts::create_user(&server, &user_id, Some(&password), admin).await?;
            println!("created {user_id}");
            Ok(())
        }
        Command::RegistrationToken {
            command: TokenCommand::Create { token, uses },
        } => {
            let token = token.unwrap_or_else(|| accounts::random_string(16));
            if !db.create_registration_token(&token, uses, None).await? {
                return Err(format!("registration token {token} already exists").into());
            }
            println!("{token}");
            Ok(())
        }
        Command::Media { command } => {
            let server = Server::new(
                config.clone(),
                db,
                ServerSigningKey::load_or_generate(&config.signing_key_path())?,
            )?;
            match command {
                MediaCommand::Purge { before, local } => {
                    let purged = media::purge(&server, before, local).await?;
                    println!("purged {purged} media");
                }
                MediaCommand::Quarantine { uri, undo } => {
                    media::set_quarantined(&server, &uri, !undo).await?;
                    let state = if undo { "released" } else { "quarantined" };
                    println!("{state} {uri}");
                }
            }
            Ok(())
        }
    }
}

/// A UTC date or time, or milliseconds since the epoch.
fn parse_cutoff(value: &str) -> Result<i64, String> {
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || format!("`{value}` is not YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or milliseconds");
    let (date, time) = match value.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z').ok_or_else(bad)?)),
        None => (value, None),
    };
    let numbers = |s: &str, sep: char| -> Result<Vec<i64>, String> {
        s.split(sep)
            .map(|p| p.parse::<i64>().map_err(|_| bad()))
            .collect()
    };
    let [year, month, day] = numbers(date, '-')?[..] else {
        return Err(bad());
    };
    let [hour, minute, second] = match time {
        Some(t) => numbers(t, ':')?[..].try_into().map_err(|_| bad())?,
        None => [0, 0, 0],
    };
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && (0..24).contains(&hour)
        && (0..60).contains(&minute)
        && (0..61).contains(&second);
    if !valid {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    Ok(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

async fn serve(config: Config, db: Db) -> Result<(), Box<dyn std::error::Error>> {
    db.close().await;
    let listeners = corvid::listen::Listeners::bind(&config.listen).await?;
    tracing::info!(
        server_name = %config.server_name,
        client = %config.listen.client,
        federation = ?config.listen.federation,
        tls = ?config.tls.as_ref().map(|t| &t.listeners),
        registration = ?config.registration,
        "corvid listening"
    );
    corvid::run_server(config, listeners, shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("corvid stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing requests in flight");
}

#[cfg(test)]
mod tests {
    use super::parse_cutoff;

    #[test]
    fn cutoffs_parse_as_utc() {
        assert_eq!(parse_cutoff("1970-01-01"), Ok(0));
        assert_eq!(parse_cutoff("2000-03-01"), Ok(951_868_800_000));
        assert_eq!(parse_cutoff("2026-12-04T13:16:38Z"), Ok(1_796_390_198_000));
        assert_eq!(parse_cutoff("1234"), Ok(1234));
        assert!(parse_cutoff("2026-13-01").is_err());
        assert!(parse_cutoff("yesterday").is_err());
    }
}
