//! How each MIME part is read, decided in one place for the walk that builds the view and
//! the classifier that reads it, so the two cannot disagree about which bytes matter.
//! What a mail client shows a reader is read: text parts inline or attached, attached
//! messages (`message/rfc822`, `message/global`, `message/news`, a `.eml` file), and files
//! that are text by their name (`.txt`, `.csv`, `.htm`, `.html`) whatever their type says.

use super::params;

/// What to do with a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// A multipart: read its parts.
    Container,
    /// An attached message: read it as a message.
    Message,
    /// Text: `html` to be rendered, `inline` when it is the message's own text (not an
    /// attachment).
    Text { html: bool, inline: bool },
    /// A file that may be a document (Office, PDF, an archive, encrypted content): its
    /// bytes are read by the document readers, which recognise it by content.
    Document,
    /// Not read (images, audio, video; its name still is).
    Opaque,
}

/// A file name's ending, lower case, as the reader's system takes it: Windows drops
/// trailing dots and spaces when it saves a file, so `report.docx.` is `report.docx`.
fn extension(name: Option<&str>) -> Option<String> {
    name.map(|n| n.trim_end_matches(['.', ' ']))
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, e)| e.trim().to_ascii_lowercase())
}

/// Whether a file name says "message" (`.eml`): a mail client opens it as one.
pub fn is_message_name(name: Option<&str>) -> bool {
    extension(name).as_deref() == Some("eml")
}

/// Whether a file name ending (lower case) is a document's.
pub fn is_document_name(ext: Option<&str>) -> bool {
    ext.is_some_and(|e| DOCUMENT_EXTENSIONS.contains(&e))
}

/// Whether a name or media type says "document": content markgate cannot recognise in such
/// a file is opaque, not nothing.
pub fn declared_document(mime: &str, name: Option<&str>) -> bool {
    is_document_name(extension(name).as_deref())
        || mime == "application/pdf"
        || mime == "application/msword"
        || mime == "application/rtf"
        || mime == "text/rtf"
        || mime == "application/ms-tnef"
        || mime == "application/vnd.ms-tnef"
        || mime.contains("zip")
        || mime.starts_with("application/vnd.ms-")
        || mime.starts_with("application/vnd.openxmlformats")
}

/// File name endings of documents, whatever their media type says.
const DOCUMENT_EXTENSIONS: &[&str] = &[
    "docx", "docm", "dotx", "dotm", "xlsx", "xlsm", "xltx", "xltm", "pptx", "pptm", "potx", "potm",
    "ppsx", "pdf", "zip", "doc", "dot", "xls", "ppt", "msg", "p7m",
];

/// `mime` lower-cased; `name` the decoded file name, if any.
pub fn reading(mime: &str, attachment: bool, name: Option<&str>) -> Reading {
    // `text/html (a comment)`: the type is what comes before any space or comment.
    let mime = mime
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or(mime);
    let ext = extension(name);
    if mime.starts_with("multipart/") {
        return Reading::Container;
    }
    // A delivery report's copy of the original headers (`text/rfc822-headers`, RFC 6522)
    // is a header block a reader opens: read as a message's headers.
    if matches!(
        mime,
        "message/rfc822" | "message/global" | "message/news" | "text/rfc822-headers"
    ) {
        return Reading::Message;
    }
    // A document's name wins over a text type: `text/plain; name=report.docx` opens in Word
    // (and content that is no document format is read as the text Word shows).
    if is_document_name(ext.as_deref()) {
        return Reading::Document;
    }
    // A delivery report's status fields and a read receipt are shown as text.
    if mime.starts_with("text/")
        || matches!(
            mime,
            "application/xhtml+xml"
                | "application/ics"
                | "message/delivery-status"
                | "message/global-delivery-status"
                | "message/disposition-notification"
                | "message/feedback-report"
        )
    {
        // `text/plain; name=papers.eml` is read as text and, by the classifier, as the
        // message the mail client opens it as.
        return Reading::Text {
            html: mime == "text/html" || mime == "application/xhtml+xml",
            inline: !attachment,
        };
    }
    // A picture a client draws inline whose words are text: SVG.
    if mime == "image/svg+xml" || ext.as_deref() == Some("svg") {
        return Reading::Text {
            html: true,
            inline: !attachment,
        };
    }
    match ext.as_deref() {
        // A saved web page (MHTML) is a MIME message a browser opens.
        Some("eml" | "mht" | "mhtml") => Reading::Message,
        // An invitation file (iCalendar, Outlook's vCalendar `.vcs`) opens in the calendar,
        // which shows its title and text; a contact card in the address book.
        Some("txt" | "csv" | "text" | "ics" | "vcs" | "vcf") => Reading::Text {
            html: false,
            inline: false,
        },
        Some("htm" | "html") => Reading::Text {
            html: true,
            inline: false,
        },
        // Pictures, sound and film are not documents; anything else (application/*, an
        // unknown type) may be one, and its content decides.
        _ if ["image/", "audio/", "video/", "font/"]
            .iter()
            .any(|p| mime.starts_with(p)) =>
        {
            Reading::Opaque
        }
        _ => Reading::Document,
    }
}

/// How a part with these headers is read, with its parsed Content-Type: the walk's one
/// reading of a header block (`digest`: inside `multipart/digest`, where the default type is
/// `message/rfc822`). The parameters are read as a client reads them ([`params`]); the walk
/// writes them into the view in a form mailparse reads the same.
pub fn of_headers(
    headers: &[mailparse::MailHeader],
    digest: bool,
) -> (mailparse::ParsedContentType, Reading) {
    let parsed = params::content_type(headers, digest);
    let ctype = mailparse::ParsedContentType {
        charset: parsed
            .params
            .get("charset")
            .cloned()
            .unwrap_or_else(|| "us-ascii".to_string()),
        mimetype: parsed.value,
        params: parsed.params,
    };
    let disposition = params::content_disposition(headers)
        .map(|d| mailparse::ParsedContentDisposition {
            disposition: match d.value.as_str() {
                "inline" => mailparse::DispositionType::Inline,
                "attachment" => mailparse::DispositionType::Attachment,
                "form-data" => mailparse::DispositionType::FormData,
                other => mailparse::DispositionType::Extension(other.to_string()),
            },
            params: d.params,
        })
        .unwrap_or_default();
    let name = file_name(&disposition, &ctype);
    let attachment = disposition.disposition == mailparse::DispositionType::Attachment;
    let reading = reading(&ctype.mimetype, attachment, name.as_deref());
    (ctype, reading)
}

/// The part's file name as the classifier reports it: `filename` of Content-Disposition,
/// else `name` of Content-Type, RFC 2047 words decoded.
pub fn file_name(
    disposition: &mailparse::ParsedContentDisposition,
    ctype: &mailparse::ParsedContentType,
) -> Option<String> {
    disposition
        .params
        .get("filename")
        .or_else(|| ctype.params.get("name"))
        .map(|n| decode_words(n))
}

/// File names may still carry RFC 2047 words after RFC 2231 decoding.
pub fn decode_words(name: &str) -> String {
    if !name.contains("=?") {
        return name.to_string();
    }
    let header = format!("X: {name}");
    let decoded = mailparse::parse_header(header.as_bytes())
        .map(|(h, _)| h.get_value())
        .unwrap_or_else(|_| name.to_string());
    // What mailparse left (an unknown charset, a language tag, UTF-32), as for a subject.
    super::words::leftover_words(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_read_by_type_and_by_name() {
        assert_eq!(reading("multipart/mixed", false, None), Reading::Container);
        assert_eq!(reading("message/news", false, None), Reading::Message);
        assert_eq!(
            reading("application/octet-stream", true, Some("fwd.EML")),
            Reading::Message
        );
        // Text to the classifier, which also opens it as the message it names.
        assert_eq!(
            reading("text/plain", true, Some("case papers.eml")),
            Reading::Text {
                html: false,
                inline: false
            }
        );
        assert_eq!(
            reading("text/csv", true, Some("list.csv")),
            Reading::Text {
                html: false,
                inline: false
            }
        );
        assert_eq!(
            reading("application/octet-stream", true, Some("notes.txt")),
            Reading::Text {
                html: false,
                inline: false
            }
        );
        assert_eq!(
            reading("application/pdf", true, Some("a.pdf")),
            Reading::Document
        );
        // By name whatever the type says; pictures are not documents.
        assert_eq!(
            reading("image/png", true, Some("report.docx")),
            Reading::Document
        );
        assert_eq!(
            reading("image/png", true, Some("logo.png")),
            Reading::Opaque
        );
    }
}
