//! A meeting invitation (iCalendar, RFC 5545) as Outlook, Thunderbird and Gmail show it:
//! the event's title (`SUMMARY`) as the invitation's subject, and its `DESCRIPTION`,
//! `LOCATION` and `COMMENT`, or Outlook's HTML description (`X-ALT-DESC;FMTTYPE=text/html`),
//! as its text. The raw lines are `NAME;PARAMS:VALUE` with long values folded and `\n`,
//! `\,` escaped, so none of them is a banner line as sent: a `SECRET` description passed
//! as OFFICIAL before this module read it.

/// What a reader sees of an invitation.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Invitation {
    /// Each event's title, read like a subject.
    pub summaries: Vec<String>,
    /// The descriptions, locations and comments, one value after another, as text lines.
    pub text: String,
}

/// Whether `body` is an iCalendar object, whatever its part's type says.
pub fn is_calendar(body: &str) -> bool {
    body.trim_start_matches('\u{FEFF}')
        .trim_start()
        .get(..15)
        .is_some_and(|start| start.eq_ignore_ascii_case("BEGIN:VCALENDAR"))
}

/// Reads the shown properties of an iCalendar object.
pub fn read(body: &str) -> Invitation {
    let mut out = Invitation::default();
    for line in unfolded(body) {
        let Some((name, params, value)) = property(&line) else {
            continue;
        };
        let value = unescaped(&decoded(params, value));
        match name.to_ascii_uppercase().as_str() {
            "SUMMARY" => {
                out.summaries.push(value.clone());
                push_line(&mut out.text, &value);
            }
            "DESCRIPTION" | "LOCATION" | "COMMENT" => push_line(&mut out.text, &value),
            "X-ALT-DESC" => {
                if params.to_ascii_lowercase().contains("text/html") {
                    push_line(&mut out.text, &super::render::html_to_text(&value));
                } else {
                    push_line(&mut out.text, &value);
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether `body` is a contact card (vCard, RFC 6350), which shares iCalendar's syntax.
pub fn is_card(body: &str) -> bool {
    body.trim_start_matches('\u{FEFF}')
        .trim_start()
        .get(..11)
        .is_some_and(|start| start.eq_ignore_ascii_case("BEGIN:VCARD"))
}

/// What a contact viewer shows of a card: every property's value (name, title,
/// organisation, note, addresses), one per line; the structure lines and pictures not.
pub fn read_card(body: &str) -> String {
    let mut text = String::new();
    for line in unfolded(body) {
        let Some((name, params, value)) = property(&line) else {
            continue;
        };
        let value = decoded(params, value);
        if !matches!(
            name.to_ascii_uppercase().as_str(),
            "BEGIN" | "END" | "VERSION" | "PHOTO" | "LOGO" | "SOUND" | "KEY"
        ) {
            // Structured values (`N`, `ADR`) are shown field by field.
            for field in unescaped(&value.replace("\\;", "\u{1}")).split(';') {
                push_line(&mut text, &field.replace('\u{1}', ";"));
            }
        }
    }
    text
}

fn push_line(text: &mut String, value: &str) {
    text.push_str(value);
    text.push('\n');
}

/// Content lines with folding undone (RFC 5545 3.1: a line break followed by a space or
/// tab continues the line; in vCalendar 1.0 and vCard 2.1 a quoted-printable value ending
/// in `=` continues on the next line, as in a mail body).
fn unfolded(body: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut soft = false;
    for raw in body.split('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        match (raw.strip_prefix([' ', '\t']), lines.last_mut()) {
            (_, Some(last)) if soft => {
                last.pop();
                last.push_str(raw);
            }
            (Some(rest), Some(last)) => last.push_str(rest),
            _ => lines.push(raw.to_string()),
        }
        soft = lines.last().is_some_and(|l| {
            l.ends_with('=') && l.to_ascii_uppercase().contains("QUOTED-PRINTABLE")
        });
    }
    lines
}

/// A value in the encoding its parameters name (vCalendar 1.0 and vCard 2.1:
/// `ENCODING=QUOTED-PRINTABLE;CHARSET=…`), as Outlook shows it.
fn decoded(params: &str, value: &str) -> String {
    let upper = params.to_ascii_uppercase();
    if !upper
        .split(';')
        .any(|p| p == "ENCODING=QUOTED-PRINTABLE" || p == "QUOTED-PRINTABLE")
    {
        return value.to_string();
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    let charset = params
        .split(';')
        .find_map(|p| {
            p.split_once('=')
                .filter(|(k, _)| k.eq_ignore_ascii_case("CHARSET"))
        })
        .map(|(_, v)| v.trim_matches('"'));
    match charset.and_then(crate::message::charsets::Decoder::for_label) {
        Some(decoder) => decoder.decode(&out),
        None => String::from_utf8_lossy(&out).into_owned(),
    }
}

/// `NAME;PARAMS:VALUE` split at the first colon outside a quoted parameter value.
fn property(line: &str) -> Option<(&str, &str, &str)> {
    let mut quoted = false;
    let colon = line.char_indices().find_map(|(i, c)| match c {
        '"' => {
            quoted = !quoted;
            None
        }
        ':' if !quoted => Some(i),
        _ => None,
    })?;
    let head = &line[..colon];
    let (name, params) = head.split_once(';').unwrap_or((head, ""));
    Some((name.trim(), params, &line[colon + 1..]))
}

/// A text value with its escapes undone: `\n` or `\N` a line break, `\,` `\;` `\\`.
fn unescaped(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n' | 'N') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invitation_reads_as_its_title_and_text() {
        let ics = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nSUMMARY;LANGUAGE=en-GB:[SECRET] Op\r\n  Nightjar\r\nLOCATION:Room 4\\, HQ\r\nDESCRIPTION:SECRET\\n\\nStarts at 0600.\r\nX-ALT-DESC;FMTTYPE=\"text/html\":<p>S&#69;CR\r\n ET</p>\r\nDTSTART:20261202T060000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        assert!(is_calendar(ics));
        assert!(!is_calendar("Dear all,\nBEGIN:VCALENDAR"));
        let read = read(ics);
        assert_eq!(read.summaries, ["[SECRET] Op Nightjar"]);
        let lines: Vec<&str> = read.text.lines().map(str::trim).collect();
        assert!(lines.contains(&"Room 4, HQ"), "{lines:?}");
        assert!(lines.contains(&"SECRET"), "{lines:?}");
        assert!(lines.contains(&"Starts at 0600."), "{lines:?}");
        assert!(
            lines.iter().filter(|l| **l == "SECRET").count() >= 2,
            "{lines:?}"
        );
        assert!(!read.text.contains("DTSTART"));
    }

    #[test]
    fn quoted_printable_values_are_read_as_outlook_shows_them() {
        let vcs = "BEGIN:VCALENDAR\r\nVERSION:1.0\r\nBEGIN:VEVENT\r\nSUMMARY;ENCODING=QUOTED-PRINTABLE:=53=45=43=52=45=54 - source=\r\n meeting\r\nDESCRIPTION;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:TOP =\r\nSECRET\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let read = read(vcs);
        assert_eq!(read.summaries, ["SECRET - source meeting"]);
        assert!(read.text.lines().any(|l| l == "TOP SECRET"), "{read:?}");
    }

    #[test]
    fn a_card_reads_as_its_values() {
        let card = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Carl\r\nTITLE:SEC\r\n RET\r\nNOTE:a\\;b\r\nEND:VCARD\r\n";
        assert!(is_card(card));
        let lines: Vec<String> = read_card(card).lines().map(String::from).collect();
        assert_eq!(lines, ["Carl", "SECRET", "a;b"]);
    }
}
