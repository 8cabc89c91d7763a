//! `symphony-host`: the command line. Parses arguments, sets up logging and
//! calls the library.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use symphony_host::delivery::Delivery;
use symphony_host::manifest::{Manifest, RedisUrl, seed_pool_urls};
use symphony_host::pools::Pools;
use symphony_host::repo::TriggerRepo;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt as _;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs WebAssembly component plugins when Redis trigger keys expire.
///
/// An application schedules work by writing `{tenant}:EXPTRIGGER:{action}:{id}`
/// with a TTL in the expiry DB (8); when it expires, the plugin that owns the
/// action (longest prefix in the manifest) runs `on-expire(action, id, key)`.
///
/// Logs go to stderr; RUST_LOG filters them (default `info`).
#[derive(Parser)]
#[command(name = "symphony-host", version, about, long_about)]
struct Cli {
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Listen for expiries and dispatch them to the manifest's plugins until
    /// SIGINT or SIGTERM (then drain in-flight jobs and exit 0).
    Run {
        /// The manifest (TOML).
        manifest: PathBuf,
        /// Redis URL replacing the manifest's (each pool alias keeps its seed DB).
        #[arg(long, env = "SYMPHONY_REDIS_URL")]
        redis_url: Option<RedisUrl>,
    },
    /// Parse and validate a manifest and compile every plugin; exits non-zero
    /// with a clear message (file:line:column for manifest errors) on failure.
    Check {
        /// The manifest (TOML).
        manifest: PathBuf,
    },
    /// Ask the host running this manifest to reload it and its plugins now
    /// (it also reloads by itself when the files change, and on SIGHUP).
    Reload {
        /// The manifest the host was started with.
        manifest: PathBuf,
    },
    /// Schedule or cancel a trigger.
    #[command(subcommand)]
    Trigger(TriggerCommand),
    /// Manage the dead-letter list: triggers whose handler failed every attempt.
    #[command(subcommand)]
    Dead(DeadCommand),
}

#[derive(Subcommand)]
enum DeadCommand {
    /// Print every dead letter, newest first, one JSON object per line
    /// (tenant, action, id, key, attempts, last_error, first_due_ms, failed_at_ms).
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Queue dead letters to run again now, with a fresh attempt count.
    Retry {
        /// Only the dead letters of this trigger key.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Delete every dead letter.
    Purge {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum TriggerCommand {
    /// Set `{tenant}:EXPTRIGGER:{action}:{id}` to fire after --ttl
    /// (`:` in action and id is escaped to `_`, as the Python library does).
    Set {
        /// Tenant.
        tenant: String,
        /// Action.
        action: String,
        /// Identifier.
        id: String,
        /// Time until it fires, e.g. `500ms`, `5s`, `2m`.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[command(flatten)]
        target: Target,
    },
    /// Set many triggers from a file (or stdin with `-`), one per line:
    /// `TENANT ACTION ID TTL` separated by spaces or tabs, e.g.
    /// `acme reminder_email 42 5s`. Blank lines and lines starting with `#`
    /// are skipped. Every line is checked first, so a bad line sets nothing;
    /// then the triggers are written in batches of 1000 per Redis call.
    SetMany {
        /// File of triggers, or `-` for stdin.
        file: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Cancel a pending trigger.
    Cancel {
        /// Tenant.
        tenant: String,
        /// Action.
        action: String,
        /// Identifier.
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Where the expiry pool is.
#[derive(clap::Args)]
struct Target {
    /// Take the Redis settings from this manifest.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Redis URL (overrides the manifest; the expiry pool uses DB 8).
    #[arg(long, env = "SYMPHONY_REDIS_URL")]
    redis_url: Option<RedisUrl>,
}

impl Target {
    fn pools(&self) -> anyhow::Result<Pools> {
        let urls = match &self.manifest {
            Some(path) => Manifest::load(path)?.pool_urls(self.redis_url.as_ref()),
            None => seed_pool_urls(self.redis_url.as_ref().unwrap_or(&RedisUrl::local())),
        };
        Pools::new(&urls)
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,wasmtime=warn,cranelift=warn,wasmtime_cache=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        // Every field goes through `Escaping`: plugin-controlled text
        // (messages, errors, ids) cannot break a line or forge another.
        // (The JSON format escapes control characters by itself.)
        LogFormat::Text => builder
            .fmt_fields(
                tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
                    use std::fmt::Write as _;
                    let mut out = symphony_host::text::Escaping(writer);
                    if field.name() == "message" {
                        write!(out, "{value:?}")
                    } else {
                        write!(out, "{}={value:?}", field.name())
                    }
                })
                .delimited(" "),
            )
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

async fn main_inner(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            manifest,
            redis_url,
        } => {
            let options = symphony_host::RunOptions::default().with_redis_url(redis_url);
            symphony_host::run(&manifest, options, shutdown_signal()).await
        }
        Command::Check { manifest } => {
            let plugins = symphony_host::check(&manifest).await?;
            for p in &plugins {
                println!(
                    "ok  {:<16} {}  version {}  loaded in {} ms  actions {}",
                    p.name,
                    p.path.display(),
                    p.digest,
                    p.load_time.as_millis(),
                    p.actions.join(", ")
                );
            }
            println!("{}: {} plugin(s) ok", manifest.display(), plugins.len());
            Ok(())
        }
        Command::Dead(command) => {
            let target = match &command {
                DeadCommand::List { target }
                | DeadCommand::Retry { target, .. }
                | DeadCommand::Purge { target } => target,
            };
            let delivery = Delivery::new(&target.pools()?)?;
            match &command {
                DeadCommand::List { .. } => {
                    for letter in delivery.dead_letters().await? {
                        println!("{}", serde_json::to_string(&letter)?);
                    }
                }
                DeadCommand::Retry { key, .. } => {
                    let n = delivery.retry_dead(key.as_deref()).await?;
                    println!("{n} dead letter(s) queued again");
                }
                DeadCommand::Purge { .. } => {
                    let n = delivery.purge_dead().await?;
                    println!("purged {n} dead letter(s)");
                }
            }
            Ok(())
        }
        Command::Reload { manifest } => {
            let pid = symphony_host::reload::signal_reload(&manifest)?;
            println!(
                "asked the host (pid {pid}) to reload {}",
                manifest.display()
            );
            Ok(())
        }
        Command::Trigger(TriggerCommand::Set {
            tenant,
            action,
            id,
            ttl,
            target,
        }) => {
            let repo = TriggerRepo::new(&target.pools()?, &tenant)?;
            let key = repo
                .set(&action, &id, ttl)
                .await
                .with_context(|| format!("cannot set trigger {action}:{id} of tenant {tenant}"))?;
            println!("set {key} (fires in {})", humantime::format_duration(ttl));
            Ok(())
        }
        Command::Trigger(TriggerCommand::SetMany { file, target }) => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let batches = parse_trigger_lines(&text)
                .with_context(|| format!("{}: nothing was set", file.display()))?;
            let pools = target.pools()?;
            let mut total = 0;
            for (tenant, triggers) in &batches {
                let repo = TriggerRepo::new(&pools, tenant)?;
                total += repo
                    .set_many(triggers)
                    .await
                    .with_context(|| format!("cannot set the triggers of tenant {tenant}"))?
                    .len();
            }
            println!("set {total} triggers of {} tenants", batches.len());
            Ok(())
        }
        Command::Trigger(TriggerCommand::Cancel {
            tenant,
            action,
            id,
            target,
        }) => {
            let repo = TriggerRepo::new(&target.pools()?, &tenant)?;
            let removed = repo.delete(&action, &id).await.with_context(|| {
                format!("cannot cancel trigger {action}:{id} of tenant {tenant}")
            })?;
            if removed {
                println!("cancelled {action}:{id} of tenant {tenant}");
            } else {
                println!("no pending trigger {action}:{id} for tenant {tenant}");
            }
            Ok(())
        }
    }
}

/// Triggers per tenant, in first-seen order.
type TriggerLines = Vec<(String, Vec<(String, String, Duration)>)>;

/// Parses `TENANT ACTION ID TTL` lines; the error names the first bad line.
fn parse_trigger_lines(text: &str) -> anyhow::Result<TriggerLines> {
    let mut batches: TriggerLines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [tenant, action, id, ttl] = fields.as_slice() else {
            anyhow::bail!(
                "line {}: expected `TENANT ACTION ID TTL`, found {} fields: {line:?}",
                n + 1,
                fields.len()
            );
        };
        let ttl = humantime::parse_duration(ttl)
            .with_context(|| format!("line {}: bad TTL {ttl:?} (use e.g. 500ms, 5s, 2m)", n + 1))?;
        symphony_host::keys::trigger_key(tenant, action, id)
            .with_context(|| format!("line {}: {line:?}", n + 1))?;
        symphony_host::repo::ttl_ms(ttl).with_context(|| format!("line {}", n + 1))?;
        let trigger = ((*action).to_owned(), (*id).to_owned(), ttl);
        match batches.iter_mut().find(|(t, _)| t == tenant) {
            Some((_, list)) => list.push(trigger),
            None => batches.push(((*tenant).to_owned(), vec![trigger])),
        }
    }
    Ok(batches)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match main_inner(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
