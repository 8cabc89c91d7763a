//! Example plugin for the Python library's own flow, `process_message_batch`.
//!
//! The application enqueues each incoming message of a conversation into the
//! batch `(service "whatsapp", entity = conversation id, action "messages")`
//! and (re)sets the trigger `process_message_batch` for that conversation, so
//! the trigger fires once the conversation has been quiet for the TTL. Then
//! this plugin:
//! 1. drains the batch chunk by chunk (read 10, process, trim them off),
//! 2. merges a summary into the handler state `batch_summary` of the
//!    conversation (message count, chunks, the joined text, last message),
//! 3. clears the tenant's pending mark for the service when its batch is empty.

use serde::Serialize;
use serde_json::Value;
use symphony_sdk::{Expiry, Plugin, Result, batch, handler_state, json, log};

/// The batch service, as the application enqueues with it.
const SERVICE: &str = "whatsapp";
/// The batch action.
const BATCH_ACTION: &str = "messages";
/// Items read per chunk.
const CHUNK: i64 = 10;
/// Most characters of joined text kept in the summary.
const MAX_TEXT: usize = 500;

#[derive(Serialize)]
struct Summary {
    messages: u64,
    chunks: u64,
    text: String,
    last_message: Value,
}

struct Batcher;

fn text_of(message: &Value) -> String {
    match message {
        Value::String(s) => s.clone(),
        Value::Object(m) => m
            .get("text")
            .and_then(Value::as_str)
            .map_or_else(|| message.to_string(), str::to_owned),
        other => other.to_string(),
    }
}

impl Plugin for Batcher {
    fn on_expire(e: Expiry) -> Result<()> {
        let conversation = e.id.as_str();
        let mut summary = Summary {
            messages: 0,
            chunks: 0,
            text: String::new(),
            last_message: Value::Null,
        };
        loop {
            let chunk = batch::get_chunk(SERVICE, conversation, BATCH_ACTION, 0, CHUNK - 1)?;
            if chunk.is_empty() {
                break;
            }
            for item in &chunk {
                let message: Value = json::from(item)?;
                let text = text_of(&message);
                if summary.text.len() < MAX_TEXT {
                    if !summary.text.is_empty() {
                        summary.text.push_str(" | ");
                    }
                    summary
                        .text
                        .extend(text.chars().take(MAX_TEXT - summary.text.len()));
                }
                summary.last_message = message;
            }
            summary.messages += chunk.len() as u64;
            summary.chunks += 1;
            // Trim what was processed; messages enqueued meanwhile stay.
            batch::trim(SERVICE, conversation, BATCH_ACTION, chunk.len() as i64, -1)?;
        }
        if summary.messages == 0 {
            log::info(&format!("no messages pending for {conversation}"));
        } else {
            handler_state::merge("batch_summary", conversation, &json::to(&summary)?, None)?;
            log::info(&format!(
                "processed {} messages of {conversation} in {} chunks",
                summary.messages, summary.chunks
            ));
        }
        if batch::length(SERVICE, conversation, BATCH_ACTION)? == 0 {
            batch::remove_from_pending(SERVICE)?;
        }
        Ok(())
    }
}

symphony_sdk::export_plugin!(Batcher);
