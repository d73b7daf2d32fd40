//! Which template to render: one embedded in the binary, or a file read anew on each render.

use std::path::{Path, PathBuf};

use super::RenderError;

/// The embedded templates, as (name, text). The first one is the default.
const EMBEDDED: [(&str, &str); 2] = [
    (
        "envoy_bootstrap.json",
        include_str!("../../bootstrap-templates/envoy_bootstrap.json"),
    ),
    (
        "standalone.json",
        include_str!("../../bootstrap-templates/standalone.json"),
    ),
];

/// Where a bootstrap template comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSource {
    /// A template compiled into the binary: (name with `.json`, text).
    Embedded(&'static str, &'static str),
    /// A template file, read again on every render so each epoch sees its current content.
    File(PathBuf),
}

impl TemplateSource {
    /// Interprets a `--template` value: `envoy_bootstrap` and `standalone` (with or without
    /// `.json`) select embedded templates; anything else is a file path. Never fails: a bad path
    /// is reported by [`render`](super::render), naming the path.
    pub fn parse(s: &str) -> Self {
        EMBEDDED
            .iter()
            .find(|(name, _)| *name == s || name.strip_suffix(".json") == Some(s))
            .map(|&(name, text)| TemplateSource::Embedded(name, text))
            .unwrap_or_else(|| TemplateSource::File(PathBuf::from(s)))
    }

    /// The name used in error messages: the embedded name, or the file path.
    pub fn name(&self) -> String {
        match self {
            TemplateSource::Embedded(name, _) => (*name).to_string(),
            TemplateSource::File(path) => path.display().to_string(),
        }
    }

    /// The template text: embedded text, or the file's current content.
    pub(super) fn load(&self) -> Result<String, RenderError> {
        match self {
            TemplateSource::Embedded(_, text) => Ok((*text).to_string()),
            TemplateSource::File(path) => read(path),
        }
    }
}

impl Default for TemplateSource {
    /// The embedded Istio-style sidecar bootstrap, `envoy_bootstrap.json`.
    fn default() -> Self {
        let (name, text) = EMBEDDED[0];
        TemplateSource::Embedded(name, text)
    }
}

fn read(path: &Path) -> Result<String, RenderError> {
    std::fs::read_to_string(path).map_err(|source| RenderError::ReadTemplate {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_selects_embedded_by_name_with_or_without_extension_else_file() {
        let cases = [
            ("envoy_bootstrap", Some("envoy_bootstrap.json")),
            ("envoy_bootstrap.json", Some("envoy_bootstrap.json")),
            ("standalone", Some("standalone.json")),
            ("standalone.json", Some("standalone.json")),
            ("./standalone.json", None),
            ("/etc/baton/bootstrap.json", None),
            ("", None),
        ];
        for (input, embedded) in cases {
            match (TemplateSource::parse(input), embedded) {
                (TemplateSource::Embedded(name, text), Some(want)) => {
                    assert_eq!(name, want, "{input}");
                    assert!(!text.is_empty());
                }
                (TemplateSource::File(path), None) => assert_eq!(path, PathBuf::from(input)),
                (got, want) => panic!("{input:?}: got {got:?}, want embedded {want:?}"),
            }
        }
    }

    #[test]
    fn default_is_the_sidecar_bootstrap() {
        assert_eq!(TemplateSource::default().name(), "envoy_bootstrap.json");
    }

    #[test]
    fn missing_template_file_error_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nope.json");
        let err = TemplateSource::File(path.clone())
            .load()
            .expect_err("missing file");
        assert!(matches!(&err, RenderError::ReadTemplate { path: p, .. } if *p == path));
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}
