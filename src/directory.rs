//! The CJSM directory: which recipients are CJSM users, which are trusted partners reachable
//! over a secure channel, and which are external. Lookups are hash-set probes, so a list of
//! 100,000 addresses costs the same per recipient as a list of ten.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::yaml::{self, YamlError};

/// A recipient's class, as rules and records name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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

fn normalize(s: &str) -> String {
    s.trim().trim_end_matches('.').to_lowercase()
}

impl Directory {
    /// The directory with no file: only the `cjsm.net` suffix rule.
    pub fn builtin() -> Directory {
        Directory {
            suffixes: vec!["cjsm.net".to_string()],
            ..Directory::default()
        }
    }

    pub fn load(path: &Path) -> Result<Directory, YamlError> {
        let file: DirectoryFile = yaml::from_file(path)?;
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
}
