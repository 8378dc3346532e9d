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
    if is_invitation(mime, &body) {
        return Ok(super::calendar::read(&body).text);
    }
    if super::calendar::is_card(&body) {
        return Ok(super::calendar::read_card(&body));
    }
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

/// Whether a text part is a meeting invitation a client shows as one: declared so, or a
/// file of another type (`application/octet-stream; name=invite.ics`) that is one.
fn is_invitation(mime: &str, body: &str) -> bool {
    matches!(mime, "text/calendar" | "application/ics")
        || (!mime.starts_with("text/") && super::calendar::is_calendar(body))
}

/// The event titles of an invitation part (read like a subject), if it is one.
pub fn invitation_titles(
    part: &ParsedMail,
    mime: &str,
) -> Result<Vec<String>, mailparse::MailParseError> {
    if !matches!(mime, "text/calendar" | "application/ics") && mime.starts_with("text/") {
        return Ok(Vec::new());
    }
    let body = part.get_body()?;
    Ok(if is_invitation(mime, &body) {
        super::calendar::read(&body).summaries
    } else {
        Vec::new()
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
    "xmp",
    "listing",
    "hgroup",
    "search",
    "dir",
    "plaintext",
    "textarea",
    "frameset",
    "frame",
];

/// Elements whose content a reader does not see where it stands (or sees apart), and
/// foreign content: each is set on lines of its own, so whatever is in it can neither glue
/// itself to a marking (`SECRET<noframes>ly draft</noframes>`) nor hide one. Seeing too much
/// on its own line fails closed; gluing would not.
const APART: &[&str] = &[
    "noframes", "noembed", "iframe", "object", "embed", "rp", "rt", "svg", "math", "video",
    "audio", "canvas", "select", "noscript", "img", "input", "button",
];

/// Elements whose text is shown as written (no whitespace collapsing).
const PREFORMATTED: &[&str] = &["pre", "textarea", "listing", "xmp", "plaintext"];

#[derive(Default)]
struct Collect {
    out: RefCell<String>,
    /// Inside an element whose text is not shown (`<script>`, `<style>`, `<title>`).
    hidden: RefCell<Option<String>>,
    /// Open `<svg>`/`<math>`: there `<style>` and `<script>` are ordinary elements (HTML's
    /// foreign content), so they are neither raw text nor hidden.
    foreign: RefCell<usize>,
    preformatted: RefCell<usize>,
    plaintext: RefCell<bool>,
    /// Open inline elements set apart by their style, innermost last.
    apart: RefCell<Vec<String>>,
}

impl Collect {
    fn text(&self, text: &str) {
        let mut out = self.out.borrow_mut();
        if *self.preformatted.borrow() > 0 || *self.plaintext.borrow() {
            out.push_str(text);
            return;
        }
        // Outside preformatted text a browser collapses white space, line breaks included.
        for c in text.chars() {
            if c.is_ascii_whitespace() {
                if !out.ends_with([' ', '\n']) {
                    out.push(' ');
                }
            } else {
                out.push(c);
            }
        }
    }
}

impl TokenSink for Collect {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        match token {
            Token::CharacterTokens(text) if self.hidden.borrow().is_none() => self.text(&text),
            // Outlook (Word) renders its conditional comments: `<!--[if mso]>…<![endif]-->`.
            Token::CommentToken(comment) if comment.trim_start().starts_with("[if") => {
                let inner = comment
                    .split_once('>')
                    .map(|(_, rest)| rest)
                    .unwrap_or("")
                    .trim_end_matches("<![endif]")
                    .trim_end_matches("<![endif]--");
                let rendered = html_to_text(inner);
                let mut out = self.out.borrow_mut();
                out.push('\n');
                out.push_str(&rendered);
                out.push('\n');
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
                let start = tag.kind == TagKind::StartTag;
                if matches!(name, "svg" | "math") {
                    let mut foreign = self.foreign.borrow_mut();
                    if start && !tag.self_closing {
                        *foreign += 1;
                    } else if !start {
                        *foreign = foreign.saturating_sub(1);
                    }
                }
                if PREFORMATTED.contains(&name) {
                    let mut pre = self.preformatted.borrow_mut();
                    if start {
                        *pre += 1;
                    } else {
                        *pre = pre.saturating_sub(1);
                    }
                }
                // Hidden, shrunk or laid out apart: set on its own line either way (the end tag
                // of an inline element carries no style, so the break comes at its start and
                // at the next block).
                const APART_STYLES: &[&str] = &[
                    "display:",
                    "font-size:0",
                    "visibility:",
                    "position:",
                    "float:",
                    "flex",
                    "order:",
                    "content:",
                    "opacity:0",
                ];
                let hidden_attr = tag.attrs.iter().any(|a| {
                    let n: &str = &a.name.local;
                    let v = a.value.to_ascii_lowercase().replace(' ', "");
                    n == "hidden" || (n == "style" && APART_STYLES.iter().any(|k| v.contains(k)))
                });
                if BLOCKS.contains(&name) || APART.contains(&name) || hidden_attr {
                    self.out.borrow_mut().push('\n');
                }
                // An inline element set apart by its style ends its line where it ends.
                if start && hidden_attr && !tag.self_closing {
                    self.apart.borrow_mut().push(name.to_string());
                } else if !start && self.apart.borrow().last().is_some_and(|n| n == name) {
                    self.apart.borrow_mut().pop();
                    self.out.borrow_mut().push('\n');
                }
                // What a reader sees of an element without text content: an image's `alt`
                // (clients block images by default), a field's `value`, a frame's `srcdoc`.
                if start {
                    for a in &tag.attrs {
                        let n: &str = &a.name.local;
                        let shown = match (name, n) {
                            ("img" | "area" | "input", "alt") | ("input" | "button", "value") => {
                                Some(a.value.to_string())
                            }
                            ("iframe", "srcdoc") => Some(html_to_text(&a.value)),
                            _ => None,
                        };
                        if let Some(shown) = shown {
                            let mut out = self.out.borrow_mut();
                            out.push('\n');
                            out.push_str(&shown);
                            out.push('\n');
                        }
                    }
                }
                if name == "bdo" {
                    let rtl = tag
                        .attrs
                        .iter()
                        .any(|a| &*a.name.local == "dir" && a.value.eq_ignore_ascii_case("rtl"));
                    if start && rtl {
                        self.out.borrow_mut().push('\u{202E}');
                    } else if !start {
                        self.out.borrow_mut().push('\u{202C}');
                    }
                }
                if start && !tag.self_closing {
                    if name == "plaintext" {
                        *self.plaintext.borrow_mut() = true;
                        return TokenSinkResult::Plaintext;
                    }
                    if *self.foreign.borrow() > 0 {
                        return TokenSinkResult::Continue;
                    }
                    let raw = match name {
                        "script" => Some(RawKind::ScriptData),
                        "style" | "xmp" | "iframe" | "noembed" | "noframes" => {
                            Some(RawKind::Rawtext)
                        }
                        "title" | "textarea" => Some(RawKind::Rcdata),
                        _ => None,
                    };
                    if matches!(name, "script" | "style" | "title" | "template") {
                        *self.hidden.borrow_mut() = Some(name.to_string());
                    }
                    if let Some(kind) = raw {
                        return TokenSinkResult::RawData(kind);
                    }
                }
            }
            // Other comments, doctype and parse errors show nothing.
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

/// HTML reduced to the lines a browser would show. `<bdo dir=rtl>` becomes a right-to-left
/// override, which the normalisation reads the way it is displayed.
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

/// RFC 3676: a line ending in a space continues on the next line of the same quote depth
/// (the space removed when `delsp=yes`); quote marks and space-stuffing are read off each
/// line first, and put back once; the signature separator `-- ` stays a line.
pub fn unflow(text: &str, delsp: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut open: Option<(usize, String)> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let depth = line.bytes().take_while(|&b| b == b'>').count();
        let content = &line[depth..];
        let content = content.strip_prefix(' ').unwrap_or(content);
        let (prefix, mut joined) = match open.take() {
            Some((d, text)) if d == depth => (d, text),
            Some((d, text)) => {
                out.push_str(&">".repeat(d));
                if d > 0 {
                    out.push(' ');
                }
                out.push_str(&text);
                out.push('\n');
                (depth, String::new())
            }
            None => (depth, String::new()),
        };
        if content.ends_with(' ') && content != "-- " {
            joined.push_str(if delsp {
                &content[..content.len() - 1]
            } else {
                content
            });
            open = Some((prefix, joined));
        } else {
            joined.push_str(content);
            out.push_str(&">".repeat(prefix));
            if prefix > 0 {
                out.push(' ');
            }
            out.push_str(&joined);
            out.push('\n');
        }
    }
    if let Some((d, text)) = open {
        out.push_str(&">".repeat(d));
        out.push_str(&text);
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
    fn what_a_browser_hides_or_sets_apart_does_not_glue_to_a_marking() {
        for html in [
            "<p>SECRET<noframes>ly draft</noframes></p>",
            "<p>SECRET<span hidden>ly draft</span></p>",
            "<p>SECRET<span style=\"display: none\">ly draft</span></p>",
            "<svg><style><p>SECRET</p></style></svg>",
            "<plaintext><!--\nSECRET\n-->",
            "<!--[if mso]><p>SECRET</p><![endif]-->",
            "<p>\n  SEC<b>RET</b>\n</p>",
        ] {
            let text = html_to_text(html);
            assert!(
                text.lines().any(|l| l.trim() == "SECRET"),
                "{html}: {text:?}"
            );
        }
        // Source line breaks are spaces on screen.
        let t = html_to_text("<p><strong>\nconfidential\n</strong> waste collection</p>");
        assert!(t.lines().all(|l| l.trim() != "confidential"), "{t:?}");
    }

    #[test]
    fn flowed_and_enriched_text_as_displayed() {
        assert_eq!(unflow("SEC \r\nRET\r\nnext\r\n", true), "SECRET\nnext\n\n");
        assert_eq!(unflow("a \r\nb\r\n", false), "a b\n\n");
        assert_eq!(unflow("> SEC \r\n> RET\r\n", true), "> SECRET\n\n");
        assert_eq!(
            enriched_to_text("<bold>SECRET</bold>\n\nThe <<plan>.\n"),
            "SECRET\nThe <plan>. "
        );
    }
}
