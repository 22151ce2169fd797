"""Budgets owned by the endpoints' teams (exporter/pipeline/budgets.py): pod annotations read from
the pod cache's PodMeta (built here from the recorded pod shapes by the pod cache's own
pod_meta_from_object, so the annotation allow-list is the real one), merged with the configured
budgets."""

from __future__ import annotations

import copy
import logging

import pytest

from exporter.identity.kubernetes import pod_meta_from_object
from exporter.pipeline.budgets import BUDGET_ANNOTATION, OWNER_ANNOTATION, Budgets, parse_grams
from test_identity_kubernetes import STS, VLLM

EP = ("models", "llama-3-8b-predictor")


def meta(pod: dict, **ann: str):
    pod = copy.deepcopy(pod)
    pod["metadata"]["annotations"] = {**(pod["metadata"].get("annotations") or {}), **ann}
    return pod_meta_from_object(pod)


def test_the_pod_cache_keeps_the_budget_annotations():
    m = meta(VLLM, **{BUDGET_ANNOTATION: "0.5", OWNER_ANNOTATION: "team-llm", "other.io/x": "y"})
    assert m.annotations[BUDGET_ANNOTATION] == "0.5" and m.annotations[OWNER_ANNOTATION] == "team-llm"
    assert "other.io/x" not in m.annotations and (m.namespace, m.endpoint) == EP


@pytest.mark.parametrize("text, grams", [("0.5", 0.5), (" 2 ", 2.0), ("1e-3", 0.001), ("0", None), ("-1", None),
                                         ("nan", None), ("inf", None), ("1e6", None), ("0.5g", None), ("", None)])
def test_parse_grams(text, grams):
    assert parse_grams(text) == grams


def test_annotation_budgets_per_served_model_and_over_the_configured_one():
    b = Budgets()
    b.configured = [(("models", "llama-3-8b-predictor", "x", ""), 9.0), (("ml", "chat", "qwen", "ops"), 1.0)]
    pods = [meta(VLLM, **{BUDGET_ANNOTATION: "0.5", OWNER_ANNOTATION: "team-llm"}), meta(STS)]
    served = {(*EP, "pod-a"): frozenset({"m1", "m2"}), ("other", "e", "p"): frozenset({"m3"})}
    assert b.series(pods, served) == {
        (*EP, "m1", "team-llm"): 0.5, (*EP, "m2", "team-llm"): 0.5,  # every model its servers report
        ("ml", "chat", "qwen", "ops"): 1.0}                            # the configured one elsewhere
    # no model reported yet: the pod's own model (its allow-listed label)
    assert b.series(pods[:1], {}) == {(*EP, "llama-3-8b", "team-llm"): 0.5, ("ml", "chat", "qwen", "ops"): 1.0}
    assert b.invalid == 0


def test_disagreeing_pods_lowest_wins_and_invalid_ones_are_counted(caplog):
    b = Budgets()
    b.configured = [((*EP, "llama-3-8b", ""), 9.0)]
    a, c = copy.deepcopy(VLLM), copy.deepcopy(VLLM)
    c["metadata"]["uid"], c["metadata"]["name"] = "0b9c2d6e-1111-4a3a-9e8f-000000000001", "llama-3-8b-predictor-new"
    pods = [meta(a, **{BUDGET_ANNOTATION: "0.5", OWNER_ANNOTATION: "old"}),
            meta(c, **{BUDGET_ANNOTATION: "0.3", OWNER_ANNOTATION: "new"})]
    assert b.series(pods, {}) == {(*EP, "llama-3-8b", "new"): 0.3}
    bad = [meta(a, **{BUDGET_ANNOTATION: "lots"})]
    with caplog.at_level(logging.WARNING, "exporter.pipeline.budgets"):
        assert b.series(bad, {}) == {(*EP, "llama-3-8b", ""): 9.0}  # the configured budget stays
        b.series(bad, {})
    assert b.invalid == 1
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "'lots'" in warnings[0] and "llama-3-8b-predictor-7d9f8b6c5d-x2x7q" in warnings[0]
    assert b.series([], {}) == {(*EP, "llama-3-8b", ""): 9.0} and b.invalid == 0


def test_owner_is_bounded():
    b = Budgets()
    got = b.series([meta(VLLM, **{BUDGET_ANNOTATION: "1", OWNER_ANNOTATION: "é" * 200})], {})
    (owner,) = {k[3] for k in got}
    assert len(owner.encode()) <= 128 and owner == "é" * 64


# --- hostile annotation values -----------------------------------------------------------------

@pytest.mark.parametrize("text", ["1_000", "1_0", "\u0660.\u0665", "\uff11", "infinity", "+inf", "-0", "1e400",
                                  "1e-400", "0x1p-1", "0.5 g", "5%", "1,5", "9" * 300, "1" + "0" * 70,
                                  "\x00", " \t\n", "0.5\n0.6", "١"])
def test_hostile_budget_values_are_rejected(text):
    assert parse_grams(text) is None


@pytest.mark.parametrize("text, grams", [("+0.5", 0.5), (".25", 0.25), ("3.", 3.0), ("2E-2", 0.02), ("\t1\n", 1.0)])
def test_plain_decimals_are_taken(text, grams):
    assert parse_grams(text) == grams


def test_hostile_owners_never_crash_and_stay_bounded(caplog):
    b = Budgets()
    for owner in ["a\nb\"c\\d", "\ud800lone surrogate", "x" * 300_000, "\x00\x1b[31m", "模" * 100]:
        got = b.series([meta(VLLM, **{BUDGET_ANNOTATION: "1", OWNER_ANNOTATION: owner})], {})
        (o,) = {k[3] for k in got}
        assert len(o.encode()) <= 128
        o.encode("utf-8")                               # always encodable: the exposition writes it
    with caplog.at_level(logging.WARNING, "exporter.pipeline.budgets"):
        b.series([meta(VLLM, **{BUDGET_ANNOTATION: "\ud800" + "y" * 300_000})], {})
    assert b.invalid == 1 and len(caplog.records[-1].getMessage()) < 1000


def test_the_warned_set_keeps_no_annotation_values():
    """10,000 pods × a 256 KiB annotation (the API server's limit) must not be held: only digests."""
    b = Budgets()
    for i in range(50):
        b.series([meta(VLLM, **{BUDGET_ANNOTATION: f"{i}" + "z" * 200_000})], {})
    assert b.invalid == 1 and len(b._warned) == 50
    assert max(len(v) for _uid, v in b._warned) <= 64
