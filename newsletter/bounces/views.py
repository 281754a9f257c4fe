"""Reading a message's headers through copies of its parts that parse each field only once.

The email package parses a header field afresh on every access, and builds a new header
class each time: one Content-Type read costs tens of microseconds. A bounce passes through
several readers, ours and flufl.bounce's detectors, that each ask for the same
Content-Type, Content-Transfer-Encoding, From and Subject, and those parses were most of
the cost of classifying one. A view is a shallow copy of a part whose policy is the
part's own with a header factory that remembers what it built, so each field is parsed
once per message. Header objects are immutable and built from the name and raw value
alone, so a remembered one is the one the factory would build again: every answer read
through a view is the part's own, and the caller's message is never changed.
"""

from __future__ import annotations

import copy
from email.message import Message
from email.policy import EmailPolicy
from typing import Any

_MAX_TREE = 10_000  # parts copied for a reader of the whole tree; past this it gets the message itself


class _Remembered:
    """A header factory that builds the header object for each name and value only once."""

    def __init__(self, factory: Any) -> None:
        self._factory = factory
        self._made: dict[tuple[str, str], Any] = {}

    def __call__(self, name: str, value: str) -> Any:
        key = (name, value)
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = self._factory(name, value)
        return made


class Views:
    """The views of one message's parts, for the time it takes to classify it.

    A view is ``copy.copy`` of the part: it shares the header list and the payload with
    the part and differs only in its policy. A part under a policy without a header
    factory (compat32, whose headers are plain strings anyway) is read as it is.
    """

    def __init__(self, msg: Message) -> None:
        self._root = msg
        self._views: dict[int, tuple[Message, Message]] = {}  # by id(), the part kept so its id stays its own
        self._policies: dict[int, tuple[Any, Any]] = {}

    def view(self, part: Message) -> Message:
        """The one view of ``part``; ``part`` itself when it cannot be copied or its policy remembers nothing."""
        found = self._views.get(id(part))
        if found is None:
            twin = self._twin(part)
            found = self._views[id(part)] = (part, twin if twin is not None else part)
        return found[1]

    def tree(self) -> Message:
        """The whole message with every part a view, for a reader that walks all of it (flufl.bounce).

        Each multipart copy gets a list of copies of its children, so the message's own
        lists are never touched. A tree of more than ``_MAX_TREE`` parts (only a message
        built in memory, perhaps one that contains itself, can have one this size within
        our bounds) or one that cannot be copied is not: the reader gets the message itself.
        """
        try:
            root = self._copy(self._root)
            stack = [root]
            count = 1
            while stack:
                node = stack.pop()
                if not node.is_multipart():
                    continue
                copies = [self._copy(c) if isinstance(c, Message) else c for c in node.get_payload()]
                count += len(copies)
                if count > _MAX_TREE:
                    return self._root
                node.set_payload(copies)
                stack.extend(child for child in copies if isinstance(child, Message))
        except Exception:  # noqa: BLE001 - what cannot be copied is read as it is
            return self._root
        return root

    def _twin(self, part: Message) -> Message | None:
        """A view of ``part``, or None when its policy remembers nothing or it cannot be copied."""
        if not isinstance(part, Message) or not isinstance(getattr(part, "policy", None), EmailPolicy):
            return None
        try:
            return self._copy(part)
        except Exception:  # noqa: BLE001 - a part that cannot be copied is read as it is
            return None

    def _copy(self, part: Message) -> Message:
        """A shallow copy of ``part``, reading headers through a remembering policy when it has a header factory."""
        twin = copy.copy(part)
        policy = getattr(part, "policy", None)
        if isinstance(policy, EmailPolicy):
            twin.policy = self._remembering(policy)
        return twin

    def _remembering(self, policy: EmailPolicy) -> EmailPolicy:
        found = self._policies.get(id(policy))
        if found is None:
            clone = policy.clone(header_factory=_Remembered(policy.header_factory))
            found = self._policies[id(policy)] = (policy, clone)
        return found[1]
