"""The THREAD algorithms of RFC 5256 §3 (ORDEREDSUBJECT, REFERENCES) and the
THREAD response (RFC 5256 §4, §5 thread-list).

Pure: the functions take messages that have the attributes of
:class:`~mailserverd.imap.sortkeys.SortableMessage` (``seq``, ``number``,
``sent``, ``subject_key``, ``is_reply``, ``message_id``, ``references()``)
and return a forest of :class:`ThreadNode`. Every walk over a tree is
iterative: References come from senders, and a deep chain must not exhaust
the Python stack.
"""

from __future__ import annotations

import itertools
from typing import Iterable

__all__ = ["ThreadNode", "ALGORITHMS", "ordered_subject", "references", "format_threads"]


class ThreadNode:
    """A message in a thread tree, or a dummy (``message`` None) standing for a
    referenced message that is not among the searched ones."""

    __slots__ = ("message", "parent", "children")

    def __init__(self, message=None, children: list["ThreadNode"] | None = None):
        self.message = message
        self.parent: ThreadNode | None = None
        self.children: list[ThreadNode] = []
        for child in children or ():
            _link(self, child)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"ThreadNode({self.message.number if self.message else None}, {self.children!r})"


def _link(parent: ThreadNode, child: ThreadNode) -> None:
    child.parent = parent
    parent.children.append(child)


def _unlink(child: ThreadNode) -> None:
    parent = child.parent
    if parent is not None:
        parent.children.remove(child)
        child.parent = None


def _date_key(node: ThreadNode) -> tuple[int, int]:
    """RFC 5256 §2.2: sent date, then sequence number; a dummy sorts as its first child."""
    message = node.message if node.message is not None else node.children[0].message
    return message.sent, message.seq


# ----------------------------------------------------------- ORDEREDSUBJECT


def ordered_subject(messages: Iterable) -> list[ThreadNode]:
    """RFC 5256 §3 ORDEREDSUBJECT ("poor man's threading").

    Messages are sorted by base subject, then sent date; each run of one base
    subject is a thread whose first message is the parent of all the others
    (no grandchildren); threads are sorted by their first message's sent date.
    """
    ordered = sorted(messages, key=lambda message: (message.subject_key, message.sent, message.seq))
    threads = []
    for _subject, run in itertools.groupby(ordered, key=lambda message: message.subject_key):
        first, *rest = run
        threads.append(ThreadNode(first, [ThreadNode(message) for message in rest]))
    threads.sort(key=_date_key)
    return threads


# --------------------------------------------------------------- REFERENCES


def _would_loop(parent: ThreadNode, child: ThreadNode) -> bool:
    """Whether making ``parent`` the parent of ``child`` closes a loop (child is parent or its ancestor)."""
    if not child.children:
        return parent is child  # a leaf is nobody's ancestor: no walk up a long chain
    node: ThreadNode | None = parent
    while node is not None:
        if node is child:
            return True
        node = node.parent
    return False


def _build_links(messages: list) -> list[ThreadNode]:
    """RFC 5256 §3 REFERENCES step (1): every node, real and dummy, in creation order."""
    by_id: dict[bytes, ThreadNode] = {}
    nodes: list[ThreadNode] = []

    def node_for(message_id: bytes) -> ThreadNode:
        node = by_id.get(message_id)
        if node is None:
            node = by_id[message_id] = ThreadNode()
            nodes.append(node)
        return node

    for message in messages:
        own_id = message.message_id
        node = by_id.get(own_id) if own_id is not None else None
        if node is not None and node.message is None:
            node.message = message  # the dummy an earlier reference made
        else:
            # No id, or one an earlier message holds: a unique node of its own.
            node = ThreadNode(message)
            nodes.append(node)
            if own_id is not None and own_id not in by_id:
                by_id[own_id] = node
        chain = [node_for(reference) for reference in message.references()]
        # (1)(A): link the references; an existing parent is kept, no loops.
        for parent, child in zip(chain, chain[1:]):
            if child.parent is None and not _would_loop(parent, child):
                _link(parent, child)
        # (1)(B): the last reference is this message's parent, replacing any other.
        _unlink(node)
        if chain and not _would_loop(chain[-1], node):
            _link(chain[-1], node)
    return nodes


def _postorder(roots: list[ThreadNode]) -> list[ThreadNode]:
    """Every node under ``roots``, each after all its descendants."""
    order: list[ThreadNode] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    order.reverse()
    return order


def _pruned(children: list[ThreadNode], at_root: bool) -> list[ThreadNode]:
    """RFC 5256 §3 REFERENCES step (3) for one set of siblings whose subtrees are pruned already."""
    kept: list[ThreadNode] = []
    for child in children:
        if child.message is not None:
            kept.append(child)
        elif not child.children:
            child.parent = None  # a dummy with no children is deleted
        elif not at_root or len(child.children) == 1:
            for grandchild in child.children:  # promoted in the dummy's place
                grandchild.parent = child.parent
            kept.extend(child.children)
        else:
            kept.append(child)
    return kept


def _prune(roots: list[ThreadNode]) -> list[ThreadNode]:
    for node in _postorder(roots):
        node.children = _pruned(node.children, at_root=False)
    roots = _pruned(roots, at_root=True)
    for root in roots:
        root.parent = None
    return roots


def _thread_subject(node: ThreadNode) -> str:
    """Step (5)(B)(i): the base subject of the node, or of its first child if it is a dummy."""
    message = node.message if node.message is not None else node.children[0].message
    return message.subject_key


def _is_reply(node: ThreadNode) -> bool:
    return node.message is not None and node.message.is_reply


def _subject_table(roots: list[ThreadNode]) -> dict[str, ThreadNode]:
    """RFC 5256 §3 REFERENCES step (5)(A)-(B)."""
    table: dict[str, ThreadNode] = {}
    for node in roots:
        subject = _thread_subject(node)
        if not subject:
            continue
        held = table.get(subject)
        if held is None:
            table[subject] = node
        elif held.message is not None and (node.message is None or (held.message.is_reply and not _is_reply(node))):
            table[subject] = node
    return table


def _merge_subjects(roots: list[ThreadNode]) -> list[ThreadNode]:
    """RFC 5256 §3 REFERENCES step (5)(C): threads with one subject merged; the new roots."""
    table = _subject_table(roots)
    result = list(roots)
    merged: set[int] = set()
    for node in roots:
        subject = _thread_subject(node)
        if not subject or table[subject] is node:
            continue
        held = table[subject]
        if held.message is None and node.message is None:
            for child in list(node.children):
                _unlink(child)
                _link(held, child)
        elif held.message is None or (_is_reply(node) and not _is_reply(held)):
            _link(held, node)
        else:
            dummy = ThreadNode()
            result[result.index(held)] = dummy
            _link(dummy, held)
            _link(dummy, node)
            table[subject] = dummy
        merged.add(id(node))
    return [node for node in result if id(node) not in merged]


def references(messages: Iterable) -> list[ThreadNode]:
    """RFC 5256 §3 REFERENCES threading of ``messages`` (any order; mailbox order is by ``seq``)."""
    ordered = sorted(messages, key=lambda message: message.seq)
    nodes = _build_links(ordered)
    roots = [node for node in nodes if node.parent is None]  # step (2)
    roots = _prune(roots)  # step (3)
    for root in roots:  # step (4)
        if root.message is None:
            root.children.sort(key=_date_key)
    roots.sort(key=_date_key)
    roots = _merge_subjects(roots)  # step (5)
    for node in _postorder(roots):  # step (6): the youngest siblings first
        node.children.sort(key=_date_key)
    roots.sort(key=_date_key)
    return roots


#: thread-alg name (upper-case) -> algorithm (RFC 5256 §3).
ALGORITHMS = {"ORDEREDSUBJECT": ordered_subject, "REFERENCES": references}


# ---------------------------------------------------------------- response


def format_threads(roots: list[ThreadNode]) -> bytes:
    """``THREAD *thread-list`` (RFC 5256 §4, §5), without the ``* `` and CRLF.

    A chain of only children is written as numbers separated by spaces, a
    split as nested thread-lists (``(3 6 (4 23)(44 7 96))``); a dummy writes
    only its children (``((3)(5))``).
    """
    out = bytearray(b"THREAD")
    if roots:
        out += b" "
    stack: list = [root for root in reversed(roots)]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out += item
            continue
        node = item
        out += b"("
        if node.message is None and len(node.children) == 1:
            node = node.children[0]
        if node.message is not None:
            out += b"%d" % node.message.number
            while len(node.children) == 1 and node.children[0].message is not None:
                node = node.children[0]
                out += b" %d" % node.message.number
            if node.children:
                out += b" "
        stack.append(b")")
        stack.extend(reversed(node.children))
    return bytes(out)
