//! Where each epoch's bootstrap comes from: a template rendered with values, or a
//! static file used as-is.

use std::path::{Path, PathBuf};

use super::{render, RenderError, Rendered, TemplateSource, Values};

/// Where an epoch's bootstrap comes from.
#[derive(Debug, Clone)]
pub enum BootstrapPlan {
    /// A template rendered with values, re-read for every epoch.
    Template {
        /// Embedded name or file.
        source: TemplateSource,
        /// Everything the template may use (boxed: it is most of the plan's size).
        values: Box<Values>,
    },
    /// `--custom-config`: a static file copied as-is for every epoch.
    Custom(PathBuf),
}

impl BootstrapPlan {
    /// The bootstrap text (and, for JSON, its parsed form) as of now.
    pub fn produce(&self) -> Result<Rendered, PlanError> {
        match self {
            BootstrapPlan::Template { source, values } => {
                render(source, values).map_err(PlanError::Render)
            }
            BootstrapPlan::Custom(path) => read_custom(path),
        }
    }

    /// `true` unless this is a static file that is not JSON (YAML): Envoy tells the
    /// two apart by the file name's extension.
    pub fn is_json(&self) -> bool {
        match self {
            BootstrapPlan::Custom(path) => is_json(path),
            BootstrapPlan::Template { .. } => true,
        }
    }
}

/// Why a bootstrap could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The template did not render.
    #[error(transparent)]
    Render(RenderError),
    /// `--custom-config` could not be read or is not the JSON its name says.
    #[error("--custom-config {}: {detail}", path.display())]
    Custom {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

fn is_json(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json")
}

/// `--custom-config`: used as-is; JSON is parsed here so errors name line and
/// column, YAML is left to `envoy --mode validate`.
fn read_custom(path: &Path) -> Result<Rendered, PlanError> {
    let error = |detail: String| PlanError::Custom {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    if !is_json(path) {
        return Ok(Rendered {
            text,
            json: serde_json::Value::Null,
        });
    }
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        error(format!(
            "not JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    Ok(Rendered { text, json })
}
