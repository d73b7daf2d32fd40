//! Errors of the bootstrap module. Every message names what an operator must fix: the template
//! (and line) for template problems, the flag or `--var` key for value problems, the path for I/O.

use std::path::PathBuf;

/// Why a bootstrap could not be rendered. All variants are configuration errors (exit code 78 at
/// startup; "keep the serving epoch and wait for the next change" during a restart); the variants
/// exist so callers can report them precisely, and tests can assert on them.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The template file could not be read.
    #[error("cannot read template {path}: {source}")]
    ReadTemplate {
        /// The template file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The template does not parse as a template.
    #[error("template {template} line {line}: syntax error: {message}")]
    Syntax {
        /// Template name (embedded name or file path).
        template: String,
        /// 1-based line in the template.
        line: usize,
        /// What the template engine reported.
        message: String,
    },
    /// The template uses a variable that has no value.
    #[error("template {template} line {line}: undefined {}", describe_undefined(.variable.as_deref()))]
    Undefined {
        /// Template name (embedded name or file path).
        template: String,
        /// 1-based line in the template.
        line: usize,
        /// The variable, when it could be identified (an undefined attribute of a defined value,
        /// e.g. `tls.ca`, has no top-level name).
        variable: Option<String>,
    },
    /// Any other failure while rendering (bad filter input, type error…).
    #[error("template {template}{}: {message}", fmt_line(*.line))]
    Render {
        /// Template name (embedded name or file path).
        template: String,
        /// 1-based line in the template, when known.
        line: Option<usize>,
        /// What the template engine reported.
        message: String,
    },
    /// The template rendered, but the output is not JSON.
    #[error(
        "template {template} rendered invalid JSON at output line {line} column {column}: {message} (near: {excerpt:?})"
    )]
    NotJson {
        /// Template name (embedded name or file path).
        template: String,
        /// 1-based line in the rendered output (not in the template).
        line: usize,
        /// 1-based column in the rendered output.
        column: usize,
        /// What the JSON parser reported.
        message: String,
        /// The offending output line, trimmed, to locate it in the template.
        excerpt: String,
    },
    /// A `--var` key is the name of a built-in variable.
    #[error("--var {key}: '{key}' is a built-in template variable; set it with its own flag")]
    VarClash {
        /// The offending key.
        key: String,
    },
    /// A `--var` key is not an identifier templates can refer to.
    #[error("--var {key:?}: the key must match [A-Za-z_][A-Za-z0-9_]*")]
    BadVarName {
        /// The offending key.
        key: String,
    },
    /// A `--var` argument has no `=`.
    #[error("--var {arg:?}: expected KEY=VALUE")]
    VarSyntax {
        /// The whole argument.
        arg: String,
    },
    /// An address value is not `host:port`.
    #[error("{name} {value:?}: expected host:port (IPv6 as [addr]:port)")]
    BadAddress {
        /// Which value (e.g. `discovery_address`).
        name: &'static str,
        /// The value given.
        value: String,
    },
    /// A path value cannot be written into JSON as text.
    #[error("{name} {path:?}: path is not valid UTF-8")]
    NonUtf8Path {
        /// Which value (e.g. `certs`).
        name: &'static str,
        /// The path given.
        path: PathBuf,
    },
}

fn describe_undefined(variable: Option<&str>) -> String {
    match variable {
        Some(v) => format!("variable '{v}' (pass --var {v}=...)"),
        None => "value".to_string(),
    }
}

fn fmt_line(line: Option<usize>) -> String {
    line.map(|l| format!(" line {l}")).unwrap_or_default()
}

/// Why an epoch's config file could not be written or removed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}: {source}")]
pub struct WriteError {
    /// What was being done (`create directory`, `write`, `rename to`, `remove`…).
    pub action: &'static str,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// The underlying I/O error.
    #[source]
    pub source: std::io::Error,
}
