"""Contracts: validation, secret stripping, eligibility reason codes, Redis store, file import."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from broker import contracts as c
from quotas import keys


def body(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "number": "SER-2026-0042",
        "client": {"company": "Cabinet Roux & Associés", "contact": "Claire Roux"},
        "start_date": "2025-03-10",
        "term_years": 1,
        "status": "active",
        "equipment": [
            {
                "serial": "BRG-001",
                "brand": "Poly",
                "model": "RMX 1800",
                "kind": "video_bridge",
                "warranty_until": "2027-01-01",
            },
            {
                "serial": "END-001",
                "brand": "Cisco",
                "model": "Room Kit",
                "product_code": "CS-KIT-K9",
                "kind": "video_endpoint",
                "warranty_until": "2025-12-31",
            },
            {
                "serial": "PRJ-001",
                "brand": "Epson",
                "model": "EB-L200F",
                "kind": "projector",
                "warranty_until": "2030-01-01",
            },
        ],
    }
    d.update(over)
    return d


def contract(**over: Any) -> c.Contract:
    return c.Contract.model_validate(body(**over))


# --- eligibility ----------------------------------------------------------------------------------
ON = date(2025, 6, 2)


def test_eligible() -> None:
    assert c.check_eligibility(contract(), "BRG-001", ON) is None
    assert c.check_eligibility(contract(), " brg-001 ", ON) is None  # case and spaces ignored
    assert c.check_eligibility(contract(), "END-001", date(2025, 12, 31)) is None  # last warranty day


@pytest.mark.parametrize(
    ("over", "serial", "on", "reason"),
    [
        ({"status": "terminated"}, "BRG-001", ON, "contract_terminated"),
        ({"status": "suspended"}, "BRG-001", ON, "contract_suspended"),
        ({}, "BRG-001", date(2025, 3, 9), "contract_not_started"),
        ({}, "BRG-001", date(2026, 3, 10), "contract_expired"),  # start + 1 year
        ({}, "NOPE-999", ON, "equipment_not_on_contract"),
        ({}, "PRJ-001", ON, "equipment_not_videoconference"),
        ({}, "END-001", date(2026, 1, 1), "warranty_expired"),
        # order: terminated beats everything, suspended beats dates, dates beat equipment ...
        ({"status": "terminated"}, "NOPE", date(2000, 1, 1), "contract_terminated"),
        ({"status": "suspended"}, "NOPE", date(2000, 1, 1), "contract_suspended"),
        ({}, "NOPE", date(2000, 1, 1), "contract_not_started"),
        ({}, "NOPE", date(2030, 1, 1), "contract_expired"),
        ({}, "PRJ-001", date(2026, 1, 1), "equipment_not_videoconference"),
    ],
)
def test_reasons(over: dict[str, Any], serial: str, on: date, reason: str) -> None:
    assert reason in c.REASON_CODES
    assert c.check_eligibility(contract(**over), serial, on) == reason


def test_every_reason_code_is_covered_and_exact() -> None:
    assert set(c.REASON_CODES) == {
        "contract_not_started",
        "contract_expired",
        "contract_suspended",
        "contract_terminated",
        "equipment_not_on_contract",
        "equipment_not_videoconference",
        "warranty_expired",
    }


def test_term_and_29_february() -> None:
    five = contract(start_date="2024-02-29", term_years=5)
    assert five.end_date == date(2029, 3, 1)
    one = contract(start_date="2024-02-29")
    assert c.check_eligibility(one, "BRG-001", date(2025, 2, 28)) is None
    assert c.check_eligibility(one, "BRG-001", date(2025, 3, 1)) == "contract_expired"
    four_leap = contract(start_date="2024-02-29", term_years=3)
    assert four_leap.end_date == date(2027, 3, 1)
    assert contract(start_date="2025-03-10", term_years=3).end_date == date(2028, 3, 10)


# --- validation -----------------------------------------------------------------------------------
def test_good_numbers() -> None:
    for number in ("SER-2026-01", "SER/2026/01", "a.b_c-d", "7"):
        assert contract(number=number).number == number


@pytest.mark.parametrize("number", ["", "SER:1", "X:active", "SER+1", "SER 1", " SER-1", "SER-1\n", "a{b}",
                                    "x" * 65, "..", "/x", "Société"])
def test_bad_numbers(number: str) -> None:
    with pytest.raises(ValidationError):
        contract(number=number)


def test_other_validation() -> None:
    eq = body()["equipment"]
    with pytest.raises(ValidationError, match="duplicates"):
        contract(equipment=[eq[0], {**eq[1], "serial": "brg-001"}])
    for bad in (
        {"term_years": 2},
        {"status": "paused"},
        {"start_date": "soon"},
        {"client": {"company": ""}},
        {"client": {"company": "x" * 201}},
        {"client": {"company": "X", "notes": "y" * 5000}},
        {"equipment": [{**eq[0], "kind": "tv"}]},
        {"equipment": [{**eq[0], "serial": "  "}]},
        {"equipment": [{**eq[0], "model": "m" * 101}]},
    ):
        with pytest.raises(ValidationError):
            contract(**bad)
    ok = contract(equipment=[{**eq[0], "serial": "  BRG-9 "}])
    assert ok.equipment[0].serial == "BRG-9"


def test_secrets_never_kept() -> None:
    raw = body(
        admin_password="top",
        client={
            "company": "ACME",
            "Mot de passe": "x1",
            "apiKey": "x2",
            "contacts": [{"name": "Jo", "PIN": "1234", "phone": "01"}],
            "notes": {"wifi": {"SSID": "acme", "cle_wifi": "x3"}, "shipping": "ok"},
        },
    )
    raw["equipment"][0].update(
        {"admin_password": "x4", "Mot de passe SSH": "x5", "public_ip": "203.0.113.7", "support_token": "x6"}
    )
    raw["equipment"][1]["access"] = {"login": "admin", "passwd": "x7", "credentials": {"a": "x8"}}
    got = contract(**{k: v for k, v in raw.items() if k != "number"}, number="SER-1")
    dumped = got.model_dump_json()
    for secret in ("top", "x1", "x2", "1234", "x3", "x4", "x5", "x6", "x7", "x8"):
        assert f'"{secret}"' not in dumped
    client = got.model_dump()["client"]
    assert client["contacts"] == [{"name": "Jo", "phone": "01"}]
    assert client["notes"] == {"wifi": {"SSID": "acme"}, "shipping": "ok"}
    assert got.model_dump()["equipment"][0]["public_ip"] == "203.0.113.7"
    assert got.model_dump()["equipment"][1]["access"] == {"login": "admin"}
    # even a rejected contract's error does not echo a secret
    with pytest.raises(ValidationError) as ei:
        c.Contract.model_validate({**raw, "term_years": 2, "client": {**raw["client"], "password": "x9"}})
    assert "x9" not in str(ei.value) and "x1" not in str(ei.value)


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True),
        ("AdminPassword", True),
        ("ssh_passwd", True),
        ("client_secret", True),
        ("token", True),
        ("pin", True),
        ("Credential", True),
        ("API_KEY", True),
        ("mot_de_passe_support", True),
        ("Clé SSID Wifi", True),
        ("pinned", False),
        ("shipping", False),
        ("SSID Wifi", False),
        ("company", False),
        ("serial", False),
    ],
)
def test_is_secret_name(name: str, secret: bool) -> None:
    assert c.is_secret_name(name) is secret


# --- store ----------------------------------------------------------------------------------------
async def test_store_round_trip(redis: Any) -> None:
    store = c.ContractStore(redis)
    first = c.Contract.model_validate(
        body(client={"company": "ACME", "admin_password": "hunter2", "city": "Aix"})
    )
    assert await store.put(first) is True
    assert await store.put(first) is False  # replaced, not created
    raw = await redis.get(keys.contract("SER-2026-0042"))
    assert "hunter2" not in raw and "admin_password" not in raw
    assert await redis.smembers(keys.CONTRACTS) == {"SER-2026-0042"}
    got = await store.get("SER-2026-0042")
    assert got == first
    assert got is not None and got.model_dump()["client"] == {"company": "ACME", "city": "Aix"}
    assert await store.get("SER-404") is None
    assert await store.get("bad/number") is None
    second = contract(number="SER-2026-0001", status="suspended")
    assert await store.put(second) is True
    assert [x.number for x in await store.list()] == ["SER-2026-0001", "SER-2026-0042"]
    assert (await store.get("SER-2026-0001")) == second


# --- file import ----------------------------------------------------------------------------------
def test_load_json_and_yaml(tmp_path: Path) -> None:
    j = tmp_path / "contracts.json"
    j.write_text(json.dumps([body(), body(number="SER-2")]), encoding="utf-8")
    assert [x.number for x in c.load_contracts_file(j)] == ["SER-2026-0042", "SER-2"]
    y = tmp_path / "contracts.yaml"
    y.write_text(
        """
contracts:
  - number: SER-2026-0007
    client: {company: "Mairie d'Aix", mot_de_passe: "x1"}
    start_date: 2026-01-15
    term_years: 5
    status: active
    equipment:
      - serial: RMX-1
        brand: Poly
        model: RMX 1800
        kind: video_bridge
        warranty_until: 2029-01-15
        installed: 2026-01-20
        password: "x2"
""",
        encoding="utf-8",
    )
    (one,) = c.load_contracts_file(y)
    assert one.start_date == date(2026, 1, 15) and one.term_years == 5
    assert one.equipment[0].model_dump()["installed"] == "2026-01-20"
    assert "x1" not in one.model_dump_json() and "x2" not in one.model_dump_json()


def test_load_errors(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    bad_eq = {**body()["equipment"][0], "warranty_until": "never"}
    f.write_text(json.dumps([body(), body(number="SER-9", equipment=[bad_eq]), body(), 3]), encoding="utf-8")
    with pytest.raises(c.ContractFileError) as ei:
        c.load_contracts_file(f)
    msg = str(ei.value)
    assert "contracts[1] (SER-9): equipment[0].warranty_until" in msg
    assert "contracts[2] (SER-2026-0042): number 'SER-2026-0042' already used by contracts[0]" in msg
    assert "contracts[3]: expected a mapping" in msg
    assert len(ei.value.errors) == 3

    (tmp_path / "broken.json").write_text('[{"number": ]', encoding="utf-8")
    with pytest.raises(c.ContractFileError, match="invalid JSON at line 1"):
        c.load_contracts_file(tmp_path / "broken.json")
    (tmp_path / "broken.yml").write_text("contracts: [\n  {a: 1\n", encoding="utf-8")
    with pytest.raises(c.ContractFileError, match="invalid YAML at line"):
        c.load_contracts_file(tmp_path / "broken.yml")
    (tmp_path / "scalar.yaml").write_text("hello\n", encoding="utf-8")
    with pytest.raises(c.ContractFileError, match="expected a list of contracts"):
        c.load_contracts_file(tmp_path / "scalar.yaml")
    with pytest.raises(c.ContractFileError, match="cannot read"):
        c.load_contracts_file(tmp_path / "missing.json")


# --- demo -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("today", [date(2026, 7, 15), date(2028, 2, 29), date(2026, 1, 31)])
def test_demo_contract(today: date) -> None:
    d = c.demo_contract(today)
    assert d.number == f"SER-{today.year}-0042" and d.status == "active" and d.term_years == 3
    assert d.start_date.year == today.year - 1
    kinds = {e.kind: e for e in d.equipment}
    assert {"video_bridge", "video_endpoint", "projector"} <= set(kinds)
    assert c.check_eligibility(d, kinds["video_bridge"].serial, today) is None
    assert c.check_eligibility(d, kinds["video_endpoint"].serial, today) is None
    assert c.check_eligibility(d, kinds["projector"].serial, today) == "equipment_not_videoconference"
    assert c.Contract.model_validate_json(d.model_dump_json()) == d
