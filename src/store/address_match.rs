//! How an operator names addresses in a search (`--sender`, `--recipient`): `@domain` means
//! every address at that domain, `local@domain` that address, anything else a part of an
//! address (`gmail`, `cps.cjsm`). Always case-insensitive, as the stored addresses are
//! lower-cased. One reading for `quarantine list` (in memory) and `track search` (SQL).

/// One `--sender` or `--recipient` value, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressMatch {
    /// `jane@police.cjsm.net`: that address.
    Exact(String),
    /// `@gmail.com`: any address whose domain is `gmail.com`.
    Domain(String),
    /// `gmail`: any address containing it.
    Contains(String),
}

/// The SQL `LIKE` pattern (escape `\\`) for every address at `domain`, its own `%`, `_`
/// and `\\` taken literally: shared by the SQLite index and PostgreSQL.
pub(crate) fn domain_pattern(domain: &str) -> String {
    let escaped: String = domain
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("%@{escaped}")
}

impl AddressMatch {
    pub fn parse(value: &str) -> AddressMatch {
        let v = value.trim().to_lowercase();
        match v.strip_prefix('@') {
            Some(domain) => AddressMatch::Domain(domain.to_string()),
            None if v.contains('@') => AddressMatch::Exact(v),
            None => AddressMatch::Contains(v),
        }
    }

    pub fn matches(&self, address: &str) -> bool {
        let a = address.to_lowercase();
        match self {
            AddressMatch::Exact(e) => a == *e,
            AddressMatch::Domain(d) => a
                .rsplit_once('@')
                .is_some_and(|(_, domain)| domain == d.as_str()),
            AddressMatch::Contains(s) => a.contains(s.as_str()),
        }
    }

    /// The SQL condition on `column` (already lower-cased) and its one argument, bound as
    /// parameter `?n`.
    pub(crate) fn sql(&self, column: &str, n: usize) -> (String, String) {
        match self {
            AddressMatch::Exact(e) => (format!("{column} = ?{n}"), e.clone()),
            AddressMatch::Domain(d) => {
                (format!("{column} LIKE ?{n} ESCAPE '\\'"), domain_pattern(d))
            }
            AddressMatch::Contains(s) => (format!("instr({column}, ?{n}) > 0"), s.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AddressMatch;

    #[test]
    fn domain_exact_and_part_are_told_apart() {
        let gmail = AddressMatch::parse("@Gmail.com");
        assert!(gmail.matches("x@gmail.com"));
        assert!(!gmail.matches("x@notgmail.com"));
        assert!(!gmail.matches("gmail.com@evil.example"));
        let exact = AddressMatch::parse("Jane@police.cjsm.net");
        assert!(exact.matches("jane@police.cjsm.net"));
        assert!(!exact.matches("xjane@police.cjsm.net"));
        let part = AddressMatch::parse("gmail.com");
        assert!(part.matches("x@gmail.com") && part.matches("y@mail.gmail.com"));
        // LIKE wildcards in a domain are literal.
        let (_, pattern) = AddressMatch::parse("@a_b%.test").sql("c", 1);
        assert_eq!(pattern, "%@a\\_b\\%.test");
    }
}
