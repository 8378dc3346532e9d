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

/// A text part as a reader is shown it.
pub struct Shown {
    /// The decoded text, rendered (`format=flowed` reflowed, as Thunderbird shows it).
    pub text: String,
    /// Lines a client that does not reflow `format=flowed` (Outlook, Python's `email`)
    /// shows on their own and `text` joins to their neighbours: read for banners too.
    pub apart: Option<String>,
    /// The declared charset, when markgate cannot decode it and the part holds bytes that
    /// only it could tell (read as UTF-8 meanwhile, so its ASCII is still read): opaque.
    pub undecoded: Option<String>,
}

/// The decoded text of a text part, rendered.
pub fn text(part: &ParsedMail, mime: &str, html: bool) -> Result<Shown, mailparse::MailParseError> {
    let (body, undecoded) = body_text(part)?;
    let mut apart = None;
    let text = if is_invitation(mime, &body) {
        super::calendar::read(&body).text
    } else if super::calendar::is_card(&body) {
        super::calendar::read_card(&body)
    } else if html {
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
        let flowed = unflow(&body, delsp);
        apart = soft_broken_capitals(&body, &flowed);
        flowed
    } else {
        body
    };
    Ok(Shown {
        text,
        apart,
        undecoded,
    })
}

/// The soft-broken lines of flowed `raw` (ending in a space: joined to the next line by
/// a client that reflows, shown alone by one that does not) that are in capitals, as a
/// banner is typed; `None` if there are none. A wrapped word in lower case
/// (`…kept strictly` / `confidential.`) is the sentence it ends, on every client.
fn soft_broken_capitals(raw: &str, shown: &str) -> Option<String> {
    let have: std::collections::HashSet<&str> = shown.lines().map(str::trim).collect();
    let extra: Vec<&str> = raw
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| l.ends_with(' '))
        .map(|l| l.trim_start_matches('>').trim())
        .filter(|l| {
            !l.is_empty()
                && !have.contains(l)
                && l.chars().any(char::is_uppercase)
                && !l.chars().any(char::is_lowercase)
        })
        .collect();
    (!extra.is_empty()).then(|| extra.join("\n"))
}

/// A part's body in its charset, as a client decodes it (`charsets`). mailparse turns a
/// charset encoding_rs does not know into ASCII (every 8-bit byte lost), and the WHATWG
/// "replacement" ones (ISO-2022-KR, HZ: 7-bit encodings Outlook and Python still decode)
/// into one U+FFFD for the whole part, so a SECRET in plain ASCII under
/// `charset=iso-2022-kr` vanished. A label markgate does not know (`unknown-8bit`, `ansi`,
/// `cp850`) is read as clients guess it, UTF-8 if the bytes are UTF-8, else Windows-1252
/// (every byte a character: a marking's ASCII letters are what they are), and reported as
/// undecoded only when the part holds what such a guess cannot show: ISO-2022 escapes,
/// HZ's `~{`, NUL bytes (UTF-16 or UTF-32 under another name).
pub fn body_text(part: &ParsedMail) -> Result<(String, Option<String>), mailparse::MailParseError> {
    // The labels mailparse decodes itself (most mail): its decoding, without a copy of
    // the raw body first.
    if charset::Charset::for_label_no_replacement(part.ctype.charset.as_bytes()).is_some() {
        return Ok((part.get_body()?, None));
    }
    let raw = part.get_body_raw()?;
    if let Some(decoder) = crate::message::charsets::Decoder::for_label(&part.ctype.charset) {
        return Ok((decoder.decode(&raw), None));
    }
    let hidden =
        memchr::memchr2(0x1b, 0, &raw).is_some() || memchr::memmem::find(&raw, b"~{").is_some();
    let text = match String::from_utf8(raw) {
        Ok(text) => text,
        Err(e) => encoding_rs::WINDOWS_1252
            .decode_without_bom_handling(e.as_bytes())
            .0
            .into_owned(),
    };
    Ok((text, hidden.then(|| part.ctype.charset.clone())))
}

/// Whether a text part is a meeting invitation a client shows as one: declared so, or a
/// file of another type (`application/octet-stream; name=invite.ics`) that is one.
fn is_invitation(mime: &str, body: &str) -> bool {
    is_calendar_type(mime) || (!mime.starts_with("text/") && super::calendar::is_calendar(body))
}

/// The types invitations are declared as: iCalendar, and vCalendar 1.0 (Outlook's `.vcs`).
fn is_calendar_type(mime: &str) -> bool {
    matches!(
        mime,
        "text/calendar" | "application/ics" | "text/x-vcalendar" | "text/vcalendar"
    )
}

/// The event titles of an invitation part (read like a subject), if it is one.
pub fn invitation_titles(
    part: &ParsedMail,
    mime: &str,
) -> Result<Vec<String>, mailparse::MailParseError> {
    if !is_calendar_type(mime) && mime.starts_with("text/") {
        return Ok(Vec::new());
    }
    let (body, _) = body_text(part)?;
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

/// Elements with no content (their start tag is all there is).
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr",
];

/// What a page's `<style>` rules say that changes the words a reader sees: selectors whose
/// elements are hidden (or shrunk to nothing), and text the rules themselves show
/// (`::before { content: "SECRET" }`, `content: attr(data-m)`).
#[derive(Default)]
struct Css {
    hidden_tags: Vec<String>,
    hidden_classes: Vec<String>,
    hidden_ids: Vec<String>,
    /// Strings in `content:` declarations, shown as text.
    content: Vec<String>,
    /// Attributes named in `content: attr(…)`: their values are shown.
    attrs: Vec<String>,
    /// Tags and classes a rule lays out inline (`.i{display:inline}`).
    inline: Vec<String>,
}

impl Css {
    /// Reads the simple rules mail uses (`tag`, `.class`, `#id`, lists of them, the last
    /// compound of a descendant selector); anything else is not understood and changes
    /// nothing.
    fn read(&mut self, sheet: &str) {
        let mut sheet = sheet.to_string();
        while let Some(start) = sheet.find("/*") {
            let end = sheet[start + 2..]
                .find("*/")
                .map_or(sheet.len(), |e| start + 4 + e);
            sheet.replace_range(start..end, " ");
        }
        // Every rule's generated text in order: `::before{content:"SEC"}` and
        // `::after{content:"RET"}` on one empty element show one word.
        let mut all: Vec<String> = Vec::new();
        for rule in sheet.split('}') {
            let Some((selectors, written)) = rule.rsplit_once('{') else {
                continue;
            };
            let selectors = selectors.to_ascii_lowercase();
            // Generated text keeps its case; everything else is matched in lower case.
            let lower = written.to_ascii_lowercase();
            for value in generated(written) {
                // Its whole text: the joined strings when there are several.
                if let Some(whole) = value.strings.last() {
                    all.push(whole.clone());
                }
                self.content.extend(value.strings);
                self.attrs.extend(value.attrs);
            }
            let declarations: String = lower.split_whitespace().collect();
            if !conceals(&declarations) {
                // Blocks a rule lays out side by side glue their words as inline ones do.
                if lays_out_inline(&declarations) {
                    for (kind, name) in targets(&selectors) {
                        if kind != '#' {
                            self.inline.push(name);
                        }
                    }
                }
                continue;
            }
            for (kind, name) in targets(&selectors) {
                match kind {
                    '.' => self.hidden_classes.push(name),
                    '#' => self.hidden_ids.push(name),
                    _ => self.hidden_tags.push(name),
                }
            }
        }
        if all.len() > 1 {
            self.content.push(all.concat());
        }
    }
}

/// The (kind, name) a rule's selectors apply to, as `read` takes them: the last compound
/// of each (`tag`, `.class`, `#id`), pseudo-classes and attribute tests not understood.
fn targets(selectors: &str) -> Vec<(char, String)> {
    let mut out = Vec::new();
    for selector in selectors.split(',') {
        let Some(last) = selector
            .split([' ', '>', '+', '~'])
            .rfind(|s| !s.is_empty())
        else {
            continue;
        };
        if last.contains([':', '[']) {
            continue;
        }
        let mut kind = ' ';
        let mut name = String::new();
        for c in last.chars().chain(std::iter::once('.')) {
            if c != '.' && c != '#' {
                name.push(c);
                continue;
            }
            if !name.is_empty() && name != "*" {
                out.push((kind, std::mem::take(&mut name)));
            }
            name.clear();
            kind = c;
        }
    }
    out
}

/// Whether declarations (lower case, no white space) put an element beside its neighbours
/// on one line: inline, inline-block, a table cell, a float.
fn lays_out_inline(declarations: &str) -> bool {
    declarations.contains("display:inline")
        || declarations.contains("display:table-cell")
        || declarations.contains("float:left")
        || declarations.contains("float:right")
}

/// What one declaration that generates text puts on the page.
struct Generated {
    /// Its strings, escapes undone, each alone and (when there are several: `"SEC" "RET"`,
    /// which CSS runs together) all of them joined.
    strings: Vec<String>,
    /// The attributes whose values it shows (`attr(data-m)`).
    attrs: Vec<String>,
}

/// The text-generating declarations of a rule's body (`content:`, and a list marker's
/// `list-style-type:` / `list-style:` string), as written (their strings keep their case).
fn generated(declarations: &str) -> Vec<Generated> {
    let lower = declarations.to_ascii_lowercase();
    let mut out = Vec::new();
    for property in ["content", "list-style-type", "list-style"] {
        for (at, _) in lower.match_indices(property) {
            // Not the tail of a longer name (`list-style` in `list-style-type`).
            let boundary = at == 0
                || !lower.as_bytes()[at - 1].is_ascii_alphanumeric()
                    && lower.as_bytes()[at - 1] != b'-';
            let rest = declarations[at + property.len()..].trim_start();
            let (true, Some(value)) = (boundary, rest.strip_prefix(':')) else {
                continue;
            };
            let value = value.split(';').next().unwrap_or("");
            let pieces: Vec<String> = value
                .split(['"', '\''])
                .enumerate()
                .filter(|(i, piece)| i % 2 == 1 && !piece.trim().is_empty())
                .map(|(_, piece)| css_unescaped(piece))
                .collect();
            let mut strings = pieces.clone();
            if pieces.len() > 1 {
                strings.push(pieces.concat());
            }
            let attrs = value
                .to_ascii_lowercase()
                .split("attr(")
                .skip(1)
                .filter_map(|a| a.split(')').next().map(|n| n.trim().to_string()))
                .collect();
            out.push(Generated { strings, attrs });
        }
    }
    out
}

/// A CSS string with its escapes undone: `\53 ` and `\000053` are `S`, `\"` is `"`.
fn css_unescaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let mut hex = String::new();
        while hex.len() < 6 && chars.peek().is_some_and(char::is_ascii_hexdigit) {
            hex.extend(chars.next());
        }
        if hex.is_empty() {
            out.extend(chars.next());
            continue;
        }
        // One white space after a hex escape ends it and is not text.
        if chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        let code = u32::from_str_radix(&hex, 16).unwrap_or(0xFFFD);
        out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
    }
    out
}

/// Whether CSS declarations (lower case, no white space) make an element's text invisible:
/// not displayed, hidden, no size, no opacity or no colour.
fn conceals(declarations: &str) -> bool {
    let value = |property: &str| {
        declarations
            .split(';')
            .filter_map(|d| d.split_once(':'))
            .filter(|(p, _)| *p == property)
            .map(|(_, v)| v.trim_end_matches("!important"))
            .next_back()
    };
    let zero = |v: Option<&str>| {
        v.is_some_and(|v| {
            let number: String = v
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            !number.is_empty() && number.parse::<f64>().is_ok_and(|n| n == 0.0)
        })
    };
    value("display") == Some("none")
        || matches!(value("visibility"), Some("hidden" | "collapse"))
        || zero(value("font-size"))
        || zero(value("opacity"))
        || value("color") == Some("transparent")
}

#[derive(Default)]
struct Collect {
    out: RefCell<String>,
    /// The text as a browser lays it out on one line: no line of its own for what the
    /// other reading sets apart, and what the page hides left out. `SEC<span
    /// style="display:none"></span>RET` is "SECRET" on screen; read apart, it is two lines.
    glued: RefCell<String>,
    /// Open elements whose text is invisible, innermost last.
    concealed: RefCell<Vec<String>>,
    /// Open block elements laid out inline by their style.
    inline: RefCell<Vec<String>>,
    /// Open elements with a right-to-left override in their style.
    overrides: RefCell<Vec<String>>,
    css: RefCell<Css>,
    /// The text of the `<style>` element being read.
    sheet: RefCell<String>,
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
        let pre = *self.preformatted.borrow() > 0 || *self.plaintext.borrow();
        push_text(&mut self.out.borrow_mut(), text, pre);
        if self.concealed.borrow().is_empty() {
            push_text(&mut self.glued.borrow_mut(), text, pre);
        }
    }

    fn both(&self, s: &str) {
        self.out.borrow_mut().push_str(s);
        self.glued.borrow_mut().push_str(s);
    }
}

fn push_text(out: &mut String, text: &str, pre: bool) {
    if pre {
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

impl TokenSink for Collect {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        match token {
            Token::CharacterTokens(text) if self.hidden.borrow().is_none() => self.text(&text),
            Token::CharacterTokens(text)
                if self.hidden.borrow().as_deref() == Some("style")
                    && *self.foreign.borrow() == 0 =>
            {
                self.sheet.borrow_mut().push_str(&text)
            }
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
                        if name == "style" {
                            let sheet = self.sheet.take();
                            let mut css = self.css.borrow_mut();
                            let before = css.content.len();
                            css.read(&sheet);
                            // Text the style sheet itself puts on the page.
                            for shown in &css.content[before..] {
                                let mut out = self.out.borrow_mut();
                                out.push('\n');
                                out.push_str(shown);
                                out.push('\n');
                            }
                        }
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
                // The same element as a browser lays it out.
                let style = tag
                    .attrs
                    .iter()
                    .find(|a| &*a.name.local == "style")
                    .map(|a| {
                        a.value
                            .to_ascii_lowercase()
                            .split_whitespace()
                            .collect::<String>()
                    })
                    .unwrap_or_default();
                // A list item's own marker string (`style="list-style-type:'SECRET'"`).
                if start {
                    if let Some(raw) = tag.attrs.iter().find(|a| &*a.name.local == "style") {
                        for value in generated(&raw.value) {
                            for shown in value.strings {
                                let mut out = self.out.borrow_mut();
                                out.push('\n');
                                out.push_str(&shown);
                                out.push('\n');
                            }
                        }
                    }
                }
                let concealing = start && {
                    let css = self.css.borrow();
                    conceals(&style)
                        || css.hidden_tags.iter().any(|t| t == name)
                        || tag.attrs.iter().any(|a| {
                            let n: &str = &a.name.local;
                            let v = a.value.to_ascii_lowercase();
                            n == "hidden"
                                || (n == "class"
                                    && v.split_whitespace()
                                        .any(|c| css.hidden_classes.iter().any(|h| h == c)))
                                || (n == "id" && css.hidden_ids.contains(&v))
                        })
                };
                // A block made inline by its style lays out inline to its end tag too.
                let mut inline = lays_out_inline(&style)
                    || matches!(name, "td" | "th")
                    || (start && {
                        let css = self.css.borrow();
                        css.inline.iter().any(|t| t == name)
                            || tag.attrs.iter().any(|a| {
                                &*a.name.local == "class"
                                    && a.value
                                        .to_ascii_lowercase()
                                        .split_whitespace()
                                        .any(|c| css.inline.iter().any(|i| i == c))
                            })
                    });
                if start && inline && !tag.self_closing && !VOID.contains(&name) {
                    self.inline.borrow_mut().push(name.to_string());
                } else if !start && self.inline.borrow().last().is_some_and(|n| n == name) {
                    self.inline.borrow_mut().pop();
                    inline = true;
                }
                if BLOCKS.contains(&name) && !inline && !concealing {
                    self.glued.borrow_mut().push('\n');
                }
                if !VOID.contains(&name) {
                    if concealing && !tag.self_closing {
                        self.concealed.borrow_mut().push(name.to_string());
                    } else if !start && self.concealed.borrow().last().is_some_and(|n| n == name) {
                        self.concealed.borrow_mut().pop();
                    }
                    let rtl = style.contains("unicode-bidi:bidi-override")
                        && style.contains("direction:rtl");
                    if start && rtl && !tag.self_closing {
                        self.overrides.borrow_mut().push(name.to_string());
                        self.both("\u{202E}");
                    } else if !start && self.overrides.borrow().last().is_some_and(|n| n == name) {
                        self.overrides.borrow_mut().pop();
                        self.both("\u{202C}");
                    }
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
                    // The values a rule's `attr(…)`s show, run together as CSS runs them.
                    let generated: Vec<&str> = tag
                        .attrs
                        .iter()
                        .filter(|a| self.css.borrow().attrs.iter().any(|x| *x == *a.name.local))
                        .map(|a| &*a.value)
                        .collect();
                    if generated.len() > 1 {
                        let mut out = self.out.borrow_mut();
                        out.push('\n');
                        out.push_str(&generated.concat());
                        out.push('\n');
                    }
                    for a in &tag.attrs {
                        let n: &str = &a.name.local;
                        let shown = match (name, n) {
                            ("img" | "area" | "input", "alt")
                            | ("input" | "button", "value")
                            | ("input" | "textarea", "placeholder") => Some(a.value.to_string()),
                            ("iframe", "srcdoc") => Some(html_to_text(&a.value)),
                            _ if self.css.borrow().attrs.iter().any(|x| x == n) => {
                                Some(a.value.to_string())
                            }
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
    let mut text = tokenizer.sink.out.take();
    let glued = tokenizer.sink.glued.take();
    // Lines of the laid-out reading that the apart one does not have (a word split by
    // something a browser hides or lays out inline) are read too, after it.
    let shown: std::collections::HashSet<&str> = text.lines().map(str::trim).collect();
    let extra: Vec<&str> = glued
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !shown.contains(l))
        .collect();
    if !extra.is_empty() {
        text.push_str("\n\n");
        text.push_str(&extra.join("\n"));
        text.push('\n');
    }
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
    fn a_word_split_by_what_a_browser_hides_or_lays_inline_is_read_whole() {
        for html in [
            "<p>SEC<span style=\"display:none\">ly</span>RET</p>",
            "<p>SE<br style=\"display:none\">CRET</p>",
            "<p>SEC<img src=\"cid:x\" width=\"0\" alt=\"\">RET</p>",
            "<table><tr><td>SEC</td><td>RET</td></tr></table>",
            "<div style=\"display:inline\">SEC</div><div style=\"display:inline\">RET</div>",
            "<style>.x{display:none}</style><p>SECRET<span class=\"x\">ly shared</span></p>",
            "<style>i { font-size: 0px }</style><p>SECRET<i>ive</i></p>",
            "<style>.m::before{content:\"SECRET\"}</style><p class=\"m\"></p>",
            "<style>p[data-m]::after{content:attr(data-m)}</style><p data-m=\"SECRET\"></p>",
            "<p style=\"direction:rtl;unicode-bidi:bidi-override\">TERCES</p>",
            "<input placeholder=\"SECRET\">",
        ] {
            let text = html_to_text(html);
            let folded: Vec<String> = text
                .lines()
                .map(|l| {
                    let l = l.trim();
                    crate::marking::normalize::visual(l).unwrap_or_else(|| l.to_string())
                })
                .collect();
            assert!(
                folded.iter().any(|l| l.contains("SECRET")),
                "{html}: {text:?}"
            );
        }
        // Plain HTML reads once: nothing laid out differently, nothing added.
        let plain = "<p>Hello Bob,</p><p>The plan.</p>";
        assert_eq!(html_to_text(plain).matches("The plan.").count(), 1);
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
