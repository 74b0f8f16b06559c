//! The size of every field a caller sends, capped: a request over a cap is
//! refused with INVALID_ARGUMENT naming the field, before any of it is
//! used. The service's decode limit bounds the message as a whole; these
//! keep any one part from filling the conversation, the logs or a plugin.

use prost::Message;
use tonic::Status;

use crate::proto::common::{Metadata, TenantContext};
use crate::proto::engine::{MessageContent, ProcessMessageRequest, ProcessingHints};

/// Ids: conversation, user, session, tenant, organization.
pub const MAX_ID_BYTES: usize = 256;
/// `content.payload`: a quick reply's or button's postback.
pub const MAX_PAYLOAD_BYTES: usize = 8 * 1024;
/// Short names: `force_flow`, `expected_response_type`, `language`, roles.
pub const MAX_NAME_BYTES: usize = 128;
/// Roles or permissions in a tenant context.
pub const MAX_LIST_ITEMS: usize = 64;
/// Structured extras, encoded: `custom_hints`, `metadata`.
pub const MAX_STRUCT_BYTES: usize = 16 * 1024;
/// Rich content (media, location, quick replies, buttons...), encoded.
pub const MAX_RICH_CONTENT_BYTES: usize = 64 * 1024;

fn cap(field: &str, value: &str, max: usize) -> Result<(), Status> {
    if value.len() > max {
        return Err(Status::invalid_argument(format!(
            "{field}: {} bytes is over the limit of {max}",
            value.len()
        )));
    }
    Ok(())
}

fn cap_encoded(field: &str, len: usize, max: usize) -> Result<(), Status> {
    if len > max {
        return Err(Status::invalid_argument(format!(
            "{field}: {len} bytes encoded is over the limit of {max}"
        )));
    }
    Ok(())
}

/// Checks every field of one message. Text and `content.metadata` have
/// their own limits where they are read (`convert.rs`).
pub fn check_message(request: &ProcessMessageRequest) -> Result<(), Status> {
    cap("conversation_id", &request.conversation_id, MAX_ID_BYTES)?;
    cap("user_id", &request.user_id, MAX_ID_BYTES)?;
    cap("session_id", &request.session_id, MAX_ID_BYTES)?;
    if let Some(context) = &request.tenant_context {
        check_tenant_context(context)?;
    }
    if let Some(content) = &request.content {
        check_content(content)?;
    }
    if let Some(hints) = &request.processing_hints {
        check_hints(hints)?;
    }
    if let Some(metadata) = &request.metadata {
        check_metadata("metadata", metadata)?;
    }
    Ok(())
}

pub fn check_tenant_context(context: &TenantContext) -> Result<(), Status> {
    cap("tenant_context.tenant_id", &context.tenant_id, MAX_ID_BYTES)?;
    cap("tenant_context.user_id", &context.user_id, MAX_ID_BYTES)?;
    cap(
        "tenant_context.session_id",
        &context.session_id,
        MAX_ID_BYTES,
    )?;
    cap(
        "tenant_context.organization_id",
        &context.organization_id,
        MAX_ID_BYTES,
    )?;
    for (field, list) in [
        ("tenant_context.roles", &context.roles),
        ("tenant_context.permissions", &context.permissions),
    ] {
        if list.len() > MAX_LIST_ITEMS {
            return Err(Status::invalid_argument(format!(
                "{field}: {} items is over the limit of {MAX_LIST_ITEMS}",
                list.len()
            )));
        }
        for (i, item) in list.iter().enumerate() {
            cap(&format!("{field}[{i}]"), item, MAX_NAME_BYTES)?;
        }
    }
    Ok(())
}

fn check_content(content: &MessageContent) -> Result<(), Status> {
    cap("content.payload", &content.payload, MAX_PAYLOAD_BYTES)?;
    cap("content.language", &content.language, MAX_NAME_BYTES)?;
    let rich = content.media.as_ref().map_or(0, Message::encoded_len)
        + content.location.as_ref().map_or(0, Message::encoded_len)
        + content
            .quick_replies
            .iter()
            .map(Message::encoded_len)
            .sum::<usize>()
        + content
            .buttons
            .iter()
            .map(Message::encoded_len)
            .sum::<usize>();
    cap_encoded(
        "content (media, location, quick replies, buttons)",
        rich,
        MAX_RICH_CONTENT_BYTES,
    )
}

fn check_hints(hints: &ProcessingHints) -> Result<(), Status> {
    cap(
        "processing_hints.force_flow",
        &hints.force_flow,
        MAX_NAME_BYTES,
    )?;
    cap(
        "processing_hints.expected_response_type",
        &hints.expected_response_type,
        MAX_NAME_BYTES,
    )?;
    cap_encoded(
        "processing_hints.custom_hints",
        hints.custom_hints.as_ref().map_or(0, Message::encoded_len),
        MAX_STRUCT_BYTES,
    )
}

pub fn check_metadata(field: &str, metadata: &Metadata) -> Result<(), Status> {
    cap_encoded(field, metadata.encoded_len(), MAX_STRUCT_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::common::TenantContext;

    fn message() -> ProcessMessageRequest {
        ProcessMessageRequest {
            conversation_id: "c-1".into(),
            user_id: "u-1".into(),
            tenant_context: Some(TenantContext {
                tenant_id: "acme".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn each_oversized_field_is_named() {
        assert!(check_message(&message()).is_ok());
        let long = "x".repeat(MAX_ID_BYTES + 1);
        type Change<'a> = Box<dyn Fn(&mut ProcessMessageRequest) + 'a>;
        let cases: Vec<(&str, Change)> = vec![
            ("user_id", Box::new(|m| m.user_id = long.clone())),
            (
                "conversation_id",
                Box::new(|m| m.conversation_id = long.clone()),
            ),
            (
                "tenant_context.roles",
                Box::new(|m| {
                    m.tenant_context.as_mut().unwrap().roles = vec!["r".into(); MAX_LIST_ITEMS + 1]
                }),
            ),
            (
                "content.payload",
                Box::new(|m| {
                    m.content = Some(MessageContent {
                        payload: "p".repeat(MAX_PAYLOAD_BYTES + 1),
                        ..Default::default()
                    })
                }),
            ),
            (
                "processing_hints.force_flow",
                Box::new(|m| {
                    m.processing_hints = Some(ProcessingHints {
                        force_flow: long.clone(),
                        ..Default::default()
                    })
                }),
            ),
            (
                "metadata",
                Box::new(|m| {
                    m.metadata = Some(Metadata {
                        request_id: "r".repeat(MAX_STRUCT_BYTES + 1),
                        ..Default::default()
                    })
                }),
            ),
        ];
        for (field, change) in cases {
            let mut m = message();
            change(&mut m);
            let status = check_message(&m).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(
                status.message().starts_with(&format!("{field}: ")),
                "{field}: {}",
                status.message()
            );
        }
    }
}
