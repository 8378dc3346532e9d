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
    Regex::new(r"(?i)^\s*((?:>\s*)*)\*{0,2}(?:from|von|de|van|da|fra|från|od|lähettäjä|feladó)\*{0,2}\s*:\s*(.*)$")
        .expect("history from regex")
});
/// Another header line of the same block: what makes a `From:` line a block's.
static BLOCK_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(?:>\s*)*\*{0,2}(?:sent|gesendet|envoyé|enviado|verzonden|inviato|sendt|skickat|wysłano|date|datum|fecha|data|subject|betreff|objet|asunto|onderwerp|oggetto|assunto|emne|ämne|aihe|temat|tárgy)\*{0,2}\s*:")
        .expect("history block regex")
});
/// Recipient lines of a block.
static TO_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(?:>\s*)*\*{0,2}(?:to|an|à|a|para|aan|til|till|do|cc|kopie|copie)\*{0,2}\s*:\s*(.*)$")
        .expect("history to regex")
});
/// A reply attribution: `On Mon, 1 Dec 2026, Bob <bob@x> wrote:` and its translations
/// (German puts the sender after the verb: `Am … schrieb Bob <bob@x>:`).
static ATTRIBUTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:wrote|schrieb|a écrit|escribió|schreef|ha scritto|escreveu|skrev|napisał|kirjoitti)(?:\s+[^:]{0,120})?:\s*$")
        .expect("history attribution regex")
});
/// An address as history blocks write it: `<a@b>`, `[mailto:a@b]`, `(a@b)` or bare.
static ADDRESS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:mailto:)?([a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+)")
        .expect("history address regex")
});

fn addresses(text: &str) -> Vec<String> {
    let mut found: Vec<String> = ADDRESS
        .captures_iter(text)
        .filter_map(|c| c.get(1))
        .map(|m| m.as_str().to_ascii_lowercase())
        .collect();
    found.dedup();
    found
}

/// The earlier messages written inline in `text` (a body or a text attachment), each with
/// the sender's address: a block whose sender has no address (Outlook inside one Exchange
/// organisation writes only a name) names no one the directory could place, and is left out.
pub fn inline(text: &str, place: &str) -> Vec<Forwarded> {
    let mut found = Vec::new();
    let mut lines: Option<Vec<&str>> = None;
    for (i, line) in text.lines().enumerate() {
        // Cheap first: history lines have a colon.
        if !line.contains(':') {
            continue;
        }
        if let Some(caps) = FROM_LINE.captures(line) {
            let lines = lines.get_or_insert_with(|| text.lines().collect());
            let block = &lines[i.saturating_sub(5)..(i + 6).min(lines.len())];
            if !block.iter().any(|l| BLOCK_LINE.is_match(l)) {
                continue;
            }
            let Some(from) = caps
                .get(2)
                .and_then(|v| addresses(v.as_str()).into_iter().next())
            else {
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
        } else if line.len() < 300 && ATTRIBUTION.is_match(line) {
            // The attribution may be wrapped over two lines by the client.
            let lines = lines.get_or_insert_with(|| text.lines().collect());
            let joined = match i.checked_sub(1).map(|p| lines[p]) {
                Some(prev) if !prev.trim().is_empty() && prev.len() < 200 => {
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
    let from = addresses(from?).into_iter().next()?;
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
    fn running_text_is_not_history() {
        assert!(senders("From: the desk of bob@cps.cjsm.net, a note.\n\nRegards\n").is_empty());
        assert!(senders("Mail from: bob@cps.cjsm.net\n").is_empty());
        assert!(senders("I wrote to bob@x.example and he wrote: fine\n").is_empty());
    }
}
