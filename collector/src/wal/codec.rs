//! Record batches as WAL payloads: an Arrow IPC stream holding one batch.

use std::io::Cursor;

use arrow::error::ArrowError;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

/// Encodes a batch (with its schema) as an IPC stream.
pub fn encode_batch(batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, batch.schema_ref())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// Checks the framing of an IPC stream before Arrow reads it: each message's metadata must
/// parse and its body must fit in what is left of the payload. Arrow sizes its buffers from these
/// lengths, and a damaged one made it try to allocate petabytes: an abort, which no error
/// handling catches.
fn check_framing(bytes: &[u8]) -> Result<(), ArrowError> {
    let bad = |what: &str, at: usize| {
        ArrowError::IpcError(format!("WAL payload is malformed: {what} at byte {at}"))
    };
    let read_i32 = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_le_bytes)
    };
    let mut pos = 0;
    while pos < bytes.len() {
        let mut length = read_i32(pos).ok_or_else(|| bad("a cut message length", pos))?;
        pos += 4;
        if length == -1 {
            // The continuation marker; the length follows.
            length = read_i32(pos).ok_or_else(|| bad("a cut message length", pos))?;
            pos += 4;
        }
        if length == 0 {
            return Ok(());
        }
        let length = usize::try_from(length).map_err(|_| bad("a negative message length", pos))?;
        let metadata = bytes
            .get(pos..pos.saturating_add(length))
            .ok_or_else(|| bad("message metadata past the end", pos))?;
        let message = arrow::ipc::root_as_message(metadata)
            .map_err(|e| bad(&format!("unreadable message metadata ({e})"), pos))?;
        pos += length;
        let body = usize::try_from(message.bodyLength())
            .map_err(|_| bad("a negative body length", pos))?;
        if body > bytes.len() - pos {
            return Err(bad("a message body longer than the payload", pos));
        }
        pos += body;
    }
    Ok(())
}

/// Decodes a payload written by [`encode_batch`].
///
/// Arrow's IPC reader panics on some malformed inputs (a schema message whose fields are
/// missing, found by `collector/tests/fuzz.rs`); a damaged record must be skipped at replay, not
/// end the start-up, so a panic is turned into an error here.
pub fn decode_batch(bytes: &[u8]) -> Result<RecordBatch, ArrowError> {
    check_framing(bytes)?;
    let decode = || {
        let mut reader = StreamReader::try_new(Cursor::new(bytes), None)?;
        match reader.next() {
            Some(batch) => batch,
            None => Err(ArrowError::IpcError(
                "WAL payload holds no record batch".into(),
            )),
        }
    };
    std::panic::catch_unwind(decode).unwrap_or_else(|_| {
        Err(ArrowError::IpcError(
            "WAL payload is malformed (the Arrow IPC reader panicked on it)".into(),
        ))
    })
}
