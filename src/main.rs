//! The `frontdesk` command: `serve`, `migrate`, `models`, `kb`, `nlu`, `eval`, `bench`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use frontdesk::config::{Config, Overrides};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "frontdesk",
    version,
    about = "Omnichannel customer-support gateway"
)]
struct Cli {
    /// Configuration file (default: ./frontdesk.toml if present).
    #[arg(long, global = true, env = "FRONTDESK_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Default)]
struct Common {
    /// Address to listen on (FRONTDESK_LISTEN), e.g. 127.0.0.1:8080; port 0 picks a free one.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Directory for the SQLite database and other data (FRONTDESK_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the demo, with nothing configured).
    Serve(Common),
    /// Apply the database migrations and exit.
    Migrate(Common),
    /// The embedding model.
    #[command(subcommand)]
    Models(frontdesk::cli::ModelsCommand),
    /// The knowledge base.
    #[command(subcommand)]
    Kb(frontdesk::cli::KbCommand),
    /// Understanding: train and evaluate intent, sentiment and emotion models.
    #[command(subcommand)]
    Nlu(frontdesk::cli::NluCommand),
    /// Human agents for the console.
    #[command(subcommand)]
    Agent(frontdesk::cli::AgentCommand),
    /// Quality evaluations on labelled data.
    #[command(subcommand)]
    Eval(frontdesk::cli::EvalCommand),
    /// Benchmarks (not part of the test suite).
    #[command(subcommand)]
    Bench(frontdesk::bench::BenchCommand),
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load(config: Option<&std::path::Path>, common: Common) -> anyhow::Result<Config> {
    Config::load(
        config,
        Overrides {
            listen: common.listen,
            data_dir: common.data_dir,
        },
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(common) => {
            let config = load(cli.config.as_deref(), common)?;
            init_logging(&config);
            frontdesk::app::serve(config).await
        }
        Command::Migrate(common) => {
            let config = load(cli.config.as_deref(), common)?;
            init_logging(&config);
            std::fs::create_dir_all(&config.data_dir)?;
            let url = config.database_url();
            frontdesk::store::Store::open(&url, 2).await?;
            println!("migrations applied to {}", frontdesk::app::redact(&url));
            Ok(())
        }
        Command::Models(cmd) => {
            let config = load(cli.config.as_deref(), Common::default())?;
            init_logging(&config);
            frontdesk::cli::models(cmd, &config)
        }
        Command::Kb(cmd) => {
            let config = load(cli.config.as_deref(), Common::default())?;
            init_logging(&config);
            frontdesk::cli::kb(cmd, &config).await
        }
        Command::Nlu(cmd) => {
            let config = load(cli.config.as_deref(), Common::default())?;
            init_logging(&config);
            frontdesk::cli::nlu(cmd, &config).await
        }
        Command::Agent(cmd) => {
            let config = load(cli.config.as_deref(), Common::default())?;
            init_logging(&config);
            frontdesk::cli::agent(cmd, &config).await
        }
        Command::Eval(cmd) => {
            let config = load(cli.config.as_deref(), Common::default())?;
            init_logging(&config);
            frontdesk::cli::eval(cmd, &config).await
        }
        Command::Bench(cmd) => {
            let config = load(cli.config.as_deref(), Common::default())?;
            frontdesk::bench::run(cmd, config).await
        }
    }
}
