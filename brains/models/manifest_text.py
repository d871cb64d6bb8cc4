"""Brain manifest text, written one way for every script that writes manifests.

head_manifest() is the whole manifest of a classifier head, for head_manifests.py (the 25
domain heads and the router) and train_operational_heads.py (the operational heads): a head
is a small model over the sentence embedding that the brain asks the text-embedding brain
for through the kernel (`preprocess = embed_via`), and its manifests differ only in what the
caller is told. standalone_cards.py (the standalone models, whose inputs vary) uses the
pieces: multiline() for the purpose, toml_str() and SANDBOX. The manifest format is
documented in brains/catalog/README.md.
"""

from __future__ import annotations

import textwrap

EMBEDDING_DIM = 384

# Every head is a few kilobytes of weights behind one MatMul: small limits suffice.
SANDBOX = {"memory_mib": 64, "cpu_weight": 100, "max_pids": 8, "max_open_files": 32}


def toml_str(s: str) -> str:
    """A TOML basic string."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def multiline(text: str, width: int = 88) -> str:
    """A TOML multi-line basic string, wrapped at `width` columns with line-ending
    backslashes (which TOML removes together with the newline and the next line's leading
    blanks, so the value is the text on one line)."""
    body = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    lines = textwrap.wrap(body, width=width, break_long_words=False, break_on_hyphens=False)
    return '"""\n' + " \\\n".join(lines) + '"""'


def head_manifest(
    *,
    header: str,
    name: str,
    kind: str,
    sensitivity: str,
    purpose: str,
    sha256: str,
    labels: list[str],
    inputs_comment: str,
    outputs_comment: str,
    purpose_width: int = 88,
) -> str:
    """The manifest of head `name`: `header` (comment lines, without the leading '# ') on top,
    then the fields. `inputs_comment` and `outputs_comment` (one or more lines, likewise)
    say what the caller sends and gets back."""

    def comment(text: str) -> str:
        return "\n".join(f"# {line}" for line in text.splitlines())

    k = len(labels)
    listed = ",\n".join(f"    {toml_str(label)}" for label in labels)
    sandbox = "\n".join(f"{key} = {value}" for key, value in SANDBOX.items())
    return f"""{comment(header)}

name = "{name}"
kind = "{kind}"
sensitivity = "{sensitivity}"
purpose = {multiline(purpose, purpose_width)}

# The text is embedded by the text-embedding brain (asked through the kernel, under policy
# and audit); the model runs on its `sentence_embedding`, FP32 [batch, {EMBEDDING_DIM}].
preprocess = {{ kind = "embed_via", brain = "text-embedding", output = "sentence_embedding" }}

[model]
file = "{name}.onnx"
sha256 = "{sha256}"

{comment(inputs_comment)}
[[inputs]]
name = "text"
datatype = "BYTES"
shape = [-1]

{comment(outputs_comment)}
[[outputs]]
name = "probabilities"
datatype = "FP32"
shape = [-1, {k}]

# The names of the output's columns, in order (the argmax is the answer).
[labels]
probabilities = [
{listed},
]

[sandbox]
{sandbox}

# It asks the text-embedding brain (through the kernel) and nothing else; no memory.
[capabilities]
calls = ["text-embedding"]
memory_namespaces = []
"""
