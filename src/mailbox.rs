//! Envelope addresses, parsed once into a typed [`Mailbox`] and written back to the wire by
//! one function ([`Mailbox::as_str`] is that wire form).
//!
//! Why: a front end that keeps the client's text and a next-hop writer that rebuilds it can
//! disagree. `RCPT TO:<"x@gmail.com> ORCPT=rfc822;a"@force.cjsm.net>` was classified as a
//! CJSM recipient and then sent unquoted, so the next hop read recipient `x@gmail.com` and an
//! injected parameter. Here the local part is decoded once and re-quoted per RFC 5321
//! (`Quoted-string`, `"` and `\` escaped) whenever it is not a plain `Dot-string`: the text
//! the directory classified is byte for byte the text the next hop reads.
//!
//! Forms that a next hop may route somewhere else than the domain says (percent hack, bang
//! path, a quoted `@`, a source route) are refused when `strict` is set, as are 8-bit
//! addresses without SMTPUTF8 and control characters (always).

use std::fmt;

/// RFC 5321 4.5.3.1.3: a path is at most 256 octets, brackets included.
const MAX_PATH: usize = 256;

/// An envelope mailbox (never the null sender; that is `Option<Mailbox>::None` upstream).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// The wire form: local part (quoted when it must be) `@` domain.
    wire: String,
    /// Byte offset of the `@` that separates the domain in `wire`.
    at: usize,
}

/// Why an address was refused, with the reply it gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The client's fault: not an RFC 5321 path.
    #[error("bad address syntax: {0}")]
    Syntax(&'static str),
    /// A form a next hop may rewrite to another destination.
    #[error("{0}")]
    Rewritable(&'static str),
    /// Control characters (C0, DEL, C1) have no place in an address.
    #[error("control characters in address")]
    Control,
    /// Non-ASCII without the SMTPUTF8 parameter.
    #[error("8-bit address without SMTPUTF8")]
    EightBit,
}

impl AddressError {
    /// The SMTP code and enhanced status for a recipient (`5.1.3`) or sender (`5.1.7`).
    pub fn code(&self) -> u16 {
        match self {
            AddressError::Syntax(_) => 501,
            _ => 553,
        }
    }
}

/// What a strict check allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Refuse percent hack, bang path, quoted `@` and source routes.
    pub strict: bool,
    /// The transaction carries SMTPUTF8: non-ASCII is allowed.
    pub smtputf8: bool,
}

impl Rules {
    /// For addresses markgate itself already accepted (stored quarantine metadata) or an
    /// operator typed (`classify --to`): only the syntax is checked.
    pub const LENIENT: Rules = Rules {
        strict: false,
        smtputf8: true,
    };
}

impl Mailbox {
    /// A bare mailbox or the empty string (the null sender), leniently.
    pub fn lenient(text: &str) -> Option<Mailbox> {
        Mailbox::parse(text, Rules::LENIENT).ok()
    }

    /// Parses an RFC 5321 `Path` or `Reverse-path` (`<…>`, brackets required). `Ok(None)` is
    /// the null path `<>`.
    pub fn parse_path(path: &str, rules: Rules) -> Result<Option<Mailbox>, AddressError> {
        let inner = path
            .strip_prefix('<')
            .and_then(|p| p.strip_suffix('>'))
            .ok_or(AddressError::Syntax("an address goes in angle brackets"))?;
        if path.len() > MAX_PATH {
            return Err(AddressError::Syntax("address too long"));
        }
        if inner.is_empty() {
            return Ok(None);
        }
        Mailbox::parse_route_and_mailbox(inner, rules).map(Some)
    }

    /// Parses a bare mailbox (`local@domain`, no brackets), as operators type them.
    pub fn parse(text: &str, rules: Rules) -> Result<Mailbox, AddressError> {
        if text.len() + 2 > MAX_PATH {
            return Err(AddressError::Syntax("address too long"));
        }
        Mailbox::parse_route_and_mailbox(text, rules)
    }

    fn parse_route_and_mailbox(inner: &str, rules: Rules) -> Result<Mailbox, AddressError> {
        check_chars(inner, rules)?;
        let mailbox = if inner.starts_with('@') {
            // A-d-l: `@one,@two:` — RFC 5321 says ignore it; a next hop might not.
            if rules.strict {
                return Err(AddressError::Rewritable("source routes are not accepted"));
            }
            let colon = inner
                .find(':')
                .ok_or(AddressError::Syntax("source route without ':'"))?;
            for hop in inner[..colon].split(',') {
                let domain = hop
                    .strip_prefix('@')
                    .ok_or(AddressError::Syntax("source route"))?;
                check_domain(domain)?;
            }
            &inner[colon + 1..]
        } else {
            inner
        };
        let (local, domain) = split_local(mailbox)?;
        check_domain(domain)?;
        // A next hop such as Postfix (`resolve_dequoted_address`) removes the quotes and
        // reads the address again as plain text, where `\` escapes and an unclosed `(`, `"`
        // or `[` swallows the real `@domain`: `"x!a.test("@police.cjsm.net` goes to
        // a.test. Such characters are refused whatever `strict` says.
        if local.chars().any(|c| "\\\"()[]<>,;:".contains(c)) {
            return Err(AddressError::Rewritable(
                "special characters in the local part are not accepted",
            ));
        }
        if rules.strict && !is_dot_string(&local) {
            return Err(AddressError::Rewritable(
                "a quoted local part that is not a plain dot-string is not accepted",
            ));
        }
        if rules.strict {
            if local.contains('@') {
                return Err(AddressError::Rewritable(
                    "an '@' inside the local part is not accepted",
                ));
            }
            if local.contains('%') {
                return Err(AddressError::Rewritable(
                    "'%' in the local part (percent hack) is not accepted",
                ));
            }
            if local.contains('!') {
                return Err(AddressError::Rewritable(
                    "'!' in the local part (bang path) is not accepted",
                ));
            }
        }
        Ok(Mailbox::from_parts(&local, domain))
    }

    /// Builds the wire form from a decoded local part and a domain: the one quoting function.
    fn from_parts(local: &str, domain: &str) -> Mailbox {
        let mut wire = String::with_capacity(local.len() + domain.len() + 3);
        if is_dot_string(local) {
            wire.push_str(local);
        } else {
            wire.push('"');
            for c in local.chars() {
                if c == '"' || c == '\\' {
                    wire.push('\\');
                }
                wire.push(c);
            }
            wire.push('"');
        }
        let at = wire.len();
        wire.push('@');
        wire.push_str(domain);
        Mailbox { wire, at }
    }

    /// The wire form, exactly what goes between `<` and `>` to the next hop.
    pub fn as_str(&self) -> &str {
        &self.wire
    }

    pub fn domain(&self) -> &str {
        &self.wire[self.at + 1..]
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.wire)
    }
}

/// Splits `local@domain` at the `@` that ends the local part, decoding a quoted local part.
fn split_local(s: &str) -> Result<(String, &str), AddressError> {
    if let Some(rest) = s.strip_prefix('"') {
        let mut local = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e)) => local.push(e),
                    None => return Err(AddressError::Syntax("unfinished quoted pair")),
                },
                '"' => {
                    let after = &rest[i + 1..];
                    let domain = after
                        .strip_prefix('@')
                        .ok_or(AddressError::Syntax("a quoted local part ends before '@'"))?;
                    return Ok((local, domain));
                }
                c => local.push(c),
            }
        }
        return Err(AddressError::Syntax("unterminated quoted local part"));
    }
    let (local, domain) = s
        .rsplit_once('@')
        .ok_or(AddressError::Syntax("no '@' in the address"))?;
    if local.is_empty() || !is_dot_string(local) {
        return Err(AddressError::Syntax("local part"));
    }
    Ok((local.to_string(), domain))
}

/// RFC 5321 `Dot-string` (with RFC 6531's UTF-8 atext).
fn is_dot_string(local: &str) -> bool {
    !local.is_empty()
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// Unicode spaces and invisible format characters (soft hyphen, zero-width and
/// bidirectional marks, BOM): a reader cannot see them and a lookup may fold them away.
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(c, '\u{AD}' | '\u{034F}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}')
}

fn check_chars(s: &str, rules: Rules) -> Result<(), AddressError> {
    if s.chars()
        .any(|c| c.is_control() || (c != ' ' && is_invisible(c)))
    {
        return Err(AddressError::Control);
    }
    if !rules.smtputf8 && !s.is_ascii() {
        return Err(AddressError::EightBit);
    }
    Ok(())
}

/// A domain name (letters, digits, hyphens, dots; U-labels under SMTPUTF8) or an address
/// literal in brackets.
fn check_domain(domain: &str) -> Result<(), AddressError> {
    if let Some(lit) = domain.strip_prefix('[') {
        let ok = lit.strip_suffix(']').is_some_and(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".:-".contains(c))
        });
        return if ok {
            Ok(())
        } else {
            Err(AddressError::Syntax("address literal"))
        };
    }
    let labels_ok = !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || !c.is_ascii())
        });
    if labels_ok {
        Ok(())
    } else {
        Err(AddressError::Syntax("domain"))
    }
}

/// Finds the path (`<…>`, quotes respected) at the start of `s` and returns it with the rest
/// of the line (the parameters). Used on the raw command text, so the parameters markgate
/// reads start exactly where its address ends.
pub fn split_path(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start_matches(' ');
    if !s.starts_with('<') {
        return None;
    }
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some((&s[..=i], &s[i + 1..])),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: Rules = Rules {
        strict: true,
        smtputf8: false,
    };
    const LAX: Rules = Rules {
        strict: false,
        smtputf8: false,
    };

    fn wire(path: &str, rules: Rules) -> Result<String, AddressError> {
        Mailbox::parse_path(path, rules).map(|m| m.map(|m| m.to_string()).unwrap_or_default())
    }

    #[test]
    fn plain_addresses_keep_their_form() {
        assert_eq!(
            wire("<a.b+c@x.cjsm.net>", STRICT).unwrap(),
            "a.b+c@x.cjsm.net"
        );
        assert_eq!(wire("<>", STRICT).unwrap(), "");
        assert_eq!(wire("<a@[127.0.0.1]>", STRICT).unwrap(), "a@[127.0.0.1]");
        // A needlessly quoted dot-string is the same mailbox; it goes on unquoted.
        assert_eq!(wire("<\"ab\"@x.test>", STRICT).unwrap(), "ab@x.test");
    }

    #[test]
    fn quoted_local_parts_go_back_quoted() {
        assert_eq!(wire("<\"a b\"@x.test>", LAX).unwrap(), "\"a b\"@x.test");
        // Parameter injection through a quoted local part: refused, strict or not.
        let injected = "<\"x@gmail.com> ORCPT=rfc822;a\"@force.cjsm.net>";
        assert!(matches!(
            wire(injected, STRICT),
            Err(AddressError::Rewritable(_))
        ));
        assert!(matches!(
            wire(injected, LAX),
            Err(AddressError::Rewritable(_))
        ));
        // A quoted '@' when lax: quoted on the way out, the domain is the last one.
        let quoted_at = "<\"x@gmail.com\"@force.cjsm.net>";
        assert_eq!(
            wire(quoted_at, LAX).unwrap(),
            "\"x@gmail.com\"@force.cjsm.net"
        );
        let m = Mailbox::parse_path(quoted_at, LAX).unwrap().unwrap();
        assert_eq!(m.domain(), "force.cjsm.net");
    }

    #[test]
    fn rewritable_forms_are_refused_when_strict() {
        for path in [
            "<x%gmail.com@police.cjsm.net>",
            "<gmail.com!x@police.cjsm.net>",
            "<\"x@gmail.com\"@police.cjsm.net>",
            "<@relay.test:x@police.cjsm.net>",
        ] {
            let err = wire(path, STRICT).unwrap_err();
            assert_eq!(err.code(), 553, "{path}: {err}");
            assert!(wire(path, LAX).is_ok(), "{path}");
        }
        assert_eq!(
            wire("<@relay.test:x@police.cjsm.net>", LAX).unwrap(),
            "x@police.cjsm.net"
        );
    }

    #[test]
    fn characters_a_dequoting_next_hop_would_misread_are_refused_even_when_lax() {
        for path in [
            "<\"root+\\\\\"@police.cjsm.net>",
            "<\"x(\"@police.cjsm.net>",
            "<\"x\\\"\"@police.cjsm.net>",
            "<\"x[\"@police.cjsm.net>",
            "<\"attacker.example!x(\"@police.cjsm.net>",
        ] {
            assert_eq!(wire(path, LAX).unwrap_err().code(), 553, "{path}");
            assert_eq!(wire(path, STRICT).unwrap_err().code(), 553, "{path}");
        }
        // A quoted space is fine when lax, refused when strict.
        assert!(wire("<\"a b\"@x.test>", LAX).is_ok());
        assert_eq!(wire("<\"a b\"@x.test>", STRICT).unwrap_err().code(), 553);
        // Invisible characters.
        let utf8 = Rules {
            smtputf8: true,
            strict: true,
        };
        for path in [
            "<\u{A0}kate@x.test>",
            "<ka\u{200B}te@x.test>",
            "<kate@x\u{AD}.test>",
        ] {
            assert_eq!(
                wire(path, utf8).unwrap_err(),
                AddressError::Control,
                "{path}"
            );
        }
    }

    #[test]
    fn controls_and_eight_bit_are_refused() {
        assert_eq!(
            wire(
                "<a\u{85}b@x.test>",
                Rules {
                    smtputf8: true,
                    ..STRICT
                }
            ),
            Err(AddressError::Control)
        );
        assert_eq!(wire("<a b@x.test>", LAX).unwrap_err().code(), 501);
        assert_eq!(wire("<\"a\tb\"@x.test>", LAX), Err(AddressError::Control));
        assert_eq!(wire("<jöe@x.test>", STRICT), Err(AddressError::EightBit));
        let utf8 = Rules {
            smtputf8: true,
            ..STRICT
        };
        assert_eq!(wire("<jöe@bücher.test>", utf8).unwrap(), "jöe@bücher.test");
    }

    #[test]
    fn syntax_errors_are_501() {
        for path in [
            "<a@>", "<@x>", "<a..b@x>", "<a@b..c>", "<\"a@x>", "a@x", "<a b@x>",
        ] {
            let err = wire(path, LAX).unwrap_err();
            assert_eq!(err.code(), 501, "{path}: {err}");
        }
    }

    #[test]
    fn the_path_ends_where_the_quotes_say() {
        assert_eq!(
            split_path("<\"a>b\"@x.test> NOTIFY=NEVER"),
            Some(("<\"a>b\"@x.test>", " NOTIFY=NEVER"))
        );
        assert_eq!(
            split_path("<\"a\\\">\"@x> X"),
            Some(("<\"a\\\">\"@x>", " X"))
        );
        assert_eq!(split_path("a@x"), None);
    }
}
