//! `symphony-host`: the command line. Parses arguments, sets up logging,
//! calls the library ([`symphony_host::commands`], [`symphony_host::run`])
//! and prints what it returns.

// Host code reads slices with `get` and patterns, never `[i]`: a bad
// index is an error to report, not a panic in the control plane. (Tests may
// index.)
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use symphony_host::commands;
use symphony_host::delivery::DeadFilter;
use symphony_host::manifest::AdminListen;
use symphony_host::manifest::{ClusterSeeds, RedisOverride, RedisUrl};
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
        #[command(flatten)]
        redis: RedisArgs,
        /// Where the admin server (health probes, Prometheus metrics)
        /// listens, replacing the manifest's `[admin] listen` (default
        /// 127.0.0.1:9464): IP:PORT, port 0 for a free port, or "off".
        /// Beyond loopback it needs SYMPHONY_ADMIN_TOKEN or
        /// `[admin] token_file`.
        #[arg(long, env = "SYMPHONY_ADMIN_LISTEN", value_name = "ADDR")]
        admin_listen: Option<AdminListen>,
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
    /// Create a plugin project (Rust, JavaScript or Go) in its own
    /// directory: a handler, its test, the SDK, the WIT, a README and a
    /// manifest (`symphony.toml`) that runs it.
    ///
    /// Then: `cd NAME && symphony-host build && symphony-host invoke
    /// symphony.toml acme NAME_hello u1`.
    New {
        /// The language: rust, js or go.
        language: symphony_host::author::Language,
        /// The plugin's name: lowercase letters, digits, `-` and `_`. It
        /// names the project, the plugin and its action prefix (`NAME_`).
        name: String,
        /// The project's directory (default: ./NAME); it must not exist
        /// or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build the plugin project in DIR into a component (dist/NAME.wasm),
    /// with its language's toolchain, which is installed at pinned
    /// versions on first use, once per machine.
    Build {
        /// The project (default: the current directory).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Write the component here instead of DIR/dist/NAME.wasm.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Run the plugin that owns ACTION once, now, against the configured
    /// Redis, with the manifest's limits and capabilities; print its logs,
    /// its outcome and duration, and every Redis command its host calls
    /// made. Exits non-zero when the plugin fails.
    ///
    /// It does not touch the due index or trigger keys, unless the plugin
    /// calls the trigger repository.
    Invoke {
        /// The manifest (TOML).
        manifest: PathBuf,
        /// Tenant (docs/security.md gives the rule for names).
        #[arg(value_parser = symphony_host::keys::parse_tenant)]
        tenant: String,
        /// Action (routes to the plugin by prefix).
        action: String,
        /// Identifier.
        id: String,
        /// Redis URL replacing the manifest's (standalone only).
        #[arg(long, env = "SYMPHONY_REDIS_URL")]
        redis_url: Option<RedisUrl>,
        /// Run against a throwaway copy: a private redis-server (from PATH)
        /// holding a copy of the tenant's keys (`TENANT:*` in every pool's
        /// DB). The plugin reads real data; its writes go to the copy,
        /// which is deleted afterwards.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Which dead letters `retry` and `purge` act on.
#[derive(Args)]
struct DeadFilterArgs {
    /// Only the dead letters of this trigger key.
    #[arg(long)]
    key: Option<String>,
    /// Only this tenant's.
    #[arg(long, value_parser = symphony_host::keys::parse_tenant)]
    tenant: Option<String>,
    /// Only this action's.
    #[arg(long)]
    action: Option<String>,
}

impl From<DeadFilterArgs> for DeadFilter {
    fn from(a: DeadFilterArgs) -> Self {
        DeadFilter {
            key: a.key,
            tenant: a.tenant,
            action: a.action,
        }
    }
}

#[derive(Subcommand)]
enum DeadCommand {
    /// Print every dead letter, newest first, one JSON object per line
    /// (tenant, action, id, key, attempts, last_error, first_due_ms, failed_at_ms).
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Queue dead letters to run again now, with a fresh attempt count
    /// (all of them, or those matching every filter given).
    Retry {
        #[command(flatten)]
        filter: DeadFilterArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Delete dead letters (all of them, or those matching every filter
    /// given).
    Purge {
        #[command(flatten)]
        filter: DeadFilterArgs,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum TriggerCommand {
    /// Set `{tenant}:EXPTRIGGER:{action}:{id}` to fire after --ttl
    /// (`:` in action and id is escaped to `_`, as the Python library does).
    Set {
        /// Tenant (docs/security.md gives the rule for names).
        #[arg(value_parser = symphony_host::keys::parse_tenant)]
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
        /// Tenant (docs/security.md gives the rule for names).
        #[arg(value_parser = symphony_host::keys::parse_tenant)]
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
    #[command(flatten)]
    redis: RedisArgs,
}

/// Redis settings that replace the manifest's.
#[derive(Args)]
struct RedisArgs {
    /// Redis URL replacing the manifest's (each pool alias keeps its seed
    /// DB; the expiry pool, with the triggers, is DB 8).
    #[arg(long, env = "SYMPHONY_REDIS_URL")]
    redis_url: Option<RedisUrl>,
    /// Redis Cluster seed URLs, comma-separated, replacing the manifest's
    /// Redis settings: every pool alias is in the cluster's DB 0.
    #[arg(
        long,
        env = "SYMPHONY_REDIS_CLUSTER",
        value_name = "URLS",
        conflicts_with = "redis_url"
    )]
    redis_cluster: Option<ClusterSeeds>,
}

impl From<Target> for commands::Target {
    fn from(t: Target) -> Self {
        commands::Target {
            manifest: t.manifest,
            redis_url: t.redis.redis_url,
            redis_cluster: t.redis.redis_cluster,
        }
    }
}

/// Sets up logging to stderr, in batches ([`symphony_host::logwriter`]);
/// the guard writes what is left when dropped.
fn init_tracing(
    format: LogFormat,
) -> std::io::Result<symphony_host::logwriter::FlushGuard<std::io::Stderr>> {
    let (stderr, guard) = symphony_host::logwriter::Batched::stderr()?;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,wasmtime=warn,cranelift=warn"));
    match format {
        // Every field goes through `Escaping`: plugin-controlled text
        // (messages, errors, ids) cannot break a line or forge another.
        // (The JSON format escapes control characters by itself.)
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(stderr)
            .with_ansi(std::io::stderr().is_terminal())
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
        // One object per line: the event's fields and those of its span (a
        // job's tenant, action, id, plugin, ...) side by side at the top
        // level, as if the event carried them itself.
        LogFormat::Json => {
            use tracing_subscriber::layer::SubscriberExt as _;
            use tracing_subscriber::util::SubscriberInitExt as _;
            let mut json = json_subscriber::JsonLayer::new(stderr);
            json.with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime)
                .with_level("level")
                .with_flattened_event()
                .with_top_level_flattened_current_span()
                .with_target("target");
            tracing_subscriber::registry()
                .with(filter)
                .with(json)
                .init();
        }
    }
    Ok(guard)
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
            redis,
            admin_listen,
        } => {
            let options = symphony_host::RunOptions::default()
                .with_redis(RedisOverride::from_options(
                    redis.redis_url,
                    redis.redis_cluster,
                ))
                .with_admin_listen(admin_listen);
            symphony_host::run(&manifest, options, shutdown_signal()).await
        }
        Command::Check { manifest } => check_command(&manifest).await,
        Command::Reload { manifest } => {
            let pid = symphony_host::reload::signal_reload(&manifest)?;
            println!(
                "asked the host (pid {pid}) to reload {}",
                manifest.display()
            );
            Ok(())
        }
        Command::New {
            language,
            name,
            dir,
        } => {
            let project =
                symphony_host::author::scaffold::new_project(language, &name, dir.as_deref())?;
            for file in &project.files {
                println!("wrote {}", project.dir.join(file).display());
            }
            println!(
                "made {language} plugin {name} in {}; next: cd {} && symphony-host build",
                project.dir.display(),
                project.dir.display()
            );
            Ok(())
        }
        Command::Build { dir, out } => {
            let built = symphony_host::author::build::build(&dir, out.as_deref())?;
            println!(
                "built {} plugin {}: {} ({} KiB)",
                built.language,
                built.name,
                built.path.display(),
                built.size.div_ceil(1024)
            );
            Ok(())
        }
        Command::Invoke {
            manifest,
            tenant,
            action,
            id,
            redis_url,
            dry_run,
        } => {
            let over = RedisOverride::from_options(redis_url, None);
            let request =
                symphony_host::author::invoke::Request::new(&tenant, &action, &id, dry_run);
            invoke_command(&manifest, over.as_ref(), &request, &tenant).await
        }
        Command::Dead(command) => dead_command(command).await,
        Command::Trigger(command) => trigger_command(command).await,
    }
}

/// `check`: every plugin compiled, one line each.
async fn check_command(manifest: &std::path::Path) -> anyhow::Result<()> {
    let plugins = commands::check(manifest).await?;
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

/// `invoke`: runs one trigger's job and shows its Redis commands and
/// outcome; fails when the job failed.
async fn invoke_command(
    manifest: &std::path::Path,
    over: Option<&RedisOverride>,
    request: &symphony_host::author::invoke::Request,
    tenant: &str,
) -> anyhow::Result<()> {
    use symphony_host::author::invoke;
    let run = invoke::invoke(manifest, over, request).await?;
    if let Some(n) = run.copied {
        println!(
            "dry run: {n} key(s) of tenant {tenant} copied into a throwaway redis-server; nothing was written to the configured Redis"
        );
    }
    println!("plugin {} ran {}", run.plugin, run.key);
    println!("redis commands ({}):", run.commands.len());
    for c in &run.commands {
        let by = if c.in_script { "  script" } else { "" };
        // Values can be large: each argument is shown up to 200
        // characters, with its length when cut.
        let args: Vec<String> = c
            .args
            .iter()
            .map(|a| match a.char_indices().nth(200) {
                Some((cut, _)) => {
                    format!("{}…({} bytes)", a.get(..cut).unwrap_or(a), a.len())
                }
                None => a.clone(),
            })
            .collect();
        println!("  db {:<2}{by} {}", c.db, args.join(" "));
    }
    let ms = run.duration.as_secs_f64() * 1000.0;
    match run.outcome.detail() {
        None => {
            println!("outcome ok in {ms:.1} ms");
            Ok(())
        }
        Some(detail) => {
            println!("outcome {} in {ms:.1} ms: {detail}", run.outcome.as_str());
            anyhow::bail!(
                "plugin {} failed: outcome {}: {detail}",
                run.plugin,
                run.outcome.as_str()
            )
        }
    }
}

/// `dead list|retry|purge`.
async fn dead_command(command: DeadCommand) -> anyhow::Result<()> {
    match command {
        DeadCommand::List { target } => {
            let list = commands::dead_letters(&target.into()).await?;
            for letter in &list.letters {
                println!("{}", serde_json::to_string(letter)?);
            }
            for (position, error) in &list.unreadable {
                eprintln!(
                    "warning: entry {position} of the dead-letter list is not a dead letter \
                     ({error}); `dead retry` leaves it, `dead purge` deletes it"
                );
            }
            Ok(())
        }
        DeadCommand::Retry { filter, target } => {
            let n = commands::retry_dead(&target.into(), &filter.into()).await?;
            println!("{n} dead letter(s) queued again");
            Ok(())
        }
        DeadCommand::Purge { filter, target } => {
            let n = commands::purge_dead(&target.into(), &filter.into()).await?;
            println!("purged {n} dead letter(s)");
            Ok(())
        }
    }
}

/// `trigger set|set-many|cancel`.
async fn trigger_command(command: TriggerCommand) -> anyhow::Result<()> {
    match command {
        TriggerCommand::Set {
            tenant,
            action,
            id,
            ttl,
            target,
        } => {
            let key = commands::set_trigger(&target.into(), &tenant, &action, &id, ttl).await?;
            println!("set {key} (fires in {})", humantime::format_duration(ttl));
            Ok(())
        }
        TriggerCommand::SetMany { file, target } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let set = commands::set_triggers(&target.into(), &text)
                .await
                .with_context(|| file.display().to_string())?;
            println!("set {} triggers of {} tenants", set.triggers, set.tenants);
            Ok(())
        }
        TriggerCommand::Cancel {
            tenant,
            action,
            id,
            target,
        } => {
            if commands::cancel_trigger(&target.into(), &tenant, &action, &id).await? {
                println!("cancelled {action}:{id} of tenant {tenant}");
            } else {
                println!("no pending trigger {action}:{id} for tenant {tenant}");
            }
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = match init_tracing(cli.log_format) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: cannot start the log writer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = main_inner(cli).await;
    // Every log line out before the error, and before the process ends.
    drop(logs);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
