//! One milter connection's wire loop: reads commands off the stream, hands each to the
//! session, and writes only the replies the MTA waits for. Postfix offers the `SMFIP_NR_*`
//! flags; markgate takes them for every stage whose answer is always "continue" (connect,
//! HELO, each header, end of headers, each body chunk), so the MTA streams those without a
//! round trip per command, and the replies that remain are written once per batch of
//! input (the end of a message: its modifications and its answer in one write).
//!
//! Any error ends the connection; Postfix then applies `milter_default_action`
//! (`tempfail`), so nothing leaves unchecked.

use bytes::{Buf, BytesMut};
use miltr_common::decoding::ClientCommand;
use miltr_common::encoding::{ServerMessage, Writable};
use miltr_common::optneg::{Capability, Protocol};
use miltr_server::Milter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{MilterError, Session};

/// The largest command accepted: Postfix sends body chunks of at most 64 KiB.
const MAX_FRAME: usize = 1 << 16;

/// Why a milter connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("milter connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("milter client error: a command of {0} bytes")]
    TooLarge(usize),
    #[error("milter client error: {0}")]
    Protocol(String),
    #[error(transparent)]
    Session(#[from] MilterError),
}

/// The stages whose replies markgate asks the MTA not to wait for.
pub(super) const NO_REPLY: Protocol = Protocol::NR_CONNECT
    .union(Protocol::NR_HELO)
    .union(Protocol::NR_HEADER)
    .union(Protocol::NR_END_OF_HEADER)
    .union(Protocol::NR_BODY);

/// Serves one connection until the MTA closes it (or quits).
pub async fn handle<S>(mut stream: S, session: &mut Session) -> Result<(), ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut input = BytesMut::with_capacity(8 * 1024);
    let mut out = BytesMut::new();
    // What was agreed at option negotiation: which replies to leave out, which
    // modifications the MTA allows.
    let mut protocol = Protocol::empty();
    let mut capabilities = Capability::all();
    loop {
        // Every whole command in hand, then one write of what they produced.
        while let Some(frame) = next_frame(&mut input)? {
            // libmilter reads bytes sent with the end of the body as a last body chunk;
            // the parser here would drop them, and they would be delivered unread.
            if frame.first() == Some(&b'E') && frame.len() > 1 {
                return Err(ConnectionError::Protocol(
                    "end of body carrying body bytes".into(),
                ));
            }
            let command = ClientCommand::parse(frame)
                .map_err(|e| ConnectionError::Protocol(format!("{e:?}")))?;
            let quit = matches!(command, ClientCommand::Quit(_));
            dispatch(command, session, &mut protocol, &mut capabilities, &mut out).await?;
            if quit {
                flush(&mut stream, &mut out).await?;
                return Ok(());
            }
        }
        flush(&mut stream, &mut out).await?;
        if stream.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
    }
}

/// One whole command off the front of `input`, or `None` until more has arrived.
fn next_frame(input: &mut BytesMut) -> Result<Option<BytesMut>, ConnectionError> {
    if input.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([input[0], input[1], input[2], input[3]]) as usize;
    if len > MAX_FRAME {
        return Err(ConnectionError::TooLarge(len));
    }
    if input.len() < 4 + len {
        input.reserve(4 + len - input.len());
        return Ok(None);
    }
    let mut frame = input.split_to(4 + len);
    frame.advance(4);
    Ok(Some(frame))
}

async fn flush<S: AsyncWrite + Unpin>(stream: &mut S, out: &mut BytesMut) -> std::io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out).await?;
        stream.flush().await?;
        out.clear();
    }
    Ok(())
}

/// Appends one reply in the milter wire form: length, code, body.
fn encode(message: &ServerMessage, out: &mut BytesMut) {
    let len = 1 + message.len();
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&[message.code()]);
    message.write(out);
}

/// Hands one command to the session; its reply goes to `out` unless negotiated away.
async fn dispatch(
    command: ClientCommand,
    session: &mut Session,
    protocol: &mut Protocol,
    capabilities: &mut Capability,
    out: &mut BytesMut,
) -> Result<(), ConnectionError> {
    let app = |e: miltr_server::Error<MilterError>| ConnectionError::Protocol(format!("{e:?}"));
    let (reply, skip) = match command {
        ClientCommand::OptNeg(theirs) => {
            let ours = session.option_negotiation(theirs).await.map_err(app)?;
            *protocol = ours.protocol;
            *capabilities = ours.capabilities;
            encode(&ServerMessage::from(ours), out);
            return Ok(());
        }
        ClientCommand::Macro(m) => {
            session.macro_(m).await?;
            return Ok(());
        }
        ClientCommand::Connect(c) => (
            session.connect(c).await?,
            protocol.contains(Protocol::NR_CONNECT),
        ),
        ClientCommand::Helo(h) => (session.helo(h).await?, protocol.contains(Protocol::NR_HELO)),
        ClientCommand::Mail(m) => (session.mail(m).await?, protocol.contains(Protocol::NR_MAIL)),
        ClientCommand::Recipient(r) => (
            session.rcpt(r).await?,
            protocol.contains(Protocol::NR_RECIPIENT),
        ),
        ClientCommand::Data(_) => (session.data().await?, protocol.contains(Protocol::NR_DATA)),
        ClientCommand::Header(h) => (
            session.header(h).await?,
            protocol.contains(Protocol::NR_HEADER),
        ),
        ClientCommand::EndOfHeader(_) => (
            session.end_of_header().await?,
            protocol.contains(Protocol::NR_END_OF_HEADER),
        ),
        ClientCommand::Body(b) => (session.body(b).await?, protocol.contains(Protocol::NR_BODY)),
        ClientCommand::Unknown(u) => (
            session.unknown(u).await?,
            protocol.contains(Protocol::NR_UNKNOWN),
        ),
        ClientCommand::EndOfBody(_) => {
            let mut response = session.end_of_body().await?;
            response.filter_mods_by_caps(*capabilities);
            let messages: Vec<ServerMessage> = response.into();
            for message in &messages {
                encode(message, out);
            }
            return Ok(());
        }
        ClientCommand::Abort(_) => {
            session.abort().await?;
            return Ok(());
        }
        ClientCommand::QuitNc(_) => {
            session.quit_nc().await?;
            return Ok(());
        }
        ClientCommand::Quit(_) => {
            session.quit().await?;
            return Ok(());
        }
    };
    if !skip {
        encode(&ServerMessage::from(reply), out);
    }
    Ok(())
}
