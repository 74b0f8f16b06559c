//! Every conversion between the protos and the engine's types, in one
//! place: requests into the engine's terms (`TryFrom`, refusing with the
//! status that names the field), results back into the seed's messages.

use std::collections::BTreeMap;
use std::str::FromStr;

use mcp_flow::{
    ButtonKind, Conversation, ExperimentConfig, Message, PluginWorld, PolicySettings, Rich,
};
use mcp_registry::UploadPlugin;
use mcp_store::{
    ApiKey as StoredKey, Experiment as StoredExperiment, FlowStatus,
    FlowVersion as StoredFlowVersion, KeyGrants, PluginVersion as StoredPlugin, PublishOptions,
    ToolCallRecord, TurnRecord,
};
use mcp_tools::{Executed, ToolListing};
use prost_types::{Struct, Timestamp, value::Kind};
use serde_json::Value;
use tonic::Status;

use crate::clock::now_ms;
use crate::engine::{TimeoutTurn, TurnOutcome, TurnRequest};
use crate::metrics::Sample;
use crate::proto::admin::{
    ApiKey, CreateTenantRequest, ExecuteToolResponse, Experiment, FlowIssue, FlowVersion,
    PluginVersion, PublishFlowRequest, RateLimit, Tool, ToolCall, Turn, UploadPluginRequest,
};
use crate::proto::common::{self, MessageType, PerformanceMetrics};
use crate::proto::engine::button::ButtonType;
use crate::proto::engine::{
    Button, CarouselCard, ConversationState, LocationContent, MediaContent, MessageContent,
    MetricData, MetricPoint, ProcessMessageRequest, ProcessMessageResponse, QuickReply,
    StreamEvent,
};

/// Longest message text accepted, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Largest `content.metadata` accepted, as JSON text: it may carry a user
/// profile the conversation keeps and every plugin call reads.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// The tenant a request names (empty if none).
pub fn tenant_of(context: &Option<common::TenantContext>) -> &str {
    context.as_ref().map_or("", |c| c.tenant_id.as_str())
}

/// A ProcessMessageRequest as the engine's turn: text and metadata within
/// their limits, a known channel, `user_profile` apart from the event's
/// data. The deadline comes from the call, not the message.
impl TryFrom<&ProcessMessageRequest> for TurnRequest {
    type Error = Status;

    fn try_from(request: &ProcessMessageRequest) -> Result<TurnRequest, Status> {
        crate::caps::check_message(request)?;
        let text = request
            .content
            .as_ref()
            .map(|c| c.text.clone())
            .unwrap_or_default();
        if text.len() > MAX_TEXT_BYTES {
            return Err(Status::invalid_argument(format!(
                "content.text: {} bytes is over the limit of {MAX_TEXT_BYTES}",
                text.len()
            )));
        }
        if common::Channel::try_from(request.channel).is_err() {
            return Err(Status::invalid_argument(format!(
                "channel: unknown value {}",
                request.channel
            )));
        }
        // What the channel knows travels in content.metadata: `user_profile`
        // joins the conversation's profile; the rest (`entities`, `attributes`,
        // …) is the event's data. `payload` is a quick reply's or button's.
        let mut data = serde_json::Map::new();
        let mut user_profile = serde_json::Map::new();
        let content = request.content.as_ref();
        if let Some(Value::Object(fields)) =
            content.and_then(|c| c.metadata.as_ref()).map(from_struct)
        {
            let size = serde_json::to_string(&fields).map_or(0, |json| json.len());
            if size > MAX_METADATA_BYTES {
                return Err(Status::invalid_argument(format!(
                    "content.metadata: {size} bytes of JSON is over the limit of {MAX_METADATA_BYTES}"
                )));
            }
            for (key, value) in fields {
                match (key.as_str(), value) {
                    ("user_profile", Value::Object(profile)) => user_profile = profile,
                    ("user_profile", _) => {
                        return Err(Status::invalid_argument(
                            "content.metadata.user_profile: must be an object",
                        ));
                    }
                    (_, value) => {
                        data.insert(key, value);
                    }
                }
            }
        }
        // A tap: the content's payload, else that of the quick reply or
        // button marked clicked (its title if it has no payload).
        let clicked = content.and_then(|c| {
            let replies = c.quick_replies.iter().filter(|q| q.clicked);
            let replies = replies.map(|q| {
                if q.payload.is_empty() {
                    &q.title
                } else {
                    &q.payload
                }
            });
            let buttons = c.buttons.iter().filter(|b| b.clicked).map(|b| &b.payload);
            replies.chain(buttons).find(|p| !p.is_empty())
        });
        if let Some(payload) = content
            .map(|c| &c.payload)
            .filter(|p| !p.is_empty())
            .or(clicked)
        {
            data.insert("payload".into(), Value::from(payload.as_str()));
        }
        if let Some(location) = content.and_then(|c| c.location.as_ref()) {
            let mut shared = serde_json::json!({
                "latitude": location.latitude,
                "longitude": location.longitude,
            });
            for (field, value) in [
                ("address", &location.address),
                ("name", &location.place_name),
                ("place_id", &location.place_id),
            ] {
                if !value.is_empty() {
                    shared[field] = Value::from(value.as_str());
                }
            }
            data.insert("location".into(), shared);
        }
        if let Some(form) = content.and_then(|c| c.form.as_ref()) {
            let mut fields = form
                .form_data
                .as_ref()
                .map(from_struct)
                .unwrap_or_else(|| Value::Object(Default::default()));
            if !form.form_id.is_empty() {
                fields["form_id"] = Value::from(form.form_id.as_str());
            }
            data.insert("form".into(), fields);
        }
        let hints = request.processing_hints.clone().unwrap_or_default();
        if let Some(custom) = hints.custom_hints.as_ref() {
            data.insert("hints".into(), from_struct(custom));
        }
        let priority = match common::Priority::try_from(hints.priority) {
            Ok(priority) => priority as u8,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "processing_hints.priority: unknown value {}",
                    hints.priority
                )));
            }
        };
        let channel = common::Channel::try_from(request.channel).unwrap_or_default();
        data.insert(
            "channel".into(),
            Value::from(
                channel
                    .as_str_name()
                    .trim_start_matches("CHANNEL_")
                    .to_lowercase(),
            ),
        );
        Ok(TurnRequest {
            tenant_id: tenant_of(&request.tenant_context).to_owned(),
            conversation_id: request.conversation_id.clone(),
            user_id: request.user_id.clone(),
            text,
            data,
            user_profile,
            force_flow: Some(hints.force_flow.clone()).filter(|f| !f.is_empty()),
            hints: mcp_flow::Hints {
                bypass_automation: hints.bypass_automation,
                expected_response_type: Some(hints.expected_response_type.clone())
                    .filter(|t| !t.is_empty()),
            },
            priority,
            bypass_cache: hints.bypass_cache,
            review: hints.require_human_review,
            deadline: None,
        })
    }
}

/// One message of a turn in seed 004's MessageContent: its text, type and
/// rich content; its state, delay and typing indicator in `metadata`.
pub fn message_content(message: &Message) -> MessageContent {
    let rich = &message.rich;
    let mut content = MessageContent {
        r#type: content_type(&message.response_type, rich) as i32,
        text: message.text.clone(),
        ..Default::default()
    };
    add_rich(&mut content, rich);
    let mut metadata = serde_json::json!({
        "state": message.state,
        "response_type": message.response_type,
        "typing_indicator": message.typing_indicator,
    });
    if let Some(delay) = message.delay_ms {
        metadata["delay_ms"] = delay.into();
    }
    content.metadata = metadata.as_object().map(to_struct);
    content
}

/// The message type a client shows: the richest thing the content has.
fn content_type(response_type: &str, rich: &Rich) -> MessageType {
    let media = rich.media.as_ref().and_then(|m| m.mime_type.as_deref());
    match media.and_then(|mime| mime.split('/').next()) {
        Some("image") => return MessageType::Image,
        Some("video") => return MessageType::Video,
        Some("audio") => return MessageType::Audio,
        Some(_) => return MessageType::File,
        None => {}
    }
    if rich.media.is_some() {
        MessageType::Image
    } else if !rich.cards.is_empty() {
        MessageType::Carousel
    } else if !rich.quick_replies.is_empty() || !rich.buttons.is_empty() {
        MessageType::QuickReply
    } else if rich.location.is_some() {
        MessageType::Location
    } else {
        MessageType::from_str_name(&format!("MESSAGE_TYPE_{}", response_type.to_uppercase()))
            .unwrap_or(MessageType::Text)
    }
}

fn add_rich(content: &mut MessageContent, rich: &Rich) {
    content.quick_replies = rich
        .quick_replies
        .iter()
        .map(|q| QuickReply {
            title: q.title.clone(),
            payload: q.payload.clone().unwrap_or_else(|| q.title.clone()),
            content_type: "text".into(),
            ..Default::default()
        })
        .collect();
    content.buttons = rich.buttons.iter().map(button).collect();
    content.carousel = rich
        .cards
        .iter()
        .map(|card| CarouselCard {
            title: card.title.clone(),
            subtitle: card.subtitle.clone().unwrap_or_default(),
            image_url: card.image_url.clone().unwrap_or_default(),
            buttons: card.buttons.iter().map(button).collect(),
        })
        .collect();
    content.media = rich.media.as_ref().map(|media| MediaContent {
        url: media.url.clone(),
        mime_type: media.mime_type.clone().unwrap_or_default(),
        alt_text: media.alt_text.clone().unwrap_or_default(),
        ..Default::default()
    });
    content.location = rich.location.as_ref().map(|l| LocationContent {
        latitude: l.latitude,
        longitude: l.longitude,
        place_name: l.name.clone().unwrap_or_default(),
        address: l.address.clone().unwrap_or_default(),
        ..Default::default()
    });
}

/// A button; a phone button's number travels in `payload`, as channels
/// (Messenger's `phone_number`) expect.
fn button(b: &mcp_flow::Button) -> Button {
    let (kind, payload) = match b.kind {
        ButtonKind::Postback => (ButtonType::Postback, b.payload.clone()),
        ButtonKind::Url => (ButtonType::Url, b.payload.clone()),
        ButtonKind::Phone => (ButtonType::Phone, b.phone.clone()),
    };
    Button {
        r#type: kind as i32,
        title: b.title.clone(),
        payload: payload.unwrap_or_default(),
        url: b.url.clone().unwrap_or_default(),
        ..Default::default()
    }
}

/// What a turn's response says beyond the seed's fields, in
/// `metadata.custom_metadata`: the handoff, a review request, and hints
/// that had no effect. `None` when there is nothing to say.
pub fn turn_notes(
    handoff: Option<&mcp_flow::Handoff>,
    review_required: bool,
    hints_ignored: &[String],
) -> Option<common::Metadata> {
    let mut notes = serde_json::Map::new();
    if let Some(handoff) = handoff {
        notes.insert("handoff".into(), handoff_json(handoff));
    }
    if review_required {
        notes.insert("review_required".into(), true.into());
    }
    if !hints_ignored.is_empty() {
        notes.insert("hints_ignored".into(), hints_ignored.into());
    }
    (!notes.is_empty()).then(|| common::Metadata {
        custom_metadata: Some(to_struct(&notes)),
        timestamp: Some(timestamp(now_ms())),
        ..Default::default()
    })
}

fn handoff_json(handoff: &mcp_flow::Handoff) -> Value {
    serde_json::json!({
        "reason": handoff.reason,
        "state": handoff.state,
        "since": chrono::DateTime::from_timestamp_millis(handoff.since_ms)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
    })
}

/// A finished turn as the seed's response. `text` joins the turn's
/// messages for simple clients; the rich content is the last message's;
/// `metadata.messages` lists every message on its own.
pub fn response(
    conversation_id: &str,
    outcome: TurnOutcome,
    review_required: bool,
    hints_ignored: &[String],
) -> ProcessMessageResponse {
    let fuel_used = outcome.fuel_used();
    let TurnOutcome {
        step,
        conversation,
        duration,
        lock_wait,
        calls,
        cache,
    } = outcome;
    let custom_metrics = serde_json::json!({
        "fuel_used": fuel_used,
        "plugin_calls": calls.len(),
        "plugin_errors": calls.iter().filter(|c| c.error.is_some()).count(),
        "plugins": calls.iter().map(|c| format!("{}@{}", c.plugin, c.version)).collect::<Vec<_>>(),
    });
    let text = step
        .messages
        .iter()
        .map(|m| m.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    ProcessMessageResponse {
        status: Some(common::Status {
            success: step.errors.is_empty(),
            message: step
                .errors
                .first()
                .map(|e| e.message.clone())
                .unwrap_or_default(),
            error_code: step
                .errors
                .first()
                .map(|e| format!("{:?}", e.kind))
                .unwrap_or_default(),
            details: None,
        }),
        conversation_id: conversation_id.to_owned(),
        current_state: step.state.clone(),
        response: Some(joined_content(&step.messages, text)),
        context_updates: Some(to_struct(&step.updates)),
        actions_performed: step.actions.iter().map(|a| a.label()).collect(),
        conversation_state: Some(ConversationState::from(&conversation)),
        performance_metrics: Some(PerformanceMetrics {
            execution_time_ms: duration.as_millis() as i32,
            queue_time_ms: lock_wait.as_millis() as i32,
            cache_status: cache.as_str().into(),
            custom_metrics: custom_metrics.as_object().map(to_struct),
            ..Default::default()
        }),
        ab_variant: conversation.ab_variant.clone().unwrap_or_default(),
        metadata: turn_notes(step.handoff.as_ref(), review_required, hints_ignored),
    }
}

/// The response's one MessageContent: the joined `text`, the rich content
/// of the last message (what the user answers: a greeting's quick replies
/// do not outlive the question after it), and every message in
/// `metadata.messages`.
fn joined_content(messages: &[Message], text: String) -> MessageContent {
    let rich = messages.last().map(|m| m.rich.clone()).unwrap_or_default();
    let response_type = messages
        .first()
        .map_or("text", |m| m.response_type.as_str());
    let mut content = MessageContent {
        r#type: content_type(response_type, &rich) as i32,
        text,
        ..Default::default()
    };
    add_rich(&mut content, &rich);
    let listed: Vec<Value> = messages
        .iter()
        .map(|m| serde_json::to_value(m).unwrap_or(Value::Null))
        .collect();
    if !listed.is_empty() {
        let metadata = serde_json::json!({ "messages": listed });
        content.metadata = metadata.as_object().map(to_struct);
    }
    content
}

impl From<&Conversation> for ConversationState {
    fn from(c: &Conversation) -> ConversationState {
        ConversationState {
            current_state: c.current_state.clone(),
            flow_id: c.flow_id.clone(),
            flow_version: c.flow_version.clone(),
            previous_states: c.previous_states.clone(),
            slots: Some(to_struct(&c.slots)),
            variables: Some(to_struct(&c.variables)),
            user_profile: Some(to_struct(&c.user_profile)),
            intent_history: c.intent_history.clone(),
            current_intent: c
                .intent
                .as_ref()
                .and_then(|i| i.name.clone())
                .unwrap_or_default(),
            intent_confidence: c.intent.as_ref().map_or(0.0, |i| i.confidence),
            created_at: Some(timestamp(c.created_at_ms)),
            last_activity: Some(timestamp(c.updated_at_ms)),
            message_count: c.turn as i32,
            error_count: c.error_count as i32,
        }
    }
}

/// The turn's messages, one `message` stream event each: the message as
/// `metadata.messages` of the response lists it (text, response_type,
/// state, delay_ms, typing_indicator, rich), with its index and the count.
pub fn message_events(response: &ProcessMessageResponse) -> Vec<StreamEvent> {
    let listed = response
        .response
        .as_ref()
        .and_then(|content| content.metadata.as_ref())
        .map(from_struct)
        .and_then(|metadata| metadata.get("messages").cloned());
    let Some(Value::Array(messages)) = listed else {
        return Vec::new();
    };
    let count = messages.len();
    messages
        .into_iter()
        .enumerate()
        .map(|(index, mut message)| {
            message["index"] = index.into();
            message["count"] = count.into();
            StreamEvent {
                event_type: "message".into(),
                conversation_id: response.conversation_id.clone(),
                event_data: message.as_object().map(to_struct),
                timestamp: Some(timestamp(now_ms())),
            }
        })
        .collect()
}

/// A timeout turn as the stream event that tells its conversation's streams.
impl From<&TimeoutTurn> for StreamEvent {
    fn from(turn: &TimeoutTurn) -> StreamEvent {
        let data = serde_json::json!({
            "from": turn.state_before,
            "to": turn.step.state,
            "messages": turn.step.messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
            "ended": turn.step.ended,
        });
        StreamEvent {
            event_type: "timeout".into(),
            conversation_id: turn.key.conversation_id.clone(),
            event_data: Some(to_struct(data.as_object().expect("an object"))),
            timestamp: Some(timestamp(now_ms())),
        }
    }
}

/// The stream event saying a message moved its conversation from `before`
/// (none for a new conversation) to the state in `response`.
pub fn state_changed(before: Option<&str>, response: &ProcessMessageResponse) -> StreamEvent {
    let data = serde_json::json!({ "from": before, "to": response.current_state });
    StreamEvent {
        event_type: "state_changed".into(),
        conversation_id: response.conversation_id.clone(),
        event_data: Some(to_struct(data.as_object().expect("an object"))),
        timestamp: Some(timestamp(now_ms())),
    }
}

/// One of the engine's series as GetMetrics reports it, read at `now`.
pub fn metric_data(sample: Sample, now: Timestamp) -> MetricData {
    MetricData {
        name: sample.name,
        r#type: sample.kind.into(),
        points: vec![MetricPoint {
            timestamp: Some(now),
            value: sample.value,
            attributes: None,
        }],
        labels: Some(to_struct(
            &sample
                .labels
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )),
    }
}

/// Milliseconds since the Unix epoch as a protobuf Timestamp.
pub fn timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A JSON object as a protobuf Struct.
pub fn to_struct(object: &serde_json::Map<String, Value>) -> Struct {
    Struct {
        fields: object
            .iter()
            .map(|(k, v)| (k.clone(), to_value(v)))
            .collect(),
    }
}

/// A protobuf Struct as JSON; whole numbers come back as integers.
pub fn from_struct(s: &Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), from_value(v)))
            .collect(),
    )
}

pub fn from_value(v: &prost_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9e15 => Value::from(*n as i64),
        Some(Kind::NumberValue(n)) => Value::from(*n),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(from_value).collect()),
        Some(Kind::StructValue(s)) => from_struct(s),
    }
}

pub fn to_value(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        Value::Object(object) => Kind::StructValue(to_struct(object)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A stored key as the admin API shows it; `token` only when just issued.
pub fn api_key(key: StoredKey, token: String) -> ApiKey {
    let scopes = key.scope_names();
    ApiKey {
        key_id: key.id,
        tenant_id: key.tenant_id,
        name: key.name,
        scopes,
        created_at_ms: key.created_at_ms,
        revoked_at_ms: key.revoked_at_ms.unwrap_or_default(),
        token,
    }
}

impl From<StoredPlugin> for PluginVersion {
    fn from(p: StoredPlugin) -> PluginVersion {
        PluginVersion {
            name: p.name,
            version: p.version,
            world: p.world.to_string(),
            sha256: p.sha256,
            size: p.size,
            enabled: p.enabled,
            active: p.active,
            uploaded_at_ms: p.uploaded_at_ms,
            manifest: p.manifest.and_then(|m| match serde_json::to_value(m) {
                Ok(Value::Object(object)) => Some(to_struct(&object)),
                _ => None,
            }),
        }
    }
}

impl From<StoredFlowVersion> for FlowVersion {
    fn from(v: StoredFlowVersion) -> FlowVersion {
        FlowVersion {
            flow_id: v.flow_id,
            version: v.version,
            status: match v.status {
                FlowStatus::Draft => "draft".into(),
                FlowStatus::Published => "published".into(),
            },
            is_default: v.is_default,
            created_at_ms: v.created_at_ms,
            published_at_ms: v.published_at_ms.unwrap_or_default(),
            definition: v.definition,
            warnings: v
                .warnings
                .into_iter()
                .map(|i| FlowIssue {
                    severity: "warning".into(),
                    path: i.path,
                    message: i.message,
                })
                .collect(),
        }
    }
}

impl From<StoredExperiment> for Experiment {
    fn from(e: StoredExperiment) -> Experiment {
        Experiment {
            experiment_id: e.config.experiment_id.clone(),
            status: format!("{:?}", e.status).to_lowercase(),
            config: serde_json::to_string(&e.config).unwrap_or_default(),
            created_at_ms: e.created_at_ms,
            stopped_at_ms: e.stopped_at_ms.unwrap_or_default(),
        }
    }
}

impl From<ToolListing> for Tool {
    fn from(listing: ToolListing) -> Tool {
        let t = listing.manifest;
        Tool {
            input_schema: object(&t.input_schema),
            output_schema: object(&t.output_schema),
            name: t.name,
            description: t.description,
            permissions: t.permissions,
            rate_limit: t.rate_limit.map(|r| RateLimit {
                requests: r.requests,
                per_seconds: r.per_seconds,
            }),
            plugin: listing.name,
            version: listing.version,
            requires_confirmation: t.annotations.requires_confirmation,
        }
    }
}

impl From<Executed> for ExecuteToolResponse {
    fn from(executed: Executed) -> ExecuteToolResponse {
        let (success, result, error, outcome, retry_after) = match executed.result {
            Ok(value) => (true, Some(to_value(&value)), String::new(), "ok", None),
            Err(e) => (false, None, e.message, e.outcome.as_str(), e.retry_after),
        };
        ExecuteToolResponse {
            success,
            result,
            error,
            outcome: outcome.to_owned(),
            retry_after_ms: retry_after.map_or(0, |d| d.as_millis() as u64),
            version: executed.version,
            duration_us: executed.duration.as_micros() as u64,
            fuel: executed.fuel,
        }
    }
}

impl From<ToolCallRecord> for ToolCall {
    fn from(c: ToolCallRecord) -> ToolCall {
        ToolCall {
            called_at_ms: c.called_at_ms,
            via: c.via,
            caller: c.caller,
            tool: c.tool,
            version: c.version,
            args_sha256: c.args_sha256,
            outcome: c.outcome.as_str().to_owned(),
            error: c.error.unwrap_or_default(),
            duration_us: c.duration_us,
            fuel: c.fuel,
        }
    }
}

impl From<TurnRecord> for Turn {
    fn from(t: TurnRecord) -> Turn {
        Turn {
            started_at_ms: t.started_at_ms,
            turn: t.turn,
            input: object(&t.input),
            output: object(&t.output),
            flow_id: t.flow_id,
            flow_version: t.flow_version,
            state_before: t.state_before,
            state_after: t.state_after,
            received_at_ms: t.received_at_ms,
            duration_us: t.duration_us,
        }
    }
}

/// A JSON value as a Struct if it is an object.
fn object(value: &Value) -> Option<Struct> {
    match value {
        Value::Object(o) => Some(to_struct(o)),
        _ => None,
    }
}

/// A new tenant's policy: `limits` (per world, as JSON) and `allow_list`.
impl TryFrom<&CreateTenantRequest> for PolicySettings {
    type Error = Status;

    fn try_from(request: &CreateTenantRequest) -> Result<PolicySettings, Status> {
        let limits = match &request.limits {
            None => Default::default(),
            Some(limits) => serde_json::from_value(from_struct(limits))
                .map_err(|e| Status::invalid_argument(format!("limits: {e}")))?,
        };
        let mcp_servers = request
            .mcp_servers
            .iter()
            .map(|(name, server)| {
                let remote = mcp_flow::RemoteMcpServer {
                    url: server.url.clone(),
                    token: Some(server.token.clone()).filter(|t| !t.is_empty()),
                };
                (name.clone(), remote)
            })
            .collect();
        Ok(PolicySettings {
            limits,
            allow_list: request.allow_list.clone(),
            mcp_servers,
        })
    }
}

/// An upload; an empty `world` lets the component say which it serves.
impl TryFrom<UploadPluginRequest> for UploadPlugin {
    type Error = Status;

    fn try_from(request: UploadPluginRequest) -> Result<UploadPlugin, Status> {
        let world = match request.world.as_str() {
            "" => None,
            world => Some(
                PluginWorld::from_str(world)
                    .map_err(|e| Status::invalid_argument(format!("world: {e}")))?,
            ),
        };
        Ok(UploadPlugin {
            name: request.name,
            version: request.version,
            bytes: request.component,
            world,
            config: request.config.into_iter().collect::<BTreeMap<_, _>>(),
        })
    }
}

impl From<&PublishFlowRequest> for PublishOptions {
    fn from(request: &PublishFlowRequest) -> PublishOptions {
        PublishOptions {
            status: if request.draft {
                FlowStatus::Draft
            } else {
                FlowStatus::Published
            },
            make_default: request.make_default,
        }
    }
}

/// Scope names, each one the engine knows, and `permission:<name>` grants.
pub fn scopes(names: &[String]) -> Result<KeyGrants, Status> {
    KeyGrants::parse(names.iter().map(String::as_str)).map_err(crate::status::from_store)
}

/// An experiment's configuration, as JSON text.
pub fn experiment_config(json: &str) -> Result<ExperimentConfig, Status> {
    serde_json::from_str(json).map_err(|e| Status::invalid_argument(format!("config: {e}")))
}
