//! The CJSM directory: which recipients are CJSM users, which are trusted partners reachable
//! over a secure channel, and which are external. Lookups are hash-set probes, so a list of
//! 100,000 addresses costs the same per recipient as a list of ten.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::yaml::{self, YamlError};

/// A recipient's class, as rules and records name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Cjsm,
    Trusted,
    External,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Cjsm => "cjsm",
            Class::Trusted => "trusted",
            Class::External => "external",
        }
    }
}

/// The directory file as people write it.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectoryFile {
    /// Domain suffixes that are CJSM (`cjsm.net` is always one).
    #[serde(default)]
    pub cjsm_suffixes: Vec<String>,
    /// Domains whose every address is a CJSM user.
    #[serde(default)]
    pub cjsm_domains: Vec<String>,
    /// Individual CJSM addresses.
    #[serde(default)]
    pub cjsm_addresses: Vec<String>,
    /// Partner domains reachable over a secure channel that the organisation vouches for.
    #[serde(default)]
    pub trusted_domains: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Directory {
    suffixes: Vec<String>,
    cjsm_domains: HashSet<String>,
    cjsm_addresses: HashSet<String>,
    trusted_domains: HashSet<String>,
}

/// Lower-cased, trailing dot dropped, and the domain in its ASCII (IDNA) form, so
/// `user@bücher.example` and `user@xn--bcher-kva.example` are the same recipient.
/// Only the domain is case-folded beyond ASCII (IDNA does that); the local part is folded
/// in ASCII only, and nothing but ASCII space is trimmed, so `\u{212A}ate@…` (Kelvin sign)
/// or a leading no-break space never matches the listed `kate@…` the next hop would not
/// deliver to.
fn normalize(s: &str) -> String {
    let s = s.trim_matches(|c: char| c.is_ascii_whitespace());
    match s.rsplit_once('@') {
        Some((local, domain)) => format!(
            "{}@{}",
            local.to_ascii_lowercase(),
            ascii_domain(&domain.trim_end_matches('.').to_lowercase())
        ),
        None => ascii_domain(&s.trim_end_matches('.').to_lowercase()),
    }
}

/// Why a (normalised) domain cannot be one, if it cannot.
fn domain_problem(domain: &str) -> Option<String> {
    if domain.is_empty() {
        return Some("is empty".into());
    }
    if domain.len() > 253 {
        return Some("is longer than a domain can be (253)".into());
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Some("has an empty label (two dots, or a dot at the start)".into());
        }
        if label.len() > 63 {
            return Some("has a label longer than 63 characters".into());
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Some(
                "is not a domain: letters, digits, hyphens and dots only (one entry per item)"
                    .into(),
            );
        }
    }
    None
}

fn ascii_domain(domain: &str) -> String {
    if domain.is_ascii() {
        return domain.to_string();
    }
    domain
        .split('.')
        .map(|label| {
            if label.is_ascii() {
                label.to_string()
            } else {
                format!("xn--{}", punycode(label))
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// RFC 3492 Punycode encoding of one (already lower-cased) label.
fn punycode(label: &str) -> String {
    const BASE: u32 = 36;
    const TMIN: u32 = 1;
    const TMAX: u32 = 26;
    fn digit(d: u32) -> char {
        let d = d as u8;
        (if d < 26 { b'a' + d } else { b'0' + d - 26 }) as char
    }
    fn adapt(mut delta: u32, points: u32, first: bool) -> u32 {
        delta /= if first { 700 } else { 2 };
        delta += delta / points;
        let mut k = 0;
        while delta > ((BASE - TMIN) * TMAX) / 2 {
            delta /= BASE - TMIN;
            k += BASE;
        }
        k + (BASE - TMIN + 1) * delta / (delta + 38)
    }
    let input: Vec<u32> = label.chars().map(u32::from).collect();
    let mut out: String = label.chars().filter(char::is_ascii).collect();
    let basic = out.chars().count() as u32;
    let mut handled = basic;
    if basic > 0 {
        out.push('-');
    }
    let (mut n, mut delta, mut bias) = (128u32, 0u32, 72u32);
    while (handled as usize) < input.len() {
        let m = input.iter().copied().filter(|&c| c >= n).min().unwrap_or(n);
        delta = delta.saturating_add((m - n).saturating_mul(handled + 1));
        n = m;
        for &c in &input {
            if c < n {
                delta = delta.saturating_add(1);
            }
            if c == n {
                let mut q = delta;
                let mut k = BASE;
                loop {
                    let t = if k <= bias {
                        TMIN
                    } else if k >= bias + TMAX {
                        TMAX
                    } else {
                        k - bias
                    };
                    if q < t {
                        break;
                    }
                    out.push(digit(t + (q - t) % (BASE - t)));
                    q = (q - t) / (BASE - t);
                    k += BASE;
                }
                out.push(digit(q));
                bias = adapt(delta, handled + 1, handled == basic);
                delta = 0;
                handled += 1;
            }
        }
        delta += 1;
        n += 1;
    }
    out
}

impl Directory {
    /// The directory with no file: only the `cjsm.net` suffix rule.
    pub fn builtin() -> Directory {
        Directory {
            suffixes: vec!["cjsm.net".to_string()],
            ..Directory::default()
        }
    }

    /// Reads a directory file; an entry that is not a domain (or, in `cjsm_addresses`, an
    /// address) is an error at its line and column: `partner police.uk` would otherwise
    /// be an entry that matches nobody, and the partner's mail would be held or refused.
    pub fn load(path: &Path) -> Result<Directory, YamlError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| YamlError::Io {
            file: name.clone(),
            source,
        })?;
        let file: DirectoryFile = yaml::from_str(&text, &name)?;
        let domains = file
            .cjsm_suffixes
            .iter()
            .chain(&file.cjsm_domains)
            .chain(&file.trusted_domains)
            .map(|d| (d, domain_problem(&normalize(d.trim_start_matches('.')))));
        let addresses = file.cjsm_addresses.iter().map(|a| {
            let n = normalize(a);
            let problem = match n.rsplit_once('@') {
                Some((local, domain)) if !local.is_empty() => {
                    if local.chars().any(|c| c.is_whitespace() || c.is_control()) {
                        Some("an address has no spaces or control characters".to_string())
                    } else {
                        domain_problem(domain)
                    }
                }
                _ => Some("is not an address (user@domain)".to_string()),
            };
            (a, problem)
        });
        for (entry, problem) in domains.chain(addresses) {
            if let Some(problem) = problem {
                let (line, column) = text
                    .lines()
                    .enumerate()
                    .find_map(|(i, l)| l.find(entry.as_str()).map(|c| (i + 1, c + 1)))
                    .unwrap_or((1, 1));
                return Err(YamlError::Parse {
                    file: name,
                    line: line as u64,
                    column: column as u64,
                    message: format!("`{entry}`: {problem}"),
                    snippet: String::new(),
                });
            }
        }
        Ok(Directory::from_file(file))
    }

    pub fn from_file(file: DirectoryFile) -> Directory {
        let mut dir = Directory::builtin();
        dir.suffixes.extend(
            file.cjsm_suffixes
                .iter()
                .map(|s| normalize(s.trim_start_matches('.'))),
        );
        dir.cjsm_domains = file.cjsm_domains.iter().map(|d| normalize(d)).collect();
        dir.cjsm_addresses = file.cjsm_addresses.iter().map(|a| normalize(a)).collect();
        dir.trusted_domains = file.trusted_domains.iter().map(|d| normalize(d)).collect();
        dir
    }

    /// Classifies one recipient address.
    pub fn classify(&self, address: &str) -> Class {
        let address = normalize(address);
        let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let suffix_match = self
            .suffixes
            .iter()
            .any(|s| domain == s || domain.ends_with(&format!(".{s}")));
        if suffix_match
            || self.cjsm_domains.contains(domain)
            || self.cjsm_addresses.contains(&address)
        {
            Class::Cjsm
        } else if self.trusted_domains.contains(domain) {
            Class::Trusted
        } else {
            Class::External
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_address_domain_and_case() {
        let dir = Directory::from_file(DirectoryFile {
            cjsm_suffixes: vec![],
            cjsm_domains: vec!["Partner.Police.UK".into()],
            cjsm_addresses: vec!["Solicitor@Example.com".into()],
            trusted_domains: vec!["court.gov.uk".into()],
        });
        assert_eq!(dir.classify("a@cjsm.net"), Class::Cjsm);
        assert_eq!(dir.classify("a@met.police.CJSM.NET"), Class::Cjsm);
        assert_eq!(dir.classify("a@notcjsm.net"), Class::External);
        assert_eq!(dir.classify("x@partner.police.uk"), Class::Cjsm);
        assert_eq!(dir.classify("solicitor@example.com"), Class::Cjsm);
        assert_eq!(dir.classify("other@example.com"), Class::External);
        assert_eq!(dir.classify("clerk@COURT.gov.uk"), Class::Trusted);
    }

    #[test]
    fn idna_domains_match_in_either_form() {
        assert_eq!(punycode("bücher"), "bcher-kva");
        assert_eq!(punycode("münchen"), "mnchen-3ya");
        let dir = Directory::from_file(DirectoryFile {
            cjsm_suffixes: vec![],
            cjsm_domains: vec!["Bücher.example".into()],
            cjsm_addresses: vec![],
            trusted_domains: vec!["xn--mnchen-3ya.example".into()],
        });
        assert_eq!(dir.classify("a@xn--bcher-kva.example"), Class::Cjsm);
        assert_eq!(dir.classify("a@BÜCHER.example"), Class::Cjsm);
        assert_eq!(dir.classify("a@münchen.example"), Class::Trusted);
    }
}
