"""A snapshot as the read-only page shows it: the path root → its leaf with token chips, each chip
knowing only the explanations given to it (a share's frozen set), never the live ones.

It renders through the same render_thread as nlaweb.thread.view.thread_view, for a fixed
snapshot and a fixed set of explanations instead of the conversation's head and every stored row."""

from __future__ import annotations

from collections.abc import Mapping

from nlaweb.chat.models import Snapshot
from nlaweb.explanations.models import Explanation
from nlaweb.thread.view import Branches, ThreadView, render_thread

#: A share shows one branch: no alternatives to switch to.
ONE_BRANCH = Branches(index=1, count=1, previous=None, next=None)


def snapshot_thread(snapshot: Snapshot, explained: Mapping[int, Explanation]) -> ThreadView:
    path = snapshot.leaf.path()
    return render_thread(
        snapshot.conversation,
        snapshot,
        path,
        explained,
        [ONE_BRANCH] * len(path),
        [None] * len(path),
    )
