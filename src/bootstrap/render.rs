//! Rendering: strict minijinja, no auto-escaping, then a JSON parse of the output.
//!
//! Invariant: a [`Rendered`] always holds valid JSON, and its `text` is exactly `json`
//! pretty-printed (key order preserved), so what is written to disk is what was checked.

use std::collections::HashSet;

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};

use super::{filters, RenderError, TemplateSource, Values};

/// A rendered bootstrap.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The file content: `json` pretty-printed, with a trailing newline.
    pub text: String,
    /// The parsed bootstrap, for callers that inspect or extend it.
    pub json: serde_json::Value,
}

impl Rendered {
    /// Wraps a bootstrap value, e.g. one the caller extended after [`render`] (DESIGN lets baton
    /// add a stats sink) or a `--custom-config` file parsed without templating.
    pub fn from_json(json: serde_json::Value) -> Self {
        // Serialising a serde_json::Value to a String cannot fail: keys are strings and there
        // is no I/O; fall back to compact output rather than panic if that ever changes.
        let mut text = serde_json::to_string_pretty(&json).unwrap_or_else(|_| json.to_string());
        text.push('\n');
        Rendered { text, json }
    }
}

/// Renders `source` with `values` and checks the output is JSON.
///
/// Errors: [`RenderError::ReadTemplate`] (file), [`RenderError::Syntax`],
/// [`RenderError::Undefined`] (names template, line and variable), [`RenderError::Render`],
/// [`RenderError::NotJson`], and the value errors of [`Values::validate`].
pub fn render(source: &TemplateSource, values: &Values) -> Result<Rendered, RenderError> {
    let ctx = values.to_context()?;
    let name = source.name();
    let text = source.load()?;
    let env = environment();
    let template = env
        .template_from_named_str(&name, &text)
        .map_err(|e| RenderError::Syntax {
            template: name.clone(),
            line: e.line().unwrap_or(0),
            message: e.detail().unwrap_or("invalid template").to_string(),
        })?;
    let output = template.render(&ctx).map_err(|e| {
        let line = e.line();
        if e.kind() == ErrorKind::UndefinedError {
            let unset: HashSet<String> = template
                .undeclared_variables(false)
                .into_iter()
                .filter(|v| ctx.get_attr(v).is_ok_and(|x| x.is_undefined()))
                .collect();
            RenderError::Undefined {
                template: name.clone(),
                line: line.unwrap_or(0),
                variable: culprit(&text, e.range(), line, &unset),
            }
        } else {
            RenderError::Render {
                template: name.clone(),
                line,
                message: describe(&e),
            }
        }
    })?;
    let json = serde_json::from_str(&output).map_err(|e| not_json(&name, &output, &e))?;
    Ok(Rendered::from_json(json))
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // minijinja would JSON-escape output of `*.json` templates; values go in via `tojson` instead,
    // and double escaping would corrupt them.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    filters::register(&mut env);
    env
}

/// Finds the undefined variable minijinja does not name: an identifier of the failing expression
/// (or, lacking a span, of the failing line) that the template uses but the context lacks.
fn culprit(
    source: &str,
    range: Option<std::ops::Range<usize>>,
    line: Option<usize>,
    unset: &HashSet<String>,
) -> Option<String> {
    let in_range = range.and_then(|r| source.get(r));
    let in_line = line.and_then(|l| source.lines().nth(l.checked_sub(1)?));
    [in_range, in_line]
        .into_iter()
        .flatten()
        .find_map(|snippet| identifiers(snippet).find(|id| unset.contains(*id)))
        .map(str::to_string)
}

fn identifiers(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
}

fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

fn not_json(template: &str, output: &str, e: &serde_json::Error) -> RenderError {
    let excerpt = output
        .lines()
        .nth(e.line().saturating_sub(1))
        .unwrap_or("")
        .trim();
    // serde_json appends " at line L column C" to its message; it is reported separately.
    let message = e.to_string();
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(m, _)| m);
    RenderError::NotJson {
        template: template.to_string(),
        line: e.line(),
        column: e.column(),
        message: message.to_string(),
        excerpt: excerpt.chars().take(120).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn values() -> Values {
        Values {
            node_id: "node".into(),
            cluster: "c".into(),
            admin_port: 15000,
            ..Values::default()
        }
    }

    fn render_text(
        name: &str,
        text: &str,
        values: &Values,
    ) -> (Result<Rendered, RenderError>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(name);
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(text.as_bytes()).expect("write");
        (render(&TemplateSource::File(path), values), dir)
    }

    #[test]
    fn undefined_variable_error_names_template_line_and_variable() {
        let text = "{\n  \"id\": {{ node_id|tojson }},\n  \"up\": {{ upstream|host|tojson }}\n}\n";
        let (result, dir) = render_text("t.json", text, &values());
        let err = result.expect_err("undefined");
        let RenderError::Undefined {
            template,
            line,
            variable,
        } = &err
        else {
            panic!("want Undefined, got {err:?}");
        };
        assert!(template.ends_with("t.json"), "{template}");
        assert_eq!((*line, variable.as_deref()), (3, Some("upstream")));
        let msg = err.to_string();
        let want = format!(
            "template {} line 3: undefined variable 'upstream' (pass --var upstream=...)",
            dir.path().join("t.json").display()
        );
        assert_eq!(msg, want);
    }

    #[test]
    fn undefined_variable_is_found_in_conditions_and_plain_output() {
        let cases = [
            ("{% if ca_cert %}1{% endif %}", "ca_cert"),
            ("{\"a\": {{ listen_port }}}", "listen_port"),
            ("{\"a\": {{ node_id ~ suffix }}}", "suffix"),
            ("{\"a\": {{ name|lower|tojson }}}", "name"),
            ("{\"a\": {{ n|int }}}", "n"),
            (
                "{\"a\": {{ tls.cert|tojson }}, \"b\": {{ addr|port }}}",
                "addr",
            ),
        ];
        for (text, want) in cases {
            let (result, _dir) = render_text("t.json", text, &values());
            match result {
                Err(RenderError::Undefined {
                    line: 1,
                    variable: Some(v),
                    ..
                }) => {
                    assert_eq!(v, want, "{text}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn defined_test_and_default_filter_tolerate_missing_values() {
        let text = r#"{"p": {{ prometheus_port|default(15090)|port }}, "ca": {{ (ca_cert is defined)|tojson }}}"#;
        let (result, _dir) = render_text("t.json", text, &values());
        let json = result.expect("renders").json;
        assert_eq!(json, serde_json::json!({"p": 15090, "ca": false}));
    }

    #[test]
    fn syntax_error_names_template_and_line() {
        let (result, _dir) = render_text("bad.json", "{\n\n  {{ node_id \n}\n", &values());
        let err = result.expect_err("syntax");
        assert!(
            matches!(&err, RenderError::Syntax { template, line, .. }
            if template.ends_with("bad.json") && (3..=4).contains(line)),
            "{err:?}"
        );
        assert!(err.to_string().contains("bad.json line "), "{err}");
    }

    #[test]
    fn output_that_is_not_json_reports_output_line_and_column() {
        let (result, _dir) = render_text("t.json", "{\n  \"id\": {{ node_id }}\n}\n", &values());
        let err = result.expect_err("not json");
        let RenderError::NotJson {
            template,
            line,
            column,
            excerpt,
            ..
        } = &err
        else {
            panic!("want NotJson, got {err:?}");
        };
        assert!(template.ends_with("t.json"));
        assert_eq!((*line, *column), (2, 10));
        assert_eq!(excerpt, "\"id\": node");
        assert!(err.to_string().contains("output line 2 column 10"), "{err}");
    }

    #[test]
    fn values_are_not_html_escaped_and_tojson_escapes_json() {
        let mut v = values();
        v.vars.insert("q".into(), "a\"<b>&'".into());
        let (result, _dir) = render_text("t.json", r#"{"q": {{ q|tojson }}}"#, &v);
        assert_eq!(result.expect("renders").json["q"], "a\"<b>&'");
    }

    #[test]
    fn other_render_failures_name_template_and_line() {
        let mut v = values();
        v.vars.insert("listen_port".into(), "http".into());
        let (result, _dir) = render_text("t.json", "{\n\"p\": {{ listen_port|port }}}", &v);
        let err = result.expect_err("bad port");
        assert!(
            matches!(&err, RenderError::Render { line: Some(2), .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("\"http\" is not host:port"),
            "{err}"
        );
    }

    #[test]
    fn template_file_is_reread_on_every_render() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.json");
        let source = TemplateSource::File(path.clone());
        for n in 1..=2 {
            std::fs::write(&path, format!("{{\"n\": {n}}}")).expect("write");
            assert_eq!(render(&source, &values()).expect("renders").json["n"], n);
        }
    }

    #[test]
    fn values_errors_come_before_reading_the_template() {
        let mut v = values();
        v.vars.insert("bad-name".into(), "x".into());
        let source = TemplateSource::File("/nonexistent/t.json".into());
        assert!(matches!(
            render(&source, &v),
            Err(RenderError::BadVarName { .. })
        ));
    }
}
