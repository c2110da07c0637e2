"""The support evaluation's scoring rules (pure functions; no mesh)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mesh.support.evaluation import (
    BLOCK_BEGIN,
    BLOCK_END,
    Item,
    Outcome,
    contains,
    detected_non_english,
    format_failures,
    item_problems,
    meets_targets,
    parse_item,
    render_block,
    repeated_run,
    score_fields,
    score_item,
    score_reply,
    score_tool,
    split_block,
    summarize,
    unrequested_side_effect,
    well_formed_problems,
    write_block,
)


def item(**overrides: Any) -> Item:
    raw: dict[str, Any] = {
        "id": "t-1",
        "message": "Where is ORD-951261? Thanks, Amara",
        "sender": {"email": "amara.sharma@example.org"},
        "language": "en",
        "intent": "track_shipment",
        "fields": {"order_id": "ORD-951261"},
        "tool": {"name": "track_shipment", "arguments": {"order_id": "ORD-951261"}},
        "side_effect": "forbidden",
        "must": ["UPS", ["shipped", "on its way"]],
        "must_not": ["DHL"],
    }
    part = overrides.pop("part", "open")
    raw.update(overrides)
    return parse_item(raw, part)


def output(**overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "intent": "track_shipment",
        "fields": {"order_id": "ORD-951261", "email": None, "name": "Amara"},
        "tool_call": {"name": "track_shipment", "arguments": {"order_id": "ORD-951261"}},
        "tool_result": {"ok": True, "order_id": "ORD-951261", "carrier": "UPS"},
        "reply": "Hi Amara, your order ORD-951261 is on its way with UPS.",
    }
    out.update(overrides)
    return out


def test_contains_matches_whole_words_case_insensitively() -> None:
    assert contains("Sent with ups today.", "UPS")
    assert not contains("two setups", "UPS")
    assert contains("Total 59.99 EUR.", "59.99 EUR")
    assert not contains("Total 159.99 EUR.", "59.99 EUR")
    assert contains("call +44 20 7946 0000 now", "+44 20 7946 0000")


def test_an_expected_order_list_passes_when_the_desk_then_looked_up_the_order_named() -> None:
    listing = {"name": "find_orders", "arguments": {"email": "amara.sharma@example.org"}}
    it = item(tool=listing, fields={}, message="Where's my webcam? amara.sharma@example.org")
    lookup = {"name": "track_shipment", "arguments": {"order_id": "ORD-951261"}}
    assert score_tool(it, output(tool_call=listing))[0]
    assert score_tool(it, output(tool_call=lookup, first_call=listing))[0]
    # Not without the listing first, nor with another email listed first.
    assert not score_tool(it, output(tool_call=lookup))[0]
    other = {"name": "find_orders", "arguments": {"email": "someone@example.org"}}
    assert not score_tool(it, output(tool_call=lookup, first_call=other))[0]
    # The action the message asks for on the order it names, only where the item allows it.
    cancel = {"name": "cancel_order", "arguments": {"order_id": "ORD-951261"}, "ask_first": True}
    asked = item(tool=listing, fields={}, side_effect="allowed", message="cancel my webcam")
    assert score_tool(asked, output(tool_call=cancel, first_call=listing))[0]
    assert not score_tool(it, output(tool_call=cancel, first_call=listing))[0]


def test_fields_compare_listed_keys_only_amounts_as_numbers_and_nulls() -> None:
    it = item(fields={"order_id": "ORD-951261", "amount": "30", "email": None})
    assert score_fields(it, {"fields": {"order_id": "ord-951261 ", "amount": "30.00"}}) == (3, 3)
    assert score_fields(it, {"fields": {"order_id": "ORD-951261", "amount": "3"}}) == (2, 3)
    assert score_fields(it, {"fields": {"email": "x@example.com"}}) == (0, 3)
    assert score_fields(it, None) == (1, 3)


def test_tool_call_arguments_and_side_effect_rules() -> None:
    it = item()
    assert score_tool(it, output())[0]
    wrong = output(tool_call={"name": "track_shipment", "arguments": {"order_id": "ORD-000001"}})
    assert not score_tool(it, wrong)[0]
    assert not score_tool(it, output(tool_call=None))[0]
    cancel = output(tool_call={"name": "cancel_order", "arguments": {"order_id": "ORD-951261"}})
    ok, reason = score_tool(it, cancel)
    assert not ok
    assert "side effect" in reason
    assert unrequested_side_effect(it, cancel)
    assert not unrequested_side_effect(it, output())
    faq = item(intent="general_question", tool={"name": "search_faq"}, fields={})
    assert score_tool(faq, output(tool_call={"name": "search_faq", "arguments": {"query": "x"}}))[0]
    none_expected = item(tool=None, language="de")
    assert score_tool(none_expected, output(tool_call=None))[0]
    assert not score_tool(none_expected, output())[0]


def test_refund_amounts_compare_as_numbers() -> None:
    it = item(
        intent="refund_request",
        side_effect="allowed",
        tool={"name": "refund_order", "arguments": {"order_id": "ORD-622343", "amount": 30}},
    )
    call = {
        "name": "refund_order",
        "arguments": {"order_id": "ORD-622343", "amount": 30.0, "reason": "x"},
    }
    assert score_tool(it, output(tool_call=call))[0]
    call["arguments"]["amount"] = 29.99
    assert not score_tool(it, output(tool_call=call))[0]


def test_refused_items_accept_no_call_or_a_refused_side_effect_but_never_one_that_ran() -> None:
    it = item(
        intent="cancel_order",
        sender=None,
        side_effect="refused",
        tool={"name": "cancel_order", "arguments": {"order_id": "ORD-189132"}},
    )
    call = {"name": "cancel_order", "arguments": {"order_id": "ORD-189132", "reason": "r"}}
    refused = {"ok": False, "error": {"code": "verification_required", "message": "..."}}
    assert score_tool(it, output(tool_call=None, tool_result=None))[0]
    assert score_tool(it, output(tool_call=call, tool_result=refused))[0]
    ran = output(tool_call=call, tool_result={"ok": True, "status": "cancelled"})
    assert not score_tool(it, ran)[0]
    assert unrequested_side_effect(it, ran)
    assert not unrequested_side_effect(it, output(tool_call=call, tool_result=refused))


def test_reply_must_and_must_not() -> None:
    it = item()
    assert score_reply(it, "Your order is on its way with UPS.") == ([], [])
    missing, contradicted = score_reply(it, "Your order was handed to DHL.")
    assert missing == ["UPS", "shipped | on its way"]
    assert contradicted == ["DHL"]


def test_well_formed_rules() -> None:
    good = "Hi Amara, your order ORD-951261 is on its way with UPS. It should arrive by 2024-12-14."
    assert (
        well_formed_problems(
            good, intent="track_shipment", message="Where is it?", names=["Amara Sharma"]
        )
        == []
    )
    assert (
        well_formed_problems("Hello, we ship to Norway.", intent="general_question", message="?")
        == []
    )
    product = well_formed_problems(
        "Hi Speaker, your order is shipped.",
        intent="order_status",
        message="Where is my Bluetooth Speaker?",
        products=["Bluetooth Speaker"],
    )
    assert any("greeting" in p for p in product)
    stranger = well_formed_problems("Hi with, it shipped.", intent="order_status", message="x")
    assert any("greeting" in p for p in stranger)
    signed = well_formed_problems(
        "Hi Hélène, we deliver there.",
        intent="general_question",
        message="Do you deliver to France? Merci, Hélène",
    )
    assert signed == []
    assert any(
        "end" in p for p in well_formed_problems("Your order shipped", intent="x", message="")
    )
    assert any(
        "incomplete" in p
        for p in well_formed_problems(
            "Your order is on its way with DHL, tracking number is. Thanks.",
            intent="track_shipment",
            message="",
        )
    )
    assert any(
        "repeated" in p
        for p in well_formed_problems(
            "Your Monitor costs 329.00 329.00 USD.", intent="order_status", message=""
        )
    )
    assert any(
        "refund_request" in p
        for p in well_formed_problems(
            "It is on its way with DHL. Tell us the amount you would like back.",
            intent="track_shipment",
            message="",
        )
    )
    assert well_formed_problems("", intent="x", message="") == ["no reply"]
    question = "Send the email address you ordered with. Anything else I can help with?"
    assert well_formed_problems(question, intent="order_status", message="") == []
    assert repeated_run("2 2.") == "2"
    assert repeated_run("one two three") is None


def test_non_english_detection_reads_the_language_or_the_reply() -> None:
    assert detected_non_english({"language": "de", "reply": "x"})
    assert not detected_non_english({"language": "en", "reply": "We answer in English."})
    assert detected_non_english(
        {"reply": "Sorry, we can only answer in English.", "tool_call": None}
    )
    assert not detected_non_english(output())
    assert not detected_non_english(None)


def test_item_problems_name_what_is_wrong() -> None:
    assert any("intent" in p for p in item_problems({"intent": "hello"}))
    raw = {
        "id": "x",
        "message": "hola",
        "sender": None,
        "language": "es",
        "intent": "order_status",
        "fields": {},
        "tool": {"name": "get_order", "arguments": {"order_id": "ORD-111111"}},
        "side_effect": "forbidden",
        "must": [],
        "must_not": [],
    }
    assert any("English" in p for p in item_problems(raw))
    raw["tool"] = {"name": "cancel_order", "arguments": {}}
    raw["language"] = "en"
    assert any("forbidden" in p for p in item_problems(raw))


def test_summary_targets_block_and_failures(tmp_path: Path) -> None:
    good = score_item(item(), Outcome("completed", output()))
    bad = score_item(
        item(id="t-2", part="sealed"),
        Outcome("completed", output(intent="order_status", reply="Hi Monitor, it went with DHL")),
        products=["27-inch Monitor"],
    )
    rejected = score_item(item(id="t-3"), Outcome("rejected", None, "no_workflow"))
    assert good.end_to_end
    assert not bad.end_to_end
    assert not rejected.reply
    summary = summarize([good, bad, rejected])
    assert summary.items == 3
    assert summary.ended == 3
    assert summary.completed == 2
    assert summary.intent == 1 / 3
    assert summary.contradicted == 1
    assert summary.escalation_rate is None
    assert meets_targets(summarize([good])) == []
    assert any("contradicted" in m for m in meets_targets(summary))
    lines = format_failures([good, bad, rejected])
    assert any(line.startswith("t-3:") for line in lines)
    assert not any("t-2" in line for line in lines)  # sealed: never printed per item
    escalated = score_item(
        item(), Outcome("completed", output(escalated=True, draft_passed_check=False))
    )
    assert summarize([good, escalated]).escalation_rate == 1.0

    block = render_block(
        {"open": summarize([good, rejected]), "sealed": summarize([bad])},
        when=datetime(2025, 1, 1, tzinfo=UTC),
        machine="Linux x86_64, 2 CPUs",
        seconds=12.0,
    )
    assert block.startswith(BLOCK_BEGIN)
    assert block.endswith(BLOCK_END)
    assert "2025-01-01" in block
    assert "| intent (classifier + desk rules) | 0.500 (1/2) | 0.000 (0/1) |" in block
    doc = tmp_path / "models.md"
    doc.write_text("# Models\n\n| agent | x |\n", encoding="utf-8")
    write_block(doc, block)
    write_block(doc, block.replace("12 s", "13 s"))
    text = doc.read_text(encoding="utf-8")
    assert text.count(BLOCK_BEGIN) == 1
    assert "13 s" in text
    rest, kept = split_block(text)
    assert BLOCK_BEGIN not in rest
    assert "| agent | x |" in rest
    assert kept.startswith(BLOCK_BEGIN)


def test_a_message_the_desk_does_not_read_is_judged_on_its_language_not_its_intent() -> None:
    german = item(
        message="Hallo, bitte stornieren Sie meine Bestellung ORD-951261. Danke",
        language="de",
        intent="cancel_order",
        fields={"order_id": "ORD-951261"},
        tool=None,
        must=["English"],
        must_not=["cancelled"],
    )
    notice = output(
        language="de",
        intent=None,
        fields=None,
        tool_call=None,
        tool_result=None,
        reply="Hello, thank you for your message. Our support desk answers in English only.",
    )
    noticed = score_item(german, Outcome(state="completed", output=notice))
    assert not noticed.reads
    assert noticed.end_to_end
    assert noticed.failures() == []
    # Missed: the desk read it as English, so its intent and fields are judged.
    missed = score_item(
        german, Outcome(state="completed", output=output(language="en", intent="order_status"))
    )
    assert missed.reads
    assert not missed.intent
    assert not missed.end_to_end
    english = score_item(item(), Outcome(state="completed", output=output()))
    summary = summarize([noticed, english])
    assert summary.counts["intent"] == (1, 1)  # over the messages the desk read
    assert summary.end_to_end == 1.0


def test_eval_support_set_option_refuses_a_bad_file_and_output_with_a_clear_error(
    tmp_path: Path,
) -> None:
    """`slmesh eval support --set FILE` scores another file of items (a development set);
    a file that is not a list of items, or a request to write docs from it, exits 2 before
    any mesh is contacted."""
    from typer.testing import CliRunner

    from mesh.cli import app

    broken = tmp_path / "dev.yaml"
    broken.write_text("items: {}\n", encoding="utf-8")
    done = CliRunner().invoke(app, ["eval", "support", "--set", str(broken)])
    assert done.exit_code == 2
    assert "must hold a list of items" in done.output

    mixed = CliRunner().invoke(
        app, ["eval", "support", "--set", str(broken), "--output", str(tmp_path / "m.md")]
    )
    assert mixed.exit_code == 2
    assert "cannot take --set" in mixed.output
