//! Forwarded and quoted correspondence: who wrote the earlier messages a message carries.
//! The CJSM guidelines forbid forwarding mail received over CJSM to anyone outside it unless
//! it is explicitly NOT PROTECTIVELY MARKED, so the rules need the original senders, as a
//! reader sees them: the `From:` line of an inline forward or reply block (Outlook's
//! `From: … Sent: … To: … Subject:` in the languages it writes, Gmail's, Apple Mail's and
//! Thunderbird's forward headers), the `On … <addr> wrote:` attribution above quoted lines,
//! and the headers of an attached message. Whether a sender is CJSM is the directory's
//! answer, asked by the gateway; this module only reads.

use std::sync::LazyLock;

use regex::Regex;

/// One earlier message found inside this one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Forwarded {
    /// Where it was found: `inline-forward`, `quoted` (a `>` block or its attribution), or
    /// `attached[N]` (a `message/rfc822` part); prefixed like marking evidence inside
    /// attached messages and text attachments.
    pub source: String,
    /// The original sender's address, lower-cased as written.
    pub from: String,
    /// The original recipients (To and Cc) where the block names them.
    pub to: Vec<String>,
}

/// The `From:` line of a history block, in the languages mail clients write it.
static FROM_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*((?:>\s*)*)\*{0,2}(?:from|von|de|van|da|fra|från|od|lähettäjä|feladó|oddi wrth|от|kimden|差出人|发件人|寄件者)\*{0,2}\s*[:：]\s*(.*)$")
        .expect("history from regex")
});
/// Another header line of the same block: what makes a `From:` line a block's.
static BLOCK_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(?:>\s*)*\*{0,2}(?:sent|gesendet|envoyé|enviado|verzonden|inviato|sendt|skickat|wysłano|anfonwyd|отправлено|gönderildi|送信日時|发送时间|date|datum|fecha|data|dyddiad|subject|betreff|objet|asunto|onderwerp|oggetto|assunto|emne|ämne|aihe|temat|tárgy|pwnc|тема|konu|件名|主题|to|an|à|para|aan|til|till|at|кому|kime|cc)\*{0,2}\s*[:：]|^\s*(?:>\s*)*-{2,}\s*(?:original message|forwarded message|ursprüngliche nachricht|message d'origine|mensaje original|oorspronkelijk bericht|messaggio originale)")
        .expect("history block regex")
});
/// Recipient lines of a block.
static TO_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(?:>\s*)*\*{0,2}(?:to|an|à|a|para|aan|til|till|do|at|кому|kime|cc|kopie|copie)\*{0,2}\s*[:：]\s*(.*)$")
        .expect("history to regex")
});
/// A reply attribution: `On Mon, 1 Dec 2026, Bob <bob@x> wrote:` and its translations
/// (German puts the sender after the verb: `Am … schrieb Bob <bob@x>:`; Gmail's Hungarian
/// a parenthesis with colons: `Bob <bob@x> ezt írta (időpont: 2026. dec. 1., H 10:00):`).
/// Chinese, Japanese and Korean verbs follow the date or name with no space, so they are
/// not asked to start a word.
static ATTRIBUTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:\b(?:wrote|schrieb|a écrit|escribió|schreef|ha scritto|escreveu|skrev|napisał(?:\(a\))?|napsal(?:\(a\))?|kirjoitti|ysgrifennodd|написал(?:\(а\))?|написав|пишет|пише|yazdı|írta|a scris|έγραψε)|写道|寫道|書きました|작성)(?:\s*\([^)]{0,80}\))?(?:\s+[^:：]{0,120})?[:：]\s*$")
        .expect("history attribution regex")
});
/// An address as history blocks write it: `<a@b>`, `[mailto:a@b]`, `(a@b)` or bare.
static ADDRESS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:mailto:)?([a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+)")
        .expect("history address regex")
});

/// The address a `From:` value names: the one in `<…>` or `[mailto:…]` when there is one
/// (a display name may itself look like an address: `bob@x <bob@x.cjsm.net>`), else the
/// first.
pub fn sender_address(value: &str) -> Option<String> {
    let all = addresses(value);
    let bracketed = ADDRESS.captures_iter(value).find_map(|c| {
        let m = c.get(0)?;
        let before = value[..m.start()].trim_end();
        (before.ends_with('<') || before.ends_with('[') || m.as_str().starts_with("mailto:"))
            .then(|| c.get(1).map(|a| a.as_str().to_ascii_lowercase()))
            .flatten()
    });
    bracketed.or_else(|| all.into_iter().next())
}

fn addresses(text: &str) -> Vec<String> {
    let mut found: Vec<String> = ADDRESS
        .captures_iter(text)
        .filter_map(|c| c.get(1))
        .map(|m| m.as_str().to_ascii_lowercase())
        .collect();
    found.dedup();
    found
}

/// Whether another header line of a history block is among the five non-blank lines
/// either side of line `i` (an HTML table of headers renders with blank lines between
/// its cells).
fn near_block_line(lines: &[&str], i: usize) -> bool {
    let before = lines[i.saturating_sub(20)..i].iter().rev();
    let after = lines[(i + 1).min(lines.len())..(i + 21).min(lines.len())].iter();
    let near = |it: &mut dyn Iterator<Item = &&str>| {
        it.filter(|l| !l.trim().is_empty())
            .take(5)
            .any(|l| BLOCK_LINE.is_match(l))
    };
    near(&mut before.into_iter()) || near(&mut after.into_iter())
}

/// The earlier messages written inline in `text` (a body or a text attachment), each with
/// the sender's address: a block whose sender has no address (Outlook inside one Exchange
/// organisation writes only a name) names no one the directory could place, and is left out.
pub fn inline(text: &str, place: &str) -> Vec<Forwarded> {
    // What a reader sees: `bob\u{200B}@cps.cjsm.net` is bob@cps.cjsm.net on screen.
    let text = &*super::normalize::without_invisible(text);
    let mut found = Vec::new();
    let mut lines: Option<Vec<&str>> = None;
    // Cheap first: history lines have a colon.
    for (i, line) in super::places::lines_holding(text, b':') {
        if let Some(caps) = FROM_LINE.captures(line) {
            let lines = lines.get_or_insert_with(|| text.lines().collect());
            if !near_block_line(lines, i) {
                continue;
            }
            // Outlook wraps a long `From:` value (a CJSM address is long), and an HTML
            // table puts the value in a cell of its own: the next non-blank line then holds
            // the address, if it is not the block's next header.
            let value = caps.get(2).map(|v| v.as_str()).unwrap_or("");
            let from = sender_address(value).or_else(|| {
                lines[i + 1..(i + 4).min(lines.len())]
                    .iter()
                    .find(|l| !l.trim().is_empty())
                    .filter(|l| !BLOCK_LINE.is_match(l) && !FROM_LINE.is_match(l))
                    .and_then(|l| sender_address(l))
            });
            let Some(from) = from else {
                continue;
            };
            let quoted = caps.get(1).is_some_and(|q| !q.as_str().is_empty());
            let to = lines[i + 1..(i + 8).min(lines.len())]
                .iter()
                .filter_map(|l| TO_LINE.captures(l))
                .filter_map(|c| c.get(1))
                .flat_map(|v| addresses(v.as_str()))
                .collect();
            let source = if quoted { "quoted" } else { "inline-forward" };
            found.push(Forwarded {
                source: format!("{place}{source}"),
                from,
                to,
            });
        } else if line.len() < 300
            && !ATTRIBUTION.is_match(line)
            && line.trim_end().ends_with([':', '：'])
        {
            // Whatever the language, a line that names an address and ends in a colon
            // right above a quote is its attribution (Gmail's Japanese has no verb:
            // `2026年12月1日(月) 10:00 Bob <bob@x>:`).
            let lines = lines.get_or_insert_with(|| text.lines().collect());
            let quote_follows = lines[i + 1..]
                .iter()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.trim_start().starts_with('>'));
            if quote_follows {
                if let Some(from) = addresses(line).pop() {
                    found.push(Forwarded {
                        source: format!("{place}quoted"),
                        from,
                        to: Vec::new(),
                    });
                }
            }
        } else if line.len() < 300 && ATTRIBUTION.is_match(line) {
            // The attribution may be wrapped over two lines by the client.
            let lines = lines.get_or_insert_with(|| text.lines().collect());
            // Only an attribution without an address borrows the line before, and only one
            // that is not a sentence of its own.
            let joined = match i.checked_sub(1).map(|p| lines[p]) {
                Some(prev)
                    if addresses(line).is_empty()
                        && !prev.trim().is_empty()
                        && !prev.trim_end().ends_with(['.', '!', '?', ':'])
                        && prev.len() < 200 =>
                {
                    format!("{prev} {line}")
                }
                _ => line.to_string(),
            };
            if let Some(from) = addresses(&joined).pop() {
                found.push(Forwarded {
                    source: format!("{place}quoted"),
                    from,
                    to: Vec::new(),
                });
            }
        }
    }
    found
}

/// An attached message's sender and recipients, from its own (decoded) headers; `place`
/// names the attachment (`attached[0]`).
pub fn attached(from: Option<&str>, to: &[String], place: &str) -> Option<Forwarded> {
    let from = sender_address(&super::normalize::without_invisible(from?))?;
    Some(Forwarded {
        source: place.to_string(),
        from,
        to: to.iter().flat_map(|t| addresses(t)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn senders(text: &str) -> Vec<(String, String)> {
        inline(text, "")
            .into_iter()
            .map(|f| (f.source, f.from))
            .collect()
    }

    #[test]
    fn forward_blocks_as_clients_write_them() {
        let outlook = "FYI\r\n\r\nFrom: Bob Smith <Bob.Smith@cps.cjsm.net>\r\nSent: 01 December 2026 10:00\r\nTo: Jane <jane@police.cjsm.net>; Ann <ann@probation.cjsm.net>\r\nSubject: bail\r\n\r\ntext\r\n";
        let found = inline(outlook, "");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].from, "bob.smith@cps.cjsm.net");
        assert_eq!(found[0].source, "inline-forward");
        assert_eq!(
            found[0].to,
            ["jane@police.cjsm.net", "ann@probation.cjsm.net"]
        );
        let german = "Von: Smith, Bob [mailto:bob@cps.cjsm.net]\nGesendet: Montag\nAn: jane@police.cjsm.net\nBetreff: AW: Termin\n";
        assert_eq!(
            senders(german),
            [("inline-forward".into(), "bob@cps.cjsm.net".into())]
        );
        let gmail = "---------- Forwarded message ---------\nFrom: Bob <bob@cps.cjsm.net>\nDate: Mon, 30 Nov 2026 at 10:00\nSubject: bail\nTo: <jane@police.cjsm.net>\n";
        assert_eq!(senders(gmail)[0].1, "bob@cps.cjsm.net");
        let quoted = "> From: bob@cps.cjsm.net\n> Date: Monday\n> Subject: x\n";
        assert_eq!(
            senders(quoted),
            [("quoted".into(), "bob@cps.cjsm.net".into())]
        );
    }

    #[test]
    fn reply_attributions() {
        let thunderbird = "Thanks.\n\nOn 30/11/2026 10:00, Bob Smith wrote:\n> text\n";
        assert!(senders(thunderbird).is_empty(), "no address, no one");
        let gmail = "Thanks.\n\nOn Mon, 30 Nov 2026 at 10:00, Bob Smith <bob@cps.cjsm.net>\nwrote:\n> text\n";
        assert_eq!(
            senders(gmail),
            [("quoted".into(), "bob@cps.cjsm.net".into())]
        );
        let german = "Am 30.11.2026 um 10:00 schrieb Bob <bob@cps.cjsm.net>:\n> text\n";
        assert_eq!(senders(german)[0].1, "bob@cps.cjsm.net");
    }

    #[test]
    fn what_the_adversary_found() {
        let wrapped = "From: Smith, Robert (CPS Area Team)\n<robert.smith@cps.gov.uk.cjsm.net>\nSent: Monday\nSubject: x\n";
        assert_eq!(senders(wrapped)[0].1, "robert.smith@cps.gov.uk.cjsm.net");
        let table = "From:\nBob <bob@cps.cjsm.net>\nDate:\nMonday\n";
        assert_eq!(senders(table)[0].1, "bob@cps.cjsm.net");
        let display = "From: bob.smith@cps.gov.uk <bob.smith@cps.gov.uk.cjsm.net>\nSent: Monday\n";
        assert_eq!(senders(display)[0].1, "bob.smith@cps.gov.uk.cjsm.net");
        let welsh = "Oddi wrth: Bob <bob@cps.cjsm.net>\nAnfonwyd: Dydd Llun\nAt: Jane\nPwnc: x\n";
        assert_eq!(senders(welsh)[0].1, "bob@cps.cjsm.net");
        let short =
            "-----Original Message-----\nFrom: bob@cps.cjsm.net\nTo: jane@police.cjsm.net\n";
        assert_eq!(senders(short)[0].1, "bob@cps.cjsm.net");
        let polish = "W dniu 1.12.2026 Bob <bob@cps.cjsm.net> napisał(a):\n> x\n";
        assert_eq!(senders(polish)[0].1, "bob@cps.cjsm.net");
        let prose = "Contact bob@cps.cjsm.net for the file.\nThe defendant wrote:\n> x\n";
        assert!(senders(prose).is_empty(), "{:?}", senders(prose));
        let cells = "-------- Forwarded Message --------\n\n\n\nSubject: \n\nHearing\n\n\n\nDate: \n\nTue\n\n\n\nFrom: \n\nBob Smith <bob@cps.cjsm.net>\n\n\n\nTo: \n\nJane\n";
        assert_eq!(senders(cells)[0].1, "bob@cps.cjsm.net");
    }

    #[test]
    fn reply_attributions_in_more_languages_and_without_a_verb() {
        let cases = [
            // Gmail, Hungarian: a parenthesis with colons before the last one.
            "Bob <bob@cps.cjsm.net> ezt írta (időpont: 2026. dec. 1., H 10:00):\n> x\n",
            // Thunderbird, Hungarian.
            "2026. 12. 01. 10:00 keltezéssel, Bob <bob@cps.cjsm.net> írta:\n> x\n",
            // Thunderbird and Yandex, Russian; Ukrainian.
            "01.12.2026 10:00, Bob <bob@cps.cjsm.net> пишет:\n> x\n",
            "01.12.2026 10:00, Bob <bob@cps.cjsm.net> написав:\n> x\n",
            // Gmail, Korean; Thunderbird, Japanese; Gmail, traditional Chinese.
            "2026년 12월 1일 (월) 오전 10:00, Bob <bob@cps.cjsm.net>님이 작성:\n> x\n",
            "Bob <bob@cps.cjsm.net> さんは書きました:\n> x\n",
            "Bob <bob@cps.cjsm.net> 於 2026年12月1日 週一 上午10:00寫道：\n> x\n",
            // Romanian, Greek.
            "Pe 1 dec. 2026, Bob <bob@cps.cjsm.net> a scris:\n> x\n",
            "Στις 1/12/2026, ο Bob <bob@cps.cjsm.net> έγραψε:\n> x\n",
            // Gmail, Japanese, as plain text: no verb at all, the quote follows.
            "2026年12月1日(月) 10:00 Bob <bob@cps.cjsm.net>:\n\n> x\n",
        ];
        for text in cases {
            assert_eq!(
                senders(text),
                [("quoted".into(), "bob@cps.cjsm.net".into())],
                "{text}"
            );
        }
        // Invisible characters in an address or a header name are not what a reader sees.
        let hidden = "On Tue, Bob <bob\u{200B}@cps.cjsm\u{2060}.net> wrote:\n> x\n";
        assert_eq!(senders(hidden)[0].1, "bob@cps.cjsm.net");
        let block = "Fr\u{200B}om: bob@cps.cjsm.net\nSent: Monday\nSubject: x\n";
        assert_eq!(senders(block)[0].1, "bob@cps.cjsm.net");
        // A line ending in an address and a colon is an attribution only above a quote.
        assert!(senders("Please send it to bob@cps.cjsm.net:\nthe file, today.\n").is_empty());
    }

    #[test]
    fn running_text_is_not_history() {
        assert!(senders("From: the desk of bob@cps.cjsm.net, a note.\n\nRegards\n").is_empty());
        assert!(senders("Mail from: bob@cps.cjsm.net\n").is_empty());
        assert!(senders("I wrote to bob@x.example and he wrote: fine\n").is_empty());
    }
}
