"""Pictures of workflows: Workflow.to_mermaid() and Workflow.to_dot().

Each picture is read back, not only matched: the DOT text by pydot's parser,
the Mermaid text by a strict reader of the few line shapes cloaca writes
(front matter, nodes, edges), which decodes Mermaid's `#...;` entities. The
tests check that every task and every dependency is drawn, that the text is
the same for the same workflow, and that task ids and workflow names with
any characters come back unchanged.
"""

import html
import json
import re

import pydot
import pytest

import cloaca
from conftest import DIAMOND, WIDE

# pydot 4 calls pyparsing's camelCase names, which pyparsing 3.3 deprecates; the warnings are about pydot, not cloaca.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pydot")


# Characters that mean something in Mermaid, DOT, HTML labels or YAML front matter.
AWKWARD = {
    "plain": [],
    "with space": ["plain"],
    'say "hi"': ["plain"],
    "it's-a-dash": ['say "hi"'],
    "ünïcødé ✓ 数据": ["with space"],
    "<b>bold</b> & &lt;": ["plain"],
    "{brace} [square] (round) |pipe|": ["<b>bold</b> & &lt;"],
    "back\\slash \\n \\N": ["plain"],
    "hash #quot; #35; `tick`": ["back\\slash \\n \\N"],
    "%%{init: {'theme': 'dark'}}%% 100%": ["plain"],
    "lifestyle: style:#a; -> --> ;": ["hash #quot; #35; `tick`"],
    "two\nlines": ["it's-a-dash", "lifestyle: style:#a; -> --> ;"],
}


def marker_task():
    """A new task function that passes its context on."""

    def run(context):
        return context

    return run


def build(name, tasks):
    """Declare `tasks` ({task_id: [dependency ids]}) in a `with WorkflowBuilder(name)` block; return the Workflow."""
    with cloaca.WorkflowBuilder(name) as builder:
        for task_id, deps in tasks.items():
            cloaca.task(id=task_id, dependencies=list(deps))(marker_task())
            builder.add_task(task_id)
        workflow = builder.build()
    return workflow


def expected_edges(tasks):
    return {(dep, task_id) for task_id, deps in tasks.items() for dep in deps}


# --------------------------------------------------------------------------- readers

MERMAID_NODE = re.compile(r'    (t\d+)\["([^"\n]*)"\]')
MERMAID_EDGE = re.compile(r"    (t\d+) --> (t\d+)")


def mermaid_entities(text):
    """Decode Mermaid's `#name;` / `#number;` entities, the only escapes a quoted label has."""
    return re.sub(r"#(\w+);", lambda m: html.unescape(f"&#{m[1]};" if m[1].isdigit() else f"&{m[1]};"), text)


def read_mermaid(text):
    """(title, [(node id, label lines)], [(from node, to node)]) of a plain picture; fails on any other line."""
    match = re.fullmatch(r"---\ntitle: (\"[^\n]*\")\n---\nflowchart TB\n((?:.*\n)*)", text)
    assert match, text
    # The title is a YAML double-quoted scalar using only the escapes JSON has, so JSON reads it as YAML would.
    title = json.loads(match[1])
    nodes, edges = [], []
    for line in match[2].splitlines():
        if node := MERMAID_NODE.fullmatch(line):
            nodes.append((node[1], [mermaid_entities(part) for part in node[2].split("<br>")]))
        elif edge := MERMAID_EDGE.fullmatch(line):
            edges.append((edge[1], edge[2]))
        else:
            pytest.fail(f"unexpected line {line!r} in\n{text}")
    return title, nodes, edges


def dot_string(quoted):
    """The text of a DOT double-quoted string as pydot gives it (quotes included), with cloaca's escapes undone."""
    assert quoted.startswith('"') and quoted.endswith('"'), quoted
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m[1], m[1]), quoted[1:-1])


def read_dot(text):
    """(graph name, graph label, [(node id, label)] in order, [(from node, to node)]), parsed by pydot."""
    graphs = pydot.graph_from_dot_data(text)
    assert graphs is not None and len(graphs) == 1, text
    graph = graphs[0]
    assert graph.get_type() == "digraph"
    defaults = [n.get_name() for n in graph.get_nodes() if n.get_name() in ("node", "edge", "graph")]
    nodes = [(n.get_name(), dot_string(n.get("label"))) for n in graph.get_nodes() if n.get_name() not in defaults]
    edges = [(e.get_source(), e.get_destination()) for e in graph.get_edges()]
    label = graph.get("label") or graph.get_graph_defaults()[0]["label"]
    return dot_string(graph.get_name()), dot_string(label), nodes, edges


def named_edges(nodes, edges):
    """Edges as (dependency label, dependent label), checking that they join drawn nodes."""
    label = {node_id: text for node_id, text in nodes}
    assert {end for edge in edges for end in edge} <= set(label), (edges, nodes)
    return [(label[a], label[b]) for a, b in edges]


# --------------------------------------------------------------------------- Mermaid


class TestMermaid:
    def test_a_diamond(self, workflow_name):
        assert build(workflow_name, DIAMOND).to_mermaid() == (
            f'---\ntitle: "{workflow_name}"\n---\n'
            "flowchart TB\n"
            '    t0["start"]\n'
            '    t1["alpha"]\n'
            '    t2["zeta"]\n'
            '    t3["end"]\n'
            "    t0 --> t1\n"
            "    t0 --> t2\n"
            "    t1 --> t3\n"
            "    t2 --> t3\n"
        )

    def test_every_task_and_dependency_is_drawn_in_topological_order(self, workflow_name):
        workflow = build(workflow_name, WIDE)
        title, nodes, edges = read_mermaid(workflow.to_mermaid())
        assert title == workflow_name
        assert [lines for _, lines in nodes] == [[task_id] for task_id in workflow.topological_sort()]
        assert [node_id for node_id, _ in nodes] == [f"t{i}" for i in range(len(WIDE))]
        named = named_edges([(node_id, lines[0]) for node_id, lines in nodes], edges)
        assert len(named) == len(set(named))
        assert set(named) == expected_edges(WIDE)

    def test_awkward_ids_and_name_come_back_unchanged(self, workflow_name):
        name = f'{workflow_name} "q" <b>x</b>: 100% #quot; %%{{init}}%% \\ ✓'
        workflow = build(name, AWKWARD)
        title, nodes, edges = read_mermaid(workflow.to_mermaid())
        assert title == name
        assert [lines for _, lines in nodes] == [[task_id] for task_id in workflow.topological_sort()]
        named = named_edges([(node_id, lines[0]) for node_id, lines in nodes], edges)
        assert set(named) == expected_edges(AWKWARD)

    def test_labels_hold_no_raw_character_mermaid_reads_as_markup(self, workflow_name):
        _, _, body = build(workflow_name, AWKWARD).to_mermaid().partition("flowchart TB\n")
        for line in body.splitlines():
            label = MERMAID_NODE.fullmatch(line)
            if label:
                assert not set(label[2]) & set('"<>&%`:\n'), line


# --------------------------------------------------------------------------- DOT


class TestDot:
    def test_a_diamond(self, workflow_name):
        assert build(workflow_name, DIAMOND).to_dot() == (
            f'digraph "{workflow_name}" {{\n'
            f'    graph [label="{workflow_name}", labelloc=t, rankdir=TB];\n'
            "    node [shape=box, style=rounded];\n"
            '    t0 [label="start"];\n'
            '    t1 [label="alpha"];\n'
            '    t2 [label="zeta"];\n'
            '    t3 [label="end"];\n'
            "    t0 -> t1;\n"
            "    t0 -> t2;\n"
            "    t1 -> t3;\n"
            "    t2 -> t3;\n"
            "}\n"
        )

    def test_pydot_reads_every_task_and_dependency_in_topological_order(self, workflow_name):
        workflow = build(workflow_name, WIDE)
        name, label, nodes, edges = read_dot(workflow.to_dot())
        assert name == label == workflow_name
        assert [text for _, text in nodes] == workflow.topological_sort()
        assert [node_id for node_id, _ in nodes] == [f"t{i}" for i in range(len(WIDE))]
        named = named_edges(nodes, edges)
        assert len(named) == len(set(named))
        assert set(named) == expected_edges(WIDE)

    def test_awkward_ids_and_name_come_back_unchanged(self, workflow_name):
        name = f'{workflow_name} "q" <b>x</b> {{g}} -> \\N \\ ✓'
        workflow = build(name, AWKWARD)
        graph_name, label, nodes, edges = read_dot(workflow.to_dot())
        assert graph_name == label == name
        assert [text for _, text in nodes] == workflow.topological_sort()
        assert set(named_edges(nodes, edges)) == expected_edges(AWKWARD)


# --------------------------------------------------------------------------- both


@pytest.mark.parametrize("method", ["to_mermaid", "to_dot"])
class TestBothFormats:
    def test_same_workflow_same_text_whatever_the_declaration_order(self, workflow_name, method):
        forward = build(workflow_name, WIDE)
        backward = build(workflow_name, dict(reversed(list(WIDE.items()))))
        text = getattr(forward, method)()
        assert text == getattr(forward, method)() == getattr(backward, method)()
        assert text.endswith("\n") and not text.endswith("\n\n")

    def test_a_single_task_is_one_node_and_no_edge(self, workflow_name, method):
        text = getattr(build(workflow_name, {"only": []}), method)()
        if method == "to_dot":
            _, _, nodes, edges = read_dot(text)
            assert nodes == [("t0", "only")]
        else:
            _, nodes, edges = read_mermaid(text)
            assert nodes == [("t0", ["only"])]
        assert edges == []

    def test_a_workflow_is_drawn_without_any_runner(self, workflow_name, method):
        with cloaca.WorkflowBuilder(workflow_name) as builder:
            cloaca.task(id="step")(marker_task())
            workflow = builder.build()
        assert "step" in getattr(workflow, method)()
