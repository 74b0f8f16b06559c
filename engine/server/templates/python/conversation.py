def conversation(slots="{}", user_profile="{}"):
    """A conversation as the engine passes it: these slots and this user
    profile (JSON objects)."""
    return Conversation(
        tenant_id="tenant",
        conversation_id="conversation-1",
        user_id="user-1",
        flow_id="flow",
        flow_version="1",
        current_state="state",
        slots=slots,
        variables="{}",
        user_profile=user_profile,
        intent=None,
        intent_history=[],
        turn=1,
    )
