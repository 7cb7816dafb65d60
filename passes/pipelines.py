"""Named pipelines. Each is one explicit, ordered list; the comment on a step says why it is there.

The fusion work (issue 3) fills in `default`; until then it is the clean-up pipeline."""

PIPELINES: dict[str, list[str]] = {
    "none": [],
    "cleanup": [],
    "default": [],
}
