//! Text as a mail client renders it, for the extractors to read: HTML through the WHATWG
//! tokenizer browsers use (html5ever: entities decoded, comments, `<script>`, `<style>`
//! and `<title>` dropped, block elements and `<br>` as line breaks), `format=flowed`
//! reflowed (RFC 3676, `delsp`), `text/enriched` reduced to its text.

use std::cell::RefCell;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};
use mailparse::ParsedMail;

/// The decoded text of a text part, rendered.
pub fn text(
    part: &ParsedMail,
    mime: &str,
    html: bool,
) -> Result<String, mailparse::MailParseError> {
    let body = part.get_body()?;
    Ok(if html {
        html_to_text(&body)
    } else if mime == "text/enriched" || mime == "text/richtext" {
        enriched_to_text(&body)
    } else if part
        .ctype
        .params
        .get("format")
        .is_some_and(|f| f.eq_ignore_ascii_case("flowed"))
    {
        let delsp = part
            .ctype
            .params
            .get("delsp")
            .is_some_and(|d| d.eq_ignore_ascii_case("yes"));
        unflow(&body, delsp)
    } else {
        body
    })
}

/// Elements a browser shows on a line of their own.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
    "center",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "td",
    "th",
    "tr",
    "ul",
    "caption",
    "tbody",
    "thead",
    "tfoot",
    "option",
    "legend",
    "menu",
    "body",
    "html",
];

#[derive(Default)]
struct Collect {
    out: RefCell<String>,
    /// Inside an element whose text is not shown (`<script>`, `<style>`, `<title>`, …).
    hidden: RefCell<Option<String>>,
}

impl TokenSink for Collect {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        match token {
            Token::CharacterTokens(text) if self.hidden.borrow().is_none() => {
                self.out.borrow_mut().push_str(&text);
            }
            Token::TagToken(tag) => {
                let name: &str = &tag.name;
                let hidden = self.hidden.borrow().clone();
                if let Some(hidden) = hidden {
                    if tag.kind == TagKind::EndTag && hidden == name {
                        *self.hidden.borrow_mut() = None;
                    }
                    return TokenSinkResult::Continue;
                }
                if BLOCKS.contains(&name) {
                    self.out.borrow_mut().push('\n');
                }
                if tag.kind == TagKind::StartTag && !tag.self_closing {
                    let raw = match name {
                        "script" => Some(RawKind::ScriptData),
                        "style" | "xmp" | "iframe" | "noembed" | "noframes" => {
                            Some(RawKind::Rawtext)
                        }
                        "title" | "textarea" => Some(RawKind::Rcdata),
                        _ => None,
                    };
                    // Not `head`: browsers ignore a `<head>` in the body and show what follows.
                    if matches!(name, "script" | "style" | "title" | "template") {
                        *self.hidden.borrow_mut() = Some(name.to_string());
                    }
                    if let Some(kind) = raw {
                        return TokenSinkResult::RawData(kind);
                    }
                }
            }
            // Comments, doctype and parse errors show nothing.
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

/// HTML reduced to the lines a browser would show.
pub fn html_to_text(html: &str) -> String {
    let sink = Collect::default();
    let tokenizer = Tokenizer::new(sink, TokenizerOpts::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    let text = tokenizer.sink.out.take();
    // Non-breaking spaces are spaces on screen.
    text.replace('\u{A0}', " ")
}

/// RFC 3676: a line ending in a space continues on the next (the space removed when
/// `delsp=yes`); space-stuffing is undone; the signature separator `-- ` stays a line.
pub fn unflow(text: &str, delsp: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line = line.strip_prefix(' ').unwrap_or(line);
        if line.ends_with(' ') && line != "-- " {
            let joined = if delsp { &line[..line.len() - 1] } else { line };
            out.push_str(joined);
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// RFC 1896 `text/enriched`: formatting commands dropped, `<<` is `<`, a single line break
/// is a space and n breaks are n - 1; `<param>` contents are not text.
pub fn enriched_to_text(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_param = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '<' if chars.peek() == Some(&'<') => {
                chars.next();
                if in_param == 0 {
                    out.push('<');
                }
            }
            '<' => {
                let mut tag = String::new();
                for t in chars.by_ref() {
                    if t == '>' {
                        break;
                    }
                    tag.push(t);
                }
                let tag = tag.to_ascii_lowercase();
                if tag == "param" {
                    in_param += 1;
                } else if tag == "/param" {
                    in_param = in_param.saturating_sub(1);
                }
            }
            '\n' => {
                let mut n = 1;
                while chars.peek() == Some(&'\n') {
                    chars.next();
                    n += 1;
                }
                if in_param == 0 {
                    if n == 1 {
                        out.push(' ');
                    } else {
                        out.push_str(&"\n".repeat(n - 1));
                    }
                }
            }
            c if in_param == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_as_a_browser_shows_it() {
        let t = html_to_text(
            "<html><head><title>SECRET</title><style>p{}</style></head><body><p>&#83;ECRET</p><!-- a > b --><li>&#x52;ESTRICTED</li><div title=\"<style>\">OFFICIAL</div><script>var x='<p>';</script><pre>PROTECT</pre></body></html>",
        );
        let lines: Vec<&str> = t.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        assert_eq!(
            lines,
            ["SECRET", "RESTRICTED", "OFFICIAL", "PROTECT"],
            "{t:?}"
        );
    }

    #[test]
    fn flowed_and_enriched_text_as_displayed() {
        assert_eq!(unflow("SEC \r\nRET\r\nnext\r\n", true), "SECRET\nnext\n\n");
        assert_eq!(unflow("a \r\nb\r\n", false), "a b\n\n");
        assert_eq!(
            enriched_to_text("<bold>SECRET</bold>\n\nThe <<plan>.\n"),
            "SECRET\nThe <plan>. "
        );
    }
}
