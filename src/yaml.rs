//! YAML reading for every file people edit (config, rules, directory), so that each error
//! reads the same way: `file:line:column: message`, then the offending line with a caret.
//! People fixing a rule at 3 a.m. need the place, not a serde backtrace.

use std::path::Path;

use serde::de::DeserializeOwned;

/// A file that could not be read or did not fit its schema.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}{snippet}")]
    Parse {
        file: String,
        line: u64,
        column: u64,
        message: String,
        snippet: String,
    },
}

impl YamlError {
    /// Line and column, when the error has them (tests and `check` use this).
    pub fn position(&self) -> Option<(u64, u64)> {
        match self {
            YamlError::Parse { line, column, .. } => Some((*line, *column)),
            YamlError::Io { .. } => None,
        }
    }
}

/// Reads and deserializes one YAML file.
pub fn from_file<T: DeserializeOwned>(path: &Path) -> Result<T, YamlError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| YamlError::Io {
        file: file.clone(),
        source,
    })?;
    from_str(&text, &file)
}

/// Deserializes YAML text; `file` names it in errors.
pub fn from_str<T: DeserializeOwned>(text: &str, file: &str) -> Result<T, YamlError> {
    let options = serde_saphyr::Options {
        with_snippet: false,
        strict_booleans: true,
        ..serde_saphyr::Options::default()
    };
    serde_saphyr::from_str_with_options(text, options).map_err(|err| {
        let rendered = err.to_string();
        // The library appends " at line L, column C"; we already lead with it.
        let message = match rendered.rfind(" at line ") {
            Some(i) => rendered[..i].to_string(),
            None => rendered,
        };
        let message = in_operator_words(&message);
        let (line, column) = unknown_key_position(text, &message)
            .or_else(|| err.location().map(|l| (l.line(), l.column())))
            .unwrap_or((1, 1));
        YamlError::Parse {
            file: file.to_string(),
            line,
            column,
            message,
            snippet: snippet(text, line, column),
        }
    })
}

/// The parser names Rust types (`invalid u64`, `expected u16`); an operator reads numbers.
fn in_operator_words(message: &str) -> String {
    let mut out = message.to_string();
    for (rust, words) in [
        ("u8", "a whole number from 0 to 255"),
        ("u16", "a whole number from 0 to 65535"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u64", "a whole number, 0 or more"),
        ("usize", "a whole number, 0 or more"),
        ("i64", "a whole number"),
        ("f64", "a number"),
        ("bool", "true or false"),
    ] {
        out = out
            .replace(&format!("invalid {rust}"), &format!("expected {words}"))
            .replace(&format!("expected {rust}"), &format!("expected {words}"));
    }
    out
}

/// serde-saphyr places unknown-key errors at the start of the mapping; point at the key.
fn unknown_key_position(text: &str, message: &str) -> Option<(u64, u64)> {
    let key = message.strip_prefix("unknown field `")?.split('`').next()?;
    text.lines().enumerate().find_map(|(i, line)| {
        let body = line.trim_start();
        let body = body.strip_prefix("- ").unwrap_or(body).trim_start();
        let rest = body.strip_prefix(key)?;
        rest.trim_start().starts_with(':').then(|| {
            let column = line.len() - body.len() + 1;
            (i as u64 + 1, column as u64)
        })
    })
}

fn snippet(text: &str, line: u64, column: u64) -> String {
    let Some(src) = text.lines().nth(line.saturating_sub(1) as usize) else {
        return String::new();
    };
    let pad = " ".repeat(column.saturating_sub(1) as usize);
    format!("\n  | {src}\n  | {pad}^")
}
