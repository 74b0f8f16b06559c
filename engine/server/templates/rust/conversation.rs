    /// A conversation as the engine passes it: these slots and this user
    /// profile (JSON objects).
    fn conversation(slots: &str, user_profile: &str) -> Conversation {
        Conversation {
            tenant_id: "tenant".into(),
            conversation_id: "conversation-1".into(),
            user_id: "user-1".into(),
            flow_id: "flow".into(),
            flow_version: "1".into(),
            current_state: "state".into(),
            slots: slots.into(),
            variables: "{}".into(),
            user_profile: user_profile.into(),
            intent: None,
            intent_history: Vec::new(),
            turn: 1,
        }
    }
