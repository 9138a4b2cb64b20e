"""Conversational recommendation: ask what the history cannot tell, recommend when sure."""

from fastapi import APIRouter, HTTPException, Request

from userlens.serving.conversations import (
    ConversationEnded,
    ConversationService,
    UnknownConversation,
)
from userlens.serving.deps import AUTH_RESPONSES, invalid, path_id, require
from userlens.serving.schemas import ConversationOut, ConversationStart, ErrorOut, TurnReply

router = APIRouter(tags=["conversations"])


def conversations_of(request: Request) -> ConversationService:
    return request.app.state.conversations


@router.post("/conversations", response_model=ConversationOut,
             response_model_exclude_none=True, dependencies=[require("write")],
             responses=AUTH_RESPONSES)
def start(body: ConversationStart, request: Request) -> dict:
    """Start a conversation from a user's stored history or an anonymous one; the response
    is the first turn: a question (an attribute and its name) or a scored list."""
    return conversations_of(request).start(body.user_id, body.history)


@router.post("/conversations/{conversation_id}/turns", response_model=ConversationOut,
             response_model_exclude_none=True, dependencies=[require("write")],
             responses={**AUTH_RESPONSES,
                        404: {"model": ErrorOut, "description": "no such conversation"},
                        409: {"model": ErrorOut, "description": "the conversation has ended"}})
def turn(conversation_id: str, body: TurnReply, request: Request) -> dict:
    """Answer the last question (``answer``: yes / no) or judge the last list (``accept``:
    an item of it, or ``reject``: true); the response is the next turn."""
    conversation_id = path_id(conversation_id, "conversation_id")
    try:
        reply = body.as_dict()
        return conversations_of(request).reply(conversation_id, reply)
    except UnknownConversation:
        raise HTTPException(404, f"no conversation {conversation_id!r}") from None
    except ConversationEnded as error:
        raise HTTPException(409, str(error)) from None
    except ValueError as error:
        raise invalid(("body",), str(error)) from None
